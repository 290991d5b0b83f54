"""A checkpoint -> labels, probabilities and scores: the inference model, tiling, TTA, MC
dropout, the measures, ONNX export and runtime, and the pictures. Imports: segnet.data,
segnet.runtime, segnet.utils (and model.py)."""
