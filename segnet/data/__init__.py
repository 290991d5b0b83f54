"""Files -> samples: pairing, reading and decoding, the scan and its checks, transforms and the
train loader. Imports: segnet.runtime, segnet.utils (and model.py)."""
