"""What the train masks say about the classes, from the scan's mask summaries (one read of each
mask): pixels and images of each class (class weights, rare-class sampling, advice), how thin
its structures are (how far the images may be scaled down), and whether it keeps to one half of
the image (which flips keep a scene plausible)."""
import numpy as np

from segnet.data.pixels.masks import value_classes

# A class's layout counts along an axis when it is in at least this many images.
MIN_LAYOUT_IMAGES = 3


def class_statistics(summaries, decoding, ignore_index):
    """(pixels of each class, total pixels of the images containing each class, ignored)."""
    count = decoding["num_classes"]
    class_pixels = np.zeros(count, dtype=np.int64)
    image_pixels = np.zeros(count, dtype=np.int64)
    ignored = 0
    for summary in summaries:
        classes = value_classes(summary.values, summary.kind, decoding, ignore_index)
        known = (classes >= 0) & (classes < count)
        per_class = np.bincount(classes[known], weights=summary.counts[known], minlength=count)
        class_pixels += per_class.astype(np.int64)
        image_pixels[per_class > 0] += summary.size[0] * summary.size[1]
        ignored += int(summary.counts[classes == ignore_index].sum())
    return class_pixels.tolist(), image_pixels.tolist(), ignored


def label_statistics(summaries, decoding, ignore_index):
    """{class_images: train images holding each class, image_classes: {stem: the classes in that
    train mask} (rare-class sampling draws an image holding the drawn class), class_widths: each
    class's typical structure width in pixels (2 x pixels / boundary edges: a strip's width,
    ~0.8 x a disc's radius; None for an absent class), class_layout: {rows, cols}: per class
    [mean, standard error, images] of (pixels in the first half - pixels in the second) /
    (both), one value per image holding it: +1 = always in the top (left) half, 0 = either}."""
    count = decoding["num_classes"]
    images, pixels, edges = (np.zeros(count, dtype=np.int64) for _ in range(3))
    image_classes = {}
    moments = {axis: np.zeros((3, count)) for axis in ("rows", "cols")}  # n, sum, sum of squares
    for summary in summaries:
        classes = value_classes(summary.values, summary.kind, decoding, ignore_index)
        known = (classes >= 0) & (classes < count)
        if summary.halves is None or not known.any():
            continue
        labels = classes[known]
        counts, boundary, *halves = (np.bincount(labels, weights=values[known], minlength=count)
                                     for values in (summary.counts, summary.edges,
                                                    *summary.halves))
        present = counts > 0
        images += present
        image_classes[summary.name or summary.path.stem] = np.flatnonzero(present).tolist()
        pixels += counts.astype(np.int64)
        edges += boundary.astype(np.int64)
        for axis, (first, second) in (("rows", halves[:2]), ("cols", halves[2:])):
            both = first + second
            held = present & (both > 0)
            asymmetry = np.where(held, (first - second) / np.maximum(both, 1), 0.0)
            moments[axis] += np.stack([held, asymmetry, asymmetry ** 2])
    widths = [round(2 * p / max(e, 1), 2) if p else None for p, e in zip(pixels, edges)]
    return {"class_images": images.tolist(), "image_classes": image_classes,
            "class_widths": widths,
            "class_layout": {axis: _mean_and_error(values) for axis, values in moments.items()}}


def _mean_and_error(moments):
    """[[mean, standard error of the mean, n], ...] per class from rows n, sum, sum of squares."""
    rows = []
    for n, total, squares in moments.T:
        mean = total / n if n else 0.0
        variance = max(squares / n - mean ** 2, 0.0) * n / (n - 1) if n > 1 else 1.0
        rows.append([round(mean, 4), round(float(np.sqrt(variance / max(n, 1))), 4), int(n)])
    return rows


def layout_asymmetry(layout, shares):
    """How strongly the classes keep to one half along an axis: the share-weighted mean of
    |mean| over the classes whose asymmetry is clear (in MIN_LAYOUT_IMAGES images or more, and
    at least 3 standard errors from 0). 0 for data with no preferred orientation (cells,
    membranes: +-0.02 measured), ~0.6 for outdoor scenes (sky on top, road below)."""
    score = 0.0
    for (mean, error, images), share in zip(layout, shares):
        if images >= MIN_LAYOUT_IMAGES and abs(mean) > 3 * error:
            score += share * abs(mean)
    return score
