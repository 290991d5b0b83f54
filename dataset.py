"""Segmentation data: image/mask folder pairs, mask decoding decided once per dataset, joint
train/eval transforms, `python dataset.py check ROOT` and a generated demo set (`make-demo`).

Contract: a sample is (image float32 [C,H,W] normalised with the train split's mean/std,
mask int64 [H,W] with values in 0..num_classes-1 or ignore_index). Every problem with user data
raises DataError naming the file(s), the problem and the fix.
"""
import argparse
import json
import math
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# JPEG masks are read so that the check can explain their values (and --mask-threshold fix them).
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".jpg", ".jpeg")
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
SPLITS = ("train", "val", "test")
CLASS_TABLE_NAME = "classes.json"  # used when no class table is given and ROOT has one
MIN_IMAGE_SIDE = 8  # SegNet's three 2x2 poolings need 8 pixels per side
MAX_LISTED = 5  # files named per problem before "and N more"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
MAX_MASK_VALUE = 65536  # larger single-channel values cannot be class ids (16-bit masks at most)
UNKNOWN = np.iinfo(np.int64).min  # decoded class of a value that fits no class
# Pillow modes of images read as RGB (palette, CMYK, ...) or grey (grey + alpha, 1-bit).
IMAGE_CONVERSIONS = {"P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                     "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGB", "RGBA": "RGB", "LA": "L",
                     "La": "L", "1": "L"}


class DataError(ValueError):
    """A problem with the user's data: the message names the file(s), the problem and the fix."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems with the data:\n" + "\n".join(
                f"- {problem}" for problem in self.problems)
        super().__init__(message)


def format_values(values, limit=8):
    """Integers as a short set, runs written a..b: {0, 3, 10..254}; long sets keep their ends:
    {0, 1, 5, ..., 251, 255} (66 values)."""
    values = sorted(int(value) for value in values)
    pieces, start = [], 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[end + 1] == values[end] + 1:
            end += 1
        if end - start >= 2:
            pieces.append(f"{values[start]}..{values[end]}")
        else:
            pieces.extend(str(value) for value in values[start:end + 1])
        start = end + 1
    if len(pieces) > limit:
        pieces = pieces[:limit - 2] + ["..."] + pieces[-2:]
        return "{" + ", ".join(pieces) + f"}} ({len(values)} values)"
    return "{" + ", ".join(pieces) + "}"


def format_colors(packed, limit=6):
    """Packed 0xRRGGBB colours as '(r, g, b)' text."""
    colors = [f"({value >> 16 & 255}, {value >> 8 & 255}, {value & 255})"
              for value in sorted(int(v) for v in packed)]
    more = f" and {len(colors) - limit} more" if len(colors) > limit else ""
    return ", ".join(colors[:limit]) + more


def name_list(paths, limit=MAX_LISTED):
    """'a.png, b.png and 3 more' for a list of paths."""
    names = [str(path) for path in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------
# Files


def _is_hidden(path):
    """Dotfiles and the files Windows/macOS leave behind (Thumbs.db, .DS_Store)."""
    return path.name.startswith(".") or path.name.lower() in IGNORED_FILES


def _files_by_stem(folder, extensions):
    """{stem: path} of the data files in folder; DataError on unsupported or duplicate stems."""
    files, unsupported, duplicates, broken = {}, [], [], []
    for path in sorted(folder.iterdir()):
        if _is_hidden(path):
            continue
        if path.is_symlink() and not path.exists():  # is_file() would skip it silently
            broken.append(path)
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() not in extensions:
            unsupported.append(path)
        elif path.stem in files:
            duplicates.append((files[path.stem], path))
        else:
            files[path.stem] = path
    if broken:
        raise DataError(f"broken symbolic links in {folder}: {name_list(broken)} point to "
                        f"missing files (or loop); fix the links or remove them")
    if unsupported:
        raise DataError(f"unsupported file type in {folder}: {name_list(unsupported)}; "
                        f"supported: {' '.join(extensions)} (move other files elsewhere)")
    if duplicates:
        first, second = duplicates[0]
        raise DataError(f"{first} and {second} have the same stem; images and masks are paired "
                        f"by stem, so keep one file per stem ({len(duplicates)} such clashes)")
    return files


def _check_paired(images, masks, image_dir, mask_dir):
    """DataError with the counts and the first unpaired names when images and masks differ."""
    lonely_images = [images[stem].name for stem in sorted(set(images) - set(masks))]
    lonely_masks = [masks[stem].name for stem in sorted(set(masks) - set(images))]
    parts = []
    if lonely_images:
        parts.append(f"{len(lonely_images)} of {len(images)} images in {image_dir} have no mask "
                     f"in {mask_dir} ({name_list(lonely_images)})")
    if lonely_masks:
        parts.append(f"{len(lonely_masks)} of {len(masks)} masks in {mask_dir} have no image "
                     f"({name_list(lonely_masks)})")
    if parts:
        raise DataError(" and ".join(parts) + "; every image needs a mask with the same file "
                        "stem (a.jpg <-> a.png): add the missing files or remove the extra ones")


def list_pairs(root, split):
    """Sorted (stem, image_path, mask_path) of ROOT/split/{images,masks}, paired by file stem.

    DataError when a folder is missing, the split is empty or a file has no partner.
    """
    image_dir, mask_dir = Path(root) / split / "images", Path(root) / split / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} not found: the layout is ROOT/{split}/images and "
                            f"ROOT/{split}/masks, with the same file stem for an image and its "
                            f"mask")
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    masks = _files_by_stem(mask_dir, MASK_EXTENSIONS)
    if not images and not masks:
        raise DataError(f"split {split!r} is empty: no images in {image_dir} "
                        f"(supported: {' '.join(IMAGE_EXTENSIONS)}); add images or leave the "
                        f"split out")
    _check_paired(images, masks, image_dir, mask_dir)
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


# ---------------------------------------------------------------------------------------------
# Images


def _open_image(path):
    """A fully decoded PIL image; DataError naming the file when it is unreadable or truncated."""
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now: truncated files fail here, not in a DataLoader worker
            return pil
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} cannot be read ({error}): the file is corrupt, truncated or "
                        f"not an image; re-export it or remove it and its pair") from error


def _scale_to_unit(array, path, mode):
    """Integer pixels divided by their dtype's range (never a per-image max); float kept."""
    if array.dtype.kind == "f":
        pixels = array.astype(np.float32)
        bad = np.count_nonzero(~np.isfinite(pixels))
        if bad:
            raise DataError(f"{path} has {bad} non-finite pixel values (NaN or inf, or beyond "
                            f"float32): fix or remove the image and its pair")
        return pixels
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        return array.astype(np.float32) / np.iinfo(array.dtype).max
    if array.dtype.kind == "b":
        return array.astype(np.float32)
    # Pillow opens some 16-bit files as 32-bit mode "I": scale by the 16-bit range they came in.
    if mode.startswith("I") and array.size and array.min() >= 0 and array.max() <= 65535:
        return array.astype(np.float32) / 65535
    raise DataError(f"{path} has an unsupported pixel format (mode {mode}, {array.dtype}): save "
                    f"images as 8- or 16-bit PNG/TIFF, or float32 TIFF")


