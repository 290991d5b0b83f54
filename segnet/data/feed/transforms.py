"""Joint image/mask transforms: (image float32 [C,H,W], mask int64 [H,W]) -> the same.

Masks are never interpolated: nearest-neighbour index maps only, padding with the ignore index.
`train_transform` builds the training pipeline from the run's settings; `pad_collate` batches
samples of different sizes."""
import math

import torch
import torch.nn.functional as F

from segnet.data.feed import augment
from segnet.data.feed.augment import FIELD


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
        params = self.draw(mask.shape, focus)
        moves = self.moves()
        if not moves:  # flips alone: exact, no resampling
            if params[FIELD["hflip"]]:
                image, mask = image.flip(-1), mask.flip(-1)
            if params[FIELD["vflip"]]:
                image, mask = image.flip(-2), mask.flip(-2)
        images, masks, _ = augment.augment(
            image[None], mask[None], params[None], self.out_size(params), self.ignore_index,
            self.value_range, jitter_on=bool(self.jitter), noise_on=bool(self.noise),
            geometry=moves)
        return images[0], masks[0]

    def moves(self):
        """Whether the geometry resamples (scale, rotation, crop) rather than only flipping."""
        return bool(self.scale or self.rotate or self.crop_size or self.base_scale != 1)

    def out_size(self, params):
        return (int(params[FIELD["out_height"]]), int(params[FIELD["out_width"]]))

    def draw(self, shape, focus=None):
        """This sample's random draws (augment.FIELDS, a float64 row) for an image of `shape`
        (h, w): scale, rotation and a crop window (centred on focus (row, col), kept inside
        the image where it fits), flips, jitter and noise; from torch's global RNG."""
        height, width = shape
        values = {"center_row": height / 2, "center_col": width / 2, "out_height": height,
                  "out_width": width}  # the whole image as it is
        if self.moves():
            values = self.draw_window(shape, focus)
        values["hflip"] = float(self.hflip and bool(torch.rand(()) < 0.5))
        values["vflip"] = float(self.vflip and bool(torch.rand(()) < 0.5))
        if self.jitter:
            values.update(gamma=math.exp(_uniform(-self.jitter, self.jitter)),
                          contrast=_uniform(1 - self.jitter, 1 + self.jitter),
                          brightness=_uniform(-self.jitter, self.jitter) / 2)
        if self.noise:
            span = self.value_range[1] - self.value_range[0]
            values.update(noise_sigma=self.noise * span * torch.rand(()).item(),
                          noise_seed=int(torch.randint(0, augment.NOISE_SEEDS, ()).item()))
        return augment.draws(**values)

    def draw_window(self, shape, focus=None):
        """Scale, rotation and the output window's centre and size (augment.FIELDS)."""
        height, width = shape
        factor = (_uniform(*self.scale) if self.scale else 1.0) * self.base_scale
        angle = math.radians(_uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
        out_size = self.crop_size or (max(1, round(height * factor)), max(1, round(width * factor)))
        top = _window_start(height * factor, out_size[0])
        left = _window_start(width * factor, out_size[1])
        if focus is not None and self.crop_size:
            top = _centred_start(focus[0], height * factor, out_size[0], factor)
            left = _centred_start(focus[1], width * factor, out_size[1], factor)
        return {"center_row": (top + out_size[0] / 2) / factor,
                "center_col": (left + out_size[1] / 2) / factor, "factor": factor,
                "angle": angle, "out_height": out_size[0], "out_width": out_size[1]}

    def crop(self, image, mask, focus=None):
        """The loader worker's half when the rest runs on the device (augment.FinishBatch):
        the draws and the source window they read (augment.cut_sample), image in its stored
        type (a cached 8-bit image stays uint8)."""
        assert self.resize is None, "an image_size resize runs in the worker (TrainTransform)"
        return augment.cut_sample(image, mask, self.draw(mask.shape, focus), self.ignore_index)


class WorkerCrop:
    """A loader worker's half of a TrainTransform whose rest runs on the device: the sample's
    draws and its source window (TrainTransform.crop), batched by augment.crop_collate and
    finished by augment.FinishBatch. SegmentationDataset hands it the stored (packed) sample."""
    packed = True

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image, mask, focus=None):
        return self.transform.crop(image, mask, focus)


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
