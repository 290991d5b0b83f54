"""What one read of a dataset found beyond mask decoding, and the report of `python dataset.py
check`: the per-split record (SplitScan), exact duplicates, colour, EXIF orientation, void and
instance-label hints, files the check does not use, and the report's text. dataset.py reads the
files; nothing here reads an image, and only duplicate pairs' masks are read again."""
import re
from collections import Counter
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from segnet.data.pixels.classtable import CLASS_TABLE_NAME
from segnet.data.pixels.images import COLOUR_SPREAD, ORIENTATIONS
from segnet.data.pixels.maskadvice import VOID_SHARE, describe_decoding, instance_advice
from segnet.data.pixels.masks import mask_array
from segnet.utils import MAX_LISTED, Problem, name_list

VOID_NAMES = re.compile(r"void|unlabel|ignore|unknown|undefined|don.?t.?care", re.IGNORECASE)
MAX_SIZES_LISTED = 5  # distinct image sizes listed with their counts (a range beyond)
NOT_DATA = ("readme", "license", "licence")  # files beside the data that need no mention


# ---------------------------------------------------------------------------------------------
# The record of one pass over a split


@dataclass
class SplitScan:
    """What one pass over a split found."""

    pairs: list
    summaries: list = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)
    mask_modes: Counter = field(default_factory=Counter)
    channels: list = field(default_factory=list)  # (image path, its channels: 1 or 3)
    converted: list = field(default_factory=list)  # images converted to in_channels (convert)
    colour: list = field(default_factory=list)  # (path, coloured share, mean spread) of RGB
    grey_rgb: list = field(default_factory=list)  # RGB images with R = G = B
    outside_unit: list = field(default_factory=list)  # float images with values beyond [0, 1]
    oriented: list = field(default_factory=list)  # (image path, EXIF orientation 2..8)
    oriented_masks: list = field(default_factory=list)  # (mask path, EXIF orientation 2..8)
    misnamed: list = field(default_factory=list)  # (image path, the format it holds)
    fingerprints: list = field(default_factory=list)  # (image, mask, image hash, mask hash)
    mismatches: list = field(default_factory=list)  # see mismatch_problems
    problems: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)  # {1 or 3: [sum, sum of squares]} per channel
    pixel_count: int = 0
    value_range: tuple = (np.inf, -np.inf)  # smallest and largest pixel value

    def add_read(self, read):
        """Fold one pair as read (pairread.PairRead), in sample order."""
        if read.image is not None:
            self.add_image(read.image)
        if read.mask is not None:
            self.add_mask(read.image, read.mask)
        self.problems.extend(read.problems)

    def add_image(self, image):
        """Record one image (pairread.ImageStats): its size, mode, channels, EXIF orientation,
        value range and pixel sums (as grey and as RGB: images.channel_sums)."""
        path, (height, width) = image.path, image.size
        self.sizes[(height, width)] += 1
        self.image_modes[image.mode] += 1
        self.channels.append((path, image.channels))
        if image.orientation in ORIENTATIONS:
            self.oriented.append((path, image.orientation))
        if image.content:
            self.misnamed.append((path, image.content))
        if image.low < -1e-6 or image.high > 1 + 1e-6:  # rounding
            self.outside_unit.append(path)
        self.value_range = (min(self.value_range[0], image.low),
                            max(self.value_range[1], image.high))
        self.problems.extend(image.problems)
        for channels, (total, squares) in image.sums.items():
            before = self.sums.get(channels, (0.0, 0.0))
            self.sums[channels] = (before[0] + total, before[1] + squares)
        self.pixel_count += height * width
        if image.spread == ():
            self.grey_rgb.append(path)
        elif image.spread is not None:
            self.colour.append((path, *image.spread))

    def convert(self, in_channels):
        """Mark the images whose channels differ from in_channels as converted."""
        self.converted = [path for path, channels in self.channels if channels != in_channels]

    def colour_share(self):
        """Share of the images that carry real colour (images.COLOUR_SPREAD)."""
        coloured = sum(spread >= COLOUR_SPREAD for _, _, spread in self.colour)
        return coloured / max(len(self.channels), 1)

    def add_mask(self, image, summary):
        """Record a mask with its image (pairread.ImageStats): hashes, the mask's orientation
        tag, the size check."""
        self.mask_modes[summary.mode] += 1
        self.fingerprints.append((image.path, summary.path, image.digest, summary.digest))
        if summary.orientation in ORIENTATIONS:
            self.oriented_masks.append((summary.path, summary.orientation))
        if tuple(summary.size) != tuple(image.size):
            self.mismatches.append((image.path, image.size, summary.path, summary.size,
                                    image.orientation, summary.orientation, image.stored))
        else:
            self.summaries.append(summary)


