"""Measures beyond the confusion matrix: the SegNet paper's boundary F1 (BF) per class and image,
calibration (expected calibration error, ECE, with its reliability bins), and the per-image
uncertainty statistics of predict.py's review list."""
import csv
import math

import numpy as np
import torch
from scipy import ndimage

import utils
from inference import entropy_map

BF_TOLERANCE = 0.0075  # of the image diagonal (SegNet, Badrinarayanan et al., TPAMI 2017)
ECE_BINS = 15
UNCERTAIN_BELOW = 0.5  # a pixel whose top class probability is below this is uncertain
REVIEW_ROWS = 256      # image rows per step of review_row: a 4096x4096 image stays cheap


# ---------------------------------------------------------------- boundary F1

def label_edges(labels):
    """bool [H, W]: pixels with a 4-neighbour of another value. The image frame is no edge."""
    edges = np.zeros(labels.shape, dtype=bool)
    across = labels[:, 1:] != labels[:, :-1]
    down = labels[1:] != labels[:-1]
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    edges[1:] |= down
    edges[:-1] |= down
    return edges


def boundary_f1(true_boundary, pred_boundary, tolerance_px):
    """F1 of two boundary maps (bool [H, W]): a pixel of one matches when a pixel of the other
    lies within tolerance_px (exact Euclidean distance transforms). Both empty: 1; one: 0."""
    if not true_boundary.any() or not pred_boundary.any():
        return float(true_boundary.any() == pred_boundary.any())
    to_true = ndimage.distance_transform_edt(~true_boundary)
    to_pred = ndimage.distance_transform_edt(~pred_boundary)
    precision = float((to_true[pred_boundary] <= tolerance_px).mean())
    recall = float((to_pred[true_boundary] <= tolerance_px).mean())
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def image_boundary_f1(preds, mask, num_classes, ignore_index=255, tolerance=BF_TOLERANCE):
    """float64 [num_classes]: each class's BF on one image; NaN for a class absent from its
    labels (a class predicted there but absent lowers the BF of the classes it covers instead).

    preds, mask: int [H, W]. tolerance: a fraction of the image diagonal. Only labelled pixels
    are compared: the prediction is cut by the mask's ignored pixels too, so an ignored pixel is
    no class's boundary, and a class's boundary is where its labelled region ends in each map.
    """
    mask = np.asarray(mask, dtype=np.int64)
    labelled = (mask >= 0) & (mask < num_classes) & (mask != ignore_index)
    truth = np.where(labelled, mask, -1)
    predicted = np.where(labelled, np.asarray(preds, dtype=np.int64), -1)
    true_edges, pred_edges = label_edges(truth), label_edges(predicted)
    tolerance_px = tolerance * math.hypot(*mask.shape)
    scores = np.full(num_classes, np.nan)
    for label in np.unique(truth[labelled]):
        scores[label] = boundary_f1(true_edges & (truth == label),
                                    pred_edges & (predicted == label), tolerance_px)
    return scores


def nanmean(values):
    """Mean of the non-NaN values; NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


class BoundaryF1:
    """The SegNet paper's BF over a split: update() per image; compute() averages each class
    over the images whose labels hold it, then the classes (a class never present is left out)."""

    def __init__(self, num_classes, ignore_index=255, tolerance=BF_TOLERANCE):
        self.num_classes, self.ignore_index, self.tolerance = num_classes, ignore_index, tolerance
        self.sums = np.zeros(num_classes)
        self.images = np.zeros(num_classes, dtype=np.int64)

    def update(self, preds, mask):
        """Add one image; returns its per-class BF (NaN for absent classes)."""
        scores = image_boundary_f1(preds, mask, self.num_classes, self.ignore_index,
                                   self.tolerance)
        present = ~np.isnan(scores)
        self.sums[present] += scores[present]
        self.images[present] += 1
        return scores

    def compute(self, class_names=None):
        """{"bf": [{name, bf, images}], "mean_bf"}; bf NaN for a class in no image's labels."""
        names = class_names or [f"class_{c}" for c in range(self.num_classes)]
        per_class = np.where(self.images > 0, self.sums / np.maximum(self.images, 1), np.nan)
        return {"bf": [{"name": name, "bf": float(score), "images": int(count)}
                       for name, score, count in zip(names, per_class, self.images)],
                "mean_bf": nanmean(per_class)}


