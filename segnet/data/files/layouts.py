"""Which folders hold a dataset's images and masks: a benchmark recognised by its folders
(benchmarks.py: Pascal VOC, Cityscapes, ADE20K, Oxford-IIIT Pet), else a generic layout found
by folder names (finders.py), split list files where a pool has them (splitlists.py), or
--images / --masks. A layout is a JSON-able dict saved with a run (config.json, the
checkpoint), so evaluate, predict and --resume read the same files."""
import json
from pathlib import Path

from segnet.data.files.benchmarks import benchmark_found, find_benchmark
from segnet.data.files.finders import (IMAGE_DIRS, SPLIT_NAMES, Found, find_generic, holds_data,
                                       split_folder, subfolder)
from segnet.data.files.splitlists import find_lists, list_leaks, read_list
from segnet.data.files.splits import check_pattern
from segnet.utils import SPLITS, DataError

# The flags that choose files, saved in the layout, and their defaults.
LAYOUT_OPTIONS = {"image_suffix": None, "mask_suffix": None, "test_share": 0.0,
                  "group_pattern": None}
# kind -> what the check prints
DESCRIPTIONS = {"splits": "ROOT/{train,val,test}/{images,masks}",
                "nested-splits": "ROOT/images/{train,val} + ROOT/masks/{train,val}",
                "split-named": "ROOT/train_images + ROOT/train_masks (split-named folders)",
                "images-masks": "ROOT/images + ROOT/masks, no split folders",
                "camvid": "CamVid / SegNet tutorial: train + trainannot, val + valannot, ...",
                "nnunet": "nnU-Net: imagesTr + labelsTr (imagesTs + labelsTs)",
                "side-by-side": "images and masks side by side in one folder a split",
                "side-by-side-root": "images and masks side by side in ROOT",
                "folders": "--images / --masks folders", "benchmark": "a benchmark's folders"}


def _relative(path, root):
    """A folder as saved: relative to ROOT (POSIX) when inside it, else absolute."""
    path = Path(path)
    for inside, top in ((path, root), (path.resolve(), root.resolve())):  # a link stays a link
        try:
            return inside.relative_to(top).as_posix()
        except ValueError:
            continue
    return str(path.resolve())


def make_layout(kind, root, found, options=None, lists=None, benchmark=None):
    """The layout dict: kind, {split: [images folder, masks folder]}, {split: images folder}
    of unlabelled splits, the split lists, the benchmark's convention, the notes of what was
    found, and the options that choose files (LAYOUT_OPTIONS: the suffix flags, --test-share,
    --group-pattern; a benchmark's suffixes where the flags give none)."""
    root = Path(root)
    layout = {"kind": kind, "folders": {split: [_relative(images, root), _relative(masks, root)]
                                        for split, (images, masks) in found.folders.items()},
              **{key: (options or {}).get(key, default)
                 for key, default in LAYOUT_OPTIONS.items()}}
    if found.unlabelled:
        layout["unlabelled"] = {split: _relative(folder, root)
                                for split, folder in found.unlabelled.items()}
    if lists:
        layout["lists"] = {split: _relative(path, root) for split, path in lists.items()}
    if found.notes:
        layout["notes"] = list(found.notes)
    if benchmark is not None:
        layout["benchmark"] = {"name": benchmark.name, "convention": benchmark.convention,
                               "decoding": benchmark.decoding, "classes": benchmark.classes}
        layout["mask_only"] = benchmark.mask_only
        for key, suffix in zip(("image_suffix", "mask_suffix"), benchmark.suffixes):
            layout[key] = layout[key] if layout[key] is not None else suffix
    return layout


def _resolve(root, folder):
    """A folder named on the command line: absolute, under ROOT, or from here; else None."""
    path = Path(folder)
    for candidate in [path] if path.is_absolute() else [root / path, path]:
        if candidate.is_dir():
            return candidate
    return None


def _per_split(root, name):
    """{split: ROOT/<split folder>/NAME} of every split folder (any case, training too) that
    holds a folder NAME."""
    found = {}
    for split in SPLIT_NAMES:
        folder = split_folder(root, split)
        chosen = subfolder(folder, (name.lower(),)) if folder is not None else None
        if chosen is not None:
            found[split] = chosen
    return found


