"""Which files make a split: images and masks paired by file stem in ROOT/split/{images,masks}
(hidden files ignored, every problem a DataError naming the files), and the hold-out carved
from train for validation when a dataset has no val/ split."""
import hashlib
from pathlib import Path

from segnet.utils import DataError, Problem, name_list

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# JPEG masks are read so that the check can explain their values (and --mask-threshold fix them).
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".jpg", ".jpeg")
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
HOLDOUT_SHARE = 0.15  # of the train pairs held out for validation when there is no val/ split


def is_hidden(path):
    """Dotfiles and the files Windows/macOS leave behind (Thumbs.db, .DS_Store)."""
    return path.name.startswith(".") or path.name.lower() in IGNORED_FILES


def _files_by_stem(folder, extensions):
    """{stem: path} of the data files in folder; DataError on unsupported or duplicate stems."""
    files, unsupported, duplicates, broken = {}, [], [], []
    for path in sorted(folder.iterdir()):
        if is_hidden(path):
            continue
        if path.is_symlink() and not path.exists():  # is_file() would skip it silently
            broken.append(path)
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() not in extensions:
            unsupported.append(path)
        elif path.stem in files:
            duplicates.append((files[path.stem], path))
        else:
            files[path.stem] = path
    if broken:
        raise DataError(f"broken symbolic links in {folder}: {name_list(broken)} point to "
                        f"missing files (or loop); fix the links or remove them")
    if unsupported:
        raise DataError(f"unsupported file type in {folder}: {name_list(unsupported)}; "
                        f"supported: {' '.join(extensions)} (move other files elsewhere)")
    if duplicates:
        first, second = duplicates[0]
        raise DataError(f"{first} and {second} have the same stem; images and masks are paired "
                        f"by stem, so keep one file per stem ({len(duplicates)} such clashes)")
    return files


def _check_paired(images, masks, image_dir, mask_dir):
    """DataError with the counts and the first unpaired names when images and masks differ."""
    lonely_images = [images[stem].name for stem in sorted(set(images) - set(masks))]
    lonely_masks = [masks[stem].name for stem in sorted(set(masks) - set(images))]
    parts = []
    if lonely_images:
        parts.append(f"{len(lonely_images)} of {len(images)} images in {image_dir} have no mask "
                     f"in {mask_dir} ({name_list(lonely_images)})")
    if lonely_masks:
        parts.append(f"{len(lonely_masks)} of {len(masks)} masks in {mask_dir} have no image "
                     f"({name_list(lonely_masks)})")
    if parts:
        raise DataError(Problem(" and ".join(parts) + "; every image needs a mask with the same "
                                "file stem (a.jpg <-> a.png): add the missing files or remove "
                                "the extra ones", files=len(lonely_images) + len(lonely_masks)))


def list_pairs(root, split):
    """Sorted (stem, image_path, mask_path) of ROOT/split/{images,masks}, paired by file stem.

    DataError when a folder is missing, the split is empty or a file has no partner.
    """
    image_dir, mask_dir = Path(root) / split / "images", Path(root) / split / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} not found: the layout is ROOT/{split}/images and "
                            f"ROOT/{split}/masks, with the same file stem for an image and its "
                            f"mask")
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    masks = _files_by_stem(mask_dir, MASK_EXTENSIONS)
    if not images and not masks:
        raise DataError(f"split {split!r} is empty: no images in {image_dir} "
                        f"(supported: {' '.join(IMAGE_EXTENSIONS)}); add images or leave the "
                        f"split out")
    _check_paired(images, masks, image_dir, mask_dir)
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def carve_holdout(root, share=HOLDOUT_SHARE):
    """The train stems held out for validation when ROOT has no val/ split: about `share` of
    them, at least 1, chosen by a hash of the file stem (the same on every machine and run;
    adding files moves few of them). DataError when train has fewer than 2 pairs."""
    stems = [stem for stem, _, _ in list_pairs(root, "train")]
    if len(stems) < 2:
        raise DataError(f"{Path(root) / 'val'} not found and train has {len(stems)} pair: a "
                        f"hold-out for validation needs at least 2; add a val split (ROOT/val/"
                        f"images and ROOT/val/masks)")
    count = min(len(stems) - 1, max(1, round(share * len(stems))))
    ranked = sorted(stems, key=lambda stem: hashlib.sha1(stem.encode("utf-8")).hexdigest())
    return sorted(ranked[:count])


def split_pairs(root, split, holdout=None):
    """list_pairs of a split; with `holdout` (train stems, carve_holdout) and no ROOT/val, the
    val split is those train pairs and the train split the others (never one of them)."""
    if not holdout or split not in ("train", "val") or (Path(root) / "val").is_dir():
        return list_pairs(root, split)
    held = set(holdout)
    pairs = list_pairs(root, "train")
    missing = held - {stem for stem, _, _ in pairs}
    if missing:
        raise DataError(f"the hold-out lists train stems that are gone from "
                        f"{Path(root) / 'train' / 'images'}: {name_list(sorted(missing))}; "
                        f"put them back, or start a new run")
    return [pair for pair in pairs if (pair[0] in held) == (split == "val")]
