"""bench.py's machinery: its report (medians, pair-wise speed-ups, shares of the peak, the
table), the loader line and the GPU check. Imports: segnet.training, segnet.plan,
segnet.inference, segnet.data, segnet.runtime, segnet.utils (and model.py)."""
