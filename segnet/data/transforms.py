"""Joint image/mask transforms: (image float32 [C,H,W], mask int64 [H,W]) -> the same.

Masks are never interpolated: nearest-neighbour index maps only, padding with the ignore index.
`train_transform` builds the training pipeline from the run's settings; `pad_collate` batches
samples of different sizes."""
import math

import torch
import torch.nn.functional as F


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


def _jitter(image, strength, value_range=(0.0, 1.0)):
    """Random gamma (exp(+-s)), contrast (1 +- s) and brightness (+- s/2) relative to the
    images' value range (low, high): [0,1] for 8-bit images, e.g. [0, 0.0625] for 12-bit data
    stored in 16 bits, where an absolute brightness step would wash the image out."""
    low, high = value_range
    span = max(high - low, 1e-12)
    gamma = math.exp(_uniform(-strength, strength))
    contrast = _uniform(1 - strength, 1 + strength)
    brightness = _uniform(-strength, strength) / 2
    image = ((image - low) / span).clamp(0, 1).pow(gamma)
    mean = image.mean(dim=(-2, -1), keepdim=True)
    return ((image - mean) * contrast + mean + brightness).clamp(0, 1) * span + low


class TrainTransform:
    """Random joint augmentation for training.

    Geometry (one resampling): scale by `base_scale` times a factor in `scale`, rotate within
    +-`rotate` degrees, crop `crop_size` (padding where the image is smaller; centred on
    `focus`, a (row, col) of the image, when given: rare-class sampling), then horizontal /
    vertical flips. The image is interpolated bilinearly; the mask only by exact index look-up,
    padding with ignore_index. Then, on the image only: gamma/contrast/brightness `jitter` and
    gaussian `noise` (sigma up to that value), both relative to `value_range`, the images'
    (lowest, highest) value. Each is off with 0, None or False. image_size: first resize
    (as EvalTransform) to that square. Output size: crop_size, else the scaled image size.
    Randomness comes from torch's global RNG (DataLoader seeds each worker).
    """

    def __init__(self, crop_size=None, scale=(0.75, 1.25), hflip=True, vflip=True, rotate=15.0,
                 jitter=0.2, noise=0.02, ignore_index=255, base_scale=1.0, value_range=(0.0, 1.0),
                 image_size=None):
        self.crop_size = _as_size(crop_size) if crop_size else None
        self.scale = tuple(float(s) for s in scale) if scale else None
        if self.scale and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if (rotate or 0) < 0 or (noise or 0) < 0 or not 0 <= (jitter or 0) < 1:
            raise ValueError(f"need rotate >= 0, noise >= 0 and 0 <= jitter < 1, got "
                             f"rotate={rotate}, noise={noise}, jitter={jitter}")
        if not base_scale > 0:
            raise ValueError(f"base_scale must be > 0, got {base_scale}")
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.rotate, self.jitter, self.noise = float(rotate or 0), float(jitter or 0), float(
            noise or 0)
        self.ignore_index, self.base_scale = ignore_index, float(base_scale)
        self.value_range = tuple(float(v) for v in value_range)
        self.resize = EvalTransform(image_size) if image_size else None

    def __call__(self, image, mask, focus=None):
        if self.resize is not None:
            focus = self.resize.map_point(focus, mask.shape)
            image, mask = self.resize(image, mask)
        image, mask = self.resample(image, mask, focus)
        if self.hflip and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.vflip and torch.rand(()) < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if self.jitter:
            image = _jitter(image, self.jitter, self.value_range)
        if self.noise:
            span = self.value_range[1] - self.value_range[0]
            image = image + torch.randn_like(image) * (self.noise * span * torch.rand(()).item())
        return image, mask

    def resample(self, image, mask, focus=None):
        """Random scale, rotation and crop as one resampling of image and mask; the crop
        centred on focus (row, col), kept inside the image where it fits."""
        if not (self.scale or self.rotate or self.crop_size or self.base_scale != 1):
            return image, mask
        height, width = mask.shape
        factor = (_uniform(*self.scale) if self.scale else 1.0) * self.base_scale
        angle = math.radians(_uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
        out_size = self.crop_size or (max(1, round(height * factor)), max(1, round(width * factor)))
        top = _window_start(height * factor, out_size[0])
        left = _window_start(width * factor, out_size[1])
        if focus is not None and self.crop_size:
            top = _centred_start(focus[0], height * factor, out_size[0], factor)
            left = _centred_start(focus[1], width * factor, out_size[1], factor)
        center = ((top + out_size[0] / 2) / factor, (left + out_size[1] / 2) / factor)
        rows, cols = _source_coordinates(out_size, center, factor, angle)
        return _sample(image, mask, rows, cols, self.ignore_index)


def _centred_start(position, scaled_length, out_length, factor):
    """Offset of an output window centred on pixel `position` of the unscaled side, moved back
    inside the scaled image when the window fits in it."""
    start = (position + 0.5) * factor - out_length / 2
    if scaled_length >= out_length:
        start = min(max(start, 0.0), scaled_length - out_length)
    return start


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

    def map_point(self, point, shape):
        """(row, col) of an image of `shape` (H, W) -> the same point after the resize."""
        if point is None or self.image_size is None:
            return point
        return (int(point[0] * self.image_size[0] / shape[0]),
                int(point[1] * self.image_size[1] / shape[1]))


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


def train_transform(crop_size=0, scale=(0.75, 1.25), flip=True, rotate=15.0, jitter=0.2,
                    noise=0.02, ignore_index=255, image_size=None, augment=True, hflip=None,
                    vflip=None, base_scale=1.0, value_range=(0.0, 1.0)):
    """The training pipeline: (resize to image_size x image_size,) random scale (times
    base_scale) then crop (crop_size 0: whole images), flips (hflip, vflip; None: `flip`),
    rotation, brightness/contrast/gamma jitter and noise relative to value_range.
    augment=False keeps the crop (and base_scale) alone."""
    hflip = augment and (flip if hflip is None else hflip)
    vflip = augment and (flip if vflip is None else vflip)
    return TrainTransform(crop_size=crop_size or None,
                          scale=tuple(scale) if augment else None, hflip=hflip, vflip=vflip,
                          rotate=rotate if augment else 0, jitter=jitter if augment else 0,
                          noise=noise if augment else 0, ignore_index=ignore_index,
                          base_scale=base_scale, value_range=value_range, image_size=image_size)
