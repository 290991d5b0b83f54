"""Training augmentation as arithmetic on a batch: each sample's random draws are a row of
numbers (FIELDS), and one resampling (scale, rotation, crop and flips), jitter and noise apply
them to a whole batch [N,C,H,W] at once, on whatever device the tensors are on.

transforms.TrainTransform draws the rows and applies them one sample at a time in a loader
worker; on a GPU the workers only cut each sample's source window (uint8 where the images are
8-bit) and `finish_batch` does the rest where the model runs (loaders.py decides)."""
import math

import torch
import torch.nn.functional as F

from segnet.data.pixels.images import normalize

# One sample's draws: the output window's centre in source pixels (rows, cols: pixel i spans
# [i, i+1)), the scale factor, the rotation (radians), flips (0/1), gamma/contrast/brightness
# (1, 1, 0: none), the noise sigma in image values and its seed, and the output size.
FIELDS = ("center_row", "center_col", "factor", "angle", "hflip", "vflip", "gamma",
          "contrast", "brightness", "noise_sigma", "noise_seed", "out_height", "out_width")
FIELD = {name: index for index, name in enumerate(FIELDS)}
NOISE_SEEDS = 2**31  # noise seeds are drawn below this: exact in a float64 row


def draws(**values):
    """A float64 row of FIELDS; fields not given are "no change" (factor 1, gamma 1, ...)."""
    row = {"center_row": 0.0, "center_col": 0.0, "factor": 1.0, "angle": 0.0, "hflip": 0.0,
           "vflip": 0.0, "gamma": 1.0, "contrast": 1.0, "brightness": 0.0, "noise_sigma": 0.0,
           "noise_seed": 0.0, "out_height": 1.0, "out_width": 1.0}
    unknown = set(values) - set(row)
    assert not unknown, f"unknown augmentation fields {unknown}"
    row.update(values)
    return torch.tensor([float(row[name]) for name in FIELDS], dtype=torch.float64)


def column(params, name):
    """One field of every row, shaped [N,1,1] to broadcast over a batch's pixels."""
    return params[:, FIELD[name]].view(-1, 1, 1)


def output_offsets(params, out_size):
    """(rows, cols) [N,H,W] float32: each output pixel centre's offset from its window's
    centre (a flip negates its axis: exact mirror images), and valid [N,H,W]: inside the
    sample's own output size (smaller ones are padded up to out_size)."""
    height, width = out_size
    device = params.device
    out_height, out_width = column(params, "out_height"), column(params, "out_width")
    row_index = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1)
    col_index = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1)
    rows = row_index + 0.5 - out_height / 2
    cols = col_index + 0.5 - out_width / 2
    rows = torch.where(column(params, "vflip") > 0, -rows, rows)
    cols = torch.where(column(params, "hflip") > 0, -cols, cols)
    valid = (row_index < out_height) & (col_index < out_width)
    return rows.expand(-1, -1, width), cols.expand(-1, height, -1), valid


def source_points(params, out_size):
    """(rows, cols, valid) [N,H,W]: the continuous source position of each output pixel centre,
    for windows centred on (center_row, center_col), scaled by factor and rotated by angle."""
    offset_rows, offset_cols, valid = output_offsets(params, out_size)
    angle, factor = column(params, "angle"), column(params, "factor")
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = column(params, "center_row") + (sin * offset_cols + cos * offset_rows) / factor
    cols = column(params, "center_col") + (cos * offset_cols - sin * offset_rows) / factor
    return rows, cols, valid


