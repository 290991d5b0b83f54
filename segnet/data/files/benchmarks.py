"""The standard benchmarks, recognised by their own folders as they ship, with their label
conventions: one entry a benchmark (how it is found, which files are samples, its splits, its
void, its class names and colours). A convention is a mask decoding (pixels/masks.py reads it)
and a class table; the check's first line names both. Sources: each benchmark's own
documentation and mmsegmentation's dataset classes (VOC, Cityscapes, ADE20K)."""
from dataclasses import dataclass, field
from pathlib import Path

from segnet.data.files.finders import Found, subfolder
from segnet.data.pixels.classtable import voc_color
from segnet.utils import DataError

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
             "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
             "pottedplant", "sheep", "sofa", "train", "tvmonitor")
# Cityscapes' labels table (cityscapesScripts' labels.py): labelId -> trainId, name, colour; every
# other labelId is void.
CITYSCAPES = ((7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)),
              (11, "building", (70, 70, 70)), (12, "wall", (102, 102, 156)),
              (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
              (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)),
              (21, "vegetation", (107, 142, 35)), (22, "terrain", (152, 251, 152)),
              (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)),
              (25, "rider", (255, 0, 0)), (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)),
              (28, "bus", (0, 60, 100)), (31, "train", (0, 80, 100)),
              (32, "motorcycle", (0, 0, 230)), (33, "bicycle", (119, 11, 32)))
ADE_CLASSES = 150
VOC_VOID = 255
CLASS_NAMES_FILE = "class_names.txt"  # a class name a line, in id order: overrides a benchmark's


@dataclass
class Benchmark:
    """A benchmark found in ROOT: its layout's parts and its label convention."""

    name: str
    folders: dict  # {split: (images, masks)}
    convention: str  # the check's line: "labelIds -> 19 train ids, the rest void"
    decoding: dict  # a mask decoding (pixels/masks.py)
    classes: list  # a class table: [{name, color, void}]
    lists: dict = field(default_factory=dict)  # {split: list file}
    suffixes: tuple = (None, None)  # (image suffix, mask suffix) that pair its files
    mask_only: bool = False  # files in the mask folders without the mask suffix are not read
    unlabelled: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _table(names, colors=None):
    return [{"name": name, "color": list(colors[index]) if colors else None, "void": False}
            for index, name in enumerate(names)]


def _voc_root(root):
    """ROOT itself, ROOT/VOC20xx or ROOT/VOCdevkit/VOC20xx when it holds JPEGImages +
    SegmentationClass."""
    tops = [root, *sorted(root.glob("VOC20*")), *sorted(root.glob("VOCdevkit/VOC20*"))]
    for top in tops:
        if subfolder(top, ("jpegimages",)) and (subfolder(top, ("segmentationclass",))
                                                or subfolder(top, ("segmentationclassaug",))):
            return top
    return None


def class_names_file(top):
    """The names of ROOT/class_names.txt, or None."""
    path = Path(top) / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if len(names) < 2:
        raise DataError(f"{path} names {len(names)} class(es): list one class name a line, "
                        f"in class id order (at least 2)")
    return names


def _voc(root):
    top = _voc_root(root)
    if top is None:
        return None
    images, lists = subfolder(top, ("jpegimages",)), top / "ImageSets" / "Segmentation"
    plain, aug = subfolder(top, ("segmentationclass",)), subfolder(top, ("segmentationclassaug",))
    folders, split_lists, notes = {}, {}, []
    aug_list = next((lists / name for name in ("train_aug.txt", "trainaug.txt", "aug.txt")
                     if (lists / name).is_file()), None)
    if aug is not None and aug_list is not None:
        folders["train"], split_lists["train"] = (images, aug), aug_list
        notes.append(f"train: SBD's {aug.name}/ with {aug_list.name}")
    elif plain is not None and (lists / "train.txt").is_file():
        folders["train"], split_lists["train"] = (images, plain), lists / "train.txt"
    if plain is not None and (lists / "val.txt").is_file():
        folders["val"], split_lists["val"] = (images, plain), lists / "val.txt"
    if "train" not in folders:  # no lists: the images that have a mask are the samples
        folders["train"] = (images, plain or aug)
        notes.append("no ImageSets/Segmentation lists: the images with a mask are the samples")
    names = class_names_file(top) or VOC_NAMES
    return Benchmark("Pascal VOC", folders, f"255 is void, {len(names)} classes",
                     {"kind": "index", "num_classes": len(names), "void_values": [VOC_VOID],
                      "source": "Pascal VOC"}, _table(names, [voc_color(i) for i in
                                                              range(len(names))]),
                     split_lists, notes=notes + ["SegmentationObject/ and Annotations/ are "
                                                 "not read"])


