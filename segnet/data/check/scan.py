"""Scanning a dataset: every pair of the splits read once (image statistics and hashes, mask
summaries), the mask decoding decided from the train masks and checked on every split, and the
info that training, the plan and the check's report take. `python dataset.py check ROOT` prints
it. Every problem with user data is collected and raised as one DataError naming the files."""
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segnet.data.check.checks import (SplitScan, add_findings, data_warnings, mismatch_problems,
                                      size_summary, unused_paths)
from segnet.data.check.roi import region_of_interest
from segnet.data.check.labelstats import class_statistics, label_statistics
from segnet.data.check.pairread import read_pair
from segnet.data.check.readpool import read_in_order
from segnet.data.files.index import build_index, split_pairs
from segnet.data.files.layouts import describe, find_layout, layout_folders, nnunet_class_table
from segnet.data.files.pairs import is_hidden
from segnet.data.pixels.classtable import CLASS_TABLE_NAME, class_names_colors, load_class_table
from segnet.data.pixels.images import colour_channels
from segnet.data.pixels.maskadvice import describe_decoding
from segnet.data.pixels.masks import check_class_count, check_masks, infer_mask_decoding
from segnet.utils import DataError

def scan_split(root, split, progress=False, holdout=None, layout=None, workers=None,
               samples=None):
    """Read every pair (every page of a stack) of one split once: image statistics and hashes,
    mask summaries and problems (checks.SplitScan). samples: the split's, from the index (else
    listed here: holdout, layout as split_pairs takes them); workers: processes reading
    (readpool.read_workers; the scan is the same whatever their number)."""
    scan = SplitScan(samples if samples is not None else split_pairs(root, split, holdout,
                                                                     layout))
    reads = read_in_order(read_pair, scan.pairs, workers)
    for read in tqdm(reads, total=len(scan.pairs), desc=f"checking {split}", leave=False,
                     disable=not progress):
        scan.add_read(read)  # in sample order: problems and sums as one process finds them
    scan.problems.extend(mismatch_problems(scan.mismatches))
    return scan


def _normalization(scan, in_channels):
    """Per-channel mean and std of all pixels of a split (from streamed sums)."""
    total, squares = scan.sums[in_channels]
    mean = total / scan.pixel_count
    variance = np.maximum(squares / scan.pixel_count - np.square(mean), 0.0)
    return {"mean": [round(float(m), 6) for m in mean],
            "std": [round(float(s), 6) for s in np.sqrt(variance)]}


def _resolve_channels(scans, in_channels):
    """(the model's channel count: in_channels, or for "auto" 1 or 3 from the share of train
    images with real colour, images.colour_channels; problems for images that cannot be
    converted to it). Marks the converted images of every scan."""
    train = scans.get("train")
    if in_channels == "auto":
        in_channels = colour_channels(train.colour_share()) if train else 1
    problems = []
    for scan in scans.values():
        scan.convert(in_channels)
        problems += [f"{path} has {channels} channels but in_channels={in_channels}: pass "
                     f"--in-channels {channels}, or convert the image"
                     for path, channels in scan.channels
                     if channels != in_channels and in_channels not in (1, 3)]
    return in_channels, problems


def _check_arguments(in_channels, num_classes, mask_threshold, class_table, splits):
    """DataError for option values that cannot work, whatever the data."""
    if in_channels != "auto" and (not isinstance(in_channels, int) or in_channels < 1):
        raise DataError(f"--in-channels must be 'auto' or an integer >= 1, got "
                        f"{in_channels!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise DataError(f"--num-classes must be an integer >= 2 (binary is 2), got "
                        f"{num_classes!r}")
    if mask_threshold is not None and (not isinstance(mask_threshold, int) or mask_threshold < 1):
        raise DataError(f"--mask-threshold must be an integer >= 1, got {mask_threshold!r}")
    if mask_threshold is not None and class_table is not None:
        raise DataError("pass either --mask-threshold (binary from grey levels) or "
                        "--class-table, not both")
    if "train" not in splits:
        raise DataError(f"splits {list(splits)} must include 'train': the mask decoding and "
                        f"the normalisation come from it")


