"""The benchmarks as they ship (files/benchmarks.py), each a tiny fixture in its exact layout:
recognised with no flag, named in the check's first line with its label convention, decoded by
that convention, and trained two steps."""
import json

import numpy as np
import pytest
from PIL import Image

import dataset
from helpers import check_report, train_two_steps
from segnet.data.files.index import split_pairs
from segnet.data.pixels.masks import decode_mask


def scene(seed, size=(20, 24)):
    """(RGB image, [H,W] region map 0..3): a sky band, a road band, a square object."""
    rng = np.random.default_rng(seed)
    regions = np.zeros(size, dtype=np.uint8)
    regions[:6] = 1
    regions[14:] = 2
    top, left = rng.integers(6, 10), rng.integers(0, size[1] - 6)
    regions[top:top + 5, left:left + 6] = 3
    colours = np.array([[90, 90, 90], [120, 170, 230], [60, 60, 60], [200, 30, 30]])
    image = colours[regions] + rng.normal(0, 8, (*size, 3))
    return Image.fromarray(image.clip(0, 255).astype(np.uint8)), regions


def save(image, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def voc(root, count=8):
    """VOCdevkit/VOC2012: JPEGImages (more images than masks), SegmentationClass (palette PNGs,
    255 on object borders), SegmentationObject, Annotations, ImageSets/Segmentation lists."""
    top = root / "VOCdevkit" / "VOC2012"
    names = [f"2007_{index:06d}" for index in range(count + 2)]
    for index, name in enumerate(names):
        image, regions = scene(index)
        save(image, top / "JPEGImages" / f"{name}.jpg")
        if index >= count:
            continue  # detection-only images: no mask, not samples
        labels = np.choose(regions, [0, 0, 7, 15]).astype(np.uint8)  # background, car, person
        labels[regions == 3] = 15
        labels[np.roll(regions == 3, 1, axis=1) & (regions != 3)] = 255  # a void border
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette([value for index in range(256) for value in (index, index, index)])
        save(mask, top / "SegmentationClass" / f"{name}.png")
        save(mask, top / "SegmentationObject" / f"{name}.png")
        (top / "Annotations").mkdir(exist_ok=True)
        (top / "Annotations" / f"{name}.xml").write_text("<annotation/>")
    lists = top / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:6]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[6:count]) + "\n")
    (lists / "trainval.txt").write_text("\n".join(names[:count]) + "\n")
    return "Pascal VOC: 255 is void, 21 classes", {"train": 6, "val": 2}


def cityscapes(root, train_ids=False):
    """leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/ with four files an image."""
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}
    label_ids = np.array([7, 23, 0, 26])  # road, sky, unlabeled (void), car
    seed = 0
    for split, towns in cities.items():
        for town in towns:
            for frame in range(3 if split == "train" else 2):
                seed += 1
                stem = f"{town}_000000_{frame:06d}"
                image, regions = scene(seed)
                save(image, root / "leftImg8bit" / split / town / f"{stem}_leftImg8bit.png")
                folder = root / "gtFine" / split / town
                labels = label_ids[regions].astype(np.uint8)
                save(Image.fromarray(labels), folder / f"{stem}_gtFine_labelIds.png")
                if train_ids:
                    train_labels = np.array([0, 10, 255, 13])[regions].astype(np.uint8)
                    save(Image.fromarray(train_labels), folder / f"{stem}_gtFine_labelTrainIds.png")
                save(Image.fromarray((regions.astype(np.int32) * 1000 + 26000).astype(np.uint16)),
                     folder / f"{stem}_gtFine_instanceIds.png")
                save(Image.fromarray(np.stack([labels] * 3, axis=2)),
                     folder / f"{stem}_gtFine_color.png")
                (folder / f"{stem}_gtFine_polygons.json").write_text("{}")
    line = ("Cityscapes: labelTrainIds read (19 train ids, 255 void)" if train_ids else
            "Cityscapes: labelIds -> 19 train ids, the rest void")
    return line, {"train": 6, "val": 2}


