"""bench.py's report: medians, pair-wise speed-ups, shares of the peak, the printed table.
Imports: segnet.runtime, segnet.utils (and model.py)."""