def _image_pixels(path):
    """(pixels float32 [H,W,n] in [0,1] with alpha dropped, the file's Pillow mode)."""
    pil = _open_image(path)
    return _pil_pixels(pil, path), pil.mode


def _pil_pixels(pil, name):
    """A decoded PIL image -> float32 [H,W,n] in [0,1], alpha dropped."""
    if pil.mode in IMAGE_CONVERSIONS:
        pil = pil.convert(IMAGE_CONVERSIONS[pil.mode])
    pixels = _scale_to_unit(np.asarray(pil), name, pil.mode)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def to_model_array(image, in_channels):
    """A PIL image or a numpy array ([H,W] or [H,W,C]; integers scaled by their dtype's range,
    floats kept) -> float32 [C,H,W] with in_channels channels, as load_image gives for files."""
    if isinstance(image, Image.Image):
        pixels = _pil_pixels(image, "the image")
    else:
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"expected an image array [H,W] or [H,W,C], got shape {array.shape}")
        pixels = _scale_to_unit(array, "the array", "array")
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels[..., :3]
    pixels, _ = _to_channels(pixels, in_channels, "the image")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _to_channels(pixels, in_channels, path):
    """[H,W,n] -> ([H,W,in_channels], converted): RGB -> luminance for 1, grey repeated for 3."""
    channels = pixels.shape[2]
    if channels == in_channels:
        return pixels, False
    if channels == 3 and in_channels == 1:
        return np.dot(pixels, LUMA)[..., None], True
    if channels == 1 and in_channels == 3:
        return np.repeat(pixels, 3, axis=2), True
    raise DataError(f"{path} has {channels} channels but in_channels={in_channels}: pass "
                    f"--in-channels {channels}, or convert the image")


def load_image(path, in_channels):
    """Image file -> float32 [C,H,W] in [0,1] (16-bit / 65535, float TIFF as stored)."""
    pixels, _ = _image_pixels(path)
    pixels, _ = _to_channels(pixels, in_channels, path)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def normalize(image, normalization):
    """(image - mean) / std per channel, channels on dim -3 ([C,H,W] or [N,C,H,W]).

    Works on torch tensors and numpy arrays; returns the same type.
    """
    mean, std = normalization["mean"], normalization["std"]
    if image.shape[-3] != len(mean):
        raise ValueError(f"image has {image.shape[-3]} channels, the normalisation has "
                         f"{len(mean)} (in_channels of the dataset)")
    if isinstance(image, torch.Tensor):
        mean = torch.tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    else:
        mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (image - mean) / std


# ---------------------------------------------------------------------------------------------
# Masks: reading