# ---------------------------------------------------------------------------------------------
# Size mismatches (one problem per kind, with the number of pairs)


def _mismatch_text(image_path, size, mask_path, mask_size, orientation, mask_orientation,
                   stored):
    """A size mismatch's message; an EXIF orientation tag is named when it explains it."""
    text = f"size mismatch: image {image_path} is {size[0]}x{size[1]}"
    mask = f"mask {mask_path} is {mask_size[0]}x{mask_size[1]}"
    if orientation in ORIENTATIONS and tuple(mask_size) == tuple(stored):
        text += (f" as viewers show it (its EXIF orientation tag: stored {stored[0]}x{stored[1]}"
                 f", shown {ORIENTATIONS[orientation]}), {mask}, the stored size")
        if mask_orientation == orientation:
            return text + (": the mask carries the same tag, but masks are read as stored; "
                           "save the mask with its rotation applied "
                           "(PIL.ImageOps.exif_transpose(mask).save(path))")
        return text + (": if the mask was drawn on the stored pixels, remove the image's tag "
                       "(e.g. exiftool -Orientation= FILE); otherwise rotate the mask to the "
                       "image as shown")
    return text + (f", {mask}; a mask must have its image's size (re-export it, or resize it "
                   f"with nearest-neighbour)")


def mismatch_problems(mismatches):
    """One problem per kind of size mismatch (plain, or explained by an orientation tag):
    mismatches are (image path, (H, W) as shown, mask path, mask (H, W), orientation,
    mask orientation, stored (H, W))."""
    groups = {}
    for mismatch in mismatches:
        oriented = mismatch[4] in ORIENTATIONS and tuple(mismatch[3]) == tuple(mismatch[6])
        groups.setdefault(oriented, []).append(mismatch)
    problems = []
    for entries in groups.values():
        text = _mismatch_text(*entries[0])
        if len(entries) > 1:
            text += (f" (the same in {len(entries) - 1} more pair(s): "
                     f"{name_list([entry[0] for entry in entries[1:]])})")
        problems.append(Problem(text, files=2 * len(entries)))
    return problems


# ---------------------------------------------------------------------------------------------
# Warnings and notes


def _colour_warnings(scans, in_channels):
    """Converted channels: real colour discarded (a warning) or grey stored as RGB (a note)."""
    converted = [path for scan in scans.values() for path in scan.converted]
    if not converted:
        return [], []
    if in_channels != 1:
        return [f"{len(converted)} image(s) converted grey -> RGB for in_channels="
                f"{in_channels} (e.g. {converted[0]}); nothing lost"], []
    colour = [entry for scan in scans.values() for entry in scan.colour
              if entry[0] in set(scan.converted)]
    grey = [path for scan in scans.values() for path in scan.grey_rgb]
    warnings, notes = [], []
    if colour:
        share = np.mean([entry[1] for entry in colour])
        spread = np.mean([entry[2] for entry in colour])
        warnings.append(f"{len(colour)} image(s) in colour converted RGB -> grey for in_channels"
                        f"=1 (e.g. {colour[0][0]}): their colour is discarded ({share:.0%} of "
                        f"their pixels have colour; R, G and B differ by {spread:.1%} of the "
                        f"range on average); pass --in-channels 3 to keep it")
    if grey:
        notes.append(f"{len(grey)} image(s) are grey stored as RGB (R = G = B, e.g. {grey[0]}): "
                     f"read as grey, nothing is lost")
    return warnings, notes


