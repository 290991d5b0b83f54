"""Masks on disk -> class ids: reading mask files, deciding once from the train masks how they
encode classes (index, binary, palette, RGB + class table, one-hot, threshold), `decode_mask`,
and the problems of masks whose values fit no class (their wording: maskadvice.py; class
tables: classtable.py)."""
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Moved to classtable.py and maskadvice.py in the split by job; importable from here too.
from segnet.data.pixels.classtable import (CLASS_TABLE_NAME, class_names_colors,  # noqa: F401
                                    load_class_table, table_classes)
from segnet.data.pixels.maskfiles import is_jpeg, mask_array, read_mask_file  # noqa: F401
from segnet.data.pixels.stacks import as_source
from segnet.data.pixels.maskadvice import (INSTANCE_IDS_PER_MASK, VOID_SHARE,  # noqa: F401
                                    describe_decoding, grouped_problem, instance_advice,
                                    likely_cause, undecidable)
from segnet.utils import MAX_LISTED, DataError, Problem, format_colors, format_values

MAX_MASK_VALUE = 65536  # larger single-channel values cannot be class ids (16-bit masks at most)
UNKNOWN = np.iinfo(np.int64).min  # decoded class of a value that fits no class
# JPEG masks of two levels (Kvasir-SEG): this share of the pixels near 0 or 255, read at 128.
TWO_LEVEL_SHARE = 0.95
JPEG_MIDPOINT = 128


