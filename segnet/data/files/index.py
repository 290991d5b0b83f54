"""The index of a dataset's samples, built once: a layout resolves to one typed value, every
split's samples (name, image file or page, mask file, page or union) with the val and test
held out of train by group, the layout as listed (the suffixes that paired each split, the
stacks' page counts, the carved test names), and the lines and notes that say how. The scan,
the Dataset, the hold-outs, the folds and the run's record take this value; nothing lists or
pairs a folder again."""
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from segnet.data.files.layouts import carves, describe, find_layout, layout_folders
from segnet.data.files.listing import hold_out, layout_warnings, list_layout
from segnet.data.files.splits import HOLDOUT_SHARE, carve, sample_group
from segnet.utils import DataError, name_list


class Sample(NamedTuple):
    """One sample: its name (the image's stem; a stack's page: stem@page), the image (a path
    or a stacks.Page) and the mask (a path, a Page, or a maskfiles.MaskUnion)."""

    name: str
    image: object
    mask: object


@dataclass
class DataIndex:
    """Every split's samples, as one builder (build_index) found them."""

    root: Path
    layout: dict  # as listed: "pairing", "pages", "test_holdout" filled in
    samples: dict = field(default_factory=dict)  # {split: [Sample]}
    holdout: list = None  # the val names held out of train (None: a val folder)
    lines: list = field(default_factory=list)  # how the files were found
    notes: list = field(default_factory=list)  # files skipped, unions, unlabelled splits
    warnings: list = field(default_factory=list)  # one stack carved, groups in two splits
    problems: dict = field(default_factory=dict)  # {split: [problems]} of splits not listed

    def split(self, split):
        """The samples of a split; DataError naming why a split is not in the index."""
        if split in self.samples:
            return self.samples[split]
        if split in self.problems:
            raise DataError(self.problems[split])
        raise DataError(f"{self.root} has no {split} split (layout: {describe(self.layout)})"
                        + (": pass --test-share to hold one out of train" if split == "test"
                           else ""))

    def groups(self, split, pattern=None):
        """{group: [names]} of a split (stacks, --group-pattern groups, else each sample)."""
        found = {}
        for sample in self.split(split):
            found.setdefault(sample_group(sample.name, sample.image, pattern), []).append(
                sample.name)
        return found

    def subset(self, split, names):
        """The samples of a split with these names, in the index's order (a fold's)."""
        wanted = set(names)
        chosen = [sample for sample in self.split(split) if sample.name in wanted]
        missing = wanted - {sample.name for sample in chosen}
        if missing:
            raise DataError(f"{name_list(sorted(missing))} are not {split} samples of "
                            f"{self.root}: the files are gone or renamed; restore them, or "
                            f"start a new run")
        return chosen


def build_index(root, layout, splits=("train", "val"), holdout=None):
    """The DataIndex of ROOT's layout: each folder listed once, val (and a --test-share test)
    held out of train by group where the layout has no such folder (holdout: a resumed run's
    val names, kept). The layout given is not changed. Splits that cannot be listed keep their
    problems (DataIndex.problems) so that a check reports them all."""
    root, layout = Path(root), copy.deepcopy(layout)
    splits = tuple(dict.fromkeys(["train", *splits]))
    listing = list_layout(root, layout, splits)
    index = DataIndex(root, layout, lines=listing.lines, notes=listing.notes,
                      problems=dict(listing.problems))
    try:
        holdout, warning = hold_out(layout, listing, splits, holdout)
    except DataError as error:
        index.problems["val"] = error.problems
        return index
    index.holdout = holdout if carves(layout, "val") else None
    index.warnings += [warning] * bool(warning)
    train = listing.files.get("train")
    held = {"val": set(holdout or ()) if carves(layout, "val") else set(),
            "test": set(layout.get("test_holdout") or ()) if carves(layout, "test") else set()}
    for split in splits:
        if split in listing.files and split != "train":
            index.samples[split] = [Sample(*sample) for sample in listing.files[split].samples]
        elif train is not None and split == "train":
            index.samples[split] = [Sample(*sample) for sample in train.samples
                                    if sample[0] not in held["val"] | held["test"]]
        elif train is not None and held.get(split):
            try:
                index.samples[split] = _held(root, layout, train.samples, held[split])
            except DataError as error:
                index.problems[split] = error.problems
    index.warnings += layout_warnings(layout, index.samples)
    return index


def _held(root, layout, samples, names):
    """The train samples a hold-out names; DataError when some are gone."""
    kept = {sample[0] for sample in samples}
    missing = names - kept
    if missing:
        raise DataError(f"the hold-out lists train samples that are gone from "
                        f"{layout_folders(root, layout, 'train')[0]}: "
                        f"{name_list(sorted(missing))}; put them back, or start a new run")
    return [Sample(*sample) for sample in samples if sample[0] in names]


def split_pairs(root, split, holdout=None, layout=None):
    """The samples of one split (build_index of that split alone): read from the layout's
    folders, or, where the layout holds it out of train (holdout: the val names,
    layout["test_holdout"]: the test names), those train samples; never a new hold-out."""
    layout = layout or find_layout(root)
    held = holdout if split == "val" else layout.get("test_holdout")
    if split != "train" and carves(layout, split) and not held:  # nothing to carve anew here
        raise DataError(f"{Path(root)} has no {split} split (layout: {layout['kind']})"
                        + (": pass --test-share to hold one out of train" if split == "test"
                           else ""))
    return build_index(root, layout, (split,), holdout).split(split)


def carve_holdout(root, share=HOLDOUT_SHARE, layout=None, test_share=0.0, pattern=None):
    """(val names, test names, warning or None) held out of the train samples by group when
    the layout has no val split (splits.carve): the same on every machine and run."""
    layout = layout or find_layout(root)
    samples = build_index(root, layout, ("train",)).split("train")
    return carve(samples, share, test_share, pattern, where=str(layout_folders(root, layout,
                                                                                "train")[0]))


def list_pairs(root, split):
    """Sorted (name, image, mask) of a split as ROOT's layout holds it (no hold-out)."""
    layout = find_layout(root)
    return build_index(root, layout, (split,)).split(split)
