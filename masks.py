"""Masks on disk -> class ids: reading mask files, deciding once from the train masks how they
encode classes (index, binary, palette, RGB + class table, one-hot, threshold), `decode_mask`,
class tables, and the messages that name a mask whose values fit no class."""
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import (MAX_LISTED, DataError, Problem, format_colors, format_values, name_list,
                   open_image)

CLASS_TABLE_NAME = "classes.json"  # used when no class table is given and ROOT has one
MAX_MASK_VALUE = 65536  # larger single-channel values cannot be class ids (16-bit masks at most)
UNKNOWN = np.iinfo(np.int64).min  # decoded class of a value that fits no class
EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored as shown, 2..8 = flipped and/or rotated
# A value in at least this share of the masks looks like a label for unlabelled pixels (void).
VOID_SHARE = 0.5
# Instance labels: one id per object, so many ids per mask (their median at least this).
INSTANCE_IDS_PER_MASK = 4


@dataclass
class _MaskFile:
    """A mask file as stored: values, Pillow mode, palette, alpha channel, EXIF orientation."""

    array: np.ndarray  # [H,W] values (palette indices for "P"), [H,W,3] colours, or .npy's array
    mode: str
    palette: list = None
    alpha: np.ndarray = None  # [H,W] of RGBA / LA / PA files
    orientation: int = 1


def _read_mask(path):
    """A mask file as stored: [H,W] values (palette indices for "P" mode) or [H,W,3] colours
    from image files, the stored array from .npy; alpha and EXIF orientation kept aside (an
    orientation tag is reported, never applied)."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} cannot be read as .npy ({error}): save it with "
                            f"numpy.save(path, array)") from error
        return _MaskFile(array, f"npy {array.dtype}")
    pil = open_image(path)
    mode, palette, alpha = pil.mode, None, None
    orientation = pil.getexif().get(EXIF_ORIENTATION, 1)
    if mode in ("P", "PA"):
        palette = pil.getpalette() or []
    elif mode not in ("1", "L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
        pil = pil.convert("RGB")
    array = np.asarray(pil)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        alpha = array[..., -1]
    if array.ndim == 3 and mode in ("P", "PA", "LA"):
        array = array[..., 0]  # drop alpha
    elif array.ndim == 3:
        array = array[..., :3]
    return _MaskFile(array, mode, palette, alpha, orientation)


def mask_array(path):
    """A mask file's stored values (what decoding reads), e.g. to compare two masks."""
    return _read_mask(Path(path)).array


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
    is_npy = path.suffix.lower() == ".npy"
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


def summarize_mask(path, image_size):
    """Read one mask and summarise its values; image_size (H, W) orients one-hot masks."""
    stored = _read_mask(path)
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
    return MaskSummary(path, kind, tuple(data.shape[:2]), stored.mode, values, counts,
                       stored.palette, layout, channels, _digest(stored.array),
                       alpha_values if alpha_values is not None and len(alpha_values) > 1
                       else None, stored.orientation)


def load_class_table(path):
    """Class table JSON -> list of {"name", "color" ([r,g,b] or None), "void"}.

    Accepts {"classes": [...]} or a bare list of {"name": ..., "color": [r, g, b],
    "void": true|false}.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"class table {path} cannot be read ({error}): it is a JSON file "
                        f'{{"classes": [{{"name": "sky", "color": [128, 128, 128]}}, ...]}}'
                        ) from error
    if isinstance(entries, dict):
        entries = entries.get("classes")
    if not isinstance(entries, list) or not entries:
        raise DataError(f'class table {path} has no class list: write {{"classes": [{{"name": '
                        f'"sky", "color": [128, 128, 128]}}, ...]}}')
    return [_class_entry(entry, index, path) for index, entry in enumerate(entries)]


def _class_entry(entry, index, path):
    """One validated class table entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError(f"class table {path}: entry {index} ({entry!r}) needs a \"name\" string")
    color = entry.get("color")
    if color is not None and not (isinstance(color, list) and len(color) == 3 and all(
            isinstance(c, int) and 0 <= c <= 255 for c in color)):
        raise DataError(f"class table {path}: entry {index} ({entry['name']}) has colour "
                        f"{color!r}; write three integers 0..255, e.g. [128, 64, 128]")
    return {"name": entry["name"], "color": color, "void": bool(entry.get("void", False))}