def _cityscapes(root):
    images = subfolder(root, ("leftimg8bit",))
    labels = subfolder(root, ("gtfine",)) or subfolder(root, ("gtcoarse",))
    if images is None or labels is None:
        return None
    tag = "gtFine" if labels.name.lower() == "gtfine" else "gtCoarse"
    train_ids = any(labels.glob(f"train/*/*_{tag}_labelTrainIds.png"))
    folders, unlabelled = {}, {}
    for split in ("train", "val", "test"):
        if (images / split).is_dir() and (labels / split).is_dir() and split != "test":
            folders[split] = (images / split, labels / split)
        elif (images / split).is_dir():
            unlabelled[split] = images / split
    names, colors = [name for _, name, _ in CITYSCAPES], [color for _, _, color in CITYSCAPES]
    if train_ids:
        decoding = {"kind": "index", "num_classes": 19, "void_values": [255],
                    "source": "Cityscapes labelTrainIds"}
        convention, suffix = "labelTrainIds read (19 train ids, 255 void)", "labelTrainIds"
    else:
        decoding = {"kind": "index", "num_classes": 19, "void_values": [],
                    "value_map": [[label, train] for train, (label, _, _) in
                                  enumerate(CITYSCAPES)], "source": "Cityscapes labelIds"}
        convention, suffix = "labelIds -> 19 train ids, the rest void", "labelIds"
    notes = [f"{tag}: only _{suffix} is read (not _instanceIds, _color, _polygons.json)"]
    if "test" in unlabelled:
        notes.append("test: Cityscapes' test labels are withheld: unlabelled, not scored")
    return Benchmark("Cityscapes", folders, convention, decoding, _table(names, colors),
                     suffixes=("_leftImg8bit", f"_{tag}_{suffix}"), mask_only=True,
                     unlabelled=unlabelled, notes=notes)


def _ade_names(root):
    """ADE20K's 150 class names from objectInfo150.txt (the first name of each row), or
    generic names when the file is absent."""
    path = root / "objectInfo150.txt"
    if not path.is_file():
        return [f"ade_{index}" for index in range(1, ADE_CLASSES + 1)]
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]
            if line.strip()]
    names = [row[-1].split(",")[0].strip() for row in rows]
    if len(names) != ADE_CLASSES:
        raise DataError(f"{path} lists {len(names)} classes, ADE20K has {ADE_CLASSES}: restore "
                        f"the file as it ships")
    return names


def _ade20k(root):
    root = subfolder(root, ("adechallengedata2016",)) or root  # ROOT, or the folder holding it
    images, labels = subfolder(root, ("images",)), subfolder(root, ("annotations",))
    if images is None or labels is None or not (images / "training").is_dir() or not (
            (root / "objectInfo150.txt").is_file() or root.name == "ADEChallengeData2016"
            or any((images / "training").glob("ADE_train_*"))):
        return None
    folders = {split: (images / name, labels / name) for split, name in
               (("train", "training"), ("val", "validation"))
               if (images / name).is_dir() and (labels / name).is_dir()}
    decoding = {"kind": "index", "num_classes": ADE_CLASSES, "void_values": [],
                "value_map": [[value, value - 1] for value in range(1, ADE_CLASSES + 1)],
                "source": "ADE20K"}
    return Benchmark("ADE20K", folders, "0 is void, 1..150 -> 0..149", decoding,
                     _table(_ade_names(root)))


def _pet(root):
    images, trimaps = subfolder(root, ("images",)), root / "annotations" / "trimaps"
    if images is None or not trimaps.is_dir():
        return None
    lists = {split: root / "annotations" / name for split, name in
             (("train", "trainval.txt"), ("test", "test.txt"))
             if (root / "annotations" / name).is_file()}
    folders = {split: (images, trimaps) for split in (lists or {"train": None})}
    decoding = {"kind": "index", "num_classes": 2, "void_values": [],
                "value_map": [[1, 1], [2, 0]], "source": "Oxford-IIIT Pet trimaps"}
    return Benchmark("Oxford-IIIT Pet", folders,
                     "trimaps: 1 pet, 2 background, 3 border void (docs/data.md says why)",
                     decoding, _table(["background", "pet"], [(0, 0, 0), (255, 255, 255)]),
                     lists, notes=["annotations/xmls/ (head boxes) are not read"])


BENCHMARKS = (_voc, _cityscapes, _ade20k, _pet)


def find_benchmark(root):
    """The Benchmark ROOT is, or None."""
    for finder in BENCHMARKS:
        found = finder(Path(root))
        if found is not None and found.folders:
            return found
    return None


def benchmark_found(benchmark):
    """The benchmark as a finder's Found (the layout's folders, unlabelled splits, notes)."""
    return Found(benchmark.folders, benchmark.unlabelled, benchmark.notes)
