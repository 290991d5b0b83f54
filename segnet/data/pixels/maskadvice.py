"""What mask values say to the user: the likely cause and fix when they fit no class (JPEG or
anti-aliased masks, a void value, labels in the alpha channel, instance labels), one problem for
masks with the same fault, and a decoding described in one line. masks.py decides; this module
words it."""
import numpy as np

from segnet.utils import Problem, format_values, name_list

# A value in at least this share of the masks looks like a label for unlabelled pixels (void).
VOID_SHARE = 0.5
# Instance labels: one id per object, so many ids per mask (their median at least this).
INSTANCE_IDS_PER_MASK = 4


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


def likely_cause(values, counts, unknown, kind, decoding, shares=None):
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


def undecidable(values, counts, ids, summaries):
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


def grouped_problem(entries):
    """One problem for masks with the same fault: the first in full, the count, the others."""
    (_, what, cause), others = entries[0], [entry[0] for entry in entries[1:]]
    text = f"{what}: {cause}" if what else cause  # without `what`, the cause names the file
    if others:
        text += f" (the same in {len(others)} more mask(s): {name_list(others)})"
    return Problem(text, files=len(entries))
