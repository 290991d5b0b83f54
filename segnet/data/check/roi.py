"""Masks that are no labels: a folder whose masks are all nearly the same shape (DRIVE's
`mask/`, the field of view: one disc in every file) marks a region of interest. The problem
names the folder and offers the other folders beside it that may hold the labels."""
import numpy as np

from segnet.data.files.finders import label_candidates
from segnet.data.files.layouts import layout_folders

MIN_MASKS = 3  # fewer masks say nothing about sameness
SAME_SHARE = 0.01  # foreground shares within this of each other, in every half of the image


def _shape_row(summary):
    """[foreground share in the top, bottom, left and right halves] of a two-value mask, or
    None for other masks."""
    if summary.kind != "single" or len(summary.values) != 2 or summary.halves is None:
        return None
    halves = summary.halves.astype(np.float64)
    return halves[:, 1] / np.maximum(halves.sum(axis=1), 1)


def same_shape(summaries):
    """Whether every mask is two-valued with the same foreground share in each half."""
    if len(summaries) < MIN_MASKS or len({summary.size for summary in summaries}) > 1:
        return False
    rows = [_shape_row(summary) for summary in summaries]
    if any(row is None for row in rows):
        return False
    rows = np.stack(rows)
    return bool((rows.max(axis=0) - rows.min(axis=0)).max() <= SAME_SHARE)


def region_of_interest(root, layout, summaries):
    """(problems, warnings) when the train masks are all nearly one shape: a problem when
    other label folders sit beside them (the flag to choose one), else a warning."""
    if not same_shape(summaries):
        return [], []
    images, masks = layout_folders(root, layout, "train")
    others = [folder for folder in label_candidates(masks.parent, images) if folder != masks]
    text = (f"the {len(summaries)} train masks in {masks} are all nearly the same shape (one "
            f"region in every file): a region of interest, such as a field of view, not labels")
    if others:
        return [f"{text}; other folders that may hold the labels: "
                f"{', '.join(folder.name + '/' for folder in others)}: pass --masks "
                f"{others[0].name}"], []
    return [], [f"{text}? If they are the labels, nothing varies for the network to learn"]