def _read_mask(path):
    """Raw mask contents: (array, mode, palette). Image files give [H,W] values (palette
    indices for "P" mode) or [H,W,3] colours; .npy gives the stored array."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} cannot be read as .npy ({error}): save it with "
                            f"numpy.save(path, array)") from error
        return array, f"npy {array.dtype}", None
    pil = _open_image(path)
    mode, palette = pil.mode, None
    if mode in ("P", "PA"):
        palette = pil.getpalette() or []
    elif mode not in ("1", "L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
        pil = pil.convert("RGB")
    array = np.asarray(pil)
    if array.ndim == 3 and mode in ("P", "PA", "LA"):
        array = array[..., 0]  # drop alpha
    elif array.ndim == 3:
        array = array[..., :3]
    return array, mode, palette


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


def summarize_mask(path, image_size):
    """Read one mask and summarise its values; image_size (H, W) orients one-hot masks."""
    array, mode, palette = _read_mask(path)
    kind, data = _classify_mask(array, path)
    layout, channels = None, 0
    if kind == "onehot":
        layout = _onehot_layout(data.shape, image_size, path)
        channels = data.shape[2] if layout == "HWC" else data.shape[0]
        data = _decode_onehot(data, layout, -1, path)
    values, counts = _value_counts(data)
    return MaskSummary(path, kind, tuple(data.shape[:2]), mode, values, counts, palette, layout,
                       channels)


# ---------------------------------------------------------------------------------------------
# Masks: the decoding


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
    array, _, _ = _read_mask(path)
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


def _likely_cause(values, counts, unknown, kind, decoding):
    """The likely cause and fix for mask values that fit no class."""
    if kind == "color":
        return "add the missing colours to the class table (or mark them \"void\": true)"
    if kind != "single":
        return "save every mask in the encoding of the train masks"
    if _jpeg_like(values, counts):
        return _jpeg_advice(values)
    if decoding["kind"] == "index" and unknown.min() >= decoding["num_classes"]:
        return (f"ids >= num_classes {decoding['num_classes']}: pass --num-classes "
                f"{int(unknown.max()) + 1} (or a longer class table), or fix the masks")
    return ("save masks as class ids 0..num_classes-1 (the ignore index marks unlabelled "
            "pixels), or pass --num-classes / --mask-threshold to say how to read them")


def _unknown_values_message(path, kind, values, counts, decoding, ignore_index):
    """'mask P has values {..} ({..} fit no class): cause and fix'."""
    if kind != _expected_kind(decoding):
        return _kind_mismatch(path, kind, decoding)
    classes = _value_classes(values, kind, decoding, ignore_index)
    unknown = values[classes == UNKNOWN]
    if kind == "color":
        shown = f"colours not in the class table: {format_colors(unknown)}"
    else:
        shown = f"values {format_values(values)} ({format_values(unknown)} fit no class)"
    return f"mask {path} has {shown}: {_likely_cause(values, counts, unknown, kind, decoding)}"


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


def _undecidable(values, counts, ids):
    """Why single-channel train values cannot be read as class ids (None when they can)."""
    if _jpeg_like(values, counts):
        return _jpeg_advice(values)
    if len(ids) < 2:
        return ("there is only one class to learn; check the masks were exported with their "
                "labels, or pass --num-classes")
    if ids[-1] + 1 > 2 * len(ids):
        if len(ids) == 2:
            return (f"two levels {ids[0]} and {ids[1]} are not class ids: pass --mask-threshold "
                    f"{ids[1]} to read them as background/foreground")
        return ("the values look like grey levels chosen for display, not class ids 0..K-1: "
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
    reason = _undecidable(values, counts, ids)
    if reason:
        worst = sorted(summaries, key=lambda summary: -len(summary.values))
        together = (f" (all {len(worst)} train masks together: {format_values(values)})"
                    if len(worst) > 1 else "")
        raise DataError(f"mask {worst[0].path} has values {format_values(worst[0].values)}"
                        f"{together}: {reason}")
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


def _check_class_count(decoding, num_classes, table, table_path, ignore_index):
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


# ---------------------------------------------------------------------------------------------
# Scanning a dataset


@dataclass
class SplitScan:
    """What one pass over a split found."""

    pairs: list
    summaries: list = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)
    mask_modes: Counter = field(default_factory=Counter)
    converted: list = field(default_factory=list)  # images whose channels were converted
    outside_unit: list = field(default_factory=list)  # float images with values beyond [0, 1]
    problems: list = field(default_factory=list)
    pixel_sum: np.ndarray = 0.0  # per channel, float64 (streaming mean/std)
    pixel_sq_sum: np.ndarray = 0.0
    pixel_count: int = 0

    def add_image(self, path, pixels, mode, converted):
        """Record one image's size, mode and pixel statistics."""
        height, width = pixels.shape[:2]
        self.sizes[(height, width)] += 1
        self.image_modes[mode] += 1
        if converted:
            self.converted.append(path)
        if pixels.size and (pixels.min() < -1e-6 or pixels.max() > 1 + 1e-6):  # rounding
            self.outside_unit.append(path)
        if min(height, width) < MIN_IMAGE_SIDE:
            self.problems.append(f"{path} is {height}x{width}: SegNet needs at least "
                                 f"{MIN_IMAGE_SIDE} pixels per side; remove or enlarge it")
        flat = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
        self.pixel_sum = self.pixel_sum + flat.sum(axis=0)
        self.pixel_sq_sum = self.pixel_sq_sum + np.square(flat).sum(axis=0)
        self.pixel_count += flat.shape[0]


def scan_split(root, split, in_channels, progress=False):
    """Read every pair of one split once: image statistics, mask summaries and problems."""
    scan = SplitScan(list_pairs(root, split))
    for _, image_path, mask_path in tqdm(scan.pairs, desc=f"checking {split}", leave=False,
                                         disable=not progress):
        try:
            pixels, mode = _image_pixels(image_path)
            pixels, converted = _to_channels(pixels, in_channels, image_path)
            scan.add_image(image_path, pixels, mode, converted)
            summary = summarize_mask(mask_path, pixels.shape[:2])
        except DataError as error:  # collected: the check reports every problem at once
            scan.problems.extend(error.problems)
            continue
        scan.mask_modes[summary.mode] += 1
        if summary.size != pixels.shape[:2]:
            scan.problems.append(
                f"size mismatch: image {image_path} is {pixels.shape[0]}x{pixels.shape[1]}, "
                f"mask {mask_path} is {summary.size[0]}x{summary.size[1]}; a mask must have its "
                f"image's size (re-export it, or resize it with nearest-neighbour)")
        else:
            scan.summaries.append(summary)
    return scan


def _normalization(scan):
    """Per-channel mean and std of all pixels of a split (from streamed sums)."""
    mean = scan.pixel_sum / scan.pixel_count
    variance = np.maximum(scan.pixel_sq_sum / scan.pixel_count - np.square(mean), 0.0)
    return {"mean": [round(float(m), 6) for m in mean],
            "std": [round(float(s), 6) for s in np.sqrt(variance)]}


def _size_summary(sizes):
    """{"min": [h, w], "max": [h, w], "distinct": n, "most_common": [h, w]} of a split."""
    if not sizes:
        return None
    heights = [size[0] for size in sizes]
    widths = [size[1] for size in sizes]
    return {"min": [min(heights), min(widths)], "max": [max(heights), max(widths)],
            "distinct": len(sizes), "most_common": list(sizes.most_common(1)[0][0])}


