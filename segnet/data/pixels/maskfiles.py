"""Mask files as stored: one file (a page of a stack, a .npy array, an image) or several masks
of one image read as their union (BUSI's `benign (4)_mask.png` + `benign (4)_mask_1.png`),
and grey masks saved as JPEG with three near-equal channels read as one. What the values mean
is decided in masks.py."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segnet.data.pixels.images import EXIF_ORIENTATION, open_image
from segnet.data.pixels.stacks import is_nifti, nifti_slice
from segnet.utils import DataError

JPEG_SUFFIXES = (".jpg", ".jpeg")
# A JPEG mask whose channels differ by at most this much is grey: chroma noise, not colour.
JPEG_GREY_SPREAD = 24


@dataclass(frozen=True)
class MaskUnion:
    """Several mask files of one image (one lesion a file): read as their pixel-wise maximum,
    so a pixel is labelled when any of them labels it."""

    paths: tuple

    def __str__(self):
        return " + ".join(str(path) for path in self.paths)

    @property
    def name(self):
        return Path(self.paths[0]).name

    @property
    def suffix(self):
        return Path(self.paths[0]).suffix


@dataclass
class MaskFile:
    """A mask file as stored: values, Pillow mode, palette, alpha channel, EXIF orientation."""

    array: np.ndarray  # [H,W] values (palette indices for "P"), [H,W,3] colours, or .npy's array
    mode: str
    palette: list = None
    alpha: np.ndarray = None  # [H,W] of RGBA / LA / PA files
    orientation: int = 1


def is_jpeg(path):
    return str(path).lower().endswith(JPEG_SUFFIXES)


def read_mask_file(path):
    """A mask file as stored: [H,W] values (palette indices for "P" mode) or [H,W,3] colours
    from image files, the stored array from .npy; alpha and EXIF orientation kept aside (an
    orientation tag is reported, never applied). A MaskUnion: its files' pixel-wise maximum."""
    if isinstance(path, MaskUnion):
        return _read_union(path)
    if is_nifti(path):
        return MaskFile(nifti_slice(path), "NIfTI")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} cannot be read as .npy ({error}): save it with "
                            f"numpy.save(path, array)") from error
        return MaskFile(array, f"npy {array.dtype}")
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
        array = _jpeg_grey(array[..., :3], path)
    return MaskFile(array, mode, palette, alpha, orientation)


def _jpeg_grey(array, path):
    """A JPEG's [H,W,3] as [H,W] grey where its channels differ only by compression noise
    (Kvasir-SEG's masks); other arrays as they are."""
    if not is_jpeg(path):
        return array
    wide = array.astype(np.int16)
    spread = np.abs(wide - wide.mean(axis=2, keepdims=True)).max(initial=0)
    if spread > JPEG_GREY_SPREAD:
        return array
    return np.round(wide.mean(axis=2)).astype(np.uint8)


def _read_union(union):
    """The pixel-wise maximum of a union's masks; DataError when their sizes or kinds differ."""
    stored = [read_mask_file(Path(path)) for path in union.paths]
    shapes = {part.array.shape for part in stored}
    if len(shapes) > 1:
        raise DataError(f"the masks of one image differ in size ({union}: "
                        f"{', '.join(str(list(part.array.shape)) for part in stored)}): save "
                        f"every mask of an image at the image's size")
    first = stored[0]
    array = np.maximum.reduce([part.array for part in stored])
    return MaskFile(array, first.mode, first.palette, None, first.orientation)


def mask_array(path):
    """A mask file's stored values (what decoding reads), e.g. to compare two masks."""
    return read_mask_file(path).array