def _mask_value_warnings(scans):
    """JPEG masks, and 0/1 masks mixed with 0/255 masks."""
    found = []
    jpeg = [s.path for scan in scans.values() for s in scan.summaries
            if s.path.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg:
        found.append(f"{len(jpeg)} mask(s) are JPEG (e.g. {jpeg[0]}): JPEG is lossy and blurs "
                     f"class boundaries; save masks as PNG")
    levels = [(s.path, set(s.values.tolist())) for scan in scans.values() for s in scan.summaries
              if s.kind == "single"]
    zero_255 = [path for path, values in levels if 255 in values and values <= {0, 255}]
    zero_one = [path for path, values in levels if 1 in values and values <= {0, 1}]
    if zero_255 and zero_one:
        found.append(f"{len(zero_one)} mask(s) are 0/1 (e.g. {zero_one[0]}) and {len(zero_255)} "
                     f"are 0/255 (e.g. {zero_255[0]}): read together, 255 is the ignore value "
                     f"and the 0/255 masks' foreground is not learned; save all masks alike")
    return found


def data_warnings(scans, in_channels):
    """(warnings, notes): things worth knowing that do not stop training. Warnings are also
    shown by training; notes only by the check."""
    warnings, notes = _colour_warnings(scans, in_channels)
    outside = [path for scan in scans.values() for path in scan.outside_unit]
    if outside:
        warnings.append(f"{len(outside)} float image(s) have values outside [0, 1] (e.g. "
                        f"{outside[0]}): brightness/contrast/gamma jitter clamps to [0, 1]; "
                        f"rescale them to [0, 1] or train with --jitter 0")
    misnamed = [entry for scan in scans.values() for entry in scan.misnamed]
    if misnamed:
        named = [f"{path.name} ({kind})" for path, kind in misnamed]
        notes.append(f"{len(misnamed)} image(s) hold another format than their names say, "
                     f"read by their content: {name_list(named)}")
    return warnings + _mask_value_warnings(scans), notes


def _orientation_findings(scans):
    """(warnings, notes, images with a tag) about EXIF orientation tags."""
    images = [entry for scan in scans.values() for entry in scan.oriented]
    masks = [entry for scan in scans.values() for entry in scan.oriented_masks]
    warnings, notes = [], []
    if images:
        path, orientation = images[0]
        notes.append(f"{len(images)} image(s) carry an EXIF orientation tag (e.g. {path}: shown "
                     f"{ORIENTATIONS[orientation]}): they are read as viewers show them, so "
                     f"each mask must match its image as shown (a mask drawn on the stored "
                     f"pixels of a square image would be misaligned without a size mismatch)")
    if masks:
        path, orientation = masks[0]
        warnings.append(f"{len(masks)} mask(s) carry an EXIF orientation tag (e.g. {path}: "
                        f"shown {ORIENTATIONS[orientation]}), but masks are read as stored: "
                        f"save them with the rotation applied "
                        f"(PIL.ImageOps.exif_transpose(mask).save(path))")
    return warnings, notes, len(images)


def _void_finding(info, summaries):
    """(warning, note) when the highest class id looks like a label for unlabelled pixels."""
    decoding = info["mask_decoding"]
    if not decoding or decoding["kind"] != "index" or decoding["num_classes"] < 3:
        return None, None
    top = decoding["num_classes"] - 1
    if decoding.get("source") == "class_table":
        name = info["class_names"][top]
        if not VOID_NAMES.search(name):
            return None, None
        return (f"class {top} is named {name!r} in {info['class_table']}: if it marks "
                f"unlabelled pixels, mark it \"void\": true there (listed after the classes) "
                f"so that no loss or metric counts it"), None
    share = sum(top in summary.values for summary in summaries) / max(len(summaries), 1)
    if share < VOID_SHARE or len(summaries) < 2 or top == info["ignore_index"]:
        return None, None
    return None, (f"the highest id, {top}, is in {share:.0%} of the train masks, as a value for "
                  f"unlabelled pixels (void) often is: if it marks them, pass --ignore-index "
                  f"{top} (then {top} classes, 0..{top - 1})")


def unused_paths(root, layout, table_path, hidden):
    """Folders and files under ROOT that the check does not read (relative to ROOT): beside
    the layout's folders and beside images/ and masks/ in a split folder (folders inside the
    data folders are read: subfolders pair by relative path). hidden(path): files left out (dotfiles, Thumbs.db); READMEs and licences
    are left out too."""
    def visible(folder):
        return [path for path in sorted(folder.iterdir()) if not hidden(path)
                and not path.name.lower().startswith(NOT_DATA)] if folder.is_dir() else []

    root = Path(root).resolve()
    data = {Path(folder).resolve() if Path(folder).is_absolute() else root / folder
            for pair in [*layout["folders"].values(), *[[folder] for folder in layout.get(
                "unlabelled", {}).values()]] for folder in pair}
    used = {CLASS_TABLE_NAME, "dataset.json", table_path.name if table_path else None}
    holders = {folder.parent for folder in data if folder != root}  # root/train of train/images
    found = []
    for folder in {root} | {holder for holder in holders if holder != root}:
        found += [path for path in visible(folder) if path.name not in used and path not in data
                  and path not in holders and (path.is_dir() or folder not in data)]
    return sorted(str(path.relative_to(root)) + ("/" if path.is_dir() else "")
                  for path in found if path.is_relative_to(root))


# ---------------------------------------------------------------------------------------------
# Exact duplicates: identical decoded pixels


def _duplicate_pairs(scans):
    """(within one split: [(first, copy)], across splits: [(first, copy)]) of images with
    identical pixels; entries are (split, image, mask, mask hash)."""
    groups = {}
    for split, scan in scans.items():
        for image, mask, image_digest, mask_digest in scan.fingerprints:
            groups.setdefault(image_digest, []).append((split, image, mask, mask_digest))
    within, across = [], []
    for group in groups.values():
        firsts = {}
        for entry in group:
            first = firsts.setdefault(entry[0], entry)
            if first is not entry:
                within.append((first, entry))
            elif entry[0] != group[0][0]:
                across.append((group[0], entry))
    return within, across


def _mask_difference(first_mask, other_mask):
    """'a.png and b.png differ in 120 of 4,096 pixels' (both masks read again)."""
    first, other = mask_array(first_mask), mask_array(other_mask)
    if first.shape != other.shape:
        return f"{first_mask} and {other_mask} differ in shape"
    differ = first != other
    differ = differ.any(axis=-1) if differ.ndim == 3 else differ
    return f"{first_mask} and {other_mask} differ in {np.count_nonzero(differ):,} of " \
           f"{differ.size:,} pixels"


def _listed(pairs, describe):
    """'x; y; z and 3 more' of the first MAX_LISTED pairs."""
    text = "; ".join(describe(first, copy) for first, copy in pairs[:MAX_LISTED])
    return text + (f" and {len(pairs) - MAX_LISTED} more" if len(pairs) > MAX_LISTED else "")


def _across_warnings(across):
    """One warning per pair of splits sharing images."""
    by_splits, found = {}, []
    for first, copy in across:
        by_splits.setdefault((first[0], copy[0]), []).append((first, copy))
    for (earlier, later), pairs in by_splits.items():
        seen = "trains on" if earlier == "train" else "is chosen by its scores on"
        found.append(f"{len(pairs)} image(s) of {later} are also in {earlier} (identical pixels"
                     f"): {_listed(pairs, lambda a, b: f'{b[1]} = {a[1]}')}; the {later} scores "
                     f"are optimistic (the model {seen} {earlier}): keep each image in one "
                     f"split")
    return found


def _within_text(pairs, detail):
    """'train: a.png = b.png (detail); ...' of duplicate pairs inside one split."""
    return _listed(pairs, lambda a, b: f"{a[0]}: {b[1]} = {a[1]}{detail(a, b)}")


def duplicate_findings(scans):
    """(warnings, notes, counts) of exact duplicate images, found by their pixel hashes: the
    same image with different masks, the same image in two splits, and plain copies."""
    within, across = _duplicate_pairs(scans)
    differ = [(first, copy) for first, copy in within if first[3] != copy[3]]
    same = [(first, copy) for first, copy in within if first[3] == copy[3]]
    warnings, notes = _across_warnings(across), []
    if differ:
        listed = _within_text(differ, lambda a, b: f" ({_mask_difference(a[2], b[2])})")
        warnings.insert(0, f"{len(differ)} image(s) appear twice in a split with different "
                           f"masks: {listed}; one labelling is wrong or the task is ambiguous: "
                           f"fix the masks or keep one pair")
    if same:
        notes.append(f"{len(same)} image(s) appear twice in a split with the same mask: "
                     f"{_within_text(same, lambda a, b: '')}; each counts twice in training and "
                     f"scoring")
    splits = Counter(f"{first[0]}/{copy[0]}" for first, copy in across)
    counts = {"same_mask": len(same), "different_masks": len(differ),
              "across_splits": dict(splits)}
    return warnings, notes, counts


def add_findings(info, scans, unused):
    """Add duplicates, orientation tags, void and instance hints and the unused paths to info
    (warnings, notes, duplicates, exif_oriented, unused)."""
    warnings, notes, info["duplicates"] = duplicate_findings(scans)
    more_warnings, more_notes, info["exif_oriented"] = _orientation_findings(scans)
    warnings, notes = warnings + more_warnings, notes + more_notes
    train = scans["train"].summaries if "train" in scans else []
    void_warning, void_note = _void_finding(info, train) if info["mask_decoding"] else (None, None)
    instance = instance_advice(train) if info["mask_decoding"] and info["mask_decoding"][
        "kind"] == "index" else None
    if instance:
        warnings.append(f"read as {info['num_classes']} classes, but {instance}")
    warnings += [void_warning] if void_warning else []
    notes += [void_note] if void_note else []
    if unused:
        notes.append(f"not read by the check or by training: {name_list(unused)}")
    info["unused"] = unused
    info["warnings"].extend(warnings)
    info["notes"].extend(notes)


# ---------------------------------------------------------------------------------------------
# The report


def size_summary(sizes):
    """{"min": [h, w], "max": [h, w], "distinct": n, "most_common": [h, w], "counts": [[h, w,
    images], ...] of every size, most common first} of a split."""
    if not sizes:
        return None
    heights = [size[0] for size in sizes]
    widths = [size[1] for size in sizes]
    return {"min": [min(heights), min(widths)], "max": [max(heights), max(widths)],
            "distinct": len(sizes), "most_common": list(sizes.most_common(1)[0][0]),
            "counts": [[height, width, count] for (height, width), count
                       in sizes.most_common()]}


def _size_text(sizes):
    """'512x512', or 'H range x W range (n sizes)' for mixed sizes."""
    if sizes is None:
        return "-"
    if sizes["distinct"] == 1:
        return f"{sizes['min'][0]}x{sizes['min'][1]}"
    return (f"{sizes['min'][0]}..{sizes['max'][0]} x {sizes['min'][1]}..{sizes['max'][1]} "
            f"({sizes['distinct']} sizes)")


def _size_lines(info):
    """'  train sizes: 512x512 (10), 632x761 (3)' for splits with 2..5 distinct sizes."""
    lines = []
    for split, sizes in info["image_sizes"].items():
        if sizes and 1 < sizes["distinct"] <= MAX_SIZES_LISTED:
            lines.append(f"  {split} sizes: " + ", ".join(
                f"{height}x{width} ({count})" for height, width, count in sizes["counts"]))
    return lines


def _modes_text(modes):
    """'L 20, RGB 2'."""
    return ", ".join(f"{mode} {count}" for mode, count in sorted(modes.items())) or "-"


def _decoding_line(info):
    """How masks are read, and what the ignore index does (binary 0/255 said plainly)."""
    decoding = info["mask_decoding"]
    table = f" (names from {info['class_table']})" if info["class_table"] else ""
    line = f"masks: {describe_decoding(decoding)}{table}"
    if decoding["kind"] == "binary" and info["ignore_index"] in decoding["foreground_values"]:
        return (line + f"; in two-level masks {info['ignore_index']} is the foreground, not the "
                f"ignore index, so no pixel is ignored")
    return line + f"; ignore index {info['ignore_index']}: {info['ignore_pixels']:,} train pixels"


def _duplicates_line(info):
    """'duplicate images (identical pixels): none' or the counts."""
    counts = info.get("duplicates")
    if counts is None:
        return []
    parts = [f"{counts['different_masks']} within a split with different masks"] * bool(
        counts["different_masks"]) + [f"{counts['same_mask']} within a split with the same "
                                      f"mask"] * bool(counts["same_mask"])
    parts += [f"{count} across {splits}" for splits, count in counts["across_splits"].items()]
    return [f"duplicate images (identical pixels): {', '.join(parts) or 'none'}"]


def report_lines(info):
    """The check report (without problems) as lines of text."""
    benchmark = (info.get("layout") or {}).get("benchmark")
    lines = ([f"{benchmark['name']}: {benchmark['convention']}"] if benchmark else []) + [
             f"dataset {info['root']}", *info.get("layout_lines", []),
             f"{'split':<7}{'pairs':>6}  {'image size (HxW)':<30}{'image modes':<16}mask modes"]
    for split, count in info["splits"].items():
        lines.append(f"{split:<7}{count:>6}  {_size_text(info['image_sizes'][split]):<30}"
                     f"{_modes_text(info['image_modes'][split]):<16}"
                     f"{_modes_text(info['mask_modes'][split])}")
    lines.extend(_size_lines(info))
    if info["normalization"]:
        lines.append(f"in_channels {info['in_channels']} (colour in "
                     f"{info.get('colour_share', 0):.0%} of the train images); train mean "
                     f"{info['normalization']['mean']}, std {info['normalization']['std']}")
    if info.get("holdout"):
        lines.append(f"no val/ split: {len(info['holdout'])} train images held out for "
                     f"validation (by a hash of the file name, whole stacks and groups)")
    if (info.get("layout") or {}).get("test_holdout"):
        lines.append(f"no test/ split: {len(info['layout']['test_holdout'])} train images held "
                     f"out for testing (--test-share; config.json lists them)")
    if info["mask_decoding"]:
        lines.append(_decoding_line(info))
        lines.extend(_class_lines(info))
    lines.extend(_duplicates_line(info))
    lines.extend(f"note: {message}" for message in info.get("notes", []))
    lines.extend(f"warning: {message}" for message in info["warnings"])
    return lines


def _class_lines(info):
    """Per-class train pixel counts, shares and the number of train images containing it."""
    total = max(sum(info["class_pixels"]), 1)
    lines = [f"  {'id':>3} {'class':<16}{'train pixels':>14}{'share':>8}{'image pixels':>14}"]
    for index, name in enumerate(info["class_names"]):
        pixels = info["class_pixels"][index]
        lines.append(f"  {index:>3} {name:<16}{pixels:>14,}{pixels / total:>8.1%}"
                     f"{info['class_image_pixels'][index]:>14,}")
    return lines


def problems_line(problems):
    """'no problems: ready to train', or the count of problems and the files each covers."""
    if not problems:
        return "no problems: ready to train"
    files = [getattr(problem, "files", 1) for problem in problems]
    if max(files) <= 1:
        return f"{len(problems)} problem(s)"
    counts = [str(count) for count in files]
    listed = counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " and " + counts[-1]
    return f"{len(problems)} problem(s), covering {listed} file(s)"