def _digest(array):
    """A hash of an array's values and shape: equal for identical masks."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha1(f"{array.shape} {array.dtype}".encode())
    digest.update(array.data)
    return digest.hexdigest()


def _as_ids(array, path):
    """A 2-D mask as int64 values; DataError for non-integer or negative values."""
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path} has dtype {array.dtype}: masks hold integer class ids; save "
                        f"them as integers")
    if array.dtype.kind == "f":
        finite = np.isfinite(array).all()
        if not finite or (array != np.round(array)).any():
            raise DataError(f"{path} has non-integer values: masks hold integer class ids; save "
                            f"them as integers (or pass --mask-threshold for soft masks)")
        if array.size and np.abs(array).max() >= 2 ** 62:
            raise DataError(f"{path} has values up to {np.abs(array).max():g}: too large for "
                            f"class ids; save masks as class ids 0..num_classes-1")
    ids = array.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise DataError(f"{path} has negative values (min {ids.min()}): class ids start at 0; "
                        f"mark unlabelled pixels with the ignore index (--ignore-index)")
    return ids


def _classify_mask(array, path):
    """("single", int64 [H,W] values), ("color", int64 [H,W] packed 0xRRGGBB) or
    ("onehot", [H,W,C] or [C,H,W] array from .npy)."""
    is_npy = str(path).lower().endswith(".npy")
    if is_npy and array.ndim == 3 and 1 in (array.shape[0], array.shape[2]):
        array = array.squeeze(0) if array.shape[0] == 1 else array[..., 0]
    if array.ndim == 2:
        return "single", _as_ids(array, path)
    if is_npy and array.ndim == 3:
        return "onehot", array
    if array.ndim == 3 and array.shape[2] == 3:
        if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
            return "single", _as_ids(array[..., 0], path)  # grey values saved as RGB
        rgb = array.astype(np.int64)
        return "color", (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    raise DataError(f"{path} has shape {list(array.shape)}: a mask is [H,W] class ids, [H,W,3] "
                    f"colours, or a .npy one-hot [H,W,C] / [C,H,W]")


def _onehot_layout(shape, image_size, path):
    """"HWC" or "CHW": which axes of a one-hot mask match the image size (H, W)."""
    if tuple(shape[:2]) == tuple(image_size):
        return "HWC"
    if tuple(shape[1:]) == tuple(image_size):
        return "CHW"
    raise DataError(f"{path} has shape {list(shape)}, which is neither [H,W,C] nor [C,H,W] for "
                    f"its image of {image_size[0]}x{image_size[1]}: the sizes must match")


def _decode_onehot(array, layout, ignore_index, path):
    """One channel per class -> arg-max class id; a pixel with no active channel -> ignore."""
    channels_first = array.transpose(2, 0, 1) if layout == "HWC" else array
    if channels_first.dtype.kind not in "biuf":
        raise DataError(f"{path} has dtype {array.dtype}: one-hot masks hold 0/1 or [0,1] values")
    low, high = channels_first.min(), channels_first.max()
    if not (0 <= low and high <= 1):
        raise DataError(f"{path} has values in [{low}, {high}]: one-hot masks hold values in "
                        f"[0, 1] (one channel per class)")
    top = channels_first.max(axis=0)
    # Two channels sharing the top value: arg-max would pick the lower id without saying so.
    ties = np.count_nonzero(channels_first == top, axis=0) > 1
    ties &= top > 0
    if ties.any():
        row, col = np.argwhere(ties)[0]
        raise DataError(f"{path} has {np.count_nonzero(ties)} pixels with more than one active "
                        f"channel (e.g. row {row}, column {col}): a one-hot mask gives each "
                        f"pixel one class; fix the overlapping channels")
    ids = channels_first.argmax(axis=0).astype(np.int64)
    ids[top <= 0] = ignore_index
    return ids


def _value_counts(data):
    """(distinct values, pixel count of each) of an int64 array (values may be -1)."""
    flat = data.ravel()
    if flat.size and flat.min() >= -1 and flat.max() < MAX_MASK_VALUE:
        counts = np.bincount(flat + 1)
        values = np.flatnonzero(counts)
        return values - 1, counts[values]
    return np.unique(flat, return_counts=True)


@dataclass
class MaskSummary:
    """What one mask holds, from a single read: enough to decide and validate the decoding."""

    path: Path
    kind: str  # "single" (class ids or grey levels), "color" (RGB) or "onehot" (.npy channels)
    size: tuple  # (H, W)
    mode: str
    values: np.ndarray  # distinct values (packed colours; onehot: class ids, -1 = none active)
    counts: np.ndarray  # pixels of each value
    palette: list = None
    layout: str = None  # onehot: "HWC" or "CHW"
    channels: int = 0  # onehot: number of classes
    digest: str = None  # hash of the stored values: equal for identical masks
    alpha_values: np.ndarray = None  # distinct alpha values when only alpha varies
    orientation: int = 1  # EXIF orientation tag of the file (1: none); masks are read as stored
    halves: np.ndarray = None  # [4, len(values)]: pixels in the top, bottom, left, right halves
    edges: np.ndarray = None  # [len(values)]: 4-neighbour edges to a pixel of another value
    name: str = None  # the sample's name (the image stem; a stack's page: stem@page)


def summarize_mask(path, image_size):
    """Read one mask and summarise its values; image_size (H, W) orients one-hot masks."""
    stored = read_mask_file(path)
    kind, data = _classify_mask(stored.array, path)
    layout, channels = None, 0
    if kind == "onehot":
        layout = _onehot_layout(data.shape, image_size, path)
        channels = data.shape[2] if layout == "HWC" else data.shape[0]
        data = _decode_onehot(data, layout, -1, path)
    values, counts = _value_counts(data)
    alpha_values = None
    if stored.alpha is not None and kind == "single" and len(values) == 1:
        alpha_values = np.unique(stored.alpha)  # colour channels flat: labels may be in alpha
    halves, edges = mask_geometry(data, values)
    return MaskSummary(path, kind, tuple(data.shape[:2]), stored.mode, values, counts,
                       stored.palette, layout, channels, _digest(stored.array),
                       alpha_values if alpha_values is not None and len(alpha_values) > 1
                       else None, stored.orientation, halves, edges)


def mask_geometry(data, values):
    """Where each distinct value of a label array [H, W] lies, for the plan (labelstats.py):
    (halves int64 [4, len(values)]: its pixels in the top, bottom, left and right halves (a
    middle row or column left out), edges int64 [len(values)]: 4-neighbour pairs it shares
    with another value, the length of its boundaries)."""
    index = np.searchsorted(values, data)
    height, width, count = index.shape[0], index.shape[1], len(values)
    parts = (index[:height // 2], index[height - height // 2:], index[:, :width // 2],
             index[:, width - width // 2:])
    halves = np.stack([np.bincount(part.ravel(), minlength=count) for part in parts])
    edges = np.zeros(count, dtype=np.int64)
    for first, second in ((index[:, 1:], index[:, :-1]), (index[1:], index[:-1])):
        differ = first != second
        edges += np.bincount(first[differ], minlength=count)
        edges += np.bincount(second[differ], minlength=count)
    return halves, edges


def _pack(color):
    """[r, g, b] -> 0xRRGGBB."""
    return (color[0] << 16) | (color[1] << 8) | color[2]


def _lookup_table(decoding, ignore_index, top):
    """int64 table: single-channel value -> class id (ignore_index for void, UNKNOWN for values
    that fit no class). Covers 0..top; the last slot stays UNKNOWN for anything larger."""
    size = min(max(top, decoding["num_classes"], ignore_index if ignore_index >= 0 else 0) + 2,
               MAX_MASK_VALUE + 1)
    lut = np.full(size, UNKNOWN, dtype=np.int64)
    if decoding["kind"] == "binary":
        lut[0] = 0
        lut[decoding["foreground_values"]] = 1
    elif decoding.get("value_map"):  # a benchmark's ids (Cityscapes' labelIds): the rest void
        lut[:-1] = ignore_index
        for value, class_id in decoding["value_map"]:
            if value < size - 1:
                lut[value] = class_id
    else:  # index
        lut[:decoding["num_classes"]] = np.arange(decoding["num_classes"])
        lut[decoding.get("void_values", [])] = ignore_index
    if 0 <= ignore_index < size - 1 and lut[ignore_index] == UNKNOWN:
        lut[ignore_index] = ignore_index
    lut[-1] = UNKNOWN
    return lut


def _color_classes(packed, decoding, ignore_index):
    """Class id of each packed colour (ignore_index for void colours, UNKNOWN otherwise)."""
    classes = {_pack(color): index for index, color in enumerate(decoding["colors"])}
    classes.update({_pack(color): ignore_index for color in decoding["void_colors"]})
    return np.array([classes.get(int(value), UNKNOWN) for value in packed], dtype=np.int64)


def value_classes(values, kind, decoding, ignore_index):
    """Class id of each distinct value of a mask of this kind (UNKNOWN: fits no class)."""
    if kind != _expected_kind(decoding):
        return np.full(len(values), UNKNOWN, dtype=np.int64)
    if decoding["kind"] == "onehot":
        return np.where(values < 0, ignore_index, values)
    if decoding["kind"] == "color":
        return _color_classes(values, decoding, ignore_index)
    if decoding["kind"] == "threshold":
        return (values >= decoding["threshold"]).astype(np.int64)
    lut = _lookup_table(decoding, ignore_index, int(values.max(initial=0)))
    return lut[np.minimum(values, lut.size - 1)]


def _expected_kind(decoding):
    """The mask kind (see _classify_mask) a decoding reads."""
    return {"color": "color", "onehot": "onehot"}.get(decoding["kind"], "single")


def decode_mask(path, mask_decoding, ignore_index=255):
    """Mask file -> int64 [H,W] of class ids 0..num_classes-1 or ignore_index.

    mask_decoding comes from scan_dataset (info["mask_decoding"]); values that fit no class raise
    DataError naming the file, never map silently to a class.
    """
    path = as_source(path)
    array = read_mask_file(path).array
    kind, data = _classify_mask(array, path)
    if kind != _expected_kind(mask_decoding):
        raise DataError(_kind_mismatch(path, kind, mask_decoding))
    if kind == "onehot":
        channels = data.shape[2] if mask_decoding["layout"] == "HWC" else data.shape[0]
        if channels != mask_decoding["channels"]:
            raise DataError(f"{path} has {channels} one-hot channels, the train masks have "
                            f"{mask_decoding['channels']}")
        return _decode_onehot(data, mask_decoding["layout"], ignore_index, path)
    if kind == "color":
        values, inverse = np.unique(data, return_inverse=True)
        classes = _color_classes(values, mask_decoding, ignore_index)[inverse.reshape(data.shape)]
    elif mask_decoding["kind"] == "threshold":
        return (data >= mask_decoding["threshold"]).astype(np.int64)
    else:
        lut = _lookup_table(mask_decoding, ignore_index, int(data.max(initial=0)))
        classes = lut[np.minimum(data, lut.size - 1)]
    if (classes == UNKNOWN).any():
        values, counts = _value_counts(data)
        raise DataError(_unknown_values_message(path, kind, values, counts, mask_decoding,
                                                ignore_index))
    return classes


def _kind_mismatch(path, kind, decoding):
    """Message for a mask whose encoding differs from the train masks'."""
    names = {"single": "single-channel", "color": "RGB colour", "onehot": "one-hot .npy"}
    return (f"{path} is a {names[kind]} mask but the train masks are "
            f"{names[_expected_kind(decoding)]}: save every mask in one encoding")


