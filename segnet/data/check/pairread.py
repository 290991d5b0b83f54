"""One pair read for the scan: an image's statistics and its mask's summary, small values that
a worker process sends back (no pixels), and the problems of a pair that could not be read.
checks.SplitScan folds them in sample order."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model import MIN_SIZE
from segnet.data.pixels.images import channel_sums, pil_pixels, pixel_digest, read_image
from segnet.data.pixels.masks import MaskSummary, summarize_mask
from segnet.utils import DataError

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "tif": "TIFF", "tiff": "TIFF",
           "bmp": "BMP", "gif": "GIF"}  # extension -> the format Pillow names


@dataclass
class ImageStats:
    """What the scan keeps of one image (read as viewers show it)."""

    path: object  # the file, or a stack's page (stacks.Page)
    size: tuple  # (H, W) as shown
    channels: int  # 1 or 3, as read (alpha dropped)
    mode: str  # the file's Pillow mode
    orientation: int  # EXIF orientation tag (1: none)
    stored: tuple  # (H, W) as stored
    digest: str  # pixels.pixel_digest: equal for identical images
    low: float  # smallest pixel value in [0, 1] units (float images as stored)
    high: float
    sums: dict  # images.channel_sums: {1 or 3: (sum, sum of squares)} per channel
    spread: tuple = None  # RGB: (coloured share, mean spread), or () for grey stored as RGB
    problems: list = field(default_factory=list)  # too small for the network
    content: str = None  # the format the file holds when its name says another (a GIF .jpg)


@dataclass
class PairRead:
    """One sample as the scan read it: image None when it could not be read, mask None when
    the mask could not (problems say why, naming the file)."""

    image: ImageStats = None
    mask: MaskSummary = None
    problems: list = field(default_factory=list)


def _colour_spread(rgb):
    """(share of pixels with colour, mean spread) of an RGB image [H,W,3] in [0,1]; () when
    R = G = B everywhere."""
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    if not spread.any():
        return ()
    return float(np.mean(spread > 1 / 255)), float(spread.mean())


def image_stats(path, pixels, mode, orientation=1, stored=None, digest=None):
    """ImageStats of an image's pixels [H,W,n] as read (n = 1 or 3)."""
    height, width = pixels.shape[:2]
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    problems = [f"{path} is {height}x{width}: SegNet needs at least {MIN_SIZE} pixels per "
                f"side; remove or enlarge it"] * (min(height, width) < MIN_SIZE)
    return ImageStats(path, (height, width), pixels.shape[2], mode, orientation,
                      stored or (height, width), digest, low, high, channel_sums(pixels),
                      _colour_spread(pixels) if pixels.shape[2] == 3 else None, problems)


def misnamed(path, actual):
    """The format a file holds when its extension names another (Oxford-IIIT Pet ships GIFs
    named .jpg: Pillow reads them by content), else None."""
    expected = FORMATS.get(str(path).lower().rpartition(".")[2]) if isinstance(path, Path) \
        else None
    return actual if expected and actual and actual != expected else None


def read_pair(sample):
    """PairRead of one (name, image path, mask path): the image, then its mask, each read once.
    A DataError becomes the read's problems, so a pool reports it as one process would."""
    name, image_path, mask_path = sample
    read = PairRead()
    try:
        pil, orientation, stored = read_image(image_path)
        shown = pil_pixels(pil, image_path)
        read.image = image_stats(image_path, shown, pil.mode, orientation, stored,
                                 pixel_digest(pil))
        read.image.content = misnamed(image_path, pil.format)
        del pil, shown  # before the mask is read: a lower peak
        read.mask = summarize_mask(mask_path, read.image.size)
        read.mask.name = name
    except DataError as error:  # collected: the check reports every problem at once
        read.problems = list(error.problems)
    return read
