"""Which image pairs with which mask: by file stem, or by one constant suffix found from the
names (a.png <-> a_mask.png; DRIVE's 21_training <-> 21_manual1, a suffix on both sides),
compared without case, so that .tif/.tiff and .jpg/.jpeg, whose stems are equal, pair alike.
Never by sort order or by prefix: a suffix is taken only where it pairs every file one to one
(Pytorch-UNet #122 paired `1` with `11_mask` by prefix)."""
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from segnet.data.pixels.maskfiles import MaskUnion
from segnet.utils import DataError, Problem, name_list

SEPARATORS = "_-. "  # a found suffix starts at one of these (or is the ending all names share)
# Words that mark the masks' side when both sides of one folder carry a suffix (Cellpose's
# _img / _masks): the side whose suffix holds one of them is the masks.
MASK_WORDS = ("mask", "label", "annot", "seg", "manual", "truth", "gt", "lbl")
CANDIDATES = 6  # suffixes tried a side, most common first


def data_stem(path):
    """The file name without its extension (both parts of .nii.gz)."""
    name = Path(path).name
    return name[:-len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def data_suffix(path):
    """The extension, lower case (.nii.gz whole)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


@dataclass
class Pairing:
    """Pairs [(name, image path, mask path)] sorted by name (the image stem without its
    suffix), and the suffixes that paired them ("" for none)."""

    pairs: list
    image_suffix: str = ""
    mask_suffix: str = ""
    unions: int = 0  # images with several masks, read as their union

    def line(self, where):
        """The one line that says how files were paired, or None for plain stems."""
        if self.unions:
            example = next(mask for _, _, mask in self.pairs if isinstance(mask, MaskUnion))
            return (f"{where}: {self.unions} image(s) have several masks, read as their union "
                    f"(a pixel is labelled where any mask labels it), e.g. "
                    f"{' + '.join(Path(path).name for path in example.paths)}")
        if not (self.image_suffix or self.mask_suffix):
            return None
        sides = [f"the suffix `{suffix}` on the {side}" for side, suffix in
                 (("images", self.image_suffix), ("masks", self.mask_suffix)) if suffix]
        return (f"{where}: masks paired by {' and '.join(sides)}: {len(self.pairs)} of "
                f"{len(self.pairs)}")


def suffix_candidates(stems, limit=CANDIDATES):
    """'' and the endings most stems share: each stem's endings that start at a separator,
    and the longest ending common to all of them, most frequent first."""
    counts = Counter()
    for stem in stems:
        low = stem.lower()
        counts.update({low[index:] for index in range(1, len(low)) if low[index] in SEPARATORS})
    lowered = [stem.lower() for stem in stems]
    common = os.path.commonprefix([stem[::-1] for stem in lowered])[::-1] if stems else ""
    if common and all(len(common) < len(stem) for stem in lowered):
        counts[common] = len(stems)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], len(item[0]), item[0]))
    return [""] + [suffix for suffix, count in ranked[:limit] if count >= min(2, len(stems))]


def _stem(path, stems):
    """A file's stem as pairing sees it: its path under its folder without the extension
    (stems: {path: that}), else its file stem."""
    return stems.get(path) or data_stem(path) if stems else data_stem(path)


def _keyed(paths, suffix, stems=None):
    """{key: [paths]} of the files whose stem ends with suffix (key: the stem without it, lower
    case; never empty), and the files that do not."""
    keyed, others, suffix = defaultdict(list), [], suffix.lower()
    for path in paths:
        stem = _stem(path, stems).lower()
        if stem.endswith(suffix) and len(stem) > len(suffix):
            keyed[stem[:len(stem) - len(suffix)]].append(path)
        else:
            others.append(path)
    return keyed, others


def _pairs(images, masks, image_suffix, mask_suffix, stems=None):
    """(pairs sorted by name, images left, masks left) under one choice of suffixes."""
    image_keys, lonely_images = _keyed(images, image_suffix, stems)
    mask_keys, lonely_masks = _keyed(masks, mask_suffix, stems)
    pairs = []
    for key, found in image_keys.items():
        partners = mask_keys.get(key, [])
        if len(found) == 1 and len(partners) == 1:
            stem = _stem(found[0], stems)
            pairs.append((stem[:len(stem) - len(image_suffix)], found[0], partners[0]))
        else:
            lonely_images += found
    paired_masks = {mask for _, _, mask in pairs}
    lonely_masks += [mask for found in mask_keys.values() for mask in found
                     if mask not in paired_masks]
    return sorted(pairs, key=lambda pair: pair[0]), sorted(lonely_images), sorted(lonely_masks)


def _tried(images, masks, image_suffix, mask_suffix, stems=None):
    """[(image suffix, mask suffix, pairs, images left, masks left)] of every candidate pair of
    suffixes (the given ones only where given)."""
    image_options = [image_suffix] if image_suffix is not None else suffix_candidates(
        [_stem(path, stems) for path in images])
    mask_options = [mask_suffix] if mask_suffix is not None else suffix_candidates(
        [_stem(path, stems) for path in masks])
    return [(image_option, mask_option, *_pairs(images, masks, image_option, mask_option, stems))
            for image_option in image_options for mask_option in mask_options]


def pair_files(images, masks, where, image_suffix=None, mask_suffix=None, stems=None):
    """Pairing of image and mask paths (where: their folders, for messages): by stem when stems
    match one to one, else by the one choice of suffixes that pairs every file one to one;
    masks numbered beside another mask of the image (a_mask.png, a_mask_1.png) join it as a
    union. stems: {path: its stem under its folder} where files sit in subfolders. DataError
    naming the unpaired files, the best suffix with how many it pairs, and the flag."""
    try:
        return _pair_one_to_one(images, masks, where, image_suffix, mask_suffix, stems)
    except DataError:
        extras = numbered_masks(masks, stems)
        if not extras:
            raise
    try:
        pairing = _pair_one_to_one(images, [mask for mask in masks if mask not in extras],
                                   where, image_suffix, mask_suffix, stems)
    except DataError:
        return _pair_one_to_one(images, masks, where, image_suffix, mask_suffix, stems)
    return join_numbered(pairing, extras)


def _pair_one_to_one(images, masks, where, image_suffix, mask_suffix, stems):
    if image_suffix is None and mask_suffix is None:  # plain stems first: the usual case
        pairs, lonely_images, lonely_masks = _pairs(images, masks, "", "", stems)
        if not lonely_images and not lonely_masks:
            return Pairing(pairs)
    tried = _tried(images, masks, image_suffix, mask_suffix, stems)
    complete = [entry for entry in tried if not entry[3] and not entry[4]]
    if complete:
        complete.sort(key=lambda entry: (len(entry[0]) + len(entry[1]), entry[0], entry[1]))
        chosen = complete[0]
        differing = [entry for entry in complete[1:] if _pair_set(entry) != _pair_set(chosen)]
        if differing:
            raise DataError(_ambiguous_message(chosen, differing[0], where))
        return Pairing(chosen[2], chosen[0], chosen[1])
    best = max(tried, key=lambda entry: (len(entry[2]), -len(entry[0]) - len(entry[1])))
    raise DataError(Problem(_unpaired_message(best, len(images), len(masks), where),
                            files=len(best[3]) + len(best[4])))


def numbered_masks(masks, stems=None):
    """{extra mask: the mask it belongs with} of masks named as another mask plus _N (BUSI's
    `benign (4)_mask_1.png` beside `benign (4)_mask.png`)."""
    by_stem = {_stem(mask, stems).lower(): mask for mask in masks}
    extras = {}
    for stem, mask in by_stem.items():
        base, separator, number = stem.rpartition("_")
        if separator and number.isdigit() and base in by_stem:
            extras[mask] = by_stem[base]
    return extras


def join_numbered(pairing, extras):
    """The pairing with each extra mask joined to its image's mask (a MaskUnion)."""
    joined = defaultdict(list)
    for extra, base in extras.items():
        joined[base].append(extra)
    pairs = [(name, image, MaskUnion((mask, *sorted(joined[mask]))) if mask in joined else mask)
             for name, image, mask in pairing.pairs]
    return Pairing(pairs, pairing.image_suffix, pairing.mask_suffix, len(joined))


def _pair_set(entry):
    return {(image, mask) for _, image, mask in entry[2]}


def _suffix_text(image_suffix, mask_suffix):
    sides = [f"`{suffix}` on the {side}" for side, suffix in
             (("images", image_suffix), ("masks", mask_suffix)) if suffix]
    return "the same stem" if not sides else "the suffix " + " and ".join(sides)


def _flags(image_suffix, mask_suffix):
    return " ".join(f"--{side}-suffix {suffix}" for side, suffix in
                    (("image", image_suffix), ("mask", mask_suffix)) if suffix)


def _ambiguous_message(first, second, where):
    return (f"{where[0]}: images and masks pair in two ways, by {_suffix_text(*first[:2])} and by "
            f"{_suffix_text(*second[:2])}, which give different pairs: pass the one you mean, "
            f"e.g. {_flags(*first[:2]) or '--mask-suffix SUFFIX'}")


def _unpaired_message(best, image_count, mask_count, where):
    """The problem of a partial pairing: what is left, the best suffix and the flag."""
    image_suffix, mask_suffix, pairs, images, masks = best
    parts = []
    image_dir, mask_dir = where
    if images:
        parts.append(f"{len(images)} of {image_count} images in {image_dir} have no mask in "
                     f"{mask_dir} ({name_list([path.name for path in images])})")
    if masks:
        parts.append(f"{len(masks)} of {mask_count} masks in {mask_dir} have no image "
                     f"({name_list([path.name for path in masks])})")
    text = " and ".join(parts)
    if image_suffix or mask_suffix:
        return (f"{text}, paired by the best choice found, {_suffix_text(image_suffix, mask_suffix)}"
                f", which pairs {len(pairs)} of {image_count}: add or remove the files left, "
                f"then pass {_flags(image_suffix, mask_suffix)} (or name the suffix you mean)")
    return (f"{text}; every image needs a mask with the same file stem (a.jpg <-> a.png) or "
            f"one constant suffix (a.jpg <-> a_mask.png, found by itself; --mask-suffix "
            f"sets it): add the missing files or remove the extra ones")


def split_side_by_side(files, folder, mask_suffix=None, image_suffix=None, stems=None):
    """(images, masks, Pairing) of a folder holding both, the masks marked by a suffix: the
    suffix that pairs every file one to one; where both sides carry one, the side whose suffix
    names masks (MASK_WORDS) is the masks. DataError when none or several fit."""
    options = [mask_suffix.lower()] if mask_suffix else suffix_candidates(
        [_stem(path, stems) for path in files])[1:]
    fitting, best = [], None
    for option in options:
        masks = [path for path in files if _ends(path, option, stems) or _numbered(
            path, option, stems)]
        images = [path for path in files if path not in masks]
        if not masks or not images:
            continue
        try:
            fitting.append((option, images, masks, pair_files(
                images, masks, (folder, folder), image_suffix, option, stems)))
        except DataError as error:
            best = best or (option, error)
    named = [entry for entry in fitting if any(word in entry[0] for word in MASK_WORDS)]
    chosen = fitting if len(fitting) <= 1 else (named or fitting)
    if len(chosen) == 1:
        return chosen[0][1], chosen[0][2], chosen[0][3]
    if len(chosen) > 1:
        raise DataError(f"{folder} holds images and masks side by side, and the masks could be "
                        f"marked by `{chosen[0][0]}` or by `{chosen[1][0]}`: pass --mask-suffix "
                        f"with the one that marks the masks")
    detail = f" ({best[1]})" if best else ""
    raise DataError(f"{folder} holds files side by side but no suffix marks masks so that every "
                    f"image has one{detail}; name the masks' suffix with --mask-suffix, or put "
                    f"images and masks in folders of their own (images/ and masks/)")


def _ends(path, suffix, stems=None):
    stem = _stem(path, stems).lower()
    return stem.endswith(suffix) and len(stem) > len(suffix)


def _numbered(path, suffix, stems=None):
    """Whether a file is a numbered extra mask of that suffix (a_mask_1 of `_mask`)."""
    base, separator, number = _stem(path, stems).lower().rpartition("_")
    return bool(separator and number.isdigit() and base.endswith(suffix) and len(base) > len(
        suffix))
