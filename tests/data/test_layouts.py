"""Data in as users have it: every layout of layouts.py and every pairing of pairing.py, built
as a tiny dataset, passes `python dataset.py check` and trains two steps; the layout is saved
in config.json and the checkpoint; bad inputs stop with one line naming the files."""
import json

import numpy as np
import pytest
from PIL import Image

import dataset
import train
from segnet.data.files.layouts import find_layout
from segnet.data.files.index import split_pairs
from segnet.utils import DataError


def tiny_pair(image_path, mask_path, seed, size=24):
    """A grey image and its 3-class index mask (a bright square, a dark bar)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.uint8)
    top, left = rng.integers(0, size - 10, 2)
    mask[top:top + 8, left:left + 8] = 1
    mask[rng.integers(0, size - 3):][:3, 2:size - 2] = 2
    image = np.choose(mask, [120, 220, 30]) + rng.normal(0, 10, mask.shape)
    for path in (image_path, mask_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(image_path)
    Image.fromarray(mask).save(mask_path)


def pairs_in(image_dir, mask_dir, count, image_name="img_{}.png", mask_name="img_{}.png",
             seed=0):
    for index in range(count):
        tiny_pair(image_dir / image_name.format(index), mask_dir / mask_name.format(index),
                  seed + index)


def images_masks(root):  # Pytorch-UNet's data/imgs + data/masks, Kvasir-SEG: no split folders
    pairs_in(root / "imgs", root / "masks", 8)
    return "images-masks", None


def mask_suffix(root):  # Carvana, BUSI: <stem>_mask.png
    pairs_in(root / "images", root / "masks", 8, mask_name="img_{}_mask.png")
    return "images-masks", "masks paired by the suffix `_mask` on the masks: 8 of 8"


def both_suffixes(root):  # DRIVE: 21_training.tif <-> 21_manual1.png
    for split, count in (("train", 6), ("val", 2)):
        pairs_in(root / split / "images", root / split / "masks", count,
                 image_name=f"{split}{{}}_training.tif", mask_name=f"{split}{{}}_manual1.png")
    return "splits", "the suffix `_training` on the images and the suffix `_manual1` on the masks"


def camvid(root):  # the SegNet tutorial's CamVid folders
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        pairs_in(root / split, root / f"{split}annot", count, image_name=f"{split}{{}}.png",
                 mask_name=f"{split}{{}}.png", seed=10 * len(split))
    return "camvid", None


def nnunet(root):  # imagesTr/case_000_0000.png + labelsTr/case_000.png, labels named
    pairs_in(root / "imagesTr", root / "labelsTr", 8, image_name="case_{:03d}_0000.png",
             mask_name="case_{:03d}.png")
    pairs_in(root / "imagesTs", root / "labelsTs", 2, image_name="test_{:03d}_0000.png",
             mask_name="test_{:03d}.png", seed=50)
    (root / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "square": 1, "bar": 2}, "file_ending": ".png"}))
    return "nnunet", "masks paired by the suffix `_0000` on the images"


def side_by_side_splits(root):  # BUSI, Cellpose: train/ holding a.png and a_masks.png
    for split, count in (("train", 6), ("val", 2)):
        pairs_in(root / split, root / split, count, image_name=f"{split} ({{}})_img.png",
                 mask_name=f"{split} ({{}})_masks.png")
    return "side-by-side", "the suffix `_masks` on the masks"


def side_by_side_root(root):  # one folder for everything
    pairs_in(root, root, 8, image_name="benign ({}).png", mask_name="benign ({})_mask.png")
    return "side-by-side-root", "the suffix `_mask` on the masks"


LAYOUTS = [images_masks, mask_suffix, both_suffixes, camvid, nnunet, side_by_side_splits,
           side_by_side_root]


def train_two_steps(root, out, *extra):
    args = train.get_args_parser().parse_args(
        ["--data", str(root), "--out", str(out), "--steps", "2", "--batch-size", "2",
         "--crop-size", "16", "--workers", "0", *extra])
    return train.main(args)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build", LAYOUTS, ids=[build.__name__ for build in LAYOUTS])
def test_each_layout_is_checked_and_trains(tmp_path, build, capsys):
    root = tmp_path / "data"
    kind, pairing_line = build(root)
    assert dataset.main(["check", str(root), "--no-baseline"]) == 0
    report = capsys.readouterr().out
    assert "no problems: ready to train" in report
    assert "layout: " in report
    if pairing_line:
        assert pairing_line in report
    assert train_two_steps(root, tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layout"]["kind"] == kind
    assert sum(config["splits"].values()) >= 8


def test_nnunet_labels_name_the_classes_and_its_test_split_is_read(tmp_path):
    nnunet(tmp_path)
    info = dataset.scan_dataset(tmp_path, splits=("train", "val", "test"))
    assert info["class_names"] == ["background", "square", "bar"]
    assert info["splits"] == {"train": 7, "val": 1, "test": 2}
    assert [name for name, _, _ in split_pairs(tmp_path, "test", layout=info["layout"])] == [
        "test_000", "test_001"]


def test_a_resumed_run_and_evaluate_use_the_saved_layout(tmp_path):
    mask_suffix(tmp_path / "data")
    assert train_two_steps(tmp_path / "data", tmp_path / "run") == 0
    checkpoint = train.utils.load_checkpoint(tmp_path / "run" / "last.pt")
    layout = checkpoint["data"]["layout"]
    assert layout["pairing"]["train"] == ["", "_mask"]
    # a mask renamed after training: the saved suffix still pairs the rest, the change is named
    masks = tmp_path / "data" / "masks"
    (masks / "img_3_mask.png").rename(masks / "img_3_gt.png")
    with pytest.raises(DataError, match="img_3_gt.png"):
        split_pairs(tmp_path / "data", "train", layout=layout)


def test_images_and_masks_flags_per_split_and_one_pool(tmp_path):
    pairs_in(tmp_path / "a", tmp_path / "b", 6)
    pairs_in(tmp_path / "c", tmp_path / "d", 2, seed=20)
    per_split = dataset.scan_dataset(tmp_path, layout=find_layout(
        tmp_path, ["train=a", "val=c"], ["train=b", "val=d"]))
    assert per_split["splits"] == {"train": 6, "val": 2} and not per_split["holdout"]
    pool = dataset.scan_dataset(tmp_path, layout=find_layout(tmp_path, ["a"], ["b"]))
    assert pool["splits"] == {"train": 5, "val": 1} and len(pool["holdout"]) == 1
    with pytest.raises(DataError, match="--images and --masks name the same splits"):
        find_layout(tmp_path, ["train=a", "val=c"], ["train=b"])


def test_test_share_carves_a_test_split_that_is_saved(tmp_path):
    images_masks(tmp_path / "data")
    assert train_two_steps(tmp_path / "data", tmp_path / "run", "--test-share", "0.25") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    test, val = config["layout"]["test_holdout"], config["holdout"]
    assert len(test) == 2 and len(val) == 1 and not set(test) & set(val)
    assert config["splits"]["train"] == 5


@pytest.mark.parametrize("build, message", [
    (lambda root: (pairs_in(root / "train/images", root / "train/masks", 4),
                   pairs_in(root / "images", root / "masks", 4)),
     r"holds two layouts: ROOT/\{train,val,test\}/\{images,masks\} .* and ROOT/images \+ "
     r"ROOT/masks"),
    (lambda root: (pairs_in(root / "images", root / "masks", 4, mask_name="img_{}_mask.png"),
                   tiny_pair(root / "images/extra.png", root / "masks/other_mask.png", 9)),
     r"1 of 5 images .* have no mask .*extra\.png.* masks .* have no image .*other_mask\.png.*"
     r"the suffix `_mask` on the masks, which pairs 4 of 5: .* --mask-suffix _mask"),
    (lambda root: pairs_in(root, root, 4, image_name="{}_a.png", mask_name="{}_b.png"),
     r"masks could be marked by `_a` or by `_b`: pass --mask-suffix"),
])
def test_bad_pairings_stop_with_one_line(tmp_path, build, message):
    build(tmp_path)
    with pytest.raises(DataError, match=message) as raised:
        dataset.scan_dataset(tmp_path)
    assert "\n" not in str(raised.value)


def test_never_paired_by_prefix_or_order(tmp_path):
    """Pytorch-UNet #122: `1` must pair with `1_mask`, never with `11_mask`."""
    for name in ("1", "11", "2"):
        tiny_pair(tmp_path / "images" / f"{name}.png", tmp_path / "masks" / f"{name}_mask.png",
                  int(name))
    pairs = split_pairs(tmp_path, "train")
    assert [(name, image.name, mask.name) for name, image, mask in pairs] == [
        ("1", "1.png", "1_mask.png"), ("11", "11.png", "11_mask.png"),
        ("2", "2.png", "2_mask.png")]


def test_names_pair_without_case_and_with_tif_tiff_alike(tmp_path):
    tiny_pair(tmp_path / "images" / "Cell.TIFF", tmp_path / "masks" / "cell.tif", 0)
    tiny_pair(tmp_path / "images" / "b.jpeg", tmp_path / "masks" / "B.png", 1)
    assert [name for name, _, _ in split_pairs(tmp_path, "train")] == ["Cell", "b"]


def test_mask_suffix_flag_pairs_what_the_search_would_not(tmp_path):
    pairs_in(tmp_path / "images", tmp_path / "masks", 3, mask_name="img_{}_x.png")
    tiny_pair(tmp_path / "images/lone.png", tmp_path / "masks/lone_x.png", 7)
    layout = find_layout(tmp_path, mask_suffix="_x")
    assert len(split_pairs(tmp_path, "train", layout=layout)) == 4
    with pytest.raises(DataError, match="have no mask"):
        split_pairs(tmp_path, "train", layout=find_layout(tmp_path, mask_suffix="_y"))
