"""The Dataset: the (image, mask) samples of one split, decoded as the scan decided.

Contract: a sample is (image float32 [C,H,W] normalised with the train split's mean/std,
mask int64 [H,W] with values in 0..num_classes-1 or ignore_index). Every problem with user data
raises DataError naming the file(s), the problem and the fix.
"""
from pathlib import Path

import torch
from torch.utils.data import Dataset

from segnet.data.check.scan import scan_dataset
from segnet.data.feed.sampling import (ClassPositions, class_members, pick_focus, pick_position,
                                       pick_sample)
from segnet.data.files.index import split_pairs
from segnet.data.pixels.images import load_image, normalize
from segnet.data.pixels.masks import decode_mask
from segnet.utils import DataError

def pack_sample(image, mask):
    """An exact, compact copy of a decoded sample for a cache: an image whose values are all
    k / 255 (an 8-bit source) as uint8, a mask in the smallest integer type holding its values."""
    levels = (image * 255).round()
    eight_bit = torch.equal(levels / 255, image) and (not image.numel() or (
        levels.min() >= 0 and levels.max() <= 255))  # a float TIFF may hold any value
    image = levels.to(torch.uint8) if eight_bit else image.clone()
    low, high = (int(mask.min()), int(mask.max())) if mask.numel() else (0, 0)
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        if torch.iinfo(dtype).min <= low and high <= torch.iinfo(dtype).max:
            return image, mask.to(dtype, copy=True)


def unpack_sample(image, mask):
    """pack_sample's inverse: new float32 and int64 tensors, equal to the decoded ones."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image.clone()
    return image, mask.to(torch.int64, copy=True)


class SegmentationDataset(Dataset):
    """The (image, mask) pairs of ROOT/split, decoded as scan_dataset decided (info; without
    one, the dataset is scanned here with scan_dataset's defaults: pass scan_dataset(root, ...)
    for other channels, a class table or a threshold).

    __getitem__ -> (image float32 [C,H,W] normalised with info["normalization"], mask int64
    [H,W] in 0..num_classes-1 or ignore_index). transform(image in [0,1], mask) runs before
    the normalisation. cache=True keeps decoded samples (before the transform) in memory, in a
    compact exact form (8-bit images as uint8, masks in the smallest integer type), up to
    cache_bytes (None: no limit; past it, samples are decoded every time); each DataLoader
    worker holds its own cache, so use persistent_workers=True with it. class_sampling: the
    share of samples that show a class drawn uniformly among the train set's classes: an image
    holding it (info["image_classes"]; else the sample's own image and a class among those in
    it), the crop centred on one of its pixels (sampling.py; the transform must take
    focus=(row, col)). index: the dataset's files.index.DataIndex, built once for every
    split of a run (without one, the split is listed here).
    """

    def __init__(self, root, split, info=None, transform=None, cache=False, cache_bytes=None,
                 class_sampling=0.0, index=None):
        if info is None:  # grey images, decoding inferred from train: scan_dataset's defaults
            info = scan_dataset(root, splits=tuple(dict.fromkeys(("train", split))))
        pairs = index.split(split) if index is not None else split_pairs(
            root, split, info.get("holdout"), info.get("layout"))
        self.root, self.split, self.info, self.transform = Path(root), split, info, transform
        self.names = [stem for stem, _, _ in pairs]
        self.image_paths = [image_path for _, image_path, _ in pairs]
        self.mask_paths = [mask_path for _, _, mask_path in pairs]
        self._cache = {} if cache else None
        self.cache_bytes, self.cached_bytes = cache_bytes, 0
        self.class_sampling = class_sampling
        self.positions = ClassPositions(info["num_classes"]) if class_sampling else None
        self.members = (class_members(info["image_classes"], self.names, info["num_classes"])
                        if class_sampling and info.get("image_classes") else None)

    def __len__(self):
        return len(self.names)

    def load_sample(self, index):
        """Decoded (image float32 [C,H,W] in [0,1], mask int64 [H,W]) before any transform."""
        if self._cache is not None and index in self._cache:
            return unpack_sample(*self._cache[index])
        return self._decode(index)

    def load_packed(self, index):
        """The sample as pack_sample stores it (an 8-bit image as uint8, the mask in a small
        integer type): the cached tensors themselves, read-only, or a fresh decode."""
        if self._cache is None or index not in self._cache:
            image, mask = self._decode(index)
            if self._cache is None or index not in self._cache:
                return pack_sample(image, mask)
        return self._cache[index]

    def _decode(self, index):
        """Read and decode one pair, caching its packed form where the cache has room."""
        image = load_image(self.image_paths[index], self.info["in_channels"])
        mask = decode_mask(self.mask_paths[index], self.info["mask_decoding"],
                           self.info["ignore_index"])
        if image.shape[1:] != mask.shape:
            raise DataError(f"size mismatch: image {self.image_paths[index]} is "
                            f"{image.shape[1]}x{image.shape[2]}, mask {self.mask_paths[index]} "
                            f"is {mask.shape[0]}x{mask.shape[1]}")
        image, mask = torch.from_numpy(image), torch.from_numpy(mask)
        if self._cache is not None and self._may_fit(image.numel() + mask.numel()):
            packed = pack_sample(image, mask)
            size = sum(part.numel() * part.element_size() for part in packed)
            if self._may_fit(size):
                self._cache[index] = packed
                self.cached_bytes += size
        return image, mask

    def _may_fit(self, size):
        """Whether `size` more bytes stay within cache_bytes (a sample packs to at least a byte
        a value: one that cannot fit is not packed at all)."""
        return self.cache_bytes is None or self.cached_bytes + size <= self.cache_bytes

    def __getitem__(self, index):
        """A transformed, normalised sample; with a transform that finishes on the device
        (transforms.WorkerCrop: packed = True), what it hands over, unnormalised."""
        packed = getattr(self.transform, "packed", False)
        drawn = None
        if self.transform is not None and self.members:
            drawn = pick_sample(self.members, self.class_sampling)
            index = drawn[0] if drawn else index
        image, mask = self.load_packed(index) if packed else self.load_sample(index)
        if self.transform is None:
            return normalize(image, self.info["normalization"]), mask
        focus = None
        if self.positions is not None and self.members:
            focus = drawn and pick_position(self.positions.get(index, mask), drawn[1],
                                            mask.shape[1])
        elif self.positions is not None:
            focus = pick_focus(self.positions.get(index, mask), self.class_sampling,
                               mask.shape[1])
        sample = (self.transform(image, mask, focus=focus or None)
                  if self.positions is not None else self.transform(image, mask))
        return sample if packed else (normalize(sample[0], self.info["normalization"]),
                                      sample[1])