# ---------------------------------------------------------------- calibration

class Calibration:
    """Expected calibration error over the labelled pixels of a split: confidence (the top
    class probability) against accuracy in equal-width bins (lower, upper], image by image."""

    def __init__(self, num_classes, ignore_index=255, num_bins=ECE_BINS):
        self.num_classes, self.ignore_index, self.num_bins = num_classes, ignore_index, num_bins
        self.counts = torch.zeros(num_bins, dtype=torch.float64)
        self.confidence = torch.zeros(num_bins, dtype=torch.float64)
        self.correct = torch.zeros(num_bins, dtype=torch.float64)

    def update(self, probs, preds, mask):
        """Add one image: probs float [K, H, W], preds and mask int [H, W]."""
        mask = torch.as_tensor(mask)
        labelled = (mask >= 0) & (mask < self.num_classes) & (mask != self.ignore_index)
        confidence = torch.as_tensor(probs).amax(0)[labelled].double()
        correct = (torch.as_tensor(preds) == mask)[labelled].double()
        bins = ((confidence * self.num_bins).ceil().long() - 1).clamp(0, self.num_bins - 1)
        self.counts += torch.bincount(bins, minlength=self.num_bins).double()
        self.confidence += torch.bincount(bins, confidence, minlength=self.num_bins)
        self.correct += torch.bincount(bins, correct, minlength=self.num_bins)

    def compute(self):
        """{ece, pixels, bins: [{lower, upper, confidence, accuracy, count}]}: ECE = the sum over
        bins of count / pixels * |accuracy - confidence|; NaN confidence and accuracy if empty."""
        total = float(self.counts.sum())
        filled = self.counts > 0
        confidence = torch.where(filled, self.confidence / self.counts.clamp(min=1), math.nan)
        accuracy = torch.where(filled, self.correct / self.counts.clamp(min=1), math.nan)
        gaps = (self.counts * (accuracy - confidence).abs()).nan_to_num(0)
        bins = [{"lower": index / self.num_bins, "upper": (index + 1) / self.num_bins,
                 "confidence": float(confidence[index]), "accuracy": float(accuracy[index]),
                 "count": int(self.counts[index])} for index in range(self.num_bins)]
        return {"ece": float(gaps.sum() / total) if total else math.nan, "pixels": int(total),
                "bins": bins}


# ---------------------------------------------------------------- review list

def review_row(file, probs, class_names):
    """One image's review.csv row: {file, mean_entropy (nats), uncertain_fraction (share of
    pixels whose top probability is below UNCERTAIN_BELOW), share_<class> (predicted share of
    each class)} from its probabilities float [K, H, W], a few rows at a time."""
    num_classes, height, width = probs.shape
    entropy, uncertain = 0.0, 0
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for top in range(0, height, REVIEW_ROWS):
        chunk = probs[:, top:top + REVIEW_ROWS]
        entropy += float(entropy_map(chunk).double().sum())
        confidence, preds = chunk.max(0)
        uncertain += int((confidence < UNCERTAIN_BELOW).sum())
        counts += torch.bincount(preds.flatten(), minlength=num_classes)
    pixels = max(height * width, 1)
    return {"file": str(file), "mean_entropy": entropy / pixels,
            "uncertain_fraction": uncertain / pixels,
            **{f"share_{name}": int(count) / pixels for name, count in zip(class_names, counts)}}


def sort_for_review(rows):
    """Most uncertain first: by mean entropy, then uncertain fraction (ties keep input order)."""
    return sorted(rows, key=lambda row: (-row["mean_entropy"], -row["uncertain_fraction"]))


def write_review(path, rows, class_names):
    """review.csv: one row per image (review_row), most uncertain first; a header alone when
    there are none."""
    columns = ["file", "mean_entropy", "uncertain_fraction"] + [f"share_{name}"
                                                                for name in class_names]
    with utils.atomic_write(path, newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in sort_for_review(rows):
            writer.writerow({key: value if key == "file" else f"{value:.6f}"
                             for key, value in row.items()})