def _unknown_parts(summary, decoding, ignore_index, shares=None):
    """(what the mask holds that fits no class, cause and fix), or None when every value fits."""
    classes = value_classes(summary.values, summary.kind, decoding, ignore_index)
    if not (classes == UNKNOWN).any():
        return None
    unknown = summary.values[classes == UNKNOWN]
    if summary.kind == "color":
        shown = f"colours not in the class table: {format_colors(unknown)}"
    else:
        shown = (f"values {format_values(summary.values)} ({format_values(unknown)} fit no "
                 f"class)")
    return shown, likely_cause(summary.values, summary.counts, unknown, summary.kind, decoding,
                                shares)


def _unknown_values_message(path, kind, values, counts, decoding, ignore_index):
    """'mask P has values {..} ({..} fit no class): cause and fix'."""
    if kind != _expected_kind(decoding):
        return _kind_mismatch(path, kind, decoding)
    shown, cause = _unknown_parts(MaskSummary(path, kind, (0, 0), "", values, counts), decoding,
                                  ignore_index)
    return f"mask {path} has {shown}: {cause}"


def _merged_counts(summaries):
    """Distinct values and their pixel counts over several mask summaries."""
    totals = Counter()
    for summary in summaries:
        totals.update(dict(zip(summary.values.tolist(), summary.counts.tolist())))
    values = sorted(totals)
    return (np.array(values, dtype=np.int64),
            np.array([totals[value] for value in values], dtype=np.int64))


