"""Rare-class sampling: where each class lies in a training mask (found once per image, a bounded
sample of its positions), and what a sample shows. In a planned share of the samples a class is
drawn uniformly among the classes of the train set, then an image holding it (the scan lists
each mask's classes), and the crop is centred on one of its pixels: the way nnU-Net oversamples
foreground, but class-balanced across the data set, like the rare-class sampling of DAFormer
(Hoyer et al., CVPR 2022) without its temperature. A class in 1 image of 10 is then centred
as often as the background. The other samples keep their image and a uniformly placed window.
Without the scan's list (pick_focus), the class is drawn among those present in the image."""
import numpy as np
import torch

# Positions kept per class and image: enough for varied crops, bounded memory (at most
# 4 bytes x this x the classes present, per image, e.g. 16 KB for 8 classes).
MAX_POSITIONS = 512


def class_positions(mask, num_classes, seed=0, limit=MAX_POSITIONS):
    """{class: int32 numpy array of flat indices into mask [H, W]} for each class present
    (ignore and other out-of-range values left out), at most `limit` a class: an even random
    subset, fixed by `seed`, so a resumed run finds the same positions."""
    flat = np.asarray(mask).reshape(-1)
    valid = np.flatnonzero((flat >= 0) & (flat < num_classes))
    labels = flat[valid].astype(np.int64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    rng = np.random.default_rng(seed)
    positions, start = {}, 0
    for label, count in enumerate(counts.tolist()):
        if count:
            found = valid[order[start:start + count]]
            if count > limit:
                found = np.sort(rng.choice(found, limit, replace=False))
            positions[label] = found.astype(np.int32)
        start += count
    return positions


def _draw(groups, share):
    """(class, item) or None: with probability `share`, a class drawn uniformly among the keys
    of `groups` ({class: items}), then one of its items. Draws from torch's global RNG (seeded
    per sample by the loader); share 0 draws nothing, so the crops are exactly those of a run
    without sampling."""
    if share <= 0 or not groups:
        return None
    if torch.rand(()).item() >= share:
        return None
    classes = sorted(groups)
    label = classes[int(torch.randint(len(classes), ()).item())]
    items = groups[label]
    return label, items[int(torch.randint(len(items), ()).item())]


def pick_focus(positions, share, width):
    """(row, col) for a crop to centre on, or None for a uniform window: with probability
    `share`, a class drawn uniformly among those in `positions` (class_positions), then one of
    its positions."""
    drawn = _draw(positions, share)
    return divmod(int(drawn[1]), width) if drawn else None


def class_members(image_classes, names, num_classes):
    """{class: indices into names of the images holding it} from the scan's {stem: classes}
    (labelstats.label_statistics); classes in no listed image are left out."""
    members = {}
    for index, name in enumerate(names):
        for label in image_classes.get(name, ()):
            if 0 <= label < num_classes:
                members.setdefault(label, []).append(index)
    return members


def pick_sample(members, share):
    """(image index, class) for a class-centred sample, or None for the sample's own image and
    a uniform window: with probability `share`, a class drawn uniformly among those in
    `members` (class_members), then one of its images."""
    drawn = _draw(members, share)
    return (drawn[1], drawn[0]) if drawn else None


def pick_position(positions, label, width):
    """(row, col) of a random pixel of class `label` among `positions` (class_positions), or
    None where the mask does not hold it (a file changed since the scan)."""
    found = positions.get(label)
    if found is None or not len(found):
        return None
    return divmod(int(found[int(torch.randint(len(found), ()).item())]), width)


class ClassPositions:
    """class_positions of each image of a dataset, computed the first time the image is read
    and kept (also when the decoded sample itself is not cached)."""

    def __init__(self, num_classes, seed=0):
        self.num_classes, self.seed, self.found = num_classes, seed, {}

    def get(self, index, mask):
        if index not in self.found:
            self.found[index] = class_positions(mask, self.num_classes, self.seed + index)
        return self.found[index]
