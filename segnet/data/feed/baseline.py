"""How far grey levels alone get: the best per-pixel grey-level classifier, fitted on train and
scored on train and val (`python dataset.py check ROOT --baseline`), for comparison with the
network."""
import numpy as np

from segnet.data.feed.dataset import SegmentationDataset

def _intensity_histogram(dataset, bins):
    """[bins, num_classes] pixel counts of (grey level, class) over a dataset (ignore left out)."""
    count = dataset.info["num_classes"]
    histogram = np.zeros(bins * count, dtype=np.int64)
    for index in range(len(dataset)):
        image, mask = dataset.load_sample(index)
        grey, labels = image.mean(dim=0).numpy(), mask.numpy()
        valid = (labels >= 0) & (labels < count)
        levels = np.clip((grey[valid] * bins).astype(np.int64), 0, bins - 1)
        histogram += np.bincount(levels * count + labels[valid], minlength=bins * count)
    return histogram.reshape(bins, count)


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


def intensity_baseline(root, info, bins=64):
    """{split: mIoU} of the best per-pixel grey-level classifier, fitted on train and scored on
    train and val: what intensity alone achieves, for comparison with the network."""
    histograms = {split: _intensity_histogram(SegmentationDataset(root, split, info), bins)
                  for split in ("train", "val") if split in info["splits"]}
    lookup = fit_intensity_lookup(histograms["train"])
    return {split: mean_iou(_lookup_confusion(histogram, lookup))
            for split, histogram in histograms.items()}