def _is_binary(present):
    """{0, 255} or {0, 1} (either alone counts too): a two-level mask."""
    return bool(present) and (present <= {0, 1} or present <= {0, 255}) and present != {0}


def two_levels(values, counts):
    """Whether 8-bit grey values lie near 0 and near 255 only, both present, but for JPEG's
    ringing at the edges (TWO_LEVEL_SHARE of the pixels at the extremes)."""
    if not len(values) or values.max() > 255 or len(values) <= 2:
        return False
    low, high = counts[values < 64].sum(), counts[values >= 192].sum()
    return bool(low and high and (low + high) >= TWO_LEVEL_SHARE * counts.sum())


def _inferred_decoding(summaries, ignore_index, expected):
    """Decoding of single-channel masks from their values, given the expected class count."""
    values, counts = _merged_counts(summaries)
    present = set(values.tolist())
    if expected in (None, 2) and all(is_jpeg(summary.path) for summary in summaries) and (
            two_levels(values, counts)):
        return {"kind": "threshold", "num_classes": 2, "threshold": JPEG_MIDPOINT,
                "source": "two-level JPEG"}
    if _is_binary(present) and expected in (None, 2):
        # 0/255 is binary even when 255 is the ignore index: one class plus void is no task.
        return {"kind": "binary", "num_classes": 2, "foreground_values": [max(present)]}
    source = "palette" if all(summary.mode in ("P", "PA") for summary in summaries) else "values"
    if expected is not None:
        return {"kind": "index", "num_classes": expected, "void_values": [], "source": source}
    ids = sorted(present - {ignore_index})
    reason = undecidable(values, counts, ids, summaries)
    if reason:
        worst = sorted(summaries, key=lambda summary: -len(summary.values))
        together = (f" (all {len(worst)} train masks together: {format_values(values)})"
                    if len(worst) > 1 else "")
        raise DataError(Problem(f"mask {worst[0].path} has values "
                                f"{format_values(worst[0].values)}{together}: {reason}",
                                files=len(summaries)))
    return {"kind": "index", "num_classes": ids[-1] + 1, "void_values": [], "source": source}


def _color_decoding(summaries, table):
    """Decoding of RGB colour masks through the class table."""
    if table is None:
        values, _ = _merged_counts(summaries)
        raise DataError(f"train masks are RGB colour masks (e.g. {summaries[0].path}; "
                        f"{len(values)} colours: {format_colors(values)}): pass --class-table "
                        f"classes.json listing each class's name and colour")
    without = [entry["name"] for entry in table if entry["color"] is None]
    if without:
        raise DataError(f"class table entries {without} have no colour: RGB masks need one "
                        f"\"color\": [r, g, b] per entry")
    colors = [_pack(entry["color"]) for entry in table]
    if len(set(colors)) < len(colors):
        raise DataError(f"class table lists a colour twice ({format_colors(colors)}): each "
                        f"colour must name one class")
    classes = table_classes(table)
    return {"kind": "color", "num_classes": len(classes),
            "colors": [entry["color"] for entry in classes],
            "void_colors": [entry["color"] for entry in table if entry["void"]]}


def _onehot_decoding(summaries):
    """Decoding of .npy one-hot masks: one layout and channel count for all of them."""
    layouts = Counter((summary.layout, summary.channels) for summary in summaries)
    if len(layouts) > 1:
        examples = [f"{count} as {layout} with {channels} channels (e.g. "
                    f"{next(s.path for s in summaries if (s.layout, s.channels) == key)})"
                    for key, count in layouts.items() for layout, channels in [key]]
        raise DataError("one-hot train masks differ in layout or channels: "
                        + ", ".join(examples) + "; save them all alike")
    layout, channels = next(iter(layouts))
    return {"kind": "onehot", "num_classes": channels, "layout": layout, "channels": channels}


