"""The training recipe from the data and the machine (crop, batch, length, validation and save
points, loss, augmentation) and train.py's flag checks. Imports: segnet.data, segnet.runtime,
segnet.utils (and model.py)."""