def _data_warnings(scans, in_channels):
    """Things worth knowing that do not stop training."""
    found = []
    converted = [path for scan in scans.values() for path in scan.converted]
    if converted:
        change = "RGB -> grey" if in_channels == 1 else "grey -> RGB"
        fix = "pass --in-channels 3 to keep colour" if in_channels == 1 else "nothing lost"
        found.append(f"{len(converted)} image(s) converted {change} for in_channels="
                     f"{in_channels} (e.g. {converted[0]}); {fix}")
    outside = [path for scan in scans.values() for path in scan.outside_unit]
    if outside:
        found.append(f"{len(outside)} float image(s) have values outside [0, 1] (e.g. "
                     f"{outside[0]}): brightness/contrast/gamma jitter clamps to [0, 1]; "
                     f"rescale them to [0, 1] or train with --jitter 0")
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


def _class_statistics(summaries, decoding, ignore_index):
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


def _check_masks(summaries, decoding, ignore_index):
    """One problem per mask whose values fit no class (or whose encoding differs)."""
    problems = []
    for summary in summaries:
        classes = _value_classes(summary.values, summary.kind, decoding, ignore_index)
        layout = (summary.layout, summary.channels)
        if decoding["kind"] == "onehot" and layout != (decoding["layout"], decoding["channels"]):
            problems.append(f"{summary.path} is one-hot {summary.layout} with {summary.channels} "
                            f"channels, the train masks are {decoding['layout']} with "
                            f"{decoding['channels']}: save them all alike")
        elif (classes == UNKNOWN).any():
            problems.append(_unknown_values_message(summary.path, summary.kind, summary.values,
                                                    summary.counts, decoding, ignore_index))
    if len(problems) > 2 * MAX_LISTED:
        more = len(problems) - 2 * MAX_LISTED
        problems = problems[:2 * MAX_LISTED] + [f"... and {more} more masks like these"]
    return problems


def _class_names_colors(decoding, table, palette):
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


def _check_arguments(in_channels, num_classes, mask_threshold, class_table, splits):
    """DataError for option values that cannot work, whatever the data."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise DataError(f"--in-channels must be an integer >= 1, got {in_channels!r}")
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


def _base_info(root, in_channels, ignore_index, table_path, scans):
    """The info fields known before the mask decoding is decided."""
    train = scans.get("train")
    return {
        "root": str(root), "in_channels": in_channels, "ignore_index": ignore_index,
        "class_table": str(table_path) if table_path else None,
        "num_classes": None, "class_names": [], "class_colors": [], "mask_decoding": None,
        "normalization": _normalization(train) if train and train.pixel_count else None,
        "class_pixels": [], "class_image_pixels": [], "ignore_pixels": 0,
        "splits": {split: len(scan.pairs) for split, scan in scans.items()},
        "image_sizes": {split: _size_summary(scan.sizes) for split, scan in scans.items()},
        "image_modes": {split: dict(scan.image_modes) for split, scan in scans.items()},
        "mask_modes": {split: dict(scan.mask_modes) for split, scan in scans.items()},
        "rgb_converted": sum(len(scan.converted) for scan in scans.values()),
        "warnings": _data_warnings(scans, in_channels),
    }


def _add_decoding(info, scans, table, table_path, num_classes, mask_threshold):
    """Decide the decoding from train, validate every split with it, count the classes of train
    into info. Returns the problems found."""
    ignore_index, train = info["ignore_index"], scans["train"].summaries
    try:
        decoding = infer_mask_decoding(train, ignore_index, num_classes, table, mask_threshold)
        _check_class_count(decoding, num_classes, table, table_path, ignore_index)
    except DataError as error:  # reported with the others; nothing below can run without it
        return error.problems
    problems = [problem for scan in scans.values()
                for problem in _check_masks(scan.summaries, decoding, ignore_index)]
    names, colors = _class_names_colors(decoding, table, train[0].palette)
    pixels, image_pixels, ignored = _class_statistics(train, decoding, ignore_index)
    info.update(num_classes=decoding["num_classes"], class_names=names, class_colors=colors,
                mask_decoding=decoding, class_pixels=pixels, class_image_pixels=image_pixels,
                ignore_pixels=ignored)
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
                    ignore_index=255, splits=("train", "val"), progress=False):
    """scan_dataset that returns (info, problems) instead of raising on data problems.

    info holds whatever could be determined (None / empty where a problem prevented it).
    DataError only for option values and the class table.
    """
    root = Path(root)
    _check_arguments(in_channels, num_classes, mask_threshold, class_table, splits)
    table_path = _class_table_path(root, class_table)
    table = load_class_table(table_path) if table_path else None
    scans, problems = {}, []
    for split in splits:
        try:
            scans[split] = scan_split(root, split, in_channels, progress)
        except DataError as error:  # collected: the check reports every problem at once
            problems.extend(error.problems)
            continue
        problems.extend(scans[split].problems)
    info = _base_info(root, in_channels, ignore_index, table_path, scans)
    if info["normalization"] and min(info["normalization"]["std"]) == 0:
        problems.append(f"every train image in {root / 'train' / 'images'} is one flat colour: "
                        f"there is nothing to learn from")
    if "train" in scans and scans["train"].summaries:
        problems += _add_decoding(info, scans, table, table_path, num_classes, mask_threshold)
    return info, problems


def scan_dataset(root, in_channels=1, num_classes=None, class_table=None, mask_threshold=None,
                 ignore_index=255, splits=("train", "val"), progress=False):
    """Check a dataset before training and describe it; DataError listing every problem.

    Reads every image and mask of the splits once: pairing, sizes, empty splits, unreadable
    files, mask values. Decides the mask decoding from the train masks (index, binary 0/255 or
    0/1, palette, RGB + class table, one-hot .npy, or --mask-threshold) and validates the other
    splits with it. Without class_table, ROOT/classes.json is used when present. Returns a
    JSON-able info dict: in_channels, ignore_index, num_classes, class_names, class_colors,
    mask_decoding, normalization {mean, std} of the train images, class_pixels and
    class_image_pixels over train (for median-frequency weights), splits {split: count},
    image_sizes, image_modes, mask_modes, rgb_converted, warnings.
    """
    info, problems = inspect_dataset(root, in_channels, num_classes, class_table,
                                     mask_threshold, ignore_index, splits, progress)
    if problems:
        raise DataError(problems)
    for message in info["warnings"]:
        warnings.warn(message, stacklevel=2)
    return info


# ---------------------------------------------------------------------------------------------
# Dataset


class SegmentationDataset(Dataset):
    """The (image, mask) pairs of ROOT/split, decoded as scan_dataset decided (info).

    __getitem__ -> (image float32 [C,H,W] normalised with info["normalization"], mask int64
    [H,W] in 0..num_classes-1 or ignore_index). transform(image in [0,1], mask) runs before
    the normalisation. cache=True keeps decoded samples (before the transform) in memory; each
    DataLoader worker holds its own cache, so use persistent_workers=True with it.
    """

    def __init__(self, root, split, info, transform=None, cache=False):
        pairs = list_pairs(root, split)
        self.root, self.split, self.info, self.transform = Path(root), split, info, transform
        self.names = [stem for stem, _, _ in pairs]
        self.image_paths = [image_path for _, image_path, _ in pairs]
        self.mask_paths = [mask_path for _, _, mask_path in pairs]
        self._cache = {} if cache else None

    def __len__(self):
        return len(self.names)

    def load_sample(self, index):
        """Decoded (image float32 [C,H,W] in [0,1], mask int64 [H,W]) before any transform."""
        if self._cache is not None and index in self._cache:
            image, mask = self._cache[index]
            return image.clone(), mask.clone()
        image = load_image(self.image_paths[index], self.info["in_channels"])
        mask = decode_mask(self.mask_paths[index], self.info["mask_decoding"],
                           self.info["ignore_index"])
        if image.shape[1:] != mask.shape:
            raise DataError(f"size mismatch: image {self.image_paths[index]} is "
                            f"{image.shape[1]}x{image.shape[2]}, mask {self.mask_paths[index]} "
                            f"is {mask.shape[0]}x{mask.shape[1]}")
        image, mask = torch.from_numpy(image), torch.from_numpy(mask)
        if self._cache is not None:
            self._cache[index] = (image, mask)
            return image.clone(), mask.clone()
        return image, mask

    def __getitem__(self, index):
        image, mask = self.load_sample(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return normalize(image, self.info["normalization"]), mask


# ---------------------------------------------------------------------------------------------
# Joint transforms: (image float32 [C,H,W], mask int64 [H,W]) -> the same


def _as_size(size):
    """int or (height, width) -> (height, width)."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def _uniform(low, high):
    """A float drawn from torch's global RNG (seeded per DataLoader worker)."""
    return low + (high - low) * torch.rand(()).item()