def _class_table_path(root, class_table):
    """The class table to use: the one given, else ROOT/classes.json if present, else None."""
    if class_table is not None:
        if not Path(class_table).is_file():
            raise DataError(f"class table {class_table} not found")
        return Path(class_table)
    default = root / CLASS_TABLE_NAME
    return default if default.is_file() else None


def _base_info(root, in_channels, ignore_index, table_path, scans, holdout=None, layout=None):
    """The info fields known before the mask decoding is decided."""
    train = scans.get("train")
    return {
        "root": str(root), "in_channels": in_channels, "ignore_index": ignore_index,
        "holdout": holdout, "layout": layout,
        "class_table": str(table_path) if table_path else None,
        "num_classes": None, "class_names": [], "class_colors": [], "mask_decoding": None,
        "normalization": (_normalization(train, in_channels) if train and train.pixel_count
                          and in_channels in train.sums else None),
        "colour_share": round(train.colour_share(), 4) if train else 0.0,
        "intensity_range": ([round(value, 6) for value in train.value_range]
                            if train and train.pixel_count else [0.0, 1.0]),
        "class_pixels": [], "class_image_pixels": [], "ignore_pixels": 0,
        "splits": {split: len(scan.pairs) for split, scan in scans.items()},
        "image_sizes": {split: size_summary(scan.sizes) for split, scan in scans.items()},
        "image_modes": {split: dict(scan.image_modes) for split, scan in scans.items()},
        "mask_modes": {split: dict(scan.mask_modes) for split, scan in scans.items()},
        "rgb_converted": sum(len(scan.converted) for scan in scans.values()),
        **dict(zip(("warnings", "notes"), data_warnings(scans, in_channels), strict=True)),
    }


def _add_decoding(info, scans, table, table_path, num_classes, mask_threshold, convention=None):
    """Decide the decoding from train (a benchmark's convention: its own), validate every split
    with it, count the classes of train into info. Returns the problems found."""
    ignore_index, train = info["ignore_index"], scans["train"].summaries
    try:
        own = convention and mask_threshold is None and table_path is None  # flags win
        decoding = convention if own else infer_mask_decoding(train, ignore_index, num_classes,
                                                              table, mask_threshold)
        if decoding.get("source") == "two-level JPEG":
            info["notes"].append(f"the masks are JPEG with two levels (near 0 and near 255, "
                                 f"JPEG noise between): read as binary at "
                                 f"{decoding['threshold']} (--mask-threshold sets another)")
        check_class_count(decoding, num_classes, table, table_path, ignore_index)
    except DataError as error:  # reported with the others; nothing below can run without it
        return error.problems
    problems = [problem for scan in scans.values()
                for problem in check_masks(scan.summaries, decoding, ignore_index)]
    names, colors = class_names_colors(decoding, table, train[0].palette)
    pixels, image_pixels, ignored = class_statistics(train, decoding, ignore_index)
    info.update(num_classes=decoding["num_classes"], class_names=names, class_colors=colors,
                mask_decoding=decoding, class_pixels=pixels, class_image_pixels=image_pixels,
                ignore_pixels=ignored, **label_statistics(train, decoding, ignore_index))
    if ignored > sum(pixels):
        problems.append(f"{ignored:,} of {ignored + sum(pixels):,} train mask pixels have the "
                        f"ignore value {ignore_index} ({describe_decoding(decoding)}): check "
                        f"--ignore-index and --num-classes (0/255 masks are binary: 2 classes)")
    absent = [names[index] for index, count in enumerate(pixels) if count == 0]
    if absent:
        info["warnings"].append(f"classes {absent} have no pixels in the train masks: the "
                                f"network cannot learn them")
    return problems


