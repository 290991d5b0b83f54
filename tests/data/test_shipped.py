"""Public datasets' layouts as they ship, read by the generic finders (files/finders.py) with no
flag: split names in any case, split folders nested in the image and mask folders, split-named
folders, subfolders, several masks of one image, split lists, a pool beside test/; and what is
not a label (a field of view, a tool's outputs, several label folders) told apart."""
import json

import numpy as np
import pytest
from PIL import Image

import dataset
from helpers import check_report, train_two_steps
from segnet.data.files.index import split_pairs
from segnet.data.files.layouts import find_layout
from segnet.data.pixels.maskfiles import MaskUnion
from segnet.data.pixels.masks import decode_mask
from segnet.utils import DataError


def blob_pair(image_path, mask_path, seed, size=(20, 22), mask_format=None):
    """A grey image with a bright blob and its 0/255 mask (Kvasir's, BUSI's kind)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, dtype=np.uint8)
    top, left = rng.integers(2, size[0] - 9), rng.integers(2, size[1] - 9)
    mask[top:top + 7, left:left + 7] = 255
    image = np.where(mask > 0, 200, 70) + rng.normal(0, 12, size)
    for path in (image_path, mask_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).convert("RGB").save(image_path)
    Image.fromarray(mask).save(mask_path, format=mask_format)
    return mask


def blobs(image_dir, mask_dir, count, image_name="{}.png", mask_name="{}.png", seed=0):
    for index in range(count):
        blob_pair(image_dir / image_name.format(index), mask_dir / mask_name.format(index),
                  seed + index)


def nested_splits(root):  # images/{train,val} + masks/{train,val}, in capitals
    blobs(root / "images" / "Train", root / "masks" / "Train", 6)
    blobs(root / "images" / "Validation", root / "masks" / "Validation", 2, seed=10)
    return "nested-splits", {"train": 6, "val": 2}


def mmseg(root):  # mmsegmentation's converted layout
    blobs(root / "img_dir" / "train", root / "ann_dir" / "train", 6, image_name="{}.jpg")
    blobs(root / "img_dir" / "val", root / "ann_dir" / "val", 2, image_name="{}.jpg", seed=10)
    return "nested-splits", {"train": 6, "val": 2}


def split_named(root):  # train_images + train_masks, val_images + val_masks
    blobs(root / "train_images", root / "train_masks", 6)
    blobs(root / "val_images", root / "val_masks", 2, seed=10)
    return "split-named", {"train": 6, "val": 2}


def carvana(root):  # train/ + train_masks/ with <id>_mask.gif
    blobs(root / "train", root / "train_masks", 8, image_name="car{}_01.jpg",
          mask_name="car{}_01_mask.png")
    return "split-named", {"train": 7, "val": 1}


def training_testing(root):  # DRIVE-like split names, one label folder a split
    blobs(root / "training" / "images", root / "training" / "labels", 6)
    blobs(root / "testing" / "images", root / "testing" / "labels", 2, seed=10)
    return "splits", {"train": 5, "val": 1}


def busi(root):  # Dataset_BUSI_with_GT: class subfolders, images and masks side by side
    for group in ("benign", "malignant"):
        blobs(root / group, root / group, 4, image_name=f"{group} ({{}}).png",
              mask_name=f"{group} ({{}})_mask.png", seed=len(group))
    blob_pair(root / "benign" / "extra.png", root / "benign" / "benign (1)_mask_1.png", 40)
    (root / "benign" / "extra.png").unlink()
    return "side-by-side-root", {"train": 7, "val": 1}


def split_lists(root):  # one pool, the splits in train.txt / val.txt / test.txt
    blobs(root / "images", root / "masks", 10)
    (root / "train.txt").write_text("\n".join(str(index) for index in range(6)) + "\n")
    (root / "val.txt").write_text("6\n7\n")
    (root / "test.txt").write_text("8.png\n9.png\n")
    return "images-masks", {"train": 6, "val": 2}


def pool_and_test(root):  # images/ + masks/ beside test/images + test/masks
    blobs(root / "images", root / "masks", 8)
    blobs(root / "test" / "images", root / "test" / "masks", 2, seed=20)
    return "images-masks", {"train": 7, "val": 1}


def unet_membrane(root):  # zhixuhao/unet: train/image + train/label + aug/, test/ with outputs
    blobs(root / "train" / "image", root / "train" / "label", 6)
    (root / "train" / "aug").mkdir()
    for index in range(2):
        blob_pair(root / "test" / f"{index}.png", root / "test" / f"{index}_predict.png", index)
    return "splits", {"train": 5, "val": 1}


def kvasir(root):  # images/ + masks/, both JPEG: two grey levels plus JPEG noise
    for index in range(8):
        blob_pair(root / "images" / f"cju{index}.jpg", root / "masks" / f"cju{index}.jpg", index,
                  mask_format="JPEG")
    (root / "kavsir_bboxes.json").write_text("{}")
    return "images-masks", {"train": 7, "val": 1}


SHIPPED = [nested_splits, mmseg, split_named, carvana, training_testing, busi, split_lists,
           pool_and_test, unet_membrane, kvasir]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build", SHIPPED, ids=[build.__name__ for build in SHIPPED])
def test_each_shipped_layout_is_checked_and_trains(tmp_path, build, capsys):
    root = tmp_path / "data"
    kind, splits = build(root)
    code, report = check_report(root, capsys)
    assert code == 0, report
    assert "layout: " in report
    assert train_two_steps(root, tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layout"]["kind"] == kind
    assert config["splits"] == splits


def test_split_names_in_any_case_and_aliases(tmp_path):
    nested_splits(tmp_path)
    layout = find_layout(tmp_path)
    assert layout["folders"] == {"train": ["images/Train", "masks/Train"],
                                 "val": ["images/Validation", "masks/Validation"]}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_several_masks_of_one_image_are_their_union(tmp_path, capsys):
    busi(tmp_path)
    code, report = check_report(tmp_path, capsys)
    assert code == 0, report
    assert "1 image(s) have several masks, read as their union" in report
    pairs = {name: mask for name, _, mask in split_pairs(tmp_path, "train",
                                                         ["benign (3)"], find_layout(tmp_path))}
    union = pairs["benign (1)"]
    assert isinstance(union, MaskUnion) and len(union.paths) == 2
    parts = [np.asarray(Image.open(path)) > 0 for path in union.paths]
    decoded = decode_mask(union, {"kind": "binary", "num_classes": 2,
                                  "foreground_values": [255]})
    assert ((decoded == 1) == (parts[0] | parts[1])).all()
    assert "malignant (0)" in pairs  # the subfolders' stems are unique: the names are stems


def test_subfolders_pair_by_relative_path(tmp_path):
    for group in ("a", "b"):
        blobs(tmp_path / "images" / group, tmp_path / "masks" / group, 3, seed=len(group))
    names = [name for name, _, _ in split_pairs(tmp_path, "train", ["a/0"])]
    assert names == ["a/1", "a/2", "b/0", "b/1", "b/2"]  # stems clash: paths name them


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_split_lists_decide_the_splits(tmp_path):
    split_lists(tmp_path)
    info = dataset.scan_dataset(tmp_path, splits=("train", "val", "test"))
    assert info["splits"] == {"train": 6, "val": 2, "test": 2}
    assert [name for name, _, _ in split_pairs(tmp_path, "test", layout=info["layout"])] == [
        "8", "9"]


@pytest.mark.parametrize("lists, message", [
    ({"train.txt": "0\n1\n2\n3\n", "val.txt": "3\n4\n"},
     r"1 sample\(s\) are in two split lists: 3 \(train and val\)"),
    ({"train.txt": "0\n1\n2\nnine\n", "val.txt": "4\n"},
     r"1 name\(s\) in the split list .*train\.txt have no image in .*images: nine"),
])
def test_bad_split_lists_stop_with_one_line(tmp_path, lists, message):
    blobs(tmp_path / "images", tmp_path / "masks", 6)
    for name, text in lists.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message) as raised:
        dataset.scan_dataset(tmp_path)
    assert "\n" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_tools_outputs_are_not_labels(tmp_path, capsys):
    unet_membrane(tmp_path)
    code, report = check_report(tmp_path, capsys)
    assert code == 0, report
    assert ("test/: 2 images beside 2 outputs of a tool (0_predict.png, 1_predict.png): not "
            "labels; the split is unlabelled, not scored") in report
    assert "test" not in find_layout(tmp_path)["folders"]


def drive(root):
    """DRIVE as it ships: training/ and test/ with images/, 1st_manual/ (vessels) and mask/
    (the field of view: one disc, the same in every file)."""
    rows, cols = np.mgrid[:24, :24]
    disc = (((rows - 12) ** 2 + (cols - 12) ** 2) < 100).astype(np.uint8) * 255
    for split, start, count in (("training", 21, 6), ("test", 1, 2)):
        for index in range(start, start + count):
            folder = root / split
            blob_pair(folder / "images" / f"{index:02d}_{split}.tif",
                      folder / "1st_manual" / f"{index:02d}_manual1.png", index, size=(24, 24))
            (folder / "mask").mkdir(exist_ok=True)
            Image.fromarray(disc).save(folder / "mask" / f"{index:02d}_{split}_mask.png")


def test_several_label_folders_are_named_never_picked(tmp_path):
    drive(tmp_path)
    with pytest.raises(DataError, match=r"training holds several folders that may be the "
                                        r"labels: 1st_manual/, mask/; choose one with --masks "
                                        r"NAME") as raised:
        find_layout(tmp_path)
    assert "\n" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_masks_flag_names_a_folder_in_each_split(tmp_path, capsys):
    drive(tmp_path)
    code, report = check_report(tmp_path, capsys, "--masks", "1st_manual")
    assert code == 0, report
    layout = find_layout(tmp_path, masks=["1st_manual"])
    assert layout["folders"] == {"train": ["training/images", "training/1st_manual"],
                                 "test": ["test/images", "test/1st_manual"]}
    assert train_two_steps(tmp_path, tmp_path / "run", "--masks", "1st_manual") == 0


def test_a_field_of_view_is_not_labels(tmp_path, capsys):
    drive(tmp_path)
    code, report = check_report(tmp_path, capsys, "--masks", "mask")
    assert code == 1
    assert ("are all nearly the same shape (one region in every file): a region of interest, "
            "such as a field of view, not labels; other folders that may hold the labels: "
            "1st_manual/: pass --masks 1st_manual") in report


def test_images_flag_is_tried_in_each_split_folder(tmp_path):
    drive(tmp_path)
    layout = find_layout(tmp_path, images=["images"], masks=["1st_manual"])
    assert layout["folders"]["test"] == ["test/images", "test/1st_manual"]
    with pytest.raises(DataError, match="--masks nowhere is not a folder: looked in"):
        find_layout(tmp_path, masks=["nowhere"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_level_jpeg_masks_are_binary_and_many_levels_refused(tmp_path, capsys):
    kvasir(tmp_path / "kvasir")
    code, report = check_report(tmp_path / "kvasir", capsys)
    assert code == 0, report
    assert "the masks are JPEG with two levels (near 0 and near 255, JPEG noise between): " \
           "read as binary at 128" in report
    for index in range(6):  # three grey levels: class ids saved as JPEG, not two levels
        mask = blob_pair(tmp_path / "many" / "images" / f"{index}.jpg",
                         tmp_path / "many" / "masks" / f"{index}.jpg", index, mask_format="JPEG")
        levels = np.where(mask > 0, 255, 0).astype(np.uint8)
        levels[:, :5] = 128
        Image.fromarray(levels).save(tmp_path / "many" / "masks" / f"{index}.jpg")
    code, report = check_report(tmp_path / "many", capsys)
    assert code == 1 and "JPEG" in report


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_non_image_files_are_skipped_with_a_note(tmp_path, capsys):
    blobs(tmp_path / "images", tmp_path / "masks", 6)
    for name in ("notes.txt", "meta.json", "a.xml", "Thumbs.db", "._0.png"):
        (tmp_path / "images" / name).write_text("x")
    code, report = check_report(tmp_path, capsys)
    assert code == 0, report
    assert "3 file(s) that are not images or masks skipped" in report
    assert "Thumbs.db" not in report and "._0.png" not in report
