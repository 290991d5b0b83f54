"""Which folders hold a dataset's images and masks, found by their names: ROOT/{train,val,test}/
{images,masks}; ROOT/images + ROOT/masks with no splits; the SegNet tutorial's CamVid folders
(train + trainannot, ...); nnU-Net's imagesTr + labelsTr (imagesTs + labelsTs); one folder,
per split or whole, with images and masks side by side; or --images DIR --masks DIR. A layout
is a JSON-able dict saved with a run (config.json, the checkpoint), so evaluate, predict and
--resume read the same files."""
import json
from pathlib import Path

from segnet.data.files.pairing import data_suffix
from segnet.data.files.splits import check_pattern
from segnet.utils import SPLITS, DataError

IMAGE_DIRS = ("images", "imgs", "image", "img")  # Pytorch-UNet's data/imgs, Kvasir's images
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt")
DATA_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".nii",
                 ".nii.gz")
NNUNET = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
# The flags that choose files, saved in the layout, and their defaults.
LAYOUT_OPTIONS = {"image_suffix": None, "mask_suffix": None, "test_share": 0.0,
                  "group_pattern": None}
# kind -> what the check prints
DESCRIPTIONS = {"splits": "ROOT/{train,val,test}/{images,masks}",
                "images-masks": "ROOT/images + ROOT/masks, no split folders",
                "camvid": "CamVid / SegNet tutorial: train + trainannot, val + valannot, ...",
                "nnunet": "nnU-Net: imagesTr + labelsTr (imagesTs + labelsTs)",
                "side-by-side": "images and masks side by side in one folder a split",
                "side-by-side-root": "images and masks side by side in ROOT",
                "folders": "--images / --masks folders"}


def _alias(folder, names):
    """The first subfolder of folder named as one of names, or None."""
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def _has_data_files(folder):
    return folder.is_dir() and any(path.is_file() and data_suffix(path) in DATA_SUFFIXES
                                   and not path.name.startswith(".") for path in folder.iterdir())


def _splits_layout(root):
    """Split folders with images/ and masks/ inside; a split folder that lacks one of them
    stays, so that reading it names what is missing."""
    folders = {}
    for split in SPLITS:
        images, masks = _alias(root / split, IMAGE_DIRS), _alias(root / split, MASK_DIRS)
        if images or masks or (split != "train" and (root / split).is_dir()):
            folders[split] = (images or root / split / "images", masks or root / split / "masks")
    complete = [split for split, (images, masks) in folders.items()
                if images.is_dir() and masks.is_dir()]
    return folders if complete else {}  # evaluate may read a test split alone


def _camvid_layout(root):
    return {split: (root / split, root / f"{split}annot") for split in SPLITS
            if (root / split).is_dir() and (root / f"{split}annot").is_dir()
            } if (root / "trainannot").is_dir() else {}


def _nnunet_layout(root):
    return {split: (root / images, root / labels) for split, (images, labels) in NNUNET.items()
            if (root / images).is_dir() and (root / labels).is_dir()
            } if (root / "imagesTr").is_dir() else {}


def _flat_layout(root):
    images, masks = _alias(root, IMAGE_DIRS), _alias(root, MASK_DIRS)
    return {"train": (images, masks)} if images and masks else {}


def _side_by_side_layout(root):
    """Split folders holding data files themselves (no images/ or masks/ inside)."""
    return {split: (root / split, root / split) for split in SPLITS
            if _has_data_files(root / split) and not _alias(root / split, IMAGE_DIRS)
            and not (root / f"{split}annot").is_dir()}


FINDERS = (("splits", _splits_layout), ("camvid", _camvid_layout), ("nnunet", _nnunet_layout),
           ("images-masks", _flat_layout), ("side-by-side", _side_by_side_layout))


def _relative(path, root):
    """A folder as saved: relative to ROOT (POSIX) when inside it, else absolute."""
    path = Path(path)
    for inside, top in ((path, root), (path.resolve(), root.resolve())):  # a link stays a link
        try:
            return inside.relative_to(top).as_posix()
        except ValueError:
            continue
    return str(path.resolve())


def make_layout(kind, root, folders, options=None):
    """The layout dict: kind, {split: [images folder, masks folder]} and the options that
    choose files (LAYOUT_OPTIONS: the suffix flags, --test-share, --group-pattern)."""
    root = Path(root)
    return {"kind": kind, "folders": {split: [_relative(images, root), _relative(masks, root)]
                                      for split, (images, masks) in folders.items()},
            **{key: (options or {}).get(key, default) for key, default in LAYOUT_OPTIONS.items()}}


def _given_folders(root, images, masks):
    """{split: (images, masks)} of --images/--masks: one DIR each (the pool val is carved from)
    or SPLIT=DIR items."""
    def parse(items, flag):
        parsed = {}
        for item in items:
            split, _, folder = item.rpartition("=") if "=" in item else ("train", "", item)
            if split not in SPLITS:
                raise DataError(f"{flag} {item}: name a split as train=DIR, val=DIR or test=DIR "
                                f"(or give one DIR, from which val is held out)")
            path = Path(folder) if Path(folder).is_absolute() else root / folder
            if not path.is_dir() and Path(folder).is_dir():
                path = Path(folder)
            if not path.is_dir():
                raise DataError(f"{flag} {folder} is not a folder")
            parsed[split] = path
        return parsed
    images, masks = parse(images or [], "--images"), parse(masks or [], "--masks")
    if set(images) != set(masks) or "train" not in images:
        raise DataError(f"--images and --masks name the same splits, train among them (got "
                        f"--images {sorted(images)}, --masks {sorted(masks)})")
    return {split: (images[split], masks[split]) for split in SPLITS if split in images}