def _table_classes(table):
    """The non-void entries of a class table: class id i is the i-th of them."""
    return [entry for entry in table if not entry["void"]]


def _voc_color(index):
    """The PASCAL VOC colour map: distinct, deterministic colours for class ids."""
    red = green = blue = 0
    for bit in range(8):
        red |= ((index >> 0) & 1) << (7 - bit)
        green |= ((index >> 1) & 1) << (7 - bit)
        blue |= ((index >> 2) & 1) << (7 - bit)
        index >>= 3
    return [red, green, blue]


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


def _value_classes(values, kind, decoding, ignore_index):
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
    path = Path(path)
    array = _read_mask(path).array
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


def _jpeg_like(values, counts):
    """True when 0 and the top value hold most pixels and many values lie between: JPEG
    compression or anti-aliasing of a two-level mask. JPEG also rings (0 -> 0..7, 255 ->
    248..254), which small or thin masks show in most pixels; index masks with a void value
    never hold values just below the top."""
    if len(values) <= 3:
        return False
    top = 65535 if values[-1] > 255 else 255
    margin, total = (top + 1) // 32, counts.sum()
    extremes = counts[values == 0].sum() + counts[values == top].sum()
    if values[0] == 0 and values[-1] == top and extremes >= 0.8 * total:
        return True
    near = counts[values < margin].sum() + counts[values > top - margin].sum()
    rings = ((values > top - margin) & (values < top)).any()
    return bool(rings and values[0] < margin and near >= 0.8 * total)


def _jpeg_advice(values):
    """Cause and fix for two-level masks with values in between."""
    top = 65535 if values[-1] > 255 else 255
    return ("looks like JPEG or anti-aliased masks; save masks as PNG with class indices, "
            f"or pass --mask-threshold {top // 2 + 1}")


def _void_hint(unknown, shares):
    """'; V is in 97% of these masks ...: pass --ignore-index V' when the one unknown value
    is in most masks, as a label for unlabelled pixels (void) often is; else ''."""
    if len(unknown) != 1 or shares.get(int(unknown[0]), 0) < VOID_SHARE:
        return ""
    value = int(unknown[0])
    return (f"; {value} is in {shares[value]:.0%} of these masks, as a value for unlabelled "
            f"pixels (void) often is: if it marks them, pass --ignore-index {value} instead")


def _likely_cause(values, counts, unknown, kind, decoding, shares=None):
    """The likely cause and fix for mask values that fit no class (shares: the share of
    masks holding each value, for the void hint)."""
    if kind == "color":
        return "add the missing colours to the class table (or mark them \"void\": true)"
    if kind != "single":
        return "save every mask in the encoding of the train masks"
    if _jpeg_like(values, counts):
        return _jpeg_advice(values)
    if decoding["kind"] == "index" and unknown.min() >= decoding["num_classes"]:
        return (f"ids >= num_classes {decoding['num_classes']}: pass --num-classes "
                f"{int(unknown.max()) + 1} (or a longer class table), or fix the masks"
                f"{_void_hint(unknown, shares or {})}")
    return ("save masks as class ids 0..num_classes-1 (the ignore index marks unlabelled "
            "pixels), or pass --num-classes / --mask-threshold to say how to read them")