def _table_index_decoding(decoding, table):
    """Index masks with a class table: void entries (listed after the classes) are void ids."""
    void_values = [index for index, entry in enumerate(table) if entry["void"]]
    if void_values and min(void_values) < decoding["num_classes"]:
        raise DataError("class table: for index masks, list void entries after all classes "
                        "(class id i is the i-th entry)")
    return dict(decoding, void_values=void_values, source="class_table")


def infer_mask_decoding(summaries, ignore_index=255, num_classes=None, class_table=None,
                        mask_threshold=None):
    """Decide from the train masks' summaries how every mask is decoded (JSON-able dict).

    class_table is a loaded table (load_class_table). DataError when the values fit no encoding.
    """
    kinds = Counter(summary.kind for summary in summaries)
    if len(kinds) > 1:
        examples = [f"{count} {kind} (e.g. {next(s.path for s in summaries if s.kind == kind)})"
                    for kind, count in kinds.items()]
        raise DataError("train masks mix encodings: " + ", ".join(examples)
                        + "; save every mask in one encoding")
    kind = next(iter(kinds))
    if mask_threshold is not None:
        if kind != "single":
            raise DataError(f"--mask-threshold reads single-channel masks, the train masks are "
                            f"{kind} (e.g. {summaries[0].path})")
        return {"kind": "threshold", "num_classes": 2, "threshold": int(mask_threshold)}
    if kind == "color":
        return _color_decoding(summaries, class_table)
    if kind == "onehot":
        return _onehot_decoding(summaries)
    expected = len(table_classes(class_table)) if class_table else num_classes
    decoding = _inferred_decoding(summaries, ignore_index, expected)
    if class_table and decoding["kind"] == "index":
        decoding = _table_index_decoding(decoding, class_table)
    return decoding


def check_class_count(decoding, num_classes, table, table_path, ignore_index):
    """DataError when --num-classes, the class table and the masks disagree."""
    found = decoding["num_classes"]
    if num_classes is not None and num_classes != found:
        raise DataError(f"--num-classes {num_classes} but the masks have {found} classes "
                        f"({describe_decoding(decoding)})")
    if table is not None and len(table_classes(table)) != found:
        raise DataError(f"class table {table_path} lists {len(table_classes(table))} classes "
                        f"but the masks have {found} ({describe_decoding(decoding)})")
    if found < 2:
        raise DataError(f"the masks have {found} class: segmentation needs at least 2")
    if 0 <= ignore_index < found:
        raise DataError(f"--ignore-index {ignore_index} is a class id (0..{found - 1}): choose "
                        f"a value outside, e.g. 255 or -100")


def _value_shares(summaries):
    """{value: share of the masks holding it} of single-channel masks ({} for one mask: a
    share of one says nothing)."""
    holding = Counter(value for summary in summaries if summary.kind == "single"
                      for value in summary.values.tolist())
    return {value: count / len(summaries) for value, count in holding.items()
            if len(summaries) > 1}


def _mask_problem(summary, decoding, ignore_index, shares):
    """(group key, 'what' text, cause and fix) of one mask that does not decode, or None."""
    layout = (summary.layout, summary.channels)
    if summary.kind != _expected_kind(decoding):
        return ("kind", summary.kind), "", _kind_mismatch(summary.path, summary.kind, decoding)
    if decoding["kind"] == "onehot" and layout != (decoding["layout"], decoding["channels"]):
        return (("layout", layout), f"{summary.path} is one-hot {summary.layout} with "
                f"{summary.channels} channels", f"the train masks are {decoding['layout']} with "
                f"{decoding['channels']}: save them all alike")
    parts = _unknown_parts(summary, decoding, ignore_index, shares)
    if parts is None:
        return None
    return ("values", parts[1]), f"mask {summary.path} has {parts[0]}", parts[1]


def check_masks(summaries, decoding, ignore_index):
    """One problem per kind of fault (values that fit no class, another encoding or layout),
    naming its first mask and counting the masks it covers."""
    groups, shares = {}, _value_shares(summaries)
    for summary in summaries:
        found = _mask_problem(summary, decoding, ignore_index, shares)
        if found:
            groups.setdefault(found[0], []).append((summary.path, *found[1:]))
    problems = [grouped_problem(entries) for entries in groups.values()]
    if len(problems) > 2 * MAX_LISTED:
        rest = problems[2 * MAX_LISTED:]
        files = sum(problem.files for problem in rest)
        problems = problems[:2 * MAX_LISTED] + [Problem(
            f"... and {len(rest)} more kinds of mask values that fit no class, in {files} "
            f"mask(s)", files=files)]
    return problems