def find_layout(root, images=None, masks=None, **options):
    """The layout of ROOT from its folder names (or --images/--masks); options: LAYOUT_OPTIONS.
    DataError when none is found, or when ROOT holds two."""
    root = Path(root)
    if images or masks:
        return make_layout("folders", root, _given_folders(root, images, masks), options)
    found = [(kind, folders) for kind, finder in FINDERS if (folders := finder(root))]
    if len(found) > 1:
        (first, one), (second, other) = found[:2]
        raise DataError(f"{root} holds two layouts: {DESCRIPTIONS[first]} ({_names(one, root)})"
                        f" and {DESCRIPTIONS[second]} ({_names(other, root)}); move one of them "
                        f"out, or choose the folders with --images DIR --masks DIR")
    if found:
        return make_layout(found[0][0], root, found[0][1], options)
    if _has_data_files(root):
        return make_layout("side-by-side-root", root, {"train": (root, root)}, options)
    raise DataError(f"no dataset layout found in {root}: expected ROOT/train/images + "
                    f"ROOT/train/masks (val/ and test/ likewise), ROOT/images + ROOT/masks, "
                    f"CamVid's train + trainannot, nnU-Net's imagesTr + labelsTr, or images "
                    f"and masks side by side (masks marked by a suffix); or pass --images DIR "
                    f"--masks DIR")


def layout_for(root, saved):
    """A run's saved layout where ROOT still has its folders (its stacks' pages counted again:
    files may have changed since), else ROOT's own layout (with the saved options): evaluate
    on another copy or another dataset reads what is there."""
    if saved and all(folder.is_dir() for split in saved["folders"]
                     for folder in layout_folders(root, saved, split)):
        return {key: value for key, value in saved.items() if key != "pages"}  # counted anew
    return find_layout(root, **{key: (saved or {}).get(key) for key in LAYOUT_OPTIONS
                                if (saved or {}).get(key) is not None})


def _names(folders, root):
    paths = sorted({_relative(path, root) + "/" for pair in folders.values() for path in pair})
    return ", ".join(paths)


def layout_folders(root, layout, split):
    """(images folder, masks folder) of a split, or None when the layout has no such folder."""
    saved = layout["folders"].get(split)
    if saved is None and layout["kind"] == "splits" and split not in SPLITS:
        saved = [f"{split}/images", f"{split}/masks"]  # a split of another name: ROOT/bad/...
    if saved is None:
        return None
    return tuple(Path(folder) if Path(folder).is_absolute() else Path(root) / folder
                 for folder in saved)


def carves(layout, split):
    """Whether a split is held out of train rather than read from folders of its own (a
    cross-validation pools val into train: layout["pool"], folds.py)."""
    return split in ("val", "test") and (split not in layout["folders"]
                                         or split in layout.get("pool", ()))


def describe(layout):
    return DESCRIPTIONS[layout["kind"]]


def nnunet_class_table(root, layout):
    """The class table from nnU-Net's dataset.json labels ({"background": 0, ...} in v2,
    {"0": "background", ...} in v1), or None; ids past the classes' range are void."""
    path = Path(root) / "dataset.json"
    if layout["kind"] != "nnunet" or not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (OSError, ValueError) as error:
        raise DataError(f"{path} cannot be read ({error}): fix the JSON or remove it") from error
    if not isinstance(labels, dict) or not labels:
        return None
    pairs = []
    for key, value in labels.items():
        name, ids = (value, key) if str(key).isdigit() else (key, value)
        if isinstance(ids, list):  # v2 regions: not single classes
            return None
        if not str(ids).isdigit():
            raise DataError(f"{path}: label {key!r}: {value!r} is not a class id")
        pairs.append((int(ids), str(name)))
    pairs.sort()
    if [index for index, _ in pairs] != list(range(len(pairs))):
        raise DataError(f"{path}: the label ids {[index for index, _ in pairs]} are not 0..K-1")
    return [{"name": name, "color": None, "void": name.lower() == "ignore"}
            for _, name in pairs]


def add_layout_args(group):
    """The flags that say where a dataset's files are and how they pair (train.py and
    `dataset.py check`)."""
    group.add_argument("--images", nargs="+", default=None, metavar="DIR",
                       help="image folder(s) for a layout not found by itself: one DIR (val "
                            "held out of it) or train=DIR val=DIR test=DIR; with --masks")
    group.add_argument("--masks", nargs="+", default=None, metavar="DIR",
                       help="mask folder(s), as --images")
    group.add_argument("--mask-suffix", default=None, metavar="SUFFIX",
                       help="the end of a mask's file stem that its image lacks (a.png <-> "
                            "a_mask.png) (default: found from the names when stems differ)")
    group.add_argument("--image-suffix", default=None, metavar="SUFFIX",
                       help="the end of an image's stem that its mask lacks (DRIVE's "
                            "21_training <-> 21_manual1) (default: found from the names)")
    group.add_argument("--test-share", type=float, default=0.0, metavar="SHARE",
                       help="without a test split, hold out this share of train (by group) "
                            "as one; 0: none")
    group.add_argument("--group-pattern", default=None, metavar="REGEX",
                       help="group files by what this matches in their names ('case\\d+': "
                            "case07_slice112.png in case07): a held-out split takes whole "
                            "groups (default: each file, or each stack, is its own group)")


def layout_from_args(root, args):
    """find_layout with the flags of add_layout_args; DataError for bad values."""
    if not 0 <= args.test_share < 0.5:
        raise DataError(f"--test-share must be in [0, 0.5), got {args.test_share}")
    if args.group_pattern is not None:
        check_pattern(args.group_pattern)
    return find_layout(root, args.images, args.masks, image_suffix=args.image_suffix,
                       mask_suffix=args.mask_suffix, test_share=args.test_share,
                       group_pattern=args.group_pattern)
