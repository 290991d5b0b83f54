"""Files -> batches: pairing, reading and decoding, the scan and its checks, transforms, the
batched augmentation that ends on the device, and the train loader. Imports: segnet.runtime,
segnet.utils (and model.py)."""