def ade20k(root):
    """ADEChallengeData2016/{images,annotations}/{training,validation}, objectInfo150.txt."""
    top = root / "ADEChallengeData2016"
    for split, prefix, count in (("training", "train", 6), ("validation", "val", 2)):
        for index in range(count):
            image, regions = scene(index + 10 * len(split))
            name = f"ADE_{prefix}_{index + 1:08d}"
            save(image, top / "images" / split / f"{name}.jpg")
            labels = np.array([1, 3, 7, 0])[regions].astype(np.uint8)  # wall, sky, road, other
            save(Image.fromarray(labels), top / "annotations" / split / f"{name}.png")
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [
        f"{index}\t0.01\t10\t1\t{'wall' if index == 1 else 'sky' if index == 3 else f'thing{index}'}"
        + (", edifice" if index == 1 else "") for index in range(1, 151)]
    (top / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    (top / "sceneCategories.txt").write_text("ADE_train_00000001 bathroom\n")
    return top, "ADE20K: 0 is void, 1..150 -> 0..149", {"train": 6, "val": 2}


def oxford_pet(root):
    """images/ (with .mat files and a GIF named .jpg) + annotations/{trimaps,xmls} and the
    trainval/test lists; trimaps: 1 pet, 2 background, 3 border; macOS ._ files."""
    names = [f"{breed}_{index}" for breed in ("Abyssinian", "beagle") for index in range(1, 6)]
    for seed, name in enumerate(names):
        image, regions = scene(seed)
        save(image, root / "images" / f"{name}.jpg")
        trimap = np.where(regions == 3, 1, 2).astype(np.uint8)
        trimap[np.roll(regions == 3, 1, axis=0) & (regions != 3)] = 3
        save(Image.fromarray(trimap), root / "annotations" / "trimaps" / f"{name}.png")
        (root / "annotations" / "trimaps" / f"._{name}.png").write_bytes(b"\x00\x05\x16\x07")
    image, _ = scene(99)
    image.convert("P").save(root / "images" / "beagle_2.jpg", format="GIF")  # as shipped
    (root / "images" / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0")
    (root / "annotations" / "xmls").mkdir()
    listed = [f"{name} 1 1 1" for name in names]
    (root / "annotations" / "trainval.txt").write_text("\n".join(listed[:8]) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(listed[8:]) + "\n")
    (root / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n"
                                                   + "\n".join(listed) + "\n")
    return ("Oxford-IIIT Pet: trimaps: 1 pet, 2 background, 3 border void",
            {"train": 7, "val": 1, "test": 2})


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build", [voc, cityscapes, oxford_pet], ids=["voc", "cityscapes", "pet"])
def test_each_benchmark_is_named_checked_and_trains(tmp_path, build, capsys):
    root = tmp_path / "data"
    first_line, splits = build(root)
    code, report = check_report(root, capsys)
    assert code == 0, report
    assert report.splitlines()[0].startswith(first_line)
    assert train_two_steps(root, tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layout"]["benchmark"]["name"] == first_line.split(":")[0]
    assert config["splits"] == {split: splits[split] for split in ("train", "val")}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_voc_reads_its_lists_its_void_and_its_names(tmp_path):
    voc(tmp_path)
    info = dataset.scan_dataset(tmp_path)
    assert info["num_classes"] == 21 and info["class_names"][15] == "person"
    assert info["class_colors"][15] == [192, 128, 128]  # VOC's own colour map
    layout = info["layout"]
    names = [name for name, _, _ in split_pairs(tmp_path, "train", layout=layout)]
    assert names == [f"2007_{index:06d}" for index in range(6)]  # no mask-less JPEG
    mask = next(path for _, _, path in split_pairs(tmp_path, "val", layout=layout))
    decoded = decode_mask(mask, info["mask_decoding"], 255)
    assert set(np.unique(decoded)) <= {0, 7, 15, 255} and (decoded == 255).any()
    assert any("SegmentationObject" in note for note in info["notes"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_voc_class_names_file_names_the_classes(tmp_path):
    voc(tmp_path)
    top = tmp_path / "VOCdevkit" / "VOC2012"
    (top / "class_names.txt").write_text("\n".join(f"c{index}" for index in range(21)))
    assert dataset.scan_dataset(tmp_path)["class_names"][:2] == ["c0", "c1"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cityscapes_label_ids_become_train_ids_and_test_is_unlabelled(tmp_path, capsys):
    cityscapes(tmp_path)
    code, report = check_report(tmp_path, capsys)
    assert code == 0, report
    assert "unlabelled, not scored: test: leftImg8bit/test/" in report
    assert "only _labelIds is read" in report
    info = dataset.scan_dataset(tmp_path)
    assert info["class_names"][13] == "car" and info["class_colors"][0] == [128, 64, 128]
    name, image, mask = split_pairs(tmp_path, "train", layout=info["layout"])[0]
    assert name == "aachen_000000_000000" and mask.name.endswith("_gtFine_labelIds.png")
    decoded = decode_mask(mask, info["mask_decoding"], 255)
    stored = np.asarray(Image.open(mask))
    assert (decoded[stored == 7] == 0).all() and (decoded[stored == 26] == 13).all()
    assert (decoded[stored == 23] == 10).all() and (decoded[stored == 0] == 255).all()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cityscapes_train_ids_are_read_when_present(tmp_path, capsys):
    first_line, _ = cityscapes(tmp_path, train_ids=True)
    code, report = check_report(tmp_path, capsys)
    assert code == 0 and report.splitlines()[0] == first_line
    info = dataset.scan_dataset(tmp_path)
    mask = split_pairs(tmp_path, "train", layout=info["layout"])[0][2]
    assert mask.name.endswith("_labelTrainIds.png")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ade20k_zero_is_void_and_names_come_from_object_info(tmp_path, capsys):
    top, first_line, splits = ade20k(tmp_path)
    code, report = check_report(top, capsys)
    assert code == 0, report
    assert report.splitlines()[0] == first_line
    info = dataset.scan_dataset(top)
    assert info["num_classes"] == 150 and info["class_names"][:3] == ["wall", "thing2", "sky"]
    assert info["splits"] == splits
    mask = split_pairs(top, "val", layout=info["layout"])[0][2]
    stored, decoded = np.asarray(Image.open(mask)), decode_mask(mask, info["mask_decoding"], 255)
    assert (decoded[stored == 0] == 255).all() and (decoded[stored == 3] == 2).all()
    assert dataset.scan_dataset(tmp_path)["splits"] == splits  # the folder holding it
    assert train_two_steps(top, tmp_path / "run") == 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pet_lists_trimaps_border_void_and_odd_files(tmp_path, capsys):
    oxford_pet(tmp_path)
    code, report = check_report(tmp_path, capsys)
    assert code == 0, report
    assert "1 file(s) that are not images or masks skipped (1 .mat" in report
    assert ("1 image(s) hold another format than their names say, read by their content: "
            "beagle_2.jpg (GIF)") in report
    info = dataset.scan_dataset(tmp_path, splits=("train", "val", "test"))
    assert info["class_names"] == ["background", "pet"]
    mask = split_pairs(tmp_path, "test", layout=info["layout"])[0][2]
    stored, decoded = np.asarray(Image.open(mask)), decode_mask(mask, info["mask_decoding"], 255)
    assert (decoded[stored == 1] == 1).all() and (decoded[stored == 2] == 0).all()
    assert (decoded[stored == 3] == 255).all()