def _window_start(scaled_length, out_length):
    """Random integer offset of an output window over a (scaled) image side; negative when the
    window is larger, which places the image at random inside it (the rest is padding)."""
    slack = scaled_length - out_length
    if slack >= 0:
        return int(torch.randint(0, int(slack) + 1, ()).item())
    return -int(torch.randint(0, int(-slack) + 1, ()).item())


def _source_coordinates(out_size, center, factor, angle):
    """Continuous source (rows, cols) [h, w] of each output pixel centre, for an output window
    centred on `center` (source coordinates), scaled by factor and rotated by angle (radians).
    Pixel i spans [i, i+1)."""
    out_height, out_width = out_size
    offset_y = (torch.arange(out_height, dtype=torch.float32) + 0.5 - out_height / 2)[:, None]
    offset_x = (torch.arange(out_width, dtype=torch.float32) + 0.5 - out_width / 2)[None, :]
    cos, sin = math.cos(angle), math.sin(angle)
    rows = center[0] + (sin * offset_x + cos * offset_y) / factor
    cols = center[1] + (cos * offset_x - sin * offset_y) / factor
    return rows, cols


def _sample(image, mask, rows, cols, ignore_index):
    """Image bilinear, mask by exact index look-up (the pixel containing each point); outside
    the source the image is 0 and the mask ignore_index."""
    height, width = mask.shape
    grid = torch.stack((cols * (2 / width) - 1, rows * (2 / height) - 1), dim=-1)[None]
    image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0]
    row_index, col_index = rows.floor().long(), cols.floor().long()
    inside = (row_index >= 0) & (row_index < height) & (col_index >= 0) & (col_index < width)
    picked = mask[row_index.clamp(0, height - 1), col_index.clamp(0, width - 1)]
    return image, torch.where(inside, picked, torch.full_like(picked, ignore_index))


def _jitter(image, strength):
    """Random gamma (exp(+-s)), contrast (1 +- s) and brightness (+- s/2) on [0,1] images."""
    gamma = math.exp(_uniform(-strength, strength))
    contrast = _uniform(1 - strength, 1 + strength)
    brightness = _uniform(-strength, strength) / 2
    image = image.clamp(0, 1).pow(gamma)
    mean = image.mean(dim=(-2, -1), keepdim=True)
    return ((image - mean) * contrast + mean + brightness).clamp(0, 1)


