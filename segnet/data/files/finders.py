"""The generic layouts, found by folder names: split folders holding image and mask folders
(ROOT/train/images, in any case, training/validation/testing too), image and mask folders
holding split folders (images/train, mmseg's img_dir/train + ann_dir/train), split-named
folders (train_images + train_masks, Carvana's train + train_masks), one pool (ROOT/images +
ROOT/masks, with a test/ beside it or not), CamVid's train + trainannot, nnU-Net's imagesTr +
labelsTr, and images and masks side by side. Each finder returns {split: (images, masks)},
the splits without labels {split: images} and the notes of what it saw."""
from dataclasses import dataclass, field
from pathlib import Path

from segnet.data.files.pairing import data_stem, data_suffix
from segnet.utils import DataError, name_list

IMAGE_DIRS = ("images", "imgs", "image", "img", "img_dir", "jpegimages")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "annotation", "ann_dir", "gt",
             "segmentations", "segmentation", "groundtruth", "ground_truth")
# Other folder names that hold labels (DRIVE's 1st_manual): offered as candidates, never picked.
LABEL_WORDS = ("mask", "label", "annot", "manual", "truth", "seg", "gt")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "validation", "valid"),
               "test": ("test", "testing")}
DATA_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".nii",
                 ".nii.gz")
# A tool's outputs saved beside the images (zhixuhao/unet's 0_predict.png): never labels.
OUTPUT_SUFFIXES = ("_predict", "_pred", "_prediction", "_predicted", "_output", "_out",
                   "_result")
NNUNET = {"train": ("imagestr", "labelstr"), "test": ("imagests", "labelsts")}


@dataclass
class Found:
    """What a finder found: {split: (images folder, masks folder)}, {split: images folder} of
    splits without labels, and notes for the check's report."""

    folders: dict = field(default_factory=dict)
    unlabelled: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __bool__(self):
        return bool(self.folders)


def subfolder(folder, names):
    """The subfolder of folder whose name, in any case, is one of names (first by names'
    order), or None."""
    if not folder.is_dir():
        return None
    children = {child.name.lower(): child for child in sorted(folder.iterdir())
                if child.is_dir() and not child.name.startswith(".")}
    for name in names:
        if name in children:
            return children[name]
    return None


def split_folder(folder, split):
    return subfolder(folder, SPLIT_NAMES[split])


def has_data_files(folder):
    return folder is not None and folder.is_dir() and any(
        path.is_file() and data_suffix(path) in DATA_SUFFIXES and not path.name.startswith(".")
        for path in folder.iterdir())


def holds_data(folder):
    """Data files in a folder or in its subfolders one level down (classes, cities)."""
    return has_data_files(folder) or any(has_data_files(child) for child in folder.iterdir()
                                         if child.is_dir() and not child.name.startswith("."))


def is_output(path):
    """Whether a file is a tool's output (a name ending in _predict, _pred, ...)."""
    return data_stem(path).lower().endswith(OUTPUT_SUFFIXES)


def label_candidates(folder, images):
    """The subfolders of a split folder that may hold labels: a mask folder name, or a name
    with a label word (DRIVE's 1st_manual, 2nd_manual, mask)."""
    if not folder.is_dir():
        return []
    return [child for child in sorted(folder.iterdir()) if child.is_dir() and child != images
            and not child.name.startswith(".") and (child.name.lower() in MASK_DIRS or any(
                word in child.name.lower() for word in LABEL_WORDS))]


def choose_labels(folder, images, masks_name=None):
    """The label folder of a split folder: --masks NAME when given, else the one candidate;
    DataError listing them when there are several (never a silent pick)."""
    if masks_name:
        chosen = subfolder(folder, (masks_name.lower(),))
        return chosen
    candidates = label_candidates(folder, images)
    named = [child for child in candidates if child.name.lower() in MASK_DIRS]
    if len(candidates) > 1:
        raise DataError(f"{folder} holds several folders that may be the labels: "
                        f"{', '.join(child.name + '/' for child in candidates)}; choose one with "
                        f"--masks NAME (e.g. --masks {candidates[0].name}); a folder whose masks "
                        f"are all the same disc is a field of view, not labels")
    return (named or candidates or [None])[0]


def unlabelled_split(folder):
    """(images folder, note) of a split folder holding images but no labels: images side by
    side with a tool's outputs (_predict), or images alone; (None, None) otherwise."""
    if not has_data_files(folder):
        return None, None
    files = [path for path in folder.iterdir() if path.is_file()
             and data_suffix(path) in DATA_SUFFIXES and not path.name.startswith(".")]
    outputs = [path for path in files if is_output(path)]
    if outputs:
        return folder, (f"{folder.name}/: {len(files) - len(outputs)} images beside "
                        f"{len(outputs)} outputs of a tool ({name_list([p.name for p in outputs])}"
                        f"): not labels; the split is unlabelled, not scored")
    return None, None


