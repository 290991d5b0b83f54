"""Data pipeline: every mask encoding decoded to the right ids, errors that name the file, joint
augmentation that keeps masks aligned, the check command and the deterministic demo set."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from segnet import utils
from segnet.data.feed import loaders
from segnet.data.check.scan import scan_dataset
from segnet.data.feed.dataset import SegmentationDataset
from segnet.data.files.index import list_pairs
from segnet.data.pixels.images import load_image, normalize
from segnet.data.demo import make_demo
from segnet.data.pixels.masks import decode_mask
from segnet.data.feed.transforms import EvalTransform, TrainTransform, pad_collate
from segnet.plan.plan import Plan
from segnet.utils import DataError

REPO = Path(__file__).resolve().parents[2]


def save_image(path, array, mode=None):
    """Write an array with Pillow (mode for e.g. 16-bit 'I;16'), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)


def write_pair(root, split, stem, image, mask, image_ext=".png", mask_ext=".png"):
    """One image/mask pair; masks ending in .npy are saved with numpy."""
    save_image(root / split / "images" / f"{stem}{image_ext}", image)
    mask_path = root / split / "masks" / f"{stem}{mask_ext}"
    if mask_ext == ".npy":
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(mask_path, mask)
    elif isinstance(mask, Image.Image):
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        mask.save(mask_path)
    else:
        save_image(mask_path, mask)
    return mask_path