class TrainTransform:
    """Random joint augmentation for training.

    Geometry (one resampling): scale by a factor in `scale`, rotate within +-`rotate` degrees,
    crop `crop_size` (padding where the image is smaller), then horizontal / vertical flips.
    The image is interpolated bilinearly; the mask only by exact index look-up, padding with
    ignore_index. Then, on the image only: gamma/contrast/brightness `jitter` and gaussian
    `noise` (sigma up to that value). Each is off with 0, None or False. Jitter assumes images
    in [0,1] (all integer formats). Output size: crop_size, else the scaled image size.
    Randomness comes from torch's global RNG (DataLoader seeds each worker).
    """

    def __init__(self, crop_size=None, scale=(0.75, 1.25), hflip=True, vflip=True, rotate=15.0,
                 jitter=0.2, noise=0.02, ignore_index=255):
        self.crop_size = _as_size(crop_size) if crop_size else None
        self.scale = tuple(float(s) for s in scale) if scale else None
        if self.scale and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if (rotate or 0) < 0 or (noise or 0) < 0 or not 0 <= (jitter or 0) < 1:
            raise ValueError(f"need rotate >= 0, noise >= 0 and 0 <= jitter < 1, got "
                             f"rotate={rotate}, noise={noise}, jitter={jitter}")
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.rotate, self.jitter, self.noise = float(rotate or 0), float(jitter or 0), float(
            noise or 0)
        self.ignore_index = ignore_index

    def __call__(self, image, mask):
        image, mask = self.resample(image, mask)
        if self.hflip and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.vflip and torch.rand(()) < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if self.jitter:
            image = _jitter(image, self.jitter)
        if self.noise:
            image = image + torch.randn_like(image) * (self.noise * torch.rand(()).item())
        return image, mask

    def resample(self, image, mask):
        """Random scale, rotation and crop as one resampling of image and mask."""
        if not (self.scale or self.rotate or self.crop_size):
            return image, mask
        height, width = mask.shape
        factor = _uniform(*self.scale) if self.scale else 1.0
        angle = math.radians(_uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
        out_size = self.crop_size or (max(1, round(height * factor)), max(1, round(width * factor)))
        top = _window_start(height * factor, out_size[0])
        left = _window_start(width * factor, out_size[1])
        center = ((top + out_size[0] / 2) / factor, (left + out_size[1] / 2) / factor)
        rows, cols = _source_coordinates(out_size, center, factor, angle)
        return _sample(image, mask, rows, cols, self.ignore_index)


def _nearest_index(in_length, out_length):
    """Source index of each output pixel for a nearest-neighbour resize (pixel centres)."""
    positions = (torch.arange(out_length, dtype=torch.float64) + 0.5) * (in_length / out_length)
    return positions.floor().long().clamp(max=in_length - 1)


def resize_pair(image, mask, size):
    """Resize image bilinearly (antialiased) and mask by nearest index to size (h, w)."""
    height, width = _as_size(size)
    image = F.interpolate(image[None], size=(height, width), mode="bilinear",
                          align_corners=False, antialias=True)[0]
    rows, cols = _nearest_index(mask.shape[0], height), _nearest_index(mask.shape[1], width)
    return image, mask[rows[:, None], cols[None, :]]


class EvalTransform:
    """Deterministic evaluation transform: identity, or resize to image_size (image bilinear,
    mask nearest) when given."""

    def __init__(self, image_size=None):
        self.image_size = _as_size(image_size) if image_size else None

    def __call__(self, image, mask):
        if self.image_size is None or tuple(mask.shape) == self.image_size:
            return image, mask
        return resize_pair(image, mask, self.image_size)


def pad_collate(batch, ignore_index=255):
    """Stack (image [C,H,W], mask [H,W]) pairs of different sizes into ([N,C,H,W], [N,H,W]):
    images padded with 0 and masks with ignore_index at the bottom and right.
    Use functools.partial(pad_collate, ignore_index=...) as a DataLoader collate_fn."""
    images, masks = zip(*batch)
    height = max(mask.shape[0] for mask in masks)
    width = max(mask.shape[1] for mask in masks)
    image_batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    mask_batch = masks[0].new_full((len(masks), height, width), ignore_index)
    for index, (image, mask) in enumerate(zip(images, masks)):
        image_batch[index, :, :image.shape[1], :image.shape[2]] = image
        mask_batch[index, :mask.shape[0], :mask.shape[1]] = mask
    return image_batch, mask_batch


# ---------------------------------------------------------------------------------------------
# Intensity baseline: how far grey levels alone get


def _intensity_histogram(dataset, bins):
    """[bins, num_classes] pixel counts of (grey level, class) over a dataset (ignore left out)."""
    count = dataset.info["num_classes"]
    histogram = np.zeros(bins * count, dtype=np.int64)
    for index in range(len(dataset)):
        image, mask = dataset.load_sample(index)
        grey, labels = image.mean(dim=0).numpy(), mask.numpy()
        valid = (labels >= 0) & (labels < count)
        levels = np.clip((grey[valid] * bins).astype(np.int64), 0, bins - 1)
        histogram += np.bincount(levels * count + labels[valid], minlength=bins * count)
    return histogram.reshape(bins, count)


def mean_iou(confusion):
    """Mean IoU over the classes present in prediction or truth; confusion is [true, predicted]."""
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean())


def _lookup_confusion(histogram, lookup):
    """Confusion [true, predicted] when each grey level predicts lookup[level]."""
    return histogram.T @ np.eye(histogram.shape[1], dtype=np.int64)[lookup]


def fit_intensity_lookup(histogram, passes=20):
    """A class per grey level maximising mIoU on histogram [levels, classes]: the class-balanced
    arg-max, improved by coordinate ascent (one level at a time)."""
    lookup = (histogram / np.maximum(histogram.sum(axis=0), 1)).argmax(axis=1)
    best = mean_iou(_lookup_confusion(histogram, lookup))
    for _ in range(passes):
        improved = False
        for level in np.flatnonzero(histogram.sum(axis=1)):
            for label in range(histogram.shape[1]):
                trial = lookup.copy()
                trial[level] = label
                score = mean_iou(_lookup_confusion(histogram, trial))
                if score > best + 1e-12:
                    lookup, best, improved = trial, score, True
        if not improved:
            break
    return lookup


def intensity_baseline(root, info, bins=64):
    """{split: mIoU} of the best per-pixel grey-level classifier, fitted on train and scored on
    train and val: what intensity alone achieves, for comparison with the network."""
    histograms = {split: _intensity_histogram(SegmentationDataset(root, split, info), bins)
                  for split in ("train", "val") if split in info["splits"]}
    lookup = fit_intensity_lookup(histograms["train"])
    return {split: mean_iou(_lookup_confusion(histogram, lookup))
            for split, histogram in histograms.items()}