def _splits_layout(root, masks_name=None):
    """ROOT/<split>/{images,masks}; a split folder with images and no labels is unlabelled."""
    found = Found()
    for split in SPLIT_NAMES:
        folder = split_folder(root, split)
        if folder is None:
            continue
        images = subfolder(folder, IMAGE_DIRS)
        if images is None:
            unlabelled, note = unlabelled_split(folder)
            if unlabelled:
                found.unlabelled[split], _ = unlabelled, found.notes.append(note)
            continue
        masks = choose_labels(folder, images, masks_name)
        if masks is None and split != "test":  # a val without labels is a mistake: named
            found.folders[split] = (images, folder / (masks_name or "masks"))
            continue
        if masks is None:  # a test split of images alone (a challenge's): not scored
            found.unlabelled[split] = images
            found.notes.append(f"{_rel(images, root)}/ has no label folder beside it: the "
                               f"{split} split is unlabelled, not scored")
            continue
        found.folders[split] = (images, masks)
    return found if "train" in found.folders or (found.folders and not _others(root)) else Found()


def _others(root):
    """Whether ROOT holds an image folder of its own (then its split folders sit beside a pool)."""
    return subfolder(root, IMAGE_DIRS) is not None


def _nested_layout(root, masks_name=None):
    """ROOT/images/<split> + ROOT/masks/<split> (mmseg's img_dir + ann_dir, ADE20K's images +
    annotations)."""
    images, masks = subfolder(root, IMAGE_DIRS), subfolder(root, (masks_name.lower(),) if
                                                         masks_name else MASK_DIRS)
    if images is None or masks is None or split_folder(images, "train") is None:
        return Found()
    found = Found()
    for split in SPLIT_NAMES:
        image_split, mask_split = split_folder(images, split), split_folder(masks, split)
        if image_split is not None and mask_split is not None:
            found.folders[split] = (image_split, mask_split)
        elif image_split is not None:
            found.unlabelled[split] = image_split
            found.notes.append(f"{_rel(image_split, root)}/ has no labels in {masks.name}/: the "
                               f"{split} split is unlabelled, not scored")
    return found


def _split_named_layout(root, masks_name=None):
    """ROOT/train_images + ROOT/train_masks (or _labels, _segmentations), and Carvana's
    ROOT/train + ROOT/train_masks."""
    found = Found()
    mask_names = (masks_name.lower(),) if masks_name else MASK_DIRS
    for split, names in SPLIT_NAMES.items():
        for name in names:
            images = subfolder(root, [f"{name}{sep}{word}" for word in IMAGE_DIRS
                                      for sep in "_-"])
            masks = subfolder(root, [f"{name}{sep}{word}" for word in mask_names for sep in "_-"])
            if masks is not None and images is None and has_data_files(root / name):
                images = subfolder(root, (name,))  # Carvana: train + train_masks
            if images is not None and masks is not None:
                found.folders[split] = (images, masks)
                break
    return found if "train" in found.folders else Found()


def _pool_layout(root, masks_name=None):
    """ROOT/images + ROOT/masks: the pool val is carved from; a test/ (or val/) split folder
    with its own images and masks beside it is read as that split."""
    images = subfolder(root, IMAGE_DIRS)
    masks = subfolder(root, (masks_name.lower(),) if masks_name else MASK_DIRS)
    if images is None or masks is None or split_folder(images, "train") is not None or not (
            holds_data(images) and holds_data(masks)):
        return Found()
    found = Found({"train": (images, masks)})
    beside = _splits_layout(root, masks_name) if any(
        split_folder(root, split) for split in ("val", "test")) else Found()
    for split in ("val", "test"):
        if split in beside.folders:
            found.folders[split] = beside.folders[split]
            found.notes.append(f"{split} read from {_rel(beside.folders[split][0], root)}/, "
                               f"beside the pool {images.name}/ + {masks.name}/")
        if split in beside.unlabelled:
            found.unlabelled[split] = beside.unlabelled[split]
    found.notes += [note for note in beside.notes if "unlabelled" in note]
    return found


def _camvid_layout(root, masks_name=None):
    if subfolder(root, ("trainannot",)) is None:
        return Found()
    return Found({split: (folder, annot) for split in SPLIT_NAMES
                  if (folder := subfolder(root, (split,))) is not None
                  and (annot := subfolder(root, (f"{split}annot",))) is not None})


def _nnunet_layout(root, masks_name=None):
    return Found({split: (images, labels) for split, names in NNUNET.items()
                  if (images := subfolder(root, (names[0],))) is not None
                  and (labels := subfolder(root, (names[1],))) is not None})


def _side_by_side_layout(root, masks_name=None):
    """Split folders holding images and masks themselves (not a tool's outputs)."""
    found = Found()
    for split in SPLIT_NAMES:
        folder = split_folder(root, split)
        if (has_data_files(folder) and subfolder(folder, IMAGE_DIRS) is None
                and subfolder(root, (f"{folder.name}annot",)) is None
                and unlabelled_split(folder)[0] is None
                and subfolder(root, [f"{folder.name}_{word}" for word in MASK_DIRS]) is None):
            found.folders[split] = (folder, folder)
    return found


FINDERS = (("splits", _splits_layout), ("nested-splits", _nested_layout),
           ("split-named", _split_named_layout), ("camvid", _camvid_layout),
           ("nnunet", _nnunet_layout), ("images-masks", _pool_layout),
           ("side-by-side", _side_by_side_layout))


def _rel(path, root):
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def find_generic(root, masks_name=None):
    """[(kind, Found)] of every generic layout found in ROOT (several: the caller names them)."""
    found = [(kind, result) for kind, finder in FINDERS if (result := finder(root, masks_name))]
    return found