def inspect_dataset(root, in_channels=1, num_classes=None, class_table=None, mask_threshold=None,
                    ignore_index=255, splits=("train", "val"), progress=False, holdout=None,
                    layout=None, workers=None, index=None):
    """scan_dataset that returns (info, problems) instead of raising on data problems.

    info holds whatever could be determined (None / empty where a problem prevented it).
    DataError for option values, the class table, and a ROOT whose layout cannot be found.
    """
    root = Path(root)
    _check_arguments(in_channels, num_classes, mask_threshold, class_table, splits)
    index = index or build_index(root, layout or find_layout(root), splits, holdout)
    layout = index.layout
    table_path = _class_table_path(root, class_table)
    benchmark = layout.get("benchmark") or {}
    table = (load_class_table(table_path) if table_path else benchmark.get("classes")
             or nnunet_class_table(root, layout))
    problems = [problem for found in index.problems.values() for problem in found]
    scans = {}
    for split in splits:
        if split not in index.samples:
            if not problems:
                problems.append(f"{root / split / 'images'} not found: the dataset has no "
                                f"{split} split ({describe(layout)}); add one, or pass "
                                f"--test-share to hold one out of train")
            continue  # reported: its files, or those it is held out of, are in doubt
        scans[split] = scan_split(root, split, progress, workers=workers,
                                  samples=index.samples[split])
        problems.extend(scans[split].problems)
    in_channels, found = _resolve_channels(scans, in_channels)
    problems += found
    info = _base_info(root, in_channels, ignore_index, table_path, scans,
                      index.holdout if "val" in scans else None, layout)
    if info["normalization"] and min(info["normalization"]["std"]) == 0:
        problems.append(f"every train image in {layout_folders(root, layout, 'train')[0]} is "
                        f"one flat colour: there is nothing to learn from")
    if "train" in scans and scans["train"].summaries:
        roi_problems, roi_warnings = region_of_interest(root, layout, scans["train"].summaries)
        problems += roi_problems
        info["warnings"] += roi_warnings
        problems += _add_decoding(info, scans, table, table_path, num_classes, mask_threshold,
                                  benchmark.get("decoding"))
    add_findings(info, scans, unused_paths(root, layout, table_path, is_hidden))
    info["warnings"] += index.warnings
    info["layout_lines"] = index.lines
    info["notes"] = list(layout.get("notes", [])) + index.notes + info["notes"]
    return info, problems


def scan_dataset(root, in_channels=1, num_classes=None, class_table=None, mask_threshold=None,
                 ignore_index=255, splits=("train", "val"), progress=False, holdout=None,
                 layout=None, workers=None):
    """Check a dataset before training and describe it; DataError listing every problem.

    Reads every image and mask of the splits once (the masks of duplicate images twice):
    pairing, sizes, empty splits, unreadable files, mask values, pixel hashes. Decides the mask
    decoding from the train masks (index, binary 0/255 or 0/1, palette, RGB + class table,
    one-hot .npy, or --mask-threshold) and validates the other splits with it. Without
    class_table, ROOT/classes.json is used when present. Returns a JSON-able info dict:
    in_channels, ignore_index, num_classes, class_names, class_colors, mask_decoding,
    normalization {mean, std} of the train images, class_pixels and class_image_pixels over
    train (for median-frequency weights), splits {split: count}, image_sizes {split: {min, max,
    distinct, most_common, counts}}, image_modes, mask_modes, rgb_converted, warnings (shown as
    Python warnings here), and, for the check's report: notes, duplicates {same_mask,
    different_masks, across_splits}, exif_oriented (images with an orientation tag), unused
    (paths under ROOT not read); for the plan: colour_share (train images with real colour),
    intensity_range [lowest, highest] train pixel, class_images, class_widths and class_layout
    (labelstats.label_statistics), and holdout: the train stems validated on when ROOT has no
    val/ split (index.carve_holdout, or `holdout` as given: a resumed run's), else None;
    layout: which folders and files make each split (layouts.py: found from ROOT's folder
    names, or the one given: a resumed run's), with the suffixes that paired them, the page
    counts of its stacks and the carved test names.
    in_channels "auto": 3 when enough train images carry colour (images.colour_channels).
    workers: processes reading the files (None: every core, readpool.read_workers); the info
    is the same whatever their number.
    """
    info, problems = inspect_dataset(root, in_channels, num_classes, class_table,
                                     mask_threshold, ignore_index, splits, progress, holdout,
                                     layout, workers)
    if problems:
        raise DataError(problems)
    for message in info["warnings"]:
        warnings.warn(message, stacklevel=2)
    return info


