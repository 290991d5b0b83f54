"""Reading images: files opened and fully decoded (a DataError naming an unreadable one), shown
as viewers show them (EXIF orientation applied), pixels scaled to [0, 1] by their dtype's range,
converted to the model's channel count, and normalised."""
import hashlib

import numpy as np
import torch
from PIL import Image, ImageOps

from segnet.data.pixels.stacks import Page, check_single_page, is_nifti, read_page
from segnet.utils import DataError

EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored as shown, 2..8 = flipped and/or rotated
# EXIF orientation tag -> how viewers show the stored pixels (1, or no tag: as stored).
ORIENTATIONS = {2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
                5: "mirrored and rotated 90° counter-clockwise", 6: "rotated 90° clockwise",
                7: "mirrored and rotated 90° clockwise", 8: "rotated 90° counter-clockwise"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
# Pillow modes of images read as RGB (palette, CMYK, ...) or grey (grey + alpha, 1-bit).
IMAGE_CONVERSIONS = {"P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                     "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGB", "RGBA": "RGB", "LA": "L",
                     "La": "L", "1": "L"}


def open_image(path):
    """A fully decoded PIL image; DataError naming the file when it is unreadable or truncated.
    path may be a page of a stack (stacks.Page); a file of several pages read as one image is
    a DataError, never its first page alone."""
    if isinstance(path, Page) or is_nifti(path):
        return read_page(path)
    try:
        with Image.open(path) as pil:
            check_single_page(pil, path)
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


def _oriented(pil):
    """(the image as viewers show it, the EXIF orientation it carried: 1 = none). Pillow
    applies a TIFF's tag while decoding, so TIFFs arrive oriented (and report 1)."""
    orientation = pil.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in ORIENTATIONS:
        pil = ImageOps.exif_transpose(pil)
    return pil, orientation


def read_image(path):
    """(PIL image as viewers show it, its EXIF orientation, stored (H, W)); DataError if
    unreadable."""
    pil = open_image(path)
    stored = (pil.height, pil.width)
    pil, orientation = _oriented(pil)
    return pil, orientation, stored


def pixel_digest(pil):
    """A hash of an image's decoded pixels, mode and size: equal for identical images."""
    digest = hashlib.sha1(f"{pil.mode} {pil.size}".encode())
    digest.update(pil.tobytes())
    return digest.hexdigest()


def _image_pixels(path):
    """(pixels float32 [H,W,n] in [0,1] as viewers show the image, alpha dropped, the file's
    Pillow mode)."""
    pil, _, _ = read_image(path)
    return pil_pixels(pil, path), pil.mode


def pil_pixels(pil, name):
    """A decoded PIL image -> float32 [H,W,n] in [0,1], alpha dropped."""
    if pil.mode in IMAGE_CONVERSIONS:
        pil = pil.convert(IMAGE_CONVERSIONS[pil.mode])
    pixels = _scale_to_unit(np.asarray(pil), name, pil.mode)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def to_model_array(image, in_channels):
    """A PIL image or a numpy array ([H,W] or [H,W,C]; integers scaled by their dtype's range,
    floats kept) -> float32 [C,H,W] with in_channels channels, as load_image gives for files
    (a PIL image's EXIF orientation applied)."""
    if isinstance(image, Image.Image):
        pixels = pil_pixels(_oriented(image)[0], "the image")
    else:
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"expected an image array [H,W] or [H,W,C], got shape {array.shape}")
        pixels = _scale_to_unit(array, "the array", "array")
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels[..., :3]
    pixels, _ = to_channels(pixels, in_channels, "the image")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


# Colour: an RGB image carries real colour when R, G and B differ by at least this much on
# average (a share of the range; grey saved as RGB or JPEG's chroma rounding stay below 1%,
# outdoor photos ~10%); the model takes 3 channels when at least COLOUR_IMAGES of the train
# images do (--in-channels auto), so a few tinted images do not triple the first layer.
COLOUR_SPREAD = 0.02
COLOUR_IMAGES = 0.10


def colour_channels(colour_share):
    """The channel count --in-channels auto gives data whose train images carry real colour
    (COLOUR_SPREAD) in this share: 3 from COLOUR_IMAGES on, else 1 (grey, colour dropped)."""
    return 3 if colour_share >= COLOUR_IMAGES else 1


def channel_sums(pixels):
    """{1: (sum, sum of squares) [1], 3: (...) [3]} float64 of pixels [H, W, n] (n = 1 or 3)
    read as grey (RGB -> luminance) and as RGB (grey repeated): the normalisation of either
    channel count from one read."""
    flat = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
    grey = flat @ LUMA.astype(np.float64)[:, None] if flat.shape[1] == 3 else flat
    rgb = flat if flat.shape[1] == 3 else np.repeat(flat, 3, axis=1)
    return {channels: (values.sum(axis=0), np.square(values).sum(axis=0))
            for channels, values in ((1, grey), (3, rgb))}


def to_channels(pixels, in_channels, path):
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
    """Image file -> float32 [C,H,W] in [0,1] (16-bit / 65535, float TIFF as stored), as
    viewers show it (EXIF orientation applied)."""
    pixels, _ = _image_pixels(path)
    pixels, _ = to_channels(pixels, in_channels, path)
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