def resample(images, masks, rows, cols, valid, ignore_index):
    """Images [N,C,h,w] float bilinear and masks [N,h,w] by exact index look-up (the pixel
    holding each point) at the points [N,H,W]; outside the source, or outside `valid`, the
    image is 0 and the mask ignore_index (int64 [N,H,W])."""
    count, _, height, width = images.shape
    grid = torch.stack((cols * (2 / width) - 1, rows * (2 / height) - 1), dim=-1)
    images = F.grid_sample(images, grid.to(images.dtype), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    row_index, col_index = rows.floor().long(), cols.floor().long()
    inside = valid & (row_index >= 0) & (row_index < height) & (col_index >= 0) & (
        col_index < width)
    flat = (row_index.clamp(0, height - 1) * width + col_index.clamp(0, width - 1))
    picked = masks.reshape(count, -1).gather(1, flat.reshape(count, -1)).view_as(flat)
    masks = torch.where(inside, picked.long(), torch.full_like(flat, ignore_index))
    return images * valid[:, None].to(images.dtype), masks


def jitter(images, params, valid, value_range):
    """Each sample's gamma, contrast and brightness relative to the images' value range (low,
    high): [0,1] for 8-bit images, e.g. [0, 0.0625] for 12-bit data stored in 16 bits, where an
    absolute brightness step would wash the image out. Contrast turns about the per-channel
    mean of the sample's own output window."""
    low, high = value_range
    span = max(high - low, 1e-12)
    weights = valid[:, None].to(images.dtype)
    images = ((images - low) / span).clamp(0, 1).pow(column(params, "gamma")[:, None])
    mean = (images * weights).sum(dim=(-2, -1), keepdim=True) / weights.sum(
        dim=(-2, -1), keepdim=True).clamp(min=1)
    contrast, brightness = column(params, "contrast")[:, None], column(params, "brightness")
    images = ((images - mean) * contrast + mean + brightness[:, None]).clamp(0, 1)
    return images * span + low


def add_noise(images, host_params):
    """Gaussian noise of each sample's sigma, drawn from its own seed (so a sample's noise does
    not depend on its batch); host_params: the rows on the CPU (no device sync to read them)."""
    rows = host_params[:, [FIELD["noise_sigma"], FIELD["noise_seed"], FIELD["out_height"],
                           FIELD["out_width"]]].tolist()
    channels, height, width = images.shape[1:]
    noisy = []
    for image, (sigma, seed, out_height, out_width) in zip(images, rows):
        if sigma:  # drawn at the sample's own size, then padded to the batch's
            generator = torch.Generator(device=images.device).manual_seed(int(seed))
            noise = torch.randn((channels, int(out_height), int(out_width)),
                                generator=generator, device=images.device, dtype=images.dtype)
            image = image + F.pad(noise * sigma, (0, width - int(out_width), 0,
                                                  height - int(out_height)))
        noisy.append(image)
    return torch.stack(noisy)


def augment(images, masks, host_params, out_size, ignore_index, value_range=(0.0, 1.0),
            jitter_on=True, noise_on=True, geometry=True):
    """Images [N,C,h,w] float (image values), masks [N,h,w] integer and the draws [N, FIELDS]
    (on the CPU) -> (images float [N,C,H,W], masks int64 [N,H,W], valid [N,H,W]) of out_size
    (H, W): one resampling (geometry=False: none, the images are already the output), then
    jitter and noise; on the images' device."""
    params = host_params.to(images.device, torch.float32, non_blocking=True)
    if geometry:
        rows, cols, valid = source_points(params, out_size)
        images, masks = resample(images, masks, rows, cols, valid, ignore_index)
    else:
        masks = masks.long()
        valid = torch.ones((1, *images.shape[-2:]), dtype=torch.bool, device=images.device)
    if jitter_on:
        images = jitter(images, params, valid, value_range)
    if noise_on:
        images = add_noise(images, host_params)
    return images, masks, valid


# ------------------------------------------------------------ the worker's cut, the device's rest

def source_box(params, shape):
    """(top, left, height, width): the integer source window that every output pixel of one
    sample (a row of draws) samples from, bilinear neighbours included; it may reach beyond
    the image of `shape` (h, w), where it is padding."""
    height, width = params[FIELD["out_height"]].item(), params[FIELD["out_width"]].item()
    factor, angle = params[FIELD["factor"]].item(), params[FIELD["angle"]].item()
    half_rows = (abs(math.cos(angle)) * height + abs(math.sin(angle)) * width) / (2 * factor)
    half_cols = (abs(math.sin(angle)) * height + abs(math.cos(angle)) * width) / (2 * factor)
    center_row, center_col = params[FIELD["center_row"]].item(), params[FIELD["center_col"]].item()
    top = math.floor(center_row - half_rows) - 1
    left = math.floor(center_col - half_cols) - 1
    bottom = math.ceil(center_row + half_rows) + 1
    right = math.ceil(center_col + half_cols) + 1
    return top, left, bottom - top, right - left


def cut(tensor, box, fill):
    """tensor [..., h, w] -> its window box (top, left, height, width), `fill` where the window
    leaves the tensor."""
    top, left, height, width = box
    rows, cols = tensor.shape[-2:]
    if top >= 0 and left >= 0 and top + height <= rows and left + width <= cols:
        return tensor[..., top:top + height, left:left + width]
    window = tensor.new_full((*tensor.shape[:-2], height, width), fill)
    row_start, row_end = max(top, 0), min(top + height, rows)
    col_start, col_end = max(left, 0), min(left + width, cols)
    if row_end > row_start and col_end > col_start:
        window[..., row_start - top:row_end - top, col_start - left:col_end - left] = \
            tensor[..., row_start:row_end, col_start:col_end]
    return window


def mask_dtype(mask, ignore_index):
    """The mask's integer type if it holds ignore_index, else int64."""
    info = torch.iinfo(mask.dtype)
    return mask.dtype if info.min <= ignore_index <= info.max else torch.int64


def cut_sample(image, mask, params, ignore_index):
    """(image window, mask window, params with the centre moved into the window): what a loader
    worker hands over for `finish_batch`; the image in its stored type (uint8 for 8-bit)."""
    box = source_box(params, mask.shape)
    params = params.clone()
    params[FIELD["center_row"]] -= box[0]
    params[FIELD["center_col"]] -= box[1]
    mask = mask.to(mask_dtype(mask, ignore_index))
    return cut(image, box, 0), cut(mask, box, ignore_index), params


def crop_collate(batch, ignore_index=255):
    """cut_sample's windows of different sizes -> (images [N,C,h,w] uint8 where all are uint8,
    else float32 in [0,1] scale; masks [N,h,w] in a type holding ignore_index; draws [N,
    FIELDS] float64), padded at the bottom and right (0, ignore_index)."""
    images, masks, params = zip(*batch)
    height = max(mask.shape[0] for mask in masks)
    width = max(mask.shape[1] for mask in masks)
    eight_bit = all(image.dtype == torch.uint8 for image in images)
    image_type = torch.uint8 if eight_bit else torch.float32
    mask_type = masks[0].dtype
    for mask in masks[1:]:
        mask_type = torch.promote_types(mask_type, mask.dtype)
    image_batch = torch.zeros((len(images), images[0].shape[0], height, width), dtype=image_type)
    mask_batch = torch.full((len(masks), height, width), ignore_index, dtype=mask_type)
    for index, (image, mask) in enumerate(zip(images, masks)):
        if not eight_bit and image.dtype == torch.uint8:
            image = image.float() / 255
        image_batch[index, :, :image.shape[1], :image.shape[2]] = image
        mask_batch[index, :mask.shape[0], :mask.shape[1]] = mask
    return image_batch, mask_batch, torch.stack(params)


class FinishBatch:
    """The device's half of the training pipeline: crop_collate's batch -> (images float32
    [N,C,H,W] normalised, masks int64 [N,H,W]) on `device`, through augment(); the pixels a
    sample's smaller output is padded with are 0 after normalisation, as pad_collate pads."""

    def __init__(self, transform, normalization, device, channels_last=False):
        self.transform, self.normalization = transform, normalization
        self.device, self.channels_last = device, channels_last

    def __call__(self, images, masks, params):
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        transform = self.transform
        out_size = transform.crop_size or (int(params[:, FIELD["out_height"]].max()),
                                           int(params[:, FIELD["out_width"]].max()))
        images, masks, valid = augment(
            images, masks, params, out_size, transform.ignore_index, transform.value_range,
            jitter_on=bool(transform.jitter), noise_on=bool(transform.noise))
        images = normalize(images, self.normalization) * valid[:, None]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks
