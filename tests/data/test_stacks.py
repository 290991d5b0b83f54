"""Stacks and volumes: a multi-page TIFF (ISBI 2012's train-volume.tif) or a NIfTI volume is a
sample a page, every page checked, read a page at a time; nothing is read in part silently;
predict.py writes a mask stack of the same pages; hold-outs take whole stacks."""
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

import dataset
import predict
import train
from helpers import save_test_checkpoint
from segnet.data.files import pairs
from segnet.data.check import scancache
from segnet.data.pixels import stacks
from segnet.data.pixels.images import load_image
from segnet.data.files.index import split_pairs
from segnet.data.files.splits import carve
from segnet.utils import DataError


def stack_pages(pages, size=(24, 20), seed=0):
    """(images, masks): uint8 pages with a bright square (class 1) in a different place each."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(pages):
        mask = np.zeros(size, dtype=np.uint8)
        top, left = rng.integers(0, min(size) - 8, 2)
        mask[top:top + 8, left:left + 8] = 1
        images.append((np.where(mask, 200, 60) + rng.normal(0, 8, size)).clip(0, 255)
                      .astype(np.uint8))
        masks.append(mask * 255)
    return images, masks


def save_stack(path, pages):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(page) for page in pages]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def write_stack_pair(image_path, mask_path, pages, seed=0, size=(24, 20)):
    images, masks = stack_pages(pages, size, seed)
    save_stack(image_path, images)
    save_stack(mask_path, masks)
    return images, masks


def test_a_12_page_tiff_pair_gives_12_samples_every_page_checked(tmp_path, capsys):
    images, masks = write_stack_pair(tmp_path / "train/images/volume.tif",
                                     tmp_path / "train/masks/volume.tif", 12)
    write_stack_pair(tmp_path / "val/images/other.tif", tmp_path / "val/masks/other.tif", 3, 1)
    info = dataset.scan_dataset(tmp_path)
    assert info["splits"] == {"train": 12, "val": 3}
    assert info["layout"]["pages"]["train/images/volume.tif"] == 12
    pairs = split_pairs(tmp_path, "train", layout=info["layout"])
    assert [name for name, _, _ in pairs][:2] == ["volume@01", "volume@02"]
    for index in (0, 7, 11):  # each sample reads its own page
        image = load_image(pairs[index][1], 1)
        assert np.allclose(image[0], images[index] / 255)
    sample = dataset.SegmentationDataset(tmp_path, "train", info).load_sample(7)[1]
    assert np.array_equal(sample.numpy(), masks[7] // 255)
    assert dataset.main(["check", str(tmp_path), "--no-baseline"]) == 0
    assert "stacks (pages): train/images/volume.tif 12, val/images/other.tif 3" in \
        capsys.readouterr().out


def test_a_stack_read_as_one_image_is_an_error_not_its_first_page(tmp_path):
    write_stack_pair(tmp_path / "a.tif", tmp_path / "b.tif", 12)
    with pytest.raises(DataError, match=r"a\.tif has 12 pages but is read as one image"):
        load_image(tmp_path / "a.tif", 1)


def test_stacks_of_different_page_counts_are_named(tmp_path):
    images, _ = stack_pages(12)
    _, masks = stack_pages(10)
    save_stack(tmp_path / "train/images/v.tif", images)
    save_stack(tmp_path / "train/masks/v.tif", masks)
    with pytest.raises(DataError, match=r"v\.tif has 12 page\(s\), its mask .*v\.tif 10") as error:
        dataset.scan_dataset(tmp_path)
    assert "\n" not in str(error.value)


def test_a_page_of_another_size_is_named_with_its_page(tmp_path):
    images, masks = stack_pages(4)
    masks[2] = np.zeros((20, 20), dtype=np.uint8)
    save_stack(tmp_path / "train/images/v.tif", images)
    save_stack(tmp_path / "train/masks/v.tif", masks)
    with pytest.raises(DataError, match=r"v\.tif \(page 3 of 4\)"):
        dataset.scan_dataset(tmp_path, splits=("train",))


def test_holdout_never_splits_a_stack(tmp_path):
    for index in range(6):
        write_stack_pair(tmp_path / f"images/s{index}.tif", tmp_path / f"masks/s{index}.tif",
                         4, seed=index)
    info = dataset.scan_dataset(tmp_path)
    held = {name.split("@")[0] for name in info["holdout"]}
    train_stacks = {name.split("@")[0] for name, _, _ in split_pairs(
        tmp_path, "train", info["holdout"], info["layout"])}
    assert held and not held & train_stacks
    assert len(info["holdout"]) == 4 * len(held)  # whole stacks


def test_one_stack_is_split_in_one_contiguous_block_with_a_warning(tmp_path):
    write_stack_pair(tmp_path / "images/isbi.tif", tmp_path / "masks/isbi.tif", 20)
    with pytest.warns(UserWarning, match="one stack .* neighbouring slices correlate"):
        info = dataset.scan_dataset(tmp_path)
    assert info["holdout"] == [f"isbi@{page}" for page in range(18, 21)]


def test_carve_by_group_pattern_and_leaks_between_splits(tmp_path):
    samples = [(f"case{case:02d}_slice{index}", None, None) for case in range(5)
               for index in range(3)]
    val, test, _ = carve(samples, 0.2, 0.2, pattern=r"case\d+")
    cases = {name.split("_")[0] for name in val + test}
    assert len(val) == 3 and len(test) == 3 and len(cases) == 2
    assert carve(samples, 0.2, 0.2, pattern=r"case\d+")[:2] == (val, test)  # stable
    for split, names in (("train", ["case01_slice1", "case02_slice1"]),
                         ("val", ["case01_slice2"])):
        for index, name in enumerate(names):
            write_stack_pair(tmp_path / f"{split}/images/{name}.png",
                             tmp_path / f"{split}/masks/{name}.png", 1, seed=index)
    with pytest.warns(UserWarning, match=r"1 group\(s\) have samples in two splits: case01 "
                                         r"\(train and val\)"):
        dataset.scan_dataset(tmp_path, layout=dataset.find_layout(
            tmp_path, group_pattern=r"case\d+"))


def test_predict_writes_a_mask_stack_of_the_same_pages(tmp_path, capsys):
    images, _ = stack_pages(12)
    save_stack(tmp_path / "in/volume.tif", images)
    Image.fromarray(images[0]).save(tmp_path / "in/plain.png")
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2)
    args = predict.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
         str(tmp_path / "out"), "--overlay", "--device", "cpu"])
    assert predict.main(args) == 0
    assert "wrote 1 mask(s)" in capsys.readouterr().out
    with Image.open(tmp_path / "out/volume.tif") as written:
        assert written.n_frames == 12 and written.size == (20, 24)
        written.seek(11)
        assert set(np.unique(np.asarray(written))) <= {0, 255}
    assert (tmp_path / "out/plain.png").is_file()
    assert (tmp_path / "out/volume_p0012_overlay.png").is_file()
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_train_two_steps_on_a_stack_pair(tmp_path):
    write_stack_pair(tmp_path / "data/train/images/v.tif", tmp_path / "data/train/masks/v.tif",
                     8)
    args = train.get_args_parser().parse_args(
        ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "2",
         "--batch-size", "2", "--crop-size", "16", "--workers", "0"])
    with pytest.warns(UserWarning, match="one stack"):
        assert train.main(args) == 0
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["holdout"] == ["v@8"] and config["splits"]["train"] == 7


def test_a_missing_nibabel_is_one_line_with_the_install(tmp_path, monkeypatch):
    (tmp_path / "train/images").mkdir(parents=True)
    (tmp_path / "train/masks").mkdir(parents=True)
    (tmp_path / "train/images/a.nii.gz").write_bytes(b"")
    (tmp_path / "train/masks/a.nii.gz").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "nibabel" else real(name, *rest))
    with pytest.raises(DataError, match=r"NIfTI files need nibabel.*pip install nibabel"):
        dataset.scan_dataset(tmp_path)


def test_nifti_volumes_are_sliced_along_the_last_axis(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    images, masks = stack_pages(5)
    volume = np.stack(images, axis=-1).astype(np.int16) - 100  # signed, as CT
    labels = np.stack(masks, axis=-1) // 255
    for folder, name, data in (("imagesTr", "case_000_0000", volume),
                               ("labelsTr", "case_000", labels.astype(np.uint8))):
        (tmp_path / folder).mkdir(exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / folder / f"{name}.nii.gz")
    for index in range(1, 3):
        for folder, name, data in (("imagesTr", f"case_00{index}_0000", volume),
                                   ("labelsTr", f"case_00{index}", labels.astype(np.uint8))):
            nibabel.save(nibabel.Nifti1Image(data, np.eye(4)),
                         tmp_path / folder / f"{name}.nii.gz")
    info = dataset.scan_dataset(tmp_path)
    assert info["splits"]["train"] + info["splits"]["val"] == 15
    assert len(info["holdout"]) == 5  # one whole volume
    pairs = split_pairs(tmp_path, "train", info["holdout"], info["layout"])
    image = load_image(pairs[3][1], 1)
    assert np.allclose(image[0], volume[..., 3])  # signed: kept as float, as a float TIFF
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2)
    args = predict.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "imagesTr/case_000_0000"
                                                         ".nii.gz"),
         "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert predict.main(args) == 0
    written = nibabel.load(tmp_path / "out/case_000_0000.nii.gz")
    assert written.shape == volume.shape and np.allclose(written.affine, np.eye(4))
    assert stacks.page_count(tmp_path / "out/case_000_0000.nii.gz") == 5


def test_a_rerun_reuses_the_page_counts_instead_of_reopening_the_stacks(tmp_path, monkeypatch):
    for index in range(3):
        write_stack_pair(tmp_path / f"images/s{index}.tif", tmp_path / f"masks/s{index}.tif", 5,
                         seed=index)
    monkeypatch.setenv("SEGNET_CACHE", str(tmp_path / "cache"))
    counted = []
    real = stacks.page_count
    monkeypatch.setattr(stacks, "page_count", lambda path: counted.append(path) or real(path))
    monkeypatch.setattr(pairs, "page_count", stacks.page_count)
    info, reused = scancache.cached_scan(tmp_path)
    assert not reused and len(counted) == 6  # 3 stacks and their 3 masks
    counted.clear()
    info, reused = scancache.cached_scan(tmp_path)
    assert reused and counted == []
    dataset_pairs = split_pairs(tmp_path, "train", info["holdout"], info["layout"])
    assert len(dataset_pairs) == 10 and counted == []  # the dataset lists from the saved counts
