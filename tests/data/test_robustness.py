"""Bad input is named or handled: a list of kinds of broken or unusual data (each a clear error
naming the file, or decoded to asserted values), a hypothesis fuzz of mask decoding and dataset
construction, untrusted checkpoints, and range checks of every train.py flag.
SEGNET_FUZZ_EXAMPLES=500 runs a longer fuzz (default 100 examples per fuzz test)."""
import csv
import json
import math
import os
import pickle
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import dataset
import train
from model import SegNet
from segnet import utils
from segnet.data.pixels import masks
from segnet.data.feed.dataset import SegmentationDataset
from segnet.inference import inference, plots
from segnet.utils import DataError

SIZE = 16
FUZZ_EXAMPLES = int(os.environ.get("SEGNET_FUZZ_EXAMPLES", "100"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest and does not stall beside busy neighbours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- writing data

def grey(seed=0, size=(SIZE, SIZE)):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def stripes(values=(0, 1, 2), size=(SIZE, SIZE)):
    """Vertical stripes of the values, so every value is present."""
    width = size[1]
    row = np.array(values)[np.arange(width) * len(values) // width]
    return np.broadcast_to(row, size).copy()


def save(path, array):
    """An array as an image file (Pillow) or .npy, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
    elif isinstance(array, Image.Image):
        array.save(path)
    else:
        Image.fromarray(array).save(path)
    return path


def base_dataset(root, mask_ext=".png", masks=None):
    """train a, b and val c: random grey 16x16 images, index masks 0..2 (or `masks`)."""
    for split, stem, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        save(root / split / "images" / f"{stem}.png", grey(seed))
        mask = stripes() if masks is None else masks[stem]
        save(root / split / "masks" / f"{stem}{mask_ext}", mask.astype(np.uint8))
    return root


def png_header_only(path, width, height):
    """A PNG that declares width x height 8-bit grey pixels but holds none (a bomb's header)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def jpeg_like(size=(SIZE, SIZE)):
    """A 0/255 mask with anti-aliased edge values, as JPEG masks have."""
    mask = np.zeros(size, dtype=np.uint8)
    mask[:, size[1] // 2:] = 255
    mask[:, size[1] // 2 - 1] = np.linspace(1, 254, size[0]).astype(np.uint8)
    return mask


def class_table(root, classes, name="classes.json"):
    path = root / name
    path.write_text(json.dumps({"classes": classes}))
    return path


def truncate(path, keep=0.5):
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])


def onehot(ids, channels=3):
    return np.eye(channels, dtype=np.uint8)[ids]


# --------------------------------------------------------------------------- the kinds

@dataclass
class Fails:
    """Expect problems (or a DataError) whose text names `names` (a regex)."""

    names: str
    options: dict = field(default_factory=dict)


@dataclass
class Works:
    """Expect no problem; check(info, root) asserts decoded values."""

    check: object = None
    options: dict = field(default_factory=dict)


def image_of(root, split, stem, info):
    """(image [C,H,W] in [0,1], mask) of one pair as SegmentationDataset decodes it."""
    samples = SegmentationDataset(root, split, info)
    return samples.load_sample(samples.names.index(stem))


def corrupt_image(root):
    base_dataset(root)
    (root / "train/images/a.png").write_bytes(os.urandom(300))
    return Fails(r"train.images.a\.png cannot be read")


def truncated_image(root):
    base_dataset(root)
    save(root / "train/images/a.png", grey(0, (64, 64)))
    truncate(root / "train/images/a.png")
    save(root / "train/masks/a.png", stripes(size=(64, 64)).astype(np.uint8))
    return Fails(r"train.images.a\.png cannot be read")


def zero_byte_image(root):
    base_dataset(root)
    (root / "val/images/c.png").write_bytes(b"")
    return Fails(r"val.images.c\.png cannot be read")


def corrupt_mask(root):
    base_dataset(root)
    (root / "train/masks/b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return Fails(r"train.masks.b\.png cannot be read")


def truncated_mask(root):
    base_dataset(root)
    save(root / "val/images/c.png", grey(2, (64, 64)))
    save(root / "val/masks/c.png", stripes(size=(64, 64)).astype(np.uint8))
    truncate(root / "val/masks/c.png", 0.3)
    return Fails(r"val.masks.c\.png cannot be read")


def zero_byte_mask(root):
    base_dataset(root)
    (root / "train/masks/a.png").write_bytes(b"")
    return Fails(r"train.masks.a\.png cannot be read")


def zero_byte_npy_mask(root):
    base_dataset(root, mask_ext=".npy")
    (root / "train/masks/a.npy").write_bytes(b"")
    return Fails(r"train.masks.a\.npy cannot be read as \.npy")


def pickled_npy_mask(root):
    """An object array needs pickle to load: refused (allow_pickle=False), never run."""
    base_dataset(root, mask_ext=".npy")
    np.save(root / "train/masks/a.npy", np.array([{"x": 1}] * 4, dtype=object),
            allow_pickle=True)
    return Fails(r"train.masks.a\.npy cannot be read as \.npy")


def text_file_in_images(root):
    base_dataset(root)
    (root / "train/images/notes.txt").write_text("labelled by Ann")

    def check(info, root):  # skipped with a note, never a refusal (issue 37)
        assert any("1 file(s) that are not images or masks skipped (1 .txt: notes.txt)" in note
                   for note in info["notes"])
    return Works(check)


def npy_file_in_images(root):
    base_dataset(root)
    np.save(root / "train/images/d.npy", grey())
    save(root / "train/masks/d.png", stripes().astype(np.uint8))
    return Fails(r"masks in .*train.masks have no image \(d\.png\)")  # d.npy: skipped


def image_without_mask(root):
    base_dataset(root)
    save(root / "train/images/lonely.png", grey())
    return Fails(r"1 of 3 images .* have no mask .*lonely\.png")


def mask_without_image(root):
    base_dataset(root)
    save(root / "val/masks/orphan.png", stripes().astype(np.uint8))
    return Fails(r"1 of 2 masks .*val.masks have no image .*orphan\.png")


def duplicate_stem(root):
    base_dataset(root)
    save(root / "train/images/a.jpg", grey())
    return Fails(r"a\.jpg and .*a\.png have the same stem|a\.png and .*a\.jpg have the same stem")


def mismatched_sizes(root):
    base_dataset(root)
    save(root / "train/masks/b.png", stripes(size=(SIZE, SIZE + 3)).astype(np.uint8))
    return Fails(r"size mismatch: image .*train.images.b\.png is 16x16, mask .*b\.png is 16x19")


def unexpected_mask_values(root):
    base_dataset(root, masks={"a": stripes(), "b": stripes(), "c": stripes((0, 1, 7))})
    return Fails(r"mask .*val.masks.c\.png has values \{0, 1, 7\} \(\{7\} fit no class\)")


def jpeg_masks(root):
    base_dataset(root)
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        (root / split / "masks" / f"{stem}.png").unlink()
        save(root / split / "masks" / f"{stem}.jpg", jpeg_like())

    def check(info, root):  # two levels plus JPEG noise: binary at 128, said (issue 37)
        assert info["mask_decoding"] == {"kind": "threshold", "num_classes": 2,
                                         "threshold": 128, "source": "two-level JPEG"}
        assert any("JPEG with two levels" in note for note in info["notes"])
        stored = np.asarray(Image.open(root / "train/masks/a.jpg"))
        assert image_of(root, "train", "a", info)[1].tolist() == (stored >= 128).tolist()
    return Works(check)


def empty_split(root):
    base_dataset(root)
    for path in (root / "val/images/c.png", root / "val/masks/c.png"):
        path.unlink()
    return Fails(r"split 'val' is empty: no images in .*val.images")


def split_of_hidden_files(root):
    empty_split(root)
    for folder in ("images", "masks"):
        (root / "val" / folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (root / "val" / folder / "Thumbs.db").write_bytes(b"\xd0\xcf")
    return Fails(r"split 'val' is empty")


def missing_masks_folder(root):
    base_dataset(root)
    for path in (root / "val/masks").iterdir():
        path.unlink()
    (root / "val/masks").rmdir()
    return Fails(r"val.masks not found")


def broken_symlink(root):
    base_dataset(root)
    (root / "train/images/gone.png").symlink_to(root / "nowhere.png")
    (root / "train/masks/gone.png").symlink_to(root / "nowhere.png")
    return Fails(r"broken symbolic links in .*train.images: .*gone\.png")


def symlink_loop(root):
    base_dataset(root)
    (root / "train/masks/x.png").symlink_to(root / "train/masks/y.png")
    (root / "train/masks/y.png").symlink_to(root / "train/masks/x.png")
    return Fails(r"broken symbolic links in .*train.masks: .*x\.png")


def image_too_small(root):
    base_dataset(root)
    save(root / "train/images/a.png", grey(0, (4, 6)))
    save(root / "train/masks/a.png", stripes(size=(4, 6)).astype(np.uint8))
    return Fails(r"train.images.a\.png is 4x6: SegNet needs at least 8")


def nan_in_float_tiff(root):
    base_dataset(root)
    pixels = np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)
    pixels[3, 5] = np.nan
    (root / "train/images/a.png").unlink()
    save(root / "train/images/a.tif", pixels)
    return Fails(r"train.images.a\.tif has 1 non-finite pixel values")


def inf_in_float_tiff(root):
    base_dataset(root)
    pixels = np.ones((SIZE, SIZE), dtype=np.float32)
    pixels[:2] = np.inf
    (root / "val/images/c.png").unlink()
    save(root / "val/images/c.tif", pixels)
    return Fails(r"val.images.c\.tif has 32 non-finite pixel values")


def int32_tiff_beyond_16_bit(root):
    base_dataset(root)
    (root / "train/images/b.png").unlink()
    save(root / "train/images/b.tif", np.full((SIZE, SIZE), 100_000, dtype=np.int32))
    return Fails(r"train.images.b\.tif has an unsupported pixel format")


def decompression_bomb(root):
    """Pillow's limit (2x MAX_IMAGE_PIXELS) stops the file at open, before any allocation."""
    base_dataset(root)
    png_header_only(root / "train/images/a.png", 20_000, 20_000)
    return Fails(r"train.images.a\.png cannot be read \(Image size .* exceeds limit")


def class_table_count_mismatch(root):
    base_dataset(root)
    class_table(root, [{"name": "background"}, {"name": "cell"}])
    return Fails(r"masks.[abc]\.png has values \{0\.\.2\} \(\{2\} fit no class\)")


def class_table_not_json(root):
    base_dataset(root)
    (root / "classes.json").write_text("{name: sky")
    return Fails(r"class table .*classes\.json cannot be read")


def class_table_without_colours(root):
    base_dataset(root, masks={stem: np.stack([stripes() * 100] * 2 + [stripes()], -1)
                              for stem in "abc"})
    class_table(root, [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    return Fails(r"class table entries \['a', 'b', 'c'\] have no colour")


def colour_not_in_class_table(root):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [9, 9, 9]], dtype=np.uint8)
    base_dataset(root, masks={"a": colours[stripes()], "b": colours[stripes()],
                              "c": colours[stripes((0, 1, 3))]})
    class_table(root, [{"name": "bg", "color": [0, 0, 0]}, {"name": "r", "color": [255, 0, 0]},
                       {"name": "g", "color": [0, 255, 0]}])
    return Fails(r"mask .*val.masks.c\.png has colours not in the class table: \(9, 9, 9\)")


def colour_masks_without_class_table(root):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    base_dataset(root, masks={stem: colours[stripes()] for stem in "abc"})
    return Fails(r"train masks are RGB colour masks \(e\.g\. .*masks.a\.png.*--class-table")


def onehot_overlapping_channels(root):
    masks = {stem: onehot(stripes()) for stem in "abc"}
    masks["b"][2, 3] = [1, 1, 0]
    base_dataset(root, mask_ext=".npy", masks=masks)
    return Fails(r"train.masks.b\.npy has 1 pixels with more than one active channel "
                 r"\(e\.g\. row 2, column 3\)")


def onehot_values_above_one(root):
    masks = {stem: onehot(stripes()) * 255 for stem in "abc"}
    base_dataset(root, mask_ext=".npy", masks=masks)
    return Fails(r"masks.a\.npy has values in \[0, 255\]")


def onehot_with_nan(root):
    base_dataset(root, mask_ext=".npy")
    masks = onehot(stripes()).astype(np.float32)
    masks[0, 0, 0] = np.nan
    for stem in "ab":
        np.save(root / "train/masks" / f"{stem}.npy", masks)
    return Fails(r"masks.a\.npy has values in \[nan, nan\]")


def fractional_float_mask(root):
    base_dataset(root, mask_ext=".npy")
    np.save(root / "val/masks/c.npy", stripes().astype(np.float32) + 0.5)
    return Fails(r"val.masks.c\.npy has non-integer values")


def negative_mask_values(root):
    base_dataset(root, mask_ext=".npy")
    np.save(root / "train/masks/a.npy", stripes((-1, 0, 1)).astype(np.int16))
    return Fails(r"train.masks.a\.npy has negative values \(min -1\)")


def string_npy_mask(root):
    base_dataset(root, mask_ext=".npy")
    np.save(root / "train/masks/b.npy", np.full((SIZE, SIZE), "cell"))
    return Fails(r"train.masks.b\.npy has dtype <U4")


def complex_npy_mask(root):
    base_dataset(root, mask_ext=".npy")
    np.save(root / "val/masks/c.npy", stripes().astype(np.complex64))
    return Fails(r"val.masks.c\.npy has dtype complex64")


def onehot_of_wrong_size(root):
    base_dataset(root, mask_ext=".npy", masks={stem: onehot(stripes()) for stem in "abc"})
    np.save(root / "val/masks/c.npy", onehot(stripes(size=(SIZE, SIZE + 2))))
    return Fails(r"val.masks.c\.npy has shape \[16, 18, 3\], which is neither")


def four_dimensional_npy_mask(root):
    base_dataset(root, mask_ext=".npy")
    np.save(root / "train/masks/a.npy", np.zeros((2, 2, SIZE, SIZE), dtype=np.uint8))
    return Fails(r"train.masks.a\.npy has shape \[2, 2, 16, 16\]")


def mixed_mask_encodings(root):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    base_dataset(root, masks={"a": stripes(), "b": colours[stripes()], "c": stripes()})
    return Fails(r"train masks mix encodings: .*masks.[ab]\.png")


def all_pixels_ignored(root):
    base_dataset(root, masks={"a": stripes((0, 1)) * 0 + 255, "b": stripes((0, 255, 255, 1)),
                              "c": stripes((0, 1))})
    return Fails(r"train mask pixels have the ignore value 255", {"num_classes": 2})


def flat_images(root):
    base_dataset(root)
    for stem, split in (("a", "train"), ("b", "train")):
        save(root / split / "images" / f"{stem}.png", np.full((SIZE, SIZE), 7, np.uint8))
    return Fails(r"every train image in .*train.images is one flat colour")


def single_class_masks(root):
    base_dataset(root, masks={stem: np.zeros((SIZE, SIZE)) for stem in "abc"})
    return Fails(r"mask .*masks.[ab]\.png has values \{0\}.*only one class")


def display_grey_levels(root):
    base_dataset(root, masks={stem: stripes((0, 128, 200)) for stem in "abc"})
    return Fails(r"mask .*masks.[ab]\.png has values \{0, 128, 200\}.*grey levels")


def more_classes_than_the_masks_hold(root):
    """--num-classes 5 with ids 0..2 in the masks: ids 3 and 4 are real classes absent from
    train (said in a warning), not an error."""
    base_dataset(root)

    def check(info, root):
        assert info["num_classes"] == 5 and info["class_pixels"][3:] == [0, 0]
        assert any("['class_3', 'class_4'] have no pixels" in w for w in info["warnings"])
    return Works(check, {"num_classes": 5})


def hidden_files_ignored(root):
    base_dataset(root)
    for folder in ("train/images", "train/masks", "val/images"):
        (root / folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (root / folder / "._a.png").write_bytes(b"\0\5\26\7AppleDouble")
        (root / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11")
        (root / folder / "desktop.ini").write_text("[.ShellClassInfo]")
        (root / folder / ".ipynb_checkpoints").mkdir()

    def check(info, root):
        assert info["splits"] == {"train": 2, "val": 1}
    return Works(check)


def symlinked_files(root):
    base_dataset(root)
    target = save(root / "elsewhere" / "d.png", grey(5))
    (root / "train/images/d.png").symlink_to(target)
    (root / "train/masks/d.png").symlink_to(root / "train/masks/a.png")

    def check(info, root):
        image, mask = image_of(root, "train", "d", info)
        assert np.allclose(image[0].numpy(), grey(5) / 255) and mask.tolist() == stripes().tolist()
    return Works(check)


def unicode_and_space_names(root):
    base_dataset(root)
    names = ["naïve cell 01", "细胞 ü", "résumé (copy)"]
    for number, stem in enumerate(names):
        save(root / "train/images" / f"{stem}.png", grey(10 + number))
        save(root / "train/masks" / f"{stem}.png", stripes((0, 2, 1)).astype(np.uint8))

    def check(info, root):
        assert info["splits"]["train"] == 5
        for number, stem in enumerate(names):
            image, mask = image_of(root, "train", stem, info)
            assert np.allclose(image[0].numpy(), grey(10 + number) / 255)
            assert mask.tolist() == stripes((0, 2, 1)).tolist()
    return Works(check)


def other_extensions_and_case(root):
    base_dataset(root)
    for path in (root / "train/images/a.png", root / "train/masks/b.png"):
        path.unlink()
    save(root / "train/images/a.JPG", grey(0))
    save(root / "train/masks/b.TIFF", stripes().astype(np.uint8))

    def check(info, root):
        assert image_of(root, "train", "b", info)[1].tolist() == stripes().tolist()
        assert image_of(root, "train", "a", info)[0].shape == (1, SIZE, SIZE)
    return Works(check)


def mixed_grey_and_rgb_as_grey(root):
    base_dataset(root)
    rgb = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    save(root / "train/images/b.png", rgb)

    def check(info, root):
        assert info["rgb_converted"] == 1
        expected = (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])
        assert np.allclose(image_of(root, "train", "b", info)[0][0].numpy(), expected,
                           atol=1e-5)
    return Works(check)


def mixed_grey_and_rgb_as_rgb(root):
    base_dataset(root)
    rgb = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    save(root / "train/images/b.png", rgb)

    def check(info, root):
        grey_as_rgb = image_of(root, "train", "a", info)[0].numpy()
        assert grey_as_rgb.shape == (3, SIZE, SIZE)
        assert np.array_equal(grey_as_rgb[0], grey_as_rgb[2])
        assert np.allclose(image_of(root, "train", "b", info)[0].numpy(),
                           rgb.transpose(2, 0, 1) / 255)
    return Works(check, {"in_channels": 3})


def sixteen_bit_png(root):
    base_dataset(root)
    raw = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 250).astype(np.uint16)
    save(root / "train/images/a.png", Image.fromarray(raw))

    def check(info, root):
        assert np.allclose(image_of(root, "train", "a", info)[0][0].numpy(), raw / 65535)
    return Works(check)


def sixteen_bit_tiff(root):
    base_dataset(root)
    raw = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 257).astype(np.uint16)
    (root / "val/images/c.png").unlink()
    save(root / "val/images/c.tif", raw)

    def check(info, root):
        assert np.allclose(image_of(root, "val", "c", info)[0][0].numpy(), raw / 65535)
    return Works(check)


def float_tiff_in_unit_range(root):
    base_dataset(root)
    raw = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    (root / "train/images/a.png").unlink()
    save(root / "train/images/a.tif", raw)

    def check(info, root):
        assert np.array_equal(image_of(root, "train", "a", info)[0][0].numpy(), raw)
        assert not info["warnings"]
    return Works(check)


def float_tiff_outside_unit_range(root):
    base_dataset(root)
    raw = np.linspace(-50, 4000, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    (root / "train/images/a.png").unlink()
    save(root / "train/images/a.tif", raw)

    def check(info, root):
        assert np.array_equal(image_of(root, "train", "a", info)[0][0].numpy(), raw)
        assert any(re.search(r"1 float image.*a\.tif.*--jitter 0", w) for w in info["warnings"])
    return Works(check)


def rgba_palette_cmyk_and_1bit_images(root):
    base_dataset(root)
    rgb = np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(root / "train/images/a.png")
    Image.fromarray(rgb).convert("P").save(root / "train/images/b.png")
    (root / "val/images/c.png").unlink()
    Image.fromarray(rgb).convert("CMYK").save(root / "val/images/c.jpg")
    save(root / "train/images/d.png", Image.fromarray(grey(6) > 127))
    save(root / "train/masks/d.png", stripes().astype(np.uint8))

    def check(info, root):
        expected = (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])
        assert np.allclose(image_of(root, "train", "a", info)[0][0].numpy(), expected, atol=1e-5)
        assert image_of(root, "train", "b", info)[0].shape == (1, SIZE, SIZE)
        assert image_of(root, "val", "c", info)[0].shape == (1, SIZE, SIZE)
        assert np.array_equal(image_of(root, "train", "d", info)[0][0].numpy(), grey(6) > 127)
    return Works(check)


def sixteen_bit_masks(root):
    base_dataset(root)
    for stem, split in (("a", "train"), ("b", "train"), ("c", "val")):
        save(root / split / "masks" / f"{stem}.png",
             Image.fromarray(stripes((0, 1, 2, 3)).astype(np.uint16)))

    def check(info, root):
        assert info["num_classes"] == 4
        assert image_of(root, "val", "c", info)[1].tolist() == stripes((0, 1, 2, 3)).tolist()
    return Works(check)


def binary_0_255_masks(root):
    base_dataset(root, masks={stem: stripes((0, 255)) for stem in "abc"})

    def check(info, root):
        assert info["mask_decoding"]["kind"] == "binary" and info["num_classes"] == 2
        assert image_of(root, "train", "a", info)[1].tolist() == stripes((0, 1)).tolist()
    return Works(check)


def one_bit_masks(root):
    base_dataset(root)
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        save(root / split / "masks" / f"{stem}.png", Image.fromarray(stripes((0, 1)) > 0))

    def check(info, root):
        assert info["mask_modes"]["train"] == {"1": 2} and info["num_classes"] == 2
        assert image_of(root, "val", "c", info)[1].tolist() == stripes((0, 1)).tolist()
    return Works(check)


def palette_and_gif_masks(root):
    base_dataset(root)
    for split, stem, ext in (("train", "a", ".png"), ("train", "b", ".gif"), ("val", "c", ".png")):
        (root / split / "masks" / f"{stem}.png").unlink()
        paletted = Image.fromarray(stripes((0, 1, 2, 3)).astype(np.uint8))
        paletted.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0, 0, 0, 250])
        save(root / split / "masks" / f"{stem}{ext}", paletted)

    def check(info, root):
        assert info["num_classes"] == 4 and info["class_colors"][1] == [250, 0, 0]
        assert image_of(root, "train", "b", info)[1].tolist() == stripes((0, 1, 2, 3)).tolist()
    return Works(check)


def rgba_colour_masks_with_table(root):
    colours = np.array([[0, 0, 0, 255], [255, 0, 0, 255], [0, 255, 0, 255], [9, 9, 9, 255]],
                       dtype=np.uint8)
    base_dataset(root, masks={stem: colours[stripes((0, 1, 2, 3))] for stem in "abc"})
    class_table(root, [{"name": "bg", "color": [0, 0, 0]}, {"name": "r", "color": [255, 0, 0]},
                       {"name": "g", "color": [0, 255, 0]},
                       {"name": "edge", "color": [9, 9, 9], "void": True}])

    def check(info, root):
        assert info["class_names"] == ["bg", "r", "g"]
        assert image_of(root, "train", "a", info)[1].tolist() == stripes((0, 1, 2, 255)).tolist()
    return Works(check)


def grey_and_la_masks_saved_as_colour(root):
    base_dataset(root)
    save(root / "train/masks/a.png", np.stack([stripes().astype(np.uint8)] * 3, -1))
    Image.fromarray(stripes().astype(np.uint8)).convert("LA").save(root / "train/masks/b.png")

    def check(info, root):
        for stem in "ab":
            assert image_of(root, "train", stem, info)[1].tolist() == stripes().tolist()
    return Works(check)


def bool_and_float_npy_masks(root):
    base_dataset(root, mask_ext=".npy", masks={stem: stripes((0, 1)) for stem in "abc"})
    np.save(root / "train/masks/a.npy", stripes((0, 1)).astype(bool))
    np.save(root / "train/masks/b.npy", stripes((0, 1)).astype(np.float64))

    def check(info, root):
        assert info["num_classes"] == 2
        for stem in "ab":
            assert image_of(root, "train", stem, info)[1].tolist() == stripes((0, 1)).tolist()
    return Works(check)


def onehot_channels_first_with_empty_pixels(root):
    masks = {}
    for stem in "abc":
        chw = onehot(stripes()).transpose(2, 0, 1).copy()
        chw[:, 0, 0] = 0  # no active channel: ignored
        masks[stem] = chw
    base_dataset(root, mask_ext=".npy", masks=masks)

    def check(info, root):
        expected = stripes()
        expected[0, 0] = 255
        assert info["mask_decoding"]["layout"] == "CHW"
        assert image_of(root, "val", "c", info)[1].tolist() == expected.tolist()
    return Works(check)


def ignore_value_kept(root):
    base_dataset(root, masks={stem: stripes((0, 1, 2, 255)) for stem in "abc"})

    def check(info, root):
        assert info["num_classes"] == 3
        assert image_of(root, "train", "a", info)[1].tolist() == stripes((0, 1, 2, 255)).tolist()
    return Works(check)


def bmp_image_and_mask(root):
    base_dataset(root)
    for folder, array in (("images", grey(0)), ("masks", stripes().astype(np.uint8))):
        (root / "train" / folder / "a.png").unlink()
        save(root / "train" / folder / "a.bmp", array)

    def check(info, root):
        image, mask = image_of(root, "train", "a", info)
        assert np.allclose(image[0].numpy(), grey(0) / 255) and mask.tolist() == stripes().tolist()
    return Works(check)


def jpeg_masks_with_threshold(root):
    jpeg_masks(root)

    def check(info, root):
        assert info["mask_decoding"]["kind"] == "threshold"
        expected = (jpeg_like() >= 128).astype(int)
        assert image_of(root, "train", "a", info)[1].tolist() == expected.tolist()
        assert any("JPEG" in warning for warning in info["warnings"])
    return Works(check, {"mask_threshold": 128})


KINDS = [(builder.__name__.replace("_", " "), builder) for builder in (
    corrupt_image, truncated_image, zero_byte_image, corrupt_mask, truncated_mask,
    zero_byte_mask, zero_byte_npy_mask, pickled_npy_mask, text_file_in_images,
    npy_file_in_images, image_without_mask, mask_without_image, duplicate_stem,
    mismatched_sizes, unexpected_mask_values, jpeg_masks, empty_split, split_of_hidden_files,
    missing_masks_folder, broken_symlink, symlink_loop, image_too_small, nan_in_float_tiff,
    inf_in_float_tiff, int32_tiff_beyond_16_bit, decompression_bomb, class_table_count_mismatch,
    class_table_not_json, class_table_without_colours, colour_not_in_class_table,
    colour_masks_without_class_table, onehot_overlapping_channels, onehot_values_above_one,
    onehot_with_nan, fractional_float_mask, negative_mask_values, string_npy_mask,
    complex_npy_mask, onehot_of_wrong_size, four_dimensional_npy_mask, mixed_mask_encodings,
    all_pixels_ignored, flat_images, single_class_masks, display_grey_levels,
    more_classes_than_the_masks_hold, hidden_files_ignored, symlinked_files,
    unicode_and_space_names, other_extensions_and_case, mixed_grey_and_rgb_as_grey,
    mixed_grey_and_rgb_as_rgb,
    sixteen_bit_png, sixteen_bit_tiff, float_tiff_in_unit_range, float_tiff_outside_unit_range,
    rgba_palette_cmyk_and_1bit_images, sixteen_bit_masks, binary_0_255_masks, one_bit_masks,
    palette_and_gif_masks, rgba_colour_masks_with_table, grey_and_la_masks_saved_as_colour,
    bool_and_float_npy_masks, onehot_channels_first_with_empty_pixels, ignore_value_kept,
    bmp_image_and_mask, jpeg_masks_with_threshold)]


def inspect(root, **options):
    """(info, problems) as the start-up check sees them; a raised DataError is one problem."""
    try:
        return dataset.inspect_dataset(root, **options)
    except DataError as error:
        return None, error.problems


def assert_contract(root, info):
    """Every sample of every split loads as the dataset docstring promises."""
    for split in info["splits"]:
        samples = SegmentationDataset(root, split, info)
        for index in range(len(samples)):
            image, mask = samples[index]
            assert image.dtype == torch.float32 and image.shape[0] == info["in_channels"]
            assert torch.isfinite(image).all(), samples.image_paths[index]
            assert mask.dtype == torch.int64 and mask.shape == image.shape[1:]
            valid = (mask >= 0) & (mask < info["num_classes"]) | (mask == info["ignore_index"])
            assert valid.all(), samples.mask_paths[index]


def test_the_list_of_kinds_is_long_and_unique():
    names = [name for name, _ in KINDS]
    assert len(names) == len(set(names)) >= 30


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("builder", [builder for _, builder in KINDS],
                         ids=[name for name, _ in KINDS])
def test_bad_input_is_named_or_handled(tmp_path, builder):
    root = tmp_path / "data"
    root.mkdir()
    expected = builder(root)
    info, problems = inspect(root, **expected.options)
    if isinstance(expected, Fails):
        assert problems, "accepted"
        assert re.search(expected.names, "\n".join(problems)), problems
        with pytest.raises(DataError, match=expected.names):
            dataset.scan_dataset(root, **expected.options)
    else:
        assert not problems, problems
        expected.check(info, root)
        assert_contract(root, info)


@pytest.mark.parametrize("builder", [corrupt_image, nan_in_float_tiff, broken_symlink,
                                     image_without_mask, empty_split, onehot_overlapping_channels])
def test_train_stops_before_any_step_naming_the_file(tmp_path, builder):
    root = tmp_path / "data"
    root.mkdir()
    expected = builder(root)
    out = tmp_path / "run"
    args = train.get_args_parser().parse_args(["--data", str(root), "--out", str(out),
                                               "--crop-size", "8", "--epochs", "1"])
    with pytest.raises(SystemExit, match=expected.names):
        train.main(args)
    assert not out.exists()  # nothing written, not even the run folder


def test_check_command_names_the_file_and_fails(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    expected = nan_in_float_tiff(root)
    assert dataset.main(["check", str(root), "--no-baseline"]) == 1
    assert re.search(expected.names, capsys.readouterr().out)


# --------------------------------------------------------------------------- fuzz

# What each file format can store, as written by Pillow: dtype -> channel counts (0: [H, W]).
# .npy stores anything, in any layout.
WRITABLE = {
    ".png": {"uint8": (0, 2, 3, 4), "uint16": (0,), "bool": (0,)},
    ".tif": {"uint8": (0, 2, 3, 4), "uint16": (0,), "int16": (0,), "int32": (0,),
             "float32": (0,), "float64": (0,), "bool": (0,)},
    ".bmp": {"uint8": (0, 3, 4), "bool": (0,)},
    ".gif": {"uint8": (0, 3), "bool": (0,)},
    ".jpg": {"uint8": (0, 3), "bool": (0,)},
}
NPY_DTYPES = ["uint8", "uint16", "int16", "int32", "int64", "uint64", "float16", "float32",
              "float64", "bool", "complex64", "<U2"]
VALUES = {"ids": [0, 1, 2], "ids and void": [0, 1, 2, 255], "binary": [0, 255],
          "zero-one": [0, 1], "grey levels": [0, 100, 200]}
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@st.composite
def storage(draw, formats, pixels=False):
    """How a dataset stores its images or masks, drawn once per dataset: (format, dtype, layout
    "HW" / "HWC" / "CHW", channels, values: a VALUES key, "one-hot" or "any")."""
    file_format = draw(st.sampled_from(formats))
    if file_format == ".npy":
        dtype = draw(st.sampled_from(NPY_DTYPES))
        layout = draw(st.sampled_from(["HW", "HWC", "CHW"]))
        channels = 0 if layout == "HW" else draw(st.integers(1, 4))
    else:
        dtype = draw(st.sampled_from(sorted(WRITABLE[file_format])))
        channels = draw(st.sampled_from(WRITABLE[file_format][dtype]))
        layout = "HWC" if channels else "HW"
    kinds = ["any"] + ([] if pixels else list(VALUES) + ["one-hot"] * (layout != "HW"))
    return file_format, np.dtype(dtype), layout, channels, draw(st.sampled_from(kinds))


@st.composite
def stored_arrays(draw, style, height, width, pixels=False):
    """An array of `style` for an image of height x width."""
    _, dtype, layout, channels, values = style
    if values == "one-hot":
        ids = draw(hnp.arrays(np.int64, (height, width), elements=st.integers(0, channels)))
        array = np.eye(channels + 1, dtype=dtype)[ids][..., :channels]  # id == channels: none
        return array.transpose(2, 0, 1).copy() if layout == "CHW" else array
    shape = {"HW": (height, width), "HWC": (height, width, channels),
             "CHW": (channels, height, width)}[layout]
    if values in VALUES and dtype.kind != "U":
        elements = st.sampled_from(VALUES[values]).map(lambda v: np.asarray(v).astype(dtype))
    elif dtype.kind == "f":
        elements = st.floats(width=8 * min(dtype.itemsize, 8), allow_nan=pixels,
                             allow_infinity=pixels)
    else:
        elements = None  # anything the dtype holds
    return draw(hnp.arrays(dtype, shape, elements=elements))


def write_stored(path, array, kept=1.0):
    """Write array to path (.npy, else Pillow); then keep only that fraction of its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        Image.fromarray(array).save(path)
    if kept < 1:
        truncate(path, kept)


def names_a_file(message, root):
    return str(root) in message


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on truncated TIFFs, our scan's
@FUZZ
@given(data=st.data(), in_channels=st.sampled_from([1, 3]))
def test_fuzz_dataset_construction_fails_only_with_named_data_errors(tmp_path_factory, data,
                                                                     in_channels):
    """Whatever the files hold: the start-up check reports problems (text naming a file under
    ROOT when it is about one), or it passes and then every sample of every split loads and
    keeps the dataset contract. Never another exception, and never a check that passes on data
    that then fails in training."""
    root = tmp_path_factory.mktemp("fuzz")
    image_style = data.draw(storage(list(WRITABLE), pixels=True), "images")
    mask_style = data.draw(storage([*WRITABLE, ".npy"]), "masks")
    for split, stem in [("train", "a"), ("train", "b"), ("val", "c")]:
        height, width = data.draw(st.integers(8, 11)), data.draw(st.integers(8, 11))
        image = data.draw(stored_arrays(image_style, height, width, pixels=True))
        mask = data.draw(stored_arrays(mask_style, height, width))
        kept = data.draw(st.sampled_from([1.0] * 8 + [0.6, 0.0]))
        write_stored(root / split / "images" / f"{stem}{image_style[0]}", image)
        write_stored(root / split / "masks" / f"{stem}{mask_style[0]}", mask, kept)
    info, problems = inspect(root, in_channels=in_channels)
    for problem in problems:
        assert isinstance(problem, str) and problem
        if re.search("cannot be read|has dtype|non-finite|has shape", problem):
            assert names_a_file(problem, root), problem
    event("problems reported" if problems else "check passed, every sample loaded")
    if not problems:
        assert_contract(root, info)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on truncated TIFFs
@FUZZ
@given(data=st.data())
def test_fuzz_mask_decoding_gives_ids_or_a_named_data_error(tmp_path_factory, data):
    """summarize_mask -> infer_mask_decoding -> decode_mask on one file: class ids in range
    (or the ignore index), or a DataError naming the file."""
    style = data.draw(storage([*WRITABLE, ".npy"]), "mask")
    mask = data.draw(stored_arrays(style, data.draw(st.integers(8, 11)),
                                   data.draw(st.integers(8, 11))))
    path = tmp_path_factory.mktemp("mask") / f"m{style[0]}"
    write_stored(path, mask, data.draw(st.sampled_from([1.0] * 4 + [0.6, 0.1])))
    size = mask.shape[1:] if style[2] == "CHW" else mask.shape[:2]
    try:
        summary = masks.summarize_mask(path, size)
        decoding = masks.infer_mask_decoding([summary])
        ids = masks.decode_mask(path, decoding)
    except DataError as error:
        assert str(error)
        if re.search("cannot be read|has dtype|has shape", str(error)):
            assert str(path) in str(error)
        event("DataError")
        return
    event(f"decoded as {decoding['kind']}")
    assert ids.dtype == np.int64 and ids.shape == summary.size == tuple(size)
    assert (((ids >= 0) & (ids < decoding["num_classes"])) | (ids == 255)).all()


# --------------------------------------------------------------------------- untrusted files

def checkpoint_for(segnet, **changes):
    """A checkpoint dict of this project for `segnet`, with entries replaced by `changes`."""
    classes, channels = segnet.num_classes, segnet.in_channels
    data = {"in_channels": channels, "num_classes": classes, "ignore_index": 255,
            "class_names": [f"c{c}" for c in range(classes)],
            "class_colors": plots.default_colors(classes),
            "mask_decoding": {"kind": "index", "num_classes": classes, "void_values": []},
            "normalization": {"mean": [0.5] * channels, "std": [0.2] * channels}}
    checkpoint = utils.build_checkpoint(segnet, data)
    checkpoint.update(changes)
    return checkpoint


class TinyUNet(torch.nn.Module):
    """Stands in for another architecture's weights."""

    def __init__(self):
        super().__init__()
        self.down = torch.nn.Conv2d(1, 8, 3)
        self.up = torch.nn.ConvTranspose2d(8, 2, 2)


def nan_weights():
    weights = SegNet().state_dict()
    weights["classifier.bias"] = torch.tensor([0.0, float("nan")])
    return weights


UNTRUSTED = [
    ("another architecture", lambda: checkpoint_for(SegNet(), model=TinyUNet().state_dict()),
     r"4 missing keys|missing keys \(e\.g\. encoders"),
    ("another channel count", lambda: checkpoint_for(SegNet(), model=SegNet(3).state_dict()),
     r"encoders\.0\.convs\.0\.0\.weight \[64, 3, 3, 3\] \(expected \[64, 1, 3, 3\]\)"),
    ("another class count",
     lambda: checkpoint_for(SegNet(), model=SegNet(num_classes=5).state_dict()),
     r"classifier\.weight \[5, 64, 1, 1\] \(expected \[2, 64, 1, 1\]\)"),
    ("DDP key prefixes", lambda: checkpoint_for(SegNet(), model={
        f"module.{key}": value for key, value in SegNet().state_dict().items()}),
     r"unexpected keys \(e\.g\. module\.encoders"),
    ("constructor of another model", lambda: checkpoint_for(SegNet(), model_args={
        "depth": 50, "num_classes": 2}), r"model_args .*'depth': 50.* do not describe a SegNet"),
    ("constructor arguments not a dict", lambda: checkpoint_for(SegNet(), model_args=[1, 2]),
     r"model_args \[1, 2\] do not describe a SegNet"),
    ("weights not a state dict", lambda: checkpoint_for(SegNet(), model=torch.zeros(3)),
     r"'model' is a Tensor, not a state dict"),
    ("metadata for other classes", lambda: checkpoint_for(SegNet(), data={
        **checkpoint_for(SegNet())["data"], "num_classes": 3}),
     r"its data entry says num_classes=3, the model has 2"),
    ("non-finite weights", lambda: checkpoint_for(SegNet(), model=nan_weights()),
     r"1 tensors hold NaN or inf \(e\.g\. classifier\.bias\)"),
    ("format version not a number", lambda: checkpoint_for(SegNet(), format_version="1"),
     r"format version '1', not an integer"),
]


@pytest.mark.parametrize("make,message", [(make, message) for _, make, message in UNTRUSTED],
                         ids=[name for name, _, _ in UNTRUSTED])
def test_wrong_checkpoint_gives_one_clear_paragraph(tmp_path, make, message):
    path = tmp_path / "foreign.pt"
    utils.save_checkpoint(path, make())
    with pytest.raises(ValueError, match=message) as caught:
        inference.load_model(path)
    text = str(caught.value)
    assert str(path) in text and "\n" not in text and len(text) < 500, text


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_resume_checkpoint_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = base_dataset(tmp_path / "data")
    evil = tmp_path / "last.pt"
    evil.write_bytes(pickle.dumps({"format_version": 1, "model": RunsCode()}))
    args = train.get_args_parser().parse_args(["--data", str(root), "--resume", str(evil),
                                               "--out", str(tmp_path / "run"),
                                               "--crop-size", "8"])
    with pytest.raises(SystemExit, match="could not be loaded safely"):
        train.main(args)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_resuming_a_checkpoint_for_other_classes_is_refused(tmp_path):
    root = base_dataset(tmp_path / "data")
    other = tmp_path / "other.pt"
    utils.save_checkpoint(other, checkpoint_for(SegNet(num_classes=5), args={}))
    args = train.get_args_parser().parse_args(["--data", str(root), "--resume", str(other),
                                               "--out", str(tmp_path / "run"),
                                               "--crop-size", "8"])
    with pytest.raises(SystemExit, match=r"trained with num_classes=5 but the data now gives 3"):
        train.main(args)


def test_non_finite_input_array_is_named_by_predict():
    model = SegNet().eval()
    info = checkpoint_for(model)["data"]
    pixels = np.full((SIZE, SIZE), 0.5, dtype=np.float32)
    pixels[1, 1] = np.inf
    with pytest.raises(DataError, match="the array has 1 non-finite pixel values"):
        inference.predict(model, info, pixels)


# --------------------------------------------------------------------------- train.py flags

@pytest.fixture(scope="module")
def flag_data(tmp_path_factory):
    return base_dataset(tmp_path_factory.mktemp("flags"))


BAD_FLAGS = [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "0"], "--lr must be a positive"),
    (["--lr", "nan"], "--lr must be a positive"),
    (["--lr", "inf"], "--lr must be a positive"),
    (["--momentum", "1"], r"--momentum must be in \[0, 1\)"),
    (["--momentum", "nan"], "--momentum"),
    (["--weight-decay=-1e-4"], "--weight-decay must be >= 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0"),
    (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number"),
    (["--step-size", "0"], "--step-size must be >= 1"),
    (["--gamma", "0"], r"--gamma must be in \(0, 1\]"),
    (["--gamma", "1.5"], r"--gamma must be in \(0, 1\]"),
    (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
    (["--grad-clip", "nan"], "--grad-clip must be a finite number"),
    (["--crop-size", "-1"], "--crop-size must be >= 0"),
    (["--crop-size", "4"], "--crop-size must be 0 .whole images. or >= 8"),
    (["--crop-size", "64"], "larger than every training image"),
    (["--image-size", "4"], "--image-size must be >= 8"),
    (["--scale", "0", "1"], "--scale must be 0 < MIN <= MAX"),
    (["--scale", "2", "1"], "--scale must be 0 < MIN <= MAX"),
    (["--scale", "1", "inf"], "--scale must be 0 < MIN <= MAX"),
    (["--rotate", "-5"], "--rotate must be >= 0"),
    (["--rotate", "720"], r"--rotate must be in \[0, 180\]"),
    (["--rotate", "nan"], "--rotate must be a finite number"),
    (["--jitter", "1"], r"--jitter must be in \[0, 1\)"),
    (["--jitter", "nan"], "--jitter must be a finite number"),
    (["--noise", "-0.1"], "--noise must be >= 0"),
    (["--noise", "inf"], "--noise must be a finite number"),
    (["--num-classes", "1"], "--num-classes must be in 2..65536"),
    (["--num-classes", "100000"], "--num-classes must be in 2..65536"),
    (["--ignore-index", "300"], r"--ignore-index must be in 0..255"),
    (["--ignore-index", "1"], "--ignore-index 1 is a class id"),
    (["--mask-threshold", "0"], "--mask-threshold must be an integer >= 1"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    (["--dropout", "nan"], r"--dropout must be in \[0, 1\)"),
    (["--eval-every", "0"], "--eval-every must be >= 1"),
    (["--save-every", "0"], "--save-every must be >= 1"),
    (["--early-stop", "-1"], "--early-stop must be >= 0"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--dist-timeout", "0"], "--dist-timeout must be >= 1"),
    (["--seed", "-1"], r"--seed must be in 0..4294967295"),
    (["--seed", str(2 ** 32)], r"--seed must be in 0..4294967295"),
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16 is for GPUs"),
    (["--class-table", "missing.json"], "--class-table missing.json does not exist"),
    (["--encoder-weights", "missing.pth"], "--encoder-weights missing.pth does not exist"),
    (["--resume", "missing.pt"], "--resume missing.pt does not exist"),
]
if not torch.cuda.is_available():
    BAD_FLAGS.append((["--device", "cuda"], "--device cuda was asked for"))


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_train_flag_is_refused_before_any_work(flag_data, tmp_path, flags, message):
    out = tmp_path / "run"
    args = train.get_args_parser().parse_args(["--data", str(flag_data), "--out", str(out),
                                               *flags])
    with pytest.raises(SystemExit, match=message):
        train.main(args)
    assert not out.exists()


@pytest.mark.parametrize("flags,message", [
    (["--data", "{tmp}/nowhere"], "--data .*nowhere is not a folder"),
    (["--data", "{tmp}/file"], "--data .*file is not a folder"),
    (["--out", "{tmp}/file"], "--out .*file is a file, not a folder"),
    (["--resume", "auto"], "--resume auto needs --out"),
], ids=["data missing", "data a file", "out a file", "resume auto without out"])
def test_bad_train_path_is_refused_before_any_work(flag_data, tmp_path, flags, message):
    (tmp_path / "file").write_text("not a folder")
    argv = ["--data", str(flag_data), *[flag.format(tmp=tmp_path) for flag in flags]]
    if "--out" not in argv and "auto" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match=message):
        train.main(train.get_args_parser().parse_args(argv))
    assert (tmp_path / "file").read_text() == "not a folder"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--lr", "--seed", "--crop-size"])
def test_non_numbers_are_refused_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit) as caught:
        train.get_args_parser().parse_args([flag, "twelve"])
    assert caught.value.code == 2 and f"argument {flag}: invalid" in capsys.readouterr().err


def test_a_large_seed_trains(flag_data, tmp_path):
    """Seeds derived from it (seed * 10**13 + ...) once overflowed torch.manual_seed."""
    args = train.get_args_parser().parse_args([
        "--data", str(flag_data), "--out", str(tmp_path / "run"), "--seed", str(2 ** 32 - 1),
        "--dry-run", "--crop-size", "8", "--workers", "0", "--amp", "off"])
    assert train.main(args) == 0
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert math.isfinite(float(next(csv.DictReader(handle))["train_loss"]))
