"""A dataset's files listed once before the scan reads them: each split's pairing and its one
line, the page counts of its stacks (kept in the layout, so that a later listing does not reopen
every stack), the val and test splits held out of train by group, and the warnings about
splits (one stack carved into blocks, groups found in two splits)."""
from dataclasses import dataclass, field
from pathlib import Path

from segnet.data.files.layouts import carves, describe, layout_folders
from segnet.data.files.pairs import list_samples
from segnet.data.files.splits import HOLDOUT_SHARE, carve, leak_warning, leaking_groups
from segnet.data.pixels.stacks import Page
from segnet.utils import DataError


@dataclass
class Listing:
    """{split: pairs.SplitFiles} of the splits read from folders, {split: [problems]} of those
    that could not be listed, and the lines that say how the files were found."""

    files: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def list_layout(root, layout, splits):
    """List train and the given splits that have folders; record in the layout the suffixes
    that paired each split and the page counts of the stacks."""
    folders = "; ".join(f"{split}: {images}/" + (f" + {masks}/" if masks != images else "")
                        for split, (images, masks) in layout["folders"].items())
    listing = Listing(lines=[f"layout: {describe(layout)} ({folders})"])
    if layout.get("unlabelled"):
        listing.lines.append("unlabelled, not scored: " + ", ".join(
            f"{split}: {folder}/" for split, folder in layout["unlabelled"].items()))
    pages = dict(layout.get("pages") or {})
    layout.setdefault("pairing", {})
    for split in dict.fromkeys(["train", *splits]):
        if carves(layout, split):
            continue
        try:
            found = list_samples(root, split, layout)
        except DataError as error:
            listing.problems[split] = error.problems
            continue
        listing.files[split] = found
        layout["pairing"][split] = list(found.suffixes)
        pages.update(found.pages)
        if found.line:
            listing.lines.append(found.line)
        listing.notes += found.notes
    layout["pages"] = pages
    stacks = [f"{path} {count}" for path, count in pages.items()
              if not _is_mask(root, layout, path)]
    if stacks:
        listing.lines.append(f"stacks (pages): {', '.join(stacks[:8])}"
                             + (f" and {len(stacks) - 8} more" if len(stacks) > 8 else ""))
    return listing


def _is_mask(root, layout, key):
    """Whether a saved page-count key names a file in a masks folder (listed once: images)."""
    for split in layout["folders"]:
        images, masks = (folder.resolve() for folder in layout_folders(root, layout, split))
        if images != masks and (Path(root) / key).resolve().parent == masks:
            return True
    return False


def hold_out(layout, listing, splits, holdout=None):
    """(the val names held out of train, or None; a warning or None). A carved test's names go
    into layout["test_holdout"]; a resumed run's `holdout` and saved test names are kept."""
    val_carved = "val" in splits and carves(layout, "val")
    test_carved = bool(layout.get("test_share")) and carves(layout, "test")
    if "train" not in listing.files or not (val_carved or test_carved):
        return holdout, None
    if (holdout or not val_carved) and (layout.get("test_holdout") or not test_carved):
        return holdout, None
    val, test, warning = carve(listing.files["train"].samples, HOLDOUT_SHARE * val_carved,
                               layout.get("test_share") if test_carved else 0.0,
                               layout.get("group_pattern"), "the train split")
    if test_carved and not layout.get("test_holdout"):
        layout["test_holdout"] = test
    return (holdout or val) if val_carved else None, warning


def layout_warnings(layout, split_samples):
    """Warnings about the splits read from folders (a hold-out takes whole groups): groups
    (stacks, --group-pattern) found in two of them."""
    split_samples = {split: samples for split, samples in split_samples.items()
                     if not carves(layout, split)}
    grouped = layout.get("group_pattern") or any(
        isinstance(image, Page) for samples in split_samples.values() for _, image, _ in samples)
    warning = grouped and leak_warning(leaking_groups(split_samples, layout.get("group_pattern")))
    return [warning] if warning else []