def _parse_items(root, items, flag):
    """{split: folder} of --images or --masks items: DIR (relative to ROOT, here, or each split
    folder: --masks 1st_manual reads training/1st_manual and test/1st_manual) or SPLIT=DIR."""
    parsed = {}
    for item in items or []:
        split, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
        if split and split not in SPLITS:
            raise DataError(f"{flag} {item}: name a split as train=DIR, val=DIR or test=DIR "
                            f"(or give one DIR, from which val is held out)")
        path = _resolve(root, folder)
        if path is not None:
            parsed[split or "train"] = path
        elif not split and _per_split(root, folder):
            parsed.update(_per_split(root, folder))
        else:
            raise DataError(f"{flag} {folder} is not a folder: looked in {root} and in its split "
                            f"folders ({', '.join(n for names in SPLIT_NAMES.values() for n in names)})")
    return parsed


def _given_folders(root, images, masks):
    """Found of --images/--masks; --masks alone takes each split's image folder by its name."""
    masks = _parse_items(root, masks, "--masks")
    if images:
        images = _parse_items(root, images, "--images")
    else:
        images = {split: subfolder(folder.parent, IMAGE_DIRS) for split, folder in masks.items()}
        missing = [str(masks[split].parent) for split, folder in images.items() if folder is None]
        if missing:
            raise DataError(f"--masks without --images: no image folder (images/, imgs/, ...) "
                            f"in {', '.join(missing)}; pass --images DIR too")
    if set(images) != set(masks) or "train" not in images:
        raise DataError(f"--images and --masks name the same splits, train among them (got "
                        f"--images {sorted(images)}, --masks {sorted(masks)})")
    return Found({split: (images[split], masks[split]) for split in SPLITS if split in images})


def find_layout(root, images=None, masks=None, **options):
    """The layout of ROOT: a benchmark, a generic layout from its folder names, or the
    --images/--masks folders; options: LAYOUT_OPTIONS. DataError when none is found, or when
    ROOT holds two."""
    root = Path(root)
    if images or masks:
        return make_layout("folders", root, _given_folders(root, images, masks), options)
    benchmark = find_benchmark(root)
    if benchmark is not None:
        list_leaks({split: read_list(path) for split, path in benchmark.lists.items()})
        return make_layout("benchmark", root, benchmark_found(benchmark), options,
                           benchmark.lists, benchmark)
    found = find_generic(root)
    if len(found) > 1:
        (first, one), (second, other) = found[:2]
        raise DataError(f"{root} holds two layouts: {DESCRIPTIONS[first]} ({_names(one, root)})"
                        f" and {DESCRIPTIONS[second]} ({_names(other, root)}); move one of them "
                        f"out, or choose the folders with --images DIR --masks DIR")
    if found:
        kind, result = found[0]
    elif holds_data(root):
        kind, result = "side-by-side-root", Found({"train": (root, root)})
    else:
        raise DataError(f"no dataset layout found in {root}: expected ROOT/train/images + "
                        f"ROOT/train/masks (val/ and test/ likewise; training/validation too), "
                        f"ROOT/images/train + ROOT/masks/train, ROOT/train_images + "
                        f"ROOT/train_masks, ROOT/images + ROOT/masks, CamVid's train + "
                        f"trainannot, nnU-Net's imagesTr + labelsTr, a benchmark's folders (Pascal "
                        f"VOC, Cityscapes, ADE20K, Oxford-IIIT Pet), or images and masks side by "
                        f"side (masks marked by a suffix); or pass --images DIR --masks DIR")
    lists = find_lists(root) if kind in ("images-masks", "side-by-side-root") else {}
    list_leaks({split: read_list(path) for split, path in lists.items()})
    if lists:
        pool = result.folders["train"]
        result = Found({split: pool for split in lists}, result.unlabelled,
                       result.notes + [f"splits from the list files {', '.join(sorted(_relative(path, root) for path in lists.values()))}"])
    return make_layout(kind, root, result, options, lists)


def layout_for(root, saved):
    """A run's saved layout where ROOT still has its folders (its stacks' pages counted again:
    files may have changed since), else ROOT's own layout (with the saved options): evaluate
    on another copy or another dataset reads what is there."""
    if saved and all(folder.is_dir() for split in saved["folders"]
                     for folder in layout_folders(root, saved, split)):
        return {key: value for key, value in saved.items() if key != "pages"}  # counted anew
    return find_layout(root, **{key: (saved or {}).get(key) for key in LAYOUT_OPTIONS
                                if (saved or {}).get(key) is not None})


def _names(found, root):
    paths = sorted({_relative(path, root) + "/" for pair in found.folders.values()
                    for path in pair})
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
    benchmark = layout.get("benchmark")
    if benchmark:
        return f"{benchmark['name']}: {benchmark['convention']}"
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
