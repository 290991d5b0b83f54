"""One training run: its plan resolved, the loop in rounds, the step and the schedule, losses,
the run folder's files and the speed measurement. Imports: segnet.plan, segnet.inference,
segnet.data, segnet.runtime, segnet.utils (and model.py)."""
