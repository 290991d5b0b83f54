"""Scores, all in one room: the confusion matrix and its metrics (G, C, IoU, Dice), the health
warnings, the SegNet paper's boundary F1 (BF) per class and image, calibration (expected
calibration error, ECE, with its reliability bins), predictive entropy, and the per-image
uncertainty statistics of predict.py's review list."""
import csv
import math

import numpy as np
import torch
from scipy import ndimage

from segnet import utils
from segnet.runtime import all_reduce_sum

BF_TOLERANCE = 0.0075  # of the image diagonal (SegNet, Badrinarayanan et al., TPAMI 2017)
ECE_BINS = 15
UNCERTAIN_BELOW = 0.5  # a pixel whose top class probability is below this is uncertain
REVIEW_ROWS = 256      # image rows per step of review_row: a 4096x4096 image stays cheap


# ---------------------------------------------------------------- metrics

def confusion_matrix(preds, targets, num_classes, ignore_index=255):
    """[num_classes, num_classes] int64 counts, rows = true class, columns = predicted.

    Pixels whose target is ignore_index (or out of range) are left out. Stays on the device.
    """
    valid = (targets >= 0) & (targets < num_classes) & (targets != ignore_index)
    index = targets[valid] * num_classes + preds[valid]
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def image_confusions(preds, targets, num_classes, ignore_index=255):
    """[N, num_classes, num_classes] int64 counts of each image of a batch (preds and targets
    [N, H, W]), in one bincount on their device: confusion_matrix image by image, without a
    transfer or a kernel launch per image."""
    per_image = num_classes * num_classes
    valid = (targets >= 0) & (targets < num_classes) & (targets != ignore_index)
    image = torch.arange(len(preds), device=preds.device).view(-1, *[1] * (preds.dim() - 1))
    index = (image * per_image + targets * num_classes + preds)[valid]
    counts = torch.bincount(index, minlength=len(preds) * per_image)
    return counts.reshape(len(preds), num_classes, num_classes)


def metrics_from_confusion(confusion, class_names=None):
    """SegNet's global (G) and class-average (C) accuracy, IoU, Dice, precision, recall.

    Classes absent from both targets and predictions get NaN IoU/Dice and are left out of the
    means, so a val split without some class is not scored as a failure on it.
    """
    confusion = confusion.double().cpu()
    true_positive = confusion.diag()
    support = confusion.sum(1)          # pixels of each true class
    predicted = confusion.sum(0)        # pixels predicted as each class
    union = support + predicted - true_positive
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * true_positive / (support + predicted).clamp(min=1), nan)
    recall = torch.where(support > 0, true_positive / support.clamp(min=1), nan)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), nan)
    total = confusion.sum()
    names = class_names or [f"class_{c}" for c in range(len(support))]
    return {
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else float("nan"),
        "mean_acc": float(recall.nanmean()),
        "miou": float(iou.nanmean()),
        "mean_dice": float(dice.nanmean()),
        "per_class": [{"name": name, "iou": float(iou[c]), "dice": float(dice[c]),
                       "precision": float(precision[c]), "recall": float(recall[c]),
                       "support": int(support[c])} for c, name in enumerate(names)],
    }


# A model is not useful yet when, on labelled data, some class present there is never predicted
# or has IoU below this, or when one class takes nearly every pixel it is not.
HEALTH_MIN_IOU = 0.05
HEALTH_ONE_CLASS_SHARE = 0.98


def health_warnings(confusion, class_names=None):
    """What makes a model useless yet, from its confusion matrix [true, predicted] on labelled
    data, as sentences (none for a healthy model): classes present in the labels but never
    predicted or with IoU below HEALTH_MIN_IOU, and one class predicted for nearly every pixel."""
    confusion = confusion.double().cpu()
    per_class = metrics_from_confusion(confusion, class_names)["per_class"]
    labelled, predicted = confusion.sum(1) / confusion.sum().clamp(min=1), confusion.sum(0)
    found = []
    for index, entry in enumerate(per_class):
        share = float(labelled[index])
        if share and not predicted[index]:
            found.append(f"class '{entry['name']}' ({share:.1%} of the labelled pixels) is never "
                         f"predicted")
        elif share and entry["iou"] < HEALTH_MIN_IOU:
            found.append(f"class '{entry['name']}' ({share:.1%} of the labelled pixels) has IoU "
                         f"{entry['iou']:.3f}, below {HEALTH_MIN_IOU}")
    top = int(predicted.argmax())
    predicted_share = float(predicted[top] / predicted.sum().clamp(min=1))
    true_share = float(labelled[top])
    if predicted_share >= HEALTH_ONE_CLASS_SHARE and predicted_share - true_share > 0.05:
        found.append(f"the model predicts '{per_class[top]['name']}' for {predicted_share:.1%} of "
                     f"the pixels (it is {true_share:.1%} of the labels): it has not learned the "
                     f"other classes")
    return found


class ConfusionMatrix:
    """Pixel counts [true class, predicted class] accumulated over a split (torchvision's
    references keep one like it): update() per batch or image, all_reduce() under torchrun,
    compute() for the metrics. Training's validation, evaluate.py and the notebook API all
    score through it."""

    def __init__(self, num_classes, ignore_index=255, device="cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, preds, targets):
        """Add the counts of one batch (any shape, same for both); returns them alone."""
        counts = confusion_matrix(preds, targets.to(preds.device), self.num_classes,
                                  self.ignore_index)
        self.matrix += counts.to(self.matrix.device)
        return counts

    def all_reduce(self, device=None):
        """Sum over torchrun ranks (each rank scored its own shard); a no-op alone. device:
        where the counts go first (nccl reduces GPU tensors only)."""
        if device is not None:
            self.matrix = self.matrix.to(device)
        all_reduce_sum(self.matrix)
        return self

    def compute(self, class_names=None):
        """metrics_from_confusion of the counts so far."""
        return metrics_from_confusion(self.matrix, class_names)


# ---------------------------------------------------------------- predictive entropy

def entropy_map(probs):
    """Predictive entropy in nats [..., H, W] of probabilities [..., K, H, W]: 0 when one class
    has all the mass, log(K) when all are equal."""
    return -(probs * probs.clamp(min=1e-12).log()).sum(-3)


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