def grey(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def index_mask(height, width, values=(0, 1, 2), seed=0):
    """Vertical stripes of the given values, so every value is present."""
    stripes = np.array(values, dtype=np.uint8)[np.arange(width) * len(values) // width]
    return np.broadcast_to(stripes, (height, width)).copy()


def make_index_dataset(root, values=(0, 1, 2), sizes=((10, 12), (9, 14)), val_values=None,
                       mask_ext=".png"):
    """train: one pair per size; val: one pair."""
    for number, (height, width) in enumerate(sizes):
        write_pair(root, "train", f"t{number}", grey(height, width, number),
                   index_mask(height, width, values), mask_ext=mask_ext)
    write_pair(root, "val", "v0", grey(11, 11, 9), index_mask(11, 11, val_values or values),
               mask_ext=mask_ext)
    return root


# --------------------------------------------------------------------------- mask encodings


@pytest.mark.parametrize("mask_ext", [".png", ".tif", ".bmp", ".gif"])
def test_index_masks(tmp_path, mask_ext):
    make_index_dataset(tmp_path, values=(0, 1, 2), mask_ext=mask_ext)
    info = scan_dataset(tmp_path)
    assert info["mask_decoding"]["kind"] == "index" and info["num_classes"] == 3
    assert info["class_names"] == ["class_0", "class_1", "class_2"]
    path = tmp_path / "train" / "masks" / f"t0{mask_ext}"
    expected = index_mask(10, 12).astype(np.int64)
    decoded = decode_mask(path, info["mask_decoding"])
    assert decoded.dtype == np.int64 and np.array_equal(decoded, expected)
    # stripes of width 12 and 14 over 3 values: exact per-class pixel counts over train
    counts = np.bincount(np.concatenate([expected.ravel(), index_mask(9, 14).ravel()]))
    assert info["class_pixels"] == counts.tolist()
    assert info["class_image_pixels"] == [10 * 12 + 9 * 14] * 3
    json.dumps(info)  # goes into checkpoints


def test_index_masks_keep_ignore_value(tmp_path):
    make_index_dataset(tmp_path, values=(0, 1, 2, 255))
    info = scan_dataset(tmp_path)
    assert info["num_classes"] == 3
    decoded = decode_mask(tmp_path / "val" / "masks" / "v0.png", info["mask_decoding"])
    assert set(np.unique(decoded)) == {0, 1, 2, 255}
    assert info["ignore_pixels"] == int((index_mask(10, 12, (0, 1, 2, 255)) == 255).sum()
                                        + (index_mask(9, 14, (0, 1, 2, 255)) == 255).sum())


@pytest.mark.parametrize("foreground", [255, 1])
def test_binary_masks(tmp_path, foreground):
    make_index_dataset(tmp_path, values=(0, foreground))
    info = scan_dataset(tmp_path)
    assert info["mask_decoding"] == {"kind": "binary", "num_classes": 2,
                                     "foreground_values": [foreground]}
    assert info["class_names"] == ["background", "foreground"]
    decoded = decode_mask(tmp_path / "train" / "masks" / "t0.png", info["mask_decoding"])
    assert np.array_equal(decoded, (index_mask(10, 12, (0, foreground)) > 0).astype(np.int64))


def test_masks_mixing_0_1_and_0_255_are_warned_about(tmp_path):
    """Together {0, 1, 255} reads as two classes plus void: the 0/255 masks' foreground would
    be ignored, so the scan says which files differ."""
    write_pair(tmp_path, "train", "a", grey(10, 12), index_mask(10, 12, (0, 1)))
    write_pair(tmp_path, "train", "b", grey(10, 12), index_mask(10, 12, (0, 255)))
    write_pair(tmp_path, "val", "v", grey(10, 12), index_mask(10, 12, (0, 1)))
    info = scan_dataset(tmp_path)
    assert info["num_classes"] == 2
    message = " ".join(info["warnings"])
    assert "are 0/1" in message and "a.png" in message and "b.png" in message


def test_palette_masks_use_palette_index_and_colours(tmp_path):
    palette = [0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200]
    for number in range(2):
        paletted = Image.fromarray(index_mask(8, 12, (0, 1, 2, 3)))
        paletted.putpalette(palette)  # "L" becomes "P": the ids are the palette indices
        for split in ("train", "val"):
            write_pair(tmp_path, split, f"p{number}", grey(8, 12, number), paletted)
    info = scan_dataset(tmp_path)
    assert info["mask_modes"]["train"] == {"P": 2}
    assert info["num_classes"] == 4 and info["mask_decoding"]["source"] == "palette"
    assert info["class_colors"] == [palette[i:i + 3] for i in range(0, 12, 3)]
    decoded = decode_mask(tmp_path / "val" / "masks" / "p1.png", info["mask_decoding"])
    assert np.array_equal(decoded, index_mask(8, 12, (0, 1, 2, 3)))


def colour_table(tmp_path):
    table = {"classes": [{"name": "road", "color": [128, 64, 128]},
                         {"name": "sky", "color": [70, 130, 180]},
                         {"name": "void", "color": [0, 0, 0], "void": True}]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    return path


def colour_mask(ids):
    colours = np.array([[128, 64, 128], [70, 130, 180], [0, 0, 0], [1, 2, 3]], dtype=np.uint8)
    return colours[ids]


def test_rgb_masks_through_class_table_with_void(tmp_path):
    ids = index_mask(9, 12, (0, 1, 2))
    write_pair(tmp_path, "train", "a", grey(9, 12), colour_mask(ids))
    write_pair(tmp_path, "val", "b", grey(9, 12), colour_mask(ids[:, ::-1]))
    info = scan_dataset(tmp_path, class_table=colour_table(tmp_path))
    assert info["class_names"] == ["road", "sky"] and info["num_classes"] == 2
    assert info["class_colors"] == [[128, 64, 128], [70, 130, 180]]
    decoded = decode_mask(tmp_path / "train" / "masks" / "a.png", info["mask_decoding"])
    assert np.array_equal(decoded, np.where(ids == 2, 255, ids))
    assert info["ignore_pixels"] == int((ids == 2).sum())


def test_rgb_masks_unknown_colour_names_file(tmp_path):
    ids = index_mask(9, 12, (0, 1, 2))
    write_pair(tmp_path, "train", "a", grey(9, 12), colour_mask(ids))
    write_pair(tmp_path, "val", "b", grey(9, 12), colour_mask(index_mask(9, 12, (0, 3))))
    with pytest.raises(DataError, match=r"b\.png.*\(1, 2, 3\)"):
        scan_dataset(tmp_path, class_table=colour_table(tmp_path))


def test_rgb_masks_without_class_table_ask_for_one(tmp_path):
    write_pair(tmp_path, "train", "a", grey(9, 12), colour_mask(index_mask(9, 12, (0, 1))))
    write_pair(tmp_path, "val", "b", grey(9, 12), colour_mask(index_mask(9, 12, (0, 1))))
    with pytest.raises(DataError, match="--class-table"):
        scan_dataset(tmp_path)


def test_grey_masks_saved_as_rgb_read_as_values(tmp_path):
    ids = index_mask(9, 12, (0, 1, 2))
    write_pair(tmp_path, "train", "a", grey(9, 12), np.stack([ids] * 3, axis=-1))
    write_pair(tmp_path, "val", "b", grey(9, 12), np.stack([ids] * 3, axis=-1))
    info = scan_dataset(tmp_path)
    assert info["mask_decoding"]["kind"] == "index" and info["num_classes"] == 3


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_onehot_npy_masks(tmp_path, layout):
    ids = index_mask(8, 10, (0, 1, 2, 3))
    onehot = np.eye(4, dtype=np.uint8)[ids]  # [H, W, C]
    onehot[0, 0] = 0  # no active channel -> ignore
    stored = onehot if layout == "HWC" else onehot.transpose(2, 0, 1)
    write_pair(tmp_path, "train", "a", grey(8, 10), stored, mask_ext=".npy")
    write_pair(tmp_path, "val", "b", grey(8, 10), stored, mask_ext=".npy")
    info = scan_dataset(tmp_path)
    assert info["mask_decoding"] == {"kind": "onehot", "num_classes": 4, "layout": layout,
                                     "channels": 4}
    decoded = decode_mask(tmp_path / "val" / "masks" / "b.npy", info["mask_decoding"])
    expected = ids.astype(np.int64)
    expected[0, 0] = 255
    assert np.array_equal(decoded, expected)
    assert info["ignore_pixels"] == 1


def test_class_table_names_index_masks(tmp_path):
    make_index_dataset(tmp_path, values=(0, 1, 2))
    (tmp_path / "classes.json").write_text(json.dumps(
        [{"name": "bg"}, {"name": "cell"}, {"name": "edge"}, {"name": "void", "void": True}]))
    info = scan_dataset(tmp_path)  # ROOT/classes.json is found without being named
    assert info["class_names"] == ["bg", "cell", "edge"]
    assert info["mask_decoding"]["void_values"] == [3]


def test_mask_threshold_reads_grey_levels_as_binary(tmp_path):
    mask = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # 8x16
    write_pair(tmp_path, "train", "a", grey(8, 16), mask)
    write_pair(tmp_path, "val", "b", grey(8, 16), mask)
    info = scan_dataset(tmp_path, mask_threshold=128)
    decoded = decode_mask(tmp_path / "train" / "masks" / "a.png", info["mask_decoding"])
    assert np.array_equal(decoded, (mask >= 128).astype(np.int64))
    assert info["class_names"] == ["background", "foreground"]


# --------------------------------------------------------------------------- images


def test_16bit_tiff_scaled_by_dtype_range(tmp_path):
    raw = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    save_image(tmp_path / "a.tif", raw)
    image = load_image(tmp_path / "a.tif", 1)
    assert image.dtype == np.float32 and image.shape == (1, 8, 8)
    assert np.allclose(image[0], raw / 65535.0)  # never divided by the image's own max


def test_float_tiff_kept(tmp_path):
    raw = np.linspace(-2, 3, 64, dtype=np.float32).reshape(8, 8)
    save_image(tmp_path / "a.tif", raw)
    assert np.array_equal(load_image(tmp_path / "a.tif", 1)[0], raw)


def test_rgb_images_converted_to_grey_with_one_counting_warning(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    for number in range(2):
        write_pair(tmp_path, "train", f"a{number}", rgb, index_mask(9, 12, (0, 1)), ".jpg")
    write_pair(tmp_path, "val", "b", rgb, index_mask(9, 12, (0, 1)))
    with pytest.warns(UserWarning, match="3 image") as record:
        info = scan_dataset(tmp_path, in_channels=1)
    assert len(record) == 1 and info["rgb_converted"] == 3
    image = load_image(tmp_path / "val" / "images" / "b.png", 1)
    expected = (rgb.astype(np.float32) / 255) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert image.shape == (1, 9, 12) and np.allclose(image[0], expected, atol=1e-6)
    assert load_image(tmp_path / "val" / "images" / "b.png", 3).shape == (3, 9, 12)


def test_normalization_is_mean_and_std_of_all_train_pixels(tmp_path):
    make_index_dataset(tmp_path, sizes=((10, 12), (9, 14), (13, 8)))
    info = scan_dataset(tmp_path)
    pixels = np.concatenate([load_image(path, 1).ravel() for _, path, _ in
                             list_pairs(tmp_path, "train")])
    assert info["normalization"]["mean"][0] == pytest.approx(pixels.mean(), abs=1e-5)
    assert info["normalization"]["std"][0] == pytest.approx(pixels.std(), abs=1e-5)
    tensor = torch.ones(2, 1, 3, 3)
    assert torch.allclose(normalize(tensor, info["normalization"]),
                          (tensor - pixels.mean()) / pixels.std(), atol=1e-4)
    assert isinstance(normalize(np.ones((1, 2, 2), np.float32), info["normalization"]), np.ndarray)


# --------------------------------------------------------------------------- errors


def test_unpaired_files_named(tmp_path):
    make_index_dataset(tmp_path)
    save_image(tmp_path / "train" / "images" / "lonely.png", grey(10, 12))
    with pytest.raises(DataError, match=r"1 of 3 images .* no mask .*lonely\.png"):
        list_pairs(tmp_path, "train")
    with pytest.raises(DataError, match=r"lonely\.png"):
        scan_dataset(tmp_path)


def test_pairs_by_stem_across_extensions_and_skips_hidden_files(tmp_path):
    write_pair(tmp_path, "train", "a", grey(8, 8), index_mask(8, 8), image_ext=".jpg")
    (tmp_path / "train" / "images" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / "masks" / "Thumbs.db").write_bytes(b"junk")
    [(stem, image_path, mask_path)] = list_pairs(tmp_path, "train")
    assert (stem, image_path.suffix, mask_path.suffix) == ("a", ".jpg", ".png")


def test_size_mismatch_names_both_files(tmp_path):
    make_index_dataset(tmp_path)
    save_image(tmp_path / "val" / "masks" / "v0.png", index_mask(11, 10))
    with pytest.raises(DataError, match=r"size mismatch: image .*v0\.png is 11x11, mask "
                                        r".*v0\.png is 11x10"):
        scan_dataset(tmp_path)


def test_empty_split(tmp_path):
    make_index_dataset(tmp_path)
    for path in (tmp_path / "val").rglob("*.png"):
        path.unlink()
    with pytest.raises(DataError, match="split 'val' is empty"):
        scan_dataset(tmp_path)


def test_missing_split_folder(tmp_path):
    make_index_dataset(tmp_path)
    with pytest.raises(DataError, match=r"test.images not found"):
        scan_dataset(tmp_path, splits=("train", "val", "test"))


def test_truncated_image_named(tmp_path):
    make_index_dataset(tmp_path)
    path = tmp_path / "train" / "images" / "t1.png"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"t1\.png cannot be read"):
        scan_dataset(tmp_path)
    with pytest.raises(DataError, match=r"t1\.png"):
        load_image(path, 1)


def test_corrupt_npy_mask_named(tmp_path):
    make_index_dataset(tmp_path, mask_ext=".npy")
    (tmp_path / "val" / "masks" / "v0.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"v0\.npy cannot be read"):
        scan_dataset(tmp_path)


def jpeg_like(height, width):
    """A 0/255 mask with anti-aliased edges: a few pixels at every level in between."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, width // 2:] = 255
    mask[:, width // 2 - 1] = np.linspace(1, 254, height).astype(np.uint8)
    return mask


def test_jpeg_like_mask_values_suggest_threshold(tmp_path):
    for number in range(2):
        write_pair(tmp_path, "train", f"j{number}", grey(64, 40), jpeg_like(64, 40))
    write_pair(tmp_path, "val", "v", grey(64, 40), jpeg_like(64, 40))
    with pytest.raises(DataError, match=r"j[01]\.png has values \{0, 1, .*, 255\}.*JPEG.*"
                                        r"--mask-threshold 128"):
        scan_dataset(tmp_path)
    info = scan_dataset(tmp_path, mask_threshold=128)
    assert info["num_classes"] == 2


def test_val_jpeg_like_mask_named(tmp_path):
    make_index_dataset(tmp_path, values=(0, 255))
    write_pair(tmp_path, "val", "v0", grey(64, 40), jpeg_like(64, 40))
    with pytest.raises(DataError, match=r"mask .*val.masks.v0\.png .*--mask-threshold"):
        scan_dataset(tmp_path)


def test_ids_beyond_num_classes_named(tmp_path):
    make_index_dataset(tmp_path, values=(0, 1, 2), val_values=(0, 1, 5))
    with pytest.raises(DataError, match=r"v0\.png has values \{0, 1, 5\} \(\{5\} fit no "
                                        r"class\).*--num-classes 6"):
        scan_dataset(tmp_path, num_classes=3)
    with pytest.raises(DataError, match=r"v0\.png.*\{5\} fit no class"):
        scan_dataset(tmp_path)  # inferred from train: 3 classes, val has an unknown id
    with pytest.raises(DataError, match=r"v0\.png"):
        decode_mask(tmp_path / "val" / "masks" / "v0.png",
                    {"kind": "index", "num_classes": 3, "void_values": []})


def test_binary_masks_read_with_too_many_classes_are_a_problem(tmp_path):
    make_index_dataset(tmp_path, values=(0, 255, 255, 255))
    with pytest.raises(DataError, match="ignore value 255.*0/255 masks are binary"):
        scan_dataset(tmp_path, num_classes=3)  # 255 would be void: most pixels silently lost


def test_display_grey_levels_rejected(tmp_path):
    make_index_dataset(tmp_path, values=(0, 128, 200))
    with pytest.raises(DataError, match="grey levels chosen for display"):
        scan_dataset(tmp_path)


def test_mixed_mask_encodings_rejected(tmp_path):
    make_index_dataset(tmp_path)
    np.save(tmp_path / "train" / "masks" / "t1.npy", np.eye(3, dtype=np.uint8)[index_mask(9, 14)])
    (tmp_path / "train" / "masks" / "t1.png").unlink()
    with pytest.raises(DataError, match="mix encodings"):
        scan_dataset(tmp_path)


def test_every_problem_reported_at_once(tmp_path):
    make_index_dataset(tmp_path)
    save_image(tmp_path / "train" / "images" / "lonely.png", grey(4, 4))
    save_image(tmp_path / "val" / "masks" / "v0.png", index_mask(3, 3))
    with pytest.raises(DataError) as caught:
        scan_dataset(tmp_path)
    assert len(caught.value.problems) == 2
    assert "lonely.png" in str(caught.value) and "v0.png" in str(caught.value)


# --------------------------------------------------------------------------- dataset


def test_dataset_items_and_cache(tmp_path):
    make_index_dataset(tmp_path, sizes=((10, 12), (9, 14)))
    info = scan_dataset(tmp_path)
    data = SegmentationDataset(tmp_path, "train", info, cache=True)
    assert data.names == ["t0", "t1"] and len(data) == 2
    assert [p.name for p in data.mask_paths] == ["t0.png", "t1.png"]
    image, mask = data[1]
    assert image.dtype == torch.float32 and image.shape == (1, 9, 14)
    assert mask.dtype == torch.int64 and mask.shape == (9, 14)
    raw = torch.from_numpy(load_image(data.image_paths[1], 1))
    assert torch.allclose(image, normalize(raw, info["normalization"]))
    mask.fill_(7)  # callers may modify what they get; the cache keeps its own copy
    assert torch.equal(data[1][1], torch.from_numpy(index_mask(9, 14).astype(np.int64)))


def test_cache_is_compact_exact_and_bounded(tmp_path):
    make_index_dataset(tmp_path, sizes=((10, 12), (9, 14), (8, 8)))
    deep = np.random.default_rng(0).integers(0, 65536, (8, 8), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "train" / "images" / "t2.png")  # a 16-bit image
    info = scan_dataset(tmp_path)
    plain = SegmentationDataset(tmp_path, "train", info)
    cached = SegmentationDataset(tmp_path, "train", info, cache=True)
    for _ in range(2):  # decoded, then from the cache: equal to the last bit
        for index in range(3):
            for got, expected in zip(cached[index], plain[index]):
                assert got.dtype == expected.dtype and torch.equal(got, expected)
    stored = [cached._cache[index] for index in range(3)]
    assert [image.dtype for image, _ in stored] == [torch.uint8, torch.uint8, torch.float32]
    assert all(mask.dtype == torch.uint8 for _, mask in stored)
    assert cached.cached_bytes == 10 * 12 * 2 + 9 * 14 * 2 + 8 * 8 * 5

    bounded = SegmentationDataset(tmp_path, "train", info, cache=True, cache_bytes=300)
    for index in range(3):
        bounded[index]
    assert sorted(bounded._cache) == [0]  # 240 bytes fit, the next 252 would not
    assert bounded.cached_bytes == 240 and torch.equal(bounded[1][0], plain[1][0])


def test_packed_samples_round_trip_whatever_their_values():
    masks = [torch.tensor([[0, 255]]), torch.tensor([[-100, 3]]), torch.tensor([[0, 70000]])]
    images = [torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[2.0, -1.0]]]),  # a float TIFF
              torch.tensor([[[0.5, float("nan")]]])]
    for image, mask in zip(images, masks):
        packed = dataset.pack_sample(image, mask)
        restored = dataset.unpack_sample(*packed)
        assert torch.allclose(restored[0], image, equal_nan=True)
        assert restored[1].dtype == torch.int64 and torch.equal(restored[1], mask)
    assert [dataset.pack_sample(i, m)[1].dtype for i, m in zip(images, masks)] == [
        torch.uint8, torch.int16, torch.int32]
    assert dataset.pack_sample(images[1], masks[1])[0].dtype == torch.float32


def test_the_caches_share_a_quarter_of_the_memory(monkeypatch):
    monkeypatch.setattr(loaders, "physical_memory", lambda: 16 * 2**30)
    assert loaders.cache_bytes(0) == 2 * 2**30  # train and val in the one process
    assert loaders.cache_bytes(4, processes=2) == 16 * 2**30 // 4 // 5 // 2
    monkeypatch.setattr(loaders, "physical_memory", lambda: None)
    assert loaders.cache_bytes(2) is None


def test_dataset_transform_sees_unit_range_before_normalisation(tmp_path):
    make_index_dataset(tmp_path)
    info = scan_dataset(tmp_path)
    seen = []

    def record(image, mask):
        seen.append((float(image.min()), float(image.max())))
        return image, mask

    SegmentationDataset(tmp_path, "val", info, transform=record)[0]
    assert 0.0 <= seen[0][0] and seen[0][1] <= 1.0


# --------------------------------------------------------------------------- transforms

CLASS_LEVELS = torch.tensor([0.1, 0.5, 0.9, 0.3])


def blocky_pair(height=40, width=52, seed=0, block=8):
    """A mask of square blocks of classes 0..3 and a 2-channel image computed from it."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 4, (height // block + 1, width // block + 1), generator=generator)
    mask = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width]
    image = torch.stack([CLASS_LEVELS[mask], 1 - CLASS_LEVELS[mask]])
    return image, mask


def interior(mask, radius=2):
    """Pixels whose (2r+1)^2 neighbourhood holds one class (bilinear blending cannot reach)."""
    padded = torch.nn.functional.pad(mask[None, None].float(), (radius,) * 4, value=-1.0)
    high = torch.nn.functional.max_pool2d(padded, 2 * radius + 1, stride=1)[0, 0]
    low = -torch.nn.functional.max_pool2d(-padded, 2 * radius + 1, stride=1)[0, 0]
    return (high == low) & (mask != 255)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned(seed):
    torch.manual_seed(seed)
    transform = TrainTransform(crop_size=(32, 36), scale=(0.75, 1.25), rotate=30, jitter=0,
                               noise=0)
    image, mask = transform(*blocky_pair(height=64, width=72, seed=seed, block=10))
    assert image.shape == (2, 32, 36) and mask.shape == (32, 36) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}  # exact ids, never interpolated
    inside = interior(mask)
    assert inside.sum() > 150
    expected = torch.stack([CLASS_LEVELS[mask.clamp(max=3)], 1 - CLASS_LEVELS[mask.clamp(max=3)]])
    assert torch.allclose(image[:, inside], expected[:, inside], atol=1e-4)


def test_crop_and_flips_without_resampling_are_exact():
    torch.manual_seed(3)
    transform = TrainTransform(crop_size=20, scale=None, rotate=0, jitter=0, noise=0)
    image, mask = transform(*blocky_pair())
    assert torch.allclose(image[0], CLASS_LEVELS[mask], atol=1e-5)


def test_padding_fills_mask_with_ignore_and_image_with_zero():
    torch.manual_seed(0)
    image, mask = blocky_pair(height=12, width=10)
    transform = TrainTransform(crop_size=32, scale=None, rotate=0, hflip=False, vflip=False,
                               jitter=0, noise=0, ignore_index=255)
    out_image, out_mask = transform(image, mask)
    assert out_mask.shape == (32, 32)
    assert (out_mask != 255).sum() == 12 * 10  # every source pixel once, the rest padding
    assert (out_image[:, out_mask == 255] == 0).all()


def test_photometric_augmentation_changes_image_not_mask():
    image, mask = blocky_pair()
    torch.manual_seed(5)
    plain_image, plain_mask = TrainTransform(crop_size=24, jitter=0, noise=0)(image, mask)
    torch.manual_seed(5)
    noisy_image, noisy_mask = TrainTransform(crop_size=24, jitter=0.3, noise=0.05)(image, mask)
    assert torch.equal(plain_mask, noisy_mask)
    assert not torch.allclose(plain_image, noisy_image)


def test_all_augmentations_off_is_identity():
    image, mask = blocky_pair()
    out_image, out_mask = TrainTransform(None, scale=None, hflip=False, vflip=False, rotate=0,
                                         jitter=0, noise=0)(image, mask)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_eval_transform_resizes_mask_by_nearest():
    image, mask = blocky_pair(height=40, width=52)
    same_image, same_mask = EvalTransform()(image, mask)
    assert same_image is image and same_mask is mask
    small_image, small_mask = EvalTransform(image_size=(20, 26))(image, mask)
    assert small_image.shape == (2, 20, 26) and small_mask.shape == (20, 26)
    assert torch.equal(small_mask, mask[1::2, 1::2])  # pixel centres of an exact 2x reduction


def test_pad_collate_mixed_sizes():
    batch = [(torch.ones(1, 5, 7), torch.zeros(5, 7, dtype=torch.int64)),
             (torch.ones(1, 8, 4), torch.ones(8, 4, dtype=torch.int64))]
    images, masks = pad_collate(batch, ignore_index=255)
    assert images.shape == (2, 1, 8, 7) and masks.shape == (2, 8, 7)
    assert images[0, 0, 5:].eq(0).all() and masks[0, 5:].eq(255).all()
    assert masks[1, :, 4:].eq(255).all() and masks[1, :, :4].eq(1).all()


# --------------------------------------------------------------------------- check and demo


def test_check_exit_codes(tmp_path, capsys):
    make_index_dataset(tmp_path)
    assert dataset.main(["check", str(tmp_path)]) == 0
    assert "no problems" in capsys.readouterr().out
    save_image(tmp_path / "val" / "masks" / "v0.png", index_mask(11, 11, (0, 1, 7)))
    assert dataset.main(["check", str(tmp_path), "--num-classes", "3"]) == 1
    assert "v0.png" in capsys.readouterr().out


def test_check_command_line_exit_status(tmp_path):
    make_index_dataset(tmp_path)
    (tmp_path / "val" / "images" / "v0.png").unlink()
    result = subprocess.run([sys.executable, str(REPO / "dataset.py"), "check", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "v0.png" in result.stdout


def test_intensity_baseline_is_perfect_when_grey_levels_separate_classes(tmp_path):
    for split in ("train", "val"):
        mask = index_mask(8, 12, (0, 1, 2))
        write_pair(tmp_path, split, "a", (mask * 100 + 20).astype(np.uint8), mask)
    info = scan_dataset(tmp_path)
    assert dataset.intensity_baseline(tmp_path, info) == {"train": 1.0, "val": 1.0}


def test_demo_is_deterministic_and_valid(tmp_path):
    counts = dict(num_train=3, num_val=2, num_test=1, size_range=(24, 32))
    make_demo(tmp_path / "a", seed=1, **counts)
    make_demo(tmp_path / "b", seed=1, **counts)
    make_demo(tmp_path / "c", seed=2, **counts)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 2 * 6 + 1
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
               for name in files if name.suffix == ".png")
    info = scan_dataset(tmp_path / "a", splits=("train", "val", "test"))
    assert info["class_names"] == ["background", "cell", "nucleus"]
    assert info["image_modes"]["train"] == {"L": 3} and all(info["class_pixels"])
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        make_demo(tmp_path / "a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README.md").write_text("other files may be there")
    make_demo(tmp_path / "d", num_train=1, num_val=0, num_test=0, size_range=(16, 16))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["README.md", "classes.json",
                                                                  "train"]


def test_format_values():
    assert utils.format_values([0, 1, 2, 3, 255]) == "{0..3, 255}"
    assert utils.format_values([0, 2, 5]) == "{0, 2, 5}"


def test_segmentation_dataset_works_without_a_scan_result(tmp_path):
    """A notebook needs no scan_dataset call: the dataset scans (train + its split) itself and
    decodes exactly as with a scan result passed in."""
    write_pair(tmp_path, "train", "a", np.arange(99, dtype=np.uint8).reshape(9, 11),
               np.array([[0, 255] * 5 + [0]] * 9, np.uint8))
    write_pair(tmp_path, "test", "b", np.full((9, 11), 50, np.uint8),
               np.zeros((9, 11), np.uint8))
    alone = SegmentationDataset(tmp_path, "test")
    scanned = SegmentationDataset(tmp_path, "test",
                                  scan_dataset(tmp_path, splits=("train", "test")))
    assert alone.info["num_classes"] == 2 and alone.info["mask_decoding"]["kind"] == "binary"
    for (image, mask), (image2, mask2) in zip(alone, scanned):
        assert torch.equal(image, image2) and torch.equal(mask, mask2)
    assert alone[0][0].shape == (1, 9, 11)


@pytest.mark.parametrize("cores, local_processes, expected",
                         [(16, 1, 15), (16, 4, 3), (64, 1, loaders.MAX_WORKERS), (1, 1, 1),
                          (2, 2, 1)])
def test_loader_workers_on_an_accelerator_follow_the_cores(monkeypatch, cores, local_processes,
                                                           expected):
    """One core for the training process, the rest read: not a fixed 4 (an H200 machine's 16
    cores fed the GPU with 4 workers), shared among torchrun's local processes."""
    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: set(range(cores)),
                        raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    assert loaders.default_workers() == expected
    plan = Plan()
    assert loaders.loader_workers(plan, torch.device("cuda")) == expected
    assert loaders.loader_workers(plan, torch.device("cpu")) == 0  # the cores train on a CPU
    plan.workers = 2
    assert loaders.loader_workers(plan, torch.device("cuda")) == 2