def _unknown_parts(summary, decoding, ignore_index, shares=None):
    """(what the mask holds that fits no class, cause and fix), or None when every value fits."""
    classes = _value_classes(summary.values, summary.kind, decoding, ignore_index)
    if not (classes == UNKNOWN).any():
        return None
    unknown = summary.values[classes == UNKNOWN]
    if summary.kind == "color":
        shown = f"colours not in the class table: {format_colors(unknown)}"
    else:
        shown = (f"values {format_values(summary.values)} ({format_values(unknown)} fit no "
                 f"class)")
    return shown, _likely_cause(summary.values, summary.counts, unknown, summary.kind, decoding,
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


def _alpha_advice(summaries):
    """Where the labels are when the colour channels are flat and only alpha varies (some
    annotation tools export masks so), or None."""
    labelled = [summary for summary in summaries if summary.alpha_values is not None]
    if not labelled:
        return None
    first = labelled[0]
    return (f"the labels appear to be in the alpha channel ({len(labelled)} of "
            f"{len(summaries)} masks, e.g. {first.path}: colour channels all "
            f"{int(first.values[0])}, alpha {format_values(first.alpha_values)}), as some "
            f"annotation tools export them: save each mask's alpha channel as the mask, e.g. "
            f"Image.open(path).getchannel(\"A\").save(path) with Pillow")


def _object_ids(summary):
    """Non-zero values of a single-channel mask (objects, if it holds instance labels)."""
    return len(summary.values) - int(len(summary.values) > 0 and summary.values[0] == 0)


def _wide(summary):
    """True for masks stored with more than 8 bits (16-bit PNG/TIFF, wide .npy) or ids > 255."""
    narrow = summary.mode.startswith("npy") and summary.mode.split()[-1] in (
        "uint8", "int8", "bool")
    return ((summary.mode.startswith("I") or summary.mode.startswith("npy")) and not narrow
            or (len(summary.values) > 0 and summary.values[-1] > 255))


def instance_advice(summaries):
    """What to do when single-channel masks look like instance labels (one id per object:
    wide ids, 0 in most masks, many ids per mask), or None."""
    single = [summary for summary in summaries if summary.kind == "single"]
    if not single or not any(_wide(summary) for summary in single):
        return None
    ids = [_object_ids(summary) for summary in single]
    background = sum(summary.values[0] == 0 for summary in single if len(summary.values))
    if np.median(ids) < INSTANCE_IDS_PER_MASK or background < VOID_SHARE * len(single):
        return None
    spread = f"{min(ids)}" if min(ids) == max(ids) else f"{min(ids)}..{max(ids)}"
    return (f"the masks look like instance labels (one id per object: 0 background and "
            f"{spread} object ids per mask, stored as {single[0].mode}), not "
            f"class ids: to segment objects from background, pass --mask-threshold 1 (every "
            f"non-zero id becomes foreground); for a class per object, convert the masks to "
            f"class ids")


def _undecidable(values, counts, ids, summaries):
    """Why single-channel train values cannot be read as class ids (None when they can)."""
    if _jpeg_like(values, counts):
        return _jpeg_advice(values)
    if len(ids) < 2:
        return _alpha_advice(summaries) or (
            "there is only one class to learn; check the masks were exported with their "
            "labels, or pass --num-classes")
    if ids[-1] + 1 > 2 * len(ids):
        if len(ids) == 2:
            return (f"two levels {ids[0]} and {ids[1]} are not class ids: pass --mask-threshold "
                    f"{ids[1]} to read them as background/foreground")
        return instance_advice(summaries) or (
            "the values look like grey levels chosen for display, not class ids 0..K-1: "
            "re-save the masks with ids 0, 1, 2, ... (or pass --num-classes if the ids "
            "missing from train are real classes)")
    return None


def _inferred_decoding(summaries, ignore_index, expected):
    """Decoding of single-channel masks from their values, given the expected class count."""
    values, counts = _merged_counts(summaries)
    present = set(values.tolist())
    if _is_binary(present) and expected in (None, 2):
        # 0/255 is binary even when 255 is the ignore index: one class plus void is no task.
        return {"kind": "binary", "num_classes": 2, "foreground_values": [max(present)]}
    source = "palette" if all(summary.mode in ("P", "PA") for summary in summaries) else "values"
    if expected is not None:
        return {"kind": "index", "num_classes": expected, "void_values": [], "source": source}
    ids = sorted(present - {ignore_index})
    reason = _undecidable(values, counts, ids, summaries)
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
    classes = _table_classes(table)
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
    expected = len(_table_classes(class_table)) if class_table else num_classes
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
    if table is not None and len(_table_classes(table)) != found:
        raise DataError(f"class table {table_path} lists {len(_table_classes(table))} classes "
                        f"but the masks have {found} ({describe_decoding(decoding)})")
    if found < 2:
        raise DataError(f"the masks have {found} class: segmentation needs at least 2")
    if 0 <= ignore_index < found:
        raise DataError(f"--ignore-index {ignore_index} is a class id (0..{found - 1}): choose "
                        f"a value outside, e.g. 255 or -100")


def describe_decoding(decoding):
    """One line saying how masks are read."""
    kind, count = decoding["kind"], decoding["num_classes"]
    if kind == "binary":
        return (f"binary masks: 0 -> class 0, {format_values(decoding['foreground_values'])} "
                f"-> class 1")
    if kind == "threshold":
        return (f"single-channel masks thresholded: value >= {decoding['threshold']} -> class 1, "
                f"below -> class 0")
    if kind == "color":
        return (f"RGB colour masks through the class table: {count} class colours, "
                f"{len(decoding['void_colors'])} void colour(s) -> ignore")
    if kind == "onehot":
        return (f"one-hot .npy masks [{', '.join(decoding['layout'])}] with {count} channels -> "
                f"arg-max; no active channel -> ignore")
    source = {"palette": "palette PNG indices", "class_table": "ids named by the class table"}
    void = (f", void ids {format_values(decoding['void_values'])} -> ignore"
            if decoding.get("void_values") else "")
    return (f"index masks ({source.get(decoding.get('source'), 'single-channel values')}): "
            f"class ids 0..{count - 1}{void}")


def class_statistics(summaries, decoding, ignore_index):
    """(pixels of each class, total pixels of the images containing each class, ignored)."""
    count = decoding["num_classes"]
    class_pixels = np.zeros(count, dtype=np.int64)
    image_pixels = np.zeros(count, dtype=np.int64)
    ignored = 0
    for summary in summaries:
        classes = _value_classes(summary.values, summary.kind, decoding, ignore_index)
        known = (classes >= 0) & (classes < count)
        per_class = np.bincount(classes[known], weights=summary.counts[known], minlength=count)
        class_pixels += per_class.astype(np.int64)
        image_pixels[per_class > 0] += summary.size[0] * summary.size[1]
        ignored += int(summary.counts[classes == ignore_index].sum())
    return class_pixels.tolist(), image_pixels.tolist(), ignored


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


def _grouped_problem(entries):
    """One problem for masks with the same fault: the first in full, the count, the others."""
    (_, what, cause), others = entries[0], [entry[0] for entry in entries[1:]]
    text = f"{what}: {cause}" if what else cause  # without `what`, the cause names the file
    if others:
        text += f" (the same in {len(others)} more mask(s): {name_list(others)})"
    return Problem(text, files=len(entries))


def check_masks(summaries, decoding, ignore_index):
    """One problem per kind of fault (values that fit no class, another encoding or layout),
    naming its first mask and counting the masks it covers."""
    groups, shares = {}, _value_shares(summaries)
    for summary in summaries:
        found = _mask_problem(summary, decoding, ignore_index, shares)
        if found:
            groups.setdefault(found[0], []).append((summary.path, *found[1:]))
    problems = [_grouped_problem(entries) for entries in groups.values()]
    if len(problems) > 2 * MAX_LISTED:
        rest = problems[2 * MAX_LISTED:]
        files = sum(problem.files for problem in rest)
        problems = problems[:2 * MAX_LISTED] + [Problem(
            f"... and {len(rest)} more kinds of mask values that fit no class, in {files} "
            f"mask(s)", files=files)]
    return problems


def class_names_colors(decoding, table, palette):
    """Class names and [r, g, b] colours: from the class table, the palette, or defaults."""
    count = decoding["num_classes"]
    if table:
        classes = _table_classes(table)
        return ([entry["name"] for entry in classes],
                [entry["color"] or _voc_color(index) for index, entry in enumerate(classes)])
    names = ["background", "foreground"] if count == 2 else [f"class_{i}" for i in range(count)]
    if decoding.get("source") == "palette" and palette:
        padded = list(palette) + [0] * (3 * count)
        return names, [padded[3 * index:3 * index + 3] for index in range(count)]
    if count == 2:
        return names, [[0, 0, 0], [255, 255, 255]]
    return names, [_voc_color(index) for index in range(count)]