# ---------------------------------------------------------------------------------------------
# Generated demo dataset: grey cells with nuclei, among look-alike background distractors

DEMO_CLASSES = [{"name": "background", "color": [0, 0, 0]},
                {"name": "cell", "color": [80, 200, 120]},
                {"name": "nucleus", "color": [230, 60, 160]}]
# Mean grey levels before illumination: dark spots in the background share the nuclei's level,
# smooth bright patches the cells' level, so only texture, edges and context tell them apart.
DEMO_LEVELS = {"background": 0.40, "cell": 0.58, "nucleus": 0.22}


def _gaussian_blur(image, sigma):
    """Separable gaussian blur of a 2-D float array, borders reflected."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    height, width = image.shape
    padded = np.pad(image, radius, mode="reflect")
    rows = sum(tap * padded[k:k + height] for k, tap in enumerate(taps))
    return sum(tap * rows[:, k:k + width] for k, tap in enumerate(taps))


def _smooth_noise(rng, shape, sigma):
    """Gaussian-blurred white noise with unit standard deviation."""
    noise = _gaussian_blur(rng.standard_normal(shape), sigma)
    return noise / noise.std()


def _blob_distance(rng, grid, center, radius, elongation=0.25, wobble=0.08):
    """Distance to center relative to a wobbly ellipse's radius at each angle (<= 1: inside);
    computed near the blob only (inf elsewhere)."""
    phases = rng.uniform(0, 2 * np.pi, 3)
    amplitudes = rng.uniform(-1, 1, 2) * wobble
    stretch = elongation * rng.uniform()
    reach = 2 * radius + 2  # the outline stays within 1.41 radii, soft edges end at 1.2x that
    top, left = (max(0, int(c - reach)) for c in center)
    bottom, right = (max(0, int(c + reach) + 1) for c in center)
    window = grid[:, top:bottom, left:right]
    offset_y, offset_x = window[0] - center[0], window[1] - center[1]
    angle = np.arctan2(offset_y, offset_x)
    outline = (1 + stretch * np.cos(2 * (angle - phases[0]))
               + amplitudes[0] * np.cos(3 * angle + phases[1])
               + amplitudes[1] * np.cos(5 * angle + phases[2]))
    distance = np.full(grid.shape[1:], np.inf)
    distance[top:bottom, left:right] = np.hypot(offset_y, offset_x) / (radius * outline)
    return distance


def _draw_distractors(rng, grid, image):
    """Background look-alikes: smooth bright patches (cell level) and dark spots (nucleus level)."""
    height, width = image.shape
    for _ in range(rng.integers(2, 4)):
        center = rng.uniform(0, height), rng.uniform(0, width)
        distance = _blob_distance(rng, grid, center, rng.uniform(10, 18))
        alpha = np.clip((1.2 - distance) / 0.4, 0, 1)  # soft edge
        image += alpha * (DEMO_LEVELS["cell"] - image)
    for _ in range(rng.integers(3, 7)):
        center = rng.uniform(0, height), rng.uniform(0, width)
        distance = _blob_distance(rng, grid, center, rng.uniform(4, 9), elongation=0.15)
        alpha = np.clip((1.1 - distance) / 0.3, 0, 1)
        image += alpha * (DEMO_LEVELS["nucleus"] - image)


def _draw_cells(rng, grid, image, mask):
    """Granular cells with a dark rim, each holding a darker smooth nucleus; later cells may
    overlap earlier ones."""
    height, width = image.shape
    texture = _smooth_noise(rng, (height, width), 1.0)  # granules about 2 px across
    for _ in range(max(2, round(height * width / 3200 * rng.uniform(0.8, 1.2)))):
        radius = rng.uniform(14, 24)
        center = np.array([rng.uniform(0, height), rng.uniform(0, width)])
        distance = _blob_distance(rng, grid, center, radius)
        inside = distance <= 1
        image[inside] = DEMO_LEVELS["cell"] + 0.10 * texture[inside]
        image[inside & (distance > 1 - 2 / radius)] -= 0.08
        mask[inside] = 1
        nucleus_radius = rng.uniform(5, 9)
        direction = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0, 0.5) * (radius - nucleus_radius)
        nucleus_center = center + shift * np.array([np.sin(direction), np.cos(direction)])
        nucleus = (_blob_distance(rng, grid, nucleus_center, nucleus_radius, 0.15, 0.05) <= 1)
        nucleus &= distance <= 1 - 2 / radius
        image[nucleus] = DEMO_LEVELS["nucleus"] + 0.03 * texture[nucleus]
        mask[nucleus] = 2


def _illumination(rng, grid):
    """Multiplicative uneven illumination: a tilted plane plus a broad bright or dark bump."""
    height, width = grid.shape[1:]
    slope_y, slope_x = rng.uniform(-0.45, 0.45, 2)
    field = 1 + slope_y * (grid[0] / height - 0.5) + slope_x * (grid[1] / width - 0.5)
    center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
    spread = 2 * (0.5 * max(height, width)) ** 2
    bump = np.exp(-((grid[0] - center_y) ** 2 + (grid[1] - center_x) ** 2) / spread)
    return field + rng.uniform(-0.15, 0.15) * bump


def demo_sample(rng, height, width):
    """One demo image (uint8 [H,W]) and its index mask (uint8: 0 background, 1 cell, 2 nucleus)."""
    grid = np.mgrid[0:height, 0:width].astype(np.float64)
    mask = np.zeros((height, width), dtype=np.uint8)
    image = DEMO_LEVELS["background"] + 0.03 * _smooth_noise(rng, (height, width), 6.0)
    _draw_distractors(rng, grid, image)
    _draw_cells(rng, grid, image, mask)
    image = _gaussian_blur(image, 0.8) * _illumination(rng, grid)
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), mask


def make_demo(root, seed=0, num_train=300, num_val=50, num_test=50, size_range=(96, 128)):
    """Write the demo dataset: ROOT/{train,val,test}/{images,masks}/<split>_<i>.png (grey 8-bit
    images, index masks 0..2) and ROOT/classes.json. Deterministic: each image comes from
    (seed, split, index), so a smaller set is a prefix of a larger one. ROOT may hold other
    files (a README), but no dataset: old and new files would mix."""
    root = Path(root)
    existing = [root / name for name in (*SPLITS, CLASS_TABLE_NAME) if (root / name).exists()]
    if existing:
        raise FileExistsError(f"{root} already holds a dataset ({name_list(existing)}): "
                              f"make-demo writes a fresh one; delete those or choose another "
                              f"folder")
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        if not count:
            continue
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, SPLITS.index(split), index])
            height, width = (int(n) for n in rng.integers(size_range[0], size_range[1] + 1, 2))
            image, mask = demo_sample(rng, height, width)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{index:04d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{index:04d}.png")
    (root / CLASS_TABLE_NAME).write_text(json.dumps({"classes": DEMO_CLASSES}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Command line


def _size_text(sizes):
    """'512x512', or 'H range x W range (n sizes)' for mixed sizes."""
    if sizes is None:
        return "-"
    if sizes["distinct"] == 1:
        return f"{sizes['min'][0]}x{sizes['min'][1]}"
    return (f"{sizes['min'][0]}..{sizes['max'][0]} x {sizes['min'][1]}..{sizes['max'][1]} "
            f"({sizes['distinct']} sizes)")


def _modes_text(modes):
    """'L 20, RGB 2'."""
    return ", ".join(f"{mode} {count}" for mode, count in sorted(modes.items())) or "-"


def report_lines(info):
    """The check report (without problems) as lines of text."""
    lines = [f"dataset {info['root']}",
             f"{'split':<7}{'pairs':>6}  {'image size (HxW)':<30}{'image modes':<16}mask modes"]
    for split, count in info["splits"].items():
        lines.append(f"{split:<7}{count:>6}  {_size_text(info['image_sizes'][split]):<30}"
                     f"{_modes_text(info['image_modes'][split]):<16}"
                     f"{_modes_text(info['mask_modes'][split])}")
    if info["normalization"]:
        lines.append(f"in_channels {info['in_channels']}; train mean "
                     f"{info['normalization']['mean']}, std {info['normalization']['std']}")
    if info["mask_decoding"]:
        table = f" (names from {info['class_table']})" if info["class_table"] else ""
        lines.append(f"masks: {describe_decoding(info['mask_decoding'])}{table}; ignore index "
                     f"{info['ignore_index']}: {info['ignore_pixels']:,} train pixels")
        lines.extend(_class_lines(info))
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


def run_check(args):
    """Print the dataset report; 0 when training can start, 1 when there is a problem."""
    root = Path(args.root)
    splits = args.splits or [split for split in SPLITS
                             if split != "test" or (root / "test").is_dir()]
    try:
        info, problems = inspect_dataset(root, args.in_channels, args.num_classes,
                                         args.class_table, args.mask_threshold,
                                         args.ignore_index, splits, sys.stderr.isatty())
    except DataError as error:
        print(f"problem: {error}")
        return 1
    print("\n".join(report_lines(info)))
    if args.baseline and not problems and "val" in info["splits"]:
        scores = intensity_baseline(root, info)
        print(f"intensity-only baseline (a class per grey level, fitted on train): mIoU train "
              f"{scores['train']:.3f}, val {scores['val']:.3f}")
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{len(problems)} problem(s)" if problems else "no problems: ready to train")
    return 1 if problems else 0


def get_args_parser():
    """Arguments of `python dataset.py check ROOT` and `python dataset.py make-demo ROOT`."""
    from utils import HelpFormatter as formatter  # defaults shown unless the help explains them
    parser = argparse.ArgumentParser(formatter_class=formatter, description="Check a "
                                     "segmentation dataset, or write the generated demo set.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", formatter_class=formatter, help="report on a dataset; "
                                "exit 1 if it has a problem (trains nothing)")
    check.add_argument("root", help="dataset folder: ROOT/{train,val,test}/{images,masks}")
    check.add_argument("--in-channels", type=int, default=1,
                       help="1: grey (RGB images converted), 3: RGB")
    check.add_argument("--num-classes", type=int, default=None,
                       help="number of classes (None: inferred from the train masks)")
    check.add_argument("--class-table", default=None, help="JSON file naming each class and its "
                       f"colour, void colours -> ignore (None: ROOT/{CLASS_TABLE_NAME} if "
                       "present)")
    check.add_argument("--mask-threshold", type=int, default=None, help="read single-channel "
                       "masks as binary: value >= threshold is foreground")
    check.add_argument("--ignore-index", type=int, default=255,
                       help="mask value of pixels that no loss or metric counts")
    check.add_argument("--splits", nargs="+", default=None,
                       help="splits to check (None: train, val, and test if present)")
    check.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                       help="score an intensity-only classifier (fitted on train) on val")
    demo = commands.add_parser("make-demo", formatter_class=formatter,
                               help="write the generated demo dataset to ROOT")
    demo.add_argument("root", help="a folder without train/, val/, test/ or classes.json")
    demo.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    demo.add_argument("--num-train", type=int, default=300, help="training images")
    demo.add_argument("--num-val", type=int, default=50, help="validation images")
    demo.add_argument("--num-test", type=int, default=50, help="test images")
    return parser


def main(argv=None):
    """Run a command line; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    if args.command == "make-demo":
        make_demo(args.root, args.seed, args.num_train, args.num_val, args.num_test)
        print(f"wrote the demo dataset to {args.root}; check it with: python dataset.py check "
              f"{args.root}")
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
