"""How far grey levels alone get: the best per-pixel grey-level classifier, fitted on train and
scored on train and val (`python dataset.py check ROOT --baseline`), for comparison with the
network. Samples are read with every core (readpool), the counts summed exactly."""
from functools import partial

import numpy as np

from segnet.data.check.readpool import read_in_order
from segnet.data.feed.dataset import SegmentationDataset


def _sample_histogram(dataset, bins, index):
    """[bins * num_classes] pixel counts of (grey level, class) of one sample (ignore left
    out). The grey level in numpy: a torch reduction's threads waited on each other here."""
    count = dataset.info["num_classes"]
    image, mask = dataset.load_sample(index)
    grey, labels = image.numpy().mean(axis=0), mask.numpy()
    valid = (labels >= 0) & (labels < count)
    levels = np.clip((grey[valid] * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(levels * count + labels[valid], minlength=bins * count)


def _intensity_histogram(dataset, bins, workers=None):
    """[bins, num_classes] pixel counts of (grey level, class) over a dataset (ignore left out),
    read by `workers` processes (readpool.read_workers)."""
    histogram = np.zeros(bins * dataset.info["num_classes"], dtype=np.int64)
    for counts in read_in_order(partial(_sample_histogram, dataset, bins), range(len(dataset)),
                                workers):
        histogram += counts
    return histogram.reshape(bins, dataset.info["num_classes"])


def mean_iou(confusion):
    """Mean IoU over the classes present in prediction or truth; confusion is [true, predicted]."""
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean())


def _lookup_confusion(histogram, lookup):
    """Confusion [true, predicted] when each grey level predicts lookup[level]."""
    return histogram.T @ np.eye(histogram.shape[1], dtype=np.int64)[lookup]


def fit_intensity_lookup(histogram, passes=20):
    """A class per grey level maximising mIoU on histogram [levels, classes]: the class-balanced
    arg-max, improved by coordinate ascent (one level at a time)."""
    lookup = (histogram / np.maximum(histogram.sum(axis=0), 1)).argmax(axis=1)
    best = mean_iou(_lookup_confusion(histogram, lookup))
    for _ in range(passes):
        improved = False
        for level in np.flatnonzero(histogram.sum(axis=1)):
            for label in range(histogram.shape[1]):
                trial = lookup.copy()
                trial[level] = label
                score = mean_iou(_lookup_confusion(histogram, trial))
                if score > best + 1e-12:
                    lookup, best, improved = trial, score, True
        if not improved:
            break
    return lookup


def intensity_baseline(root, info, bins=64, workers=None):
    """{split: mIoU} of the best per-pixel grey-level classifier, fitted on train and scored on
    train and val: what intensity alone achieves, for comparison with the network. workers:
    processes reading the samples (None: every core); the scores do not depend on it."""
    histograms = {split: _intensity_histogram(SegmentationDataset(root, split, info), bins,
                                              workers)
                  for split in ("train", "val") if split in info["splits"]}
    lookup = fit_intensity_lookup(histograms["train"])
    return {split: mean_iou(_lookup_confusion(histogram, lookup))
            for split, histogram in histograms.items()}
