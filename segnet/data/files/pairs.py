"""Which samples make a split: the layout's folders (layouts.py) listed (hidden files ignored),
images paired with masks (pairing.py), stacks and volumes opened out into pages (stacks.py),
and the val (and test) held out of train by group when the layout has no such split
(splits.py). A sample is (name, image source, mask source): a path, or a stacks.Page."""
from dataclasses import dataclass, field
from pathlib import Path

from segnet.data.files.layouts import carves, describe, find_layout, layout_folders
from segnet.data.files.listed import listed_files, masks_of_listed, skipped_notes
from segnet.data.files.pairing import data_stem, data_suffix, pair_files, split_side_by_side
from segnet.data.files.splits import HOLDOUT_SHARE  # noqa: F401  (re-exported)
from segnet.data.pixels.maskfiles import MaskUnion
from segnet.data.pixels.stacks import may_be_stack, page_count, pages_of
from segnet.utils import DataError, name_list

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")
# JPEG masks are read so that the check can explain their values (and --mask-threshold fix them).
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".jpg", ".jpeg", ".nii",
                   ".nii.gz")
IGNORED_FILES = {"thumbs.db", "desktop.ini"}


def is_hidden(path):
    """Dotfiles (macOS's ._ files among them) and the files Windows leaves behind
    (Thumbs.db, desktop.ini)."""
    return path.name.startswith(".") or path.name.lower() in IGNORED_FILES


def list_files(folder, extensions):
    """(the data files under a folder and its subfolders, sorted; {path: its stem under the
    folder} for files in subfolders; the files skipped, not of a data type). DataError on
    broken links or two files of one stem (compared without case: a.png and A.tif)."""
    files, seen, skipped, duplicates, broken, stems = [], {}, [], [], [], {}
    for path in _walk(folder):
        if path.is_symlink() and not path.exists():  # is_file() would skip it silently
            broken.append(path)
            continue
        if not path.is_file():
            continue
        stem = path.relative_to(folder).parent.joinpath(data_stem(path)).as_posix()
        if data_suffix(path) not in extensions:
            skipped.append(path)
        elif stem.lower() in seen:
            duplicates.append((seen[stem.lower()], path))
        else:
            seen[stem.lower()] = path
            files.append(path)
            if "/" in stem:
                stems[path] = stem
    if broken:
        raise DataError(f"broken symbolic links in {folder}: {name_list(broken)} point to "
                        f"missing files (or loop); fix the links or remove them")
    if duplicates:
        first, second = duplicates[0]
        raise DataError(f"{first} and {second} have the same stem; images and masks are paired "
                        f"by stem, so keep one file per stem ({len(duplicates)} such clashes)")
    return files, stems, skipped


def _walk(folder):
    """Every visible path under folder, sorted, subfolders after the files beside them."""
    entries = sorted(path for path in folder.iterdir() if not is_hidden(path))
    for path in entries:
        if not path.is_dir() or path.is_symlink() and not path.exists():
            yield path
    for path in entries:
        if path.is_dir():
            yield from _walk(path)


@dataclass
class SplitFiles:
    """What listing a split's folders found: samples [(name, image, mask)], the pairing (its
    suffixes and its one line), {file: pages} of its stacks and notes (files skipped)."""

    samples: list
    suffixes: tuple
    line: str = None
    pages: dict = None
    notes: list = field(default_factory=list)


def _folders(root, split, layout):
    folders = layout_folders(root, layout, split)
    if folders is None:
        raise DataError(f"{root} has no split {split!r} (its layout: {describe(layout)}; "
                        f"splits: {', '.join(layout['folders'])})")
    for folder in set(folders):
        if not folder.is_dir():
            raise DataError(f"{folder} not found: the dataset's layout ({layout['kind']}) reads "
                            f"the {split} split from it")
    return folders


def _paired(root, split, layout):
    """(pairing.Pairing of a split's folders, with the suffixes the layout saved for it; the
    images folder; notes on the files not read)."""
    image_dir, mask_dir = _folders(root, split, layout)
    saved = (layout.get("pairing") or {}).get(split) or [layout.get("image_suffix"),
                                                        layout.get("mask_suffix")]
    if image_dir == mask_dir:
        files, stems, skipped = list_files(image_dir, tuple(set(IMAGE_EXTENSIONS) | set(
            MASK_EXTENSIONS)))
        files, notes = listed_files(root, layout, split, files, stems, skipped, image_dir)
        return split_side_by_side(files, image_dir, saved[1], saved[0], stems)[2], image_dir, notes
    images, image_stems, skipped = list_files(image_dir, IMAGE_EXTENSIONS)
    masks, mask_stems, mask_skipped = list_files(mask_dir, MASK_EXTENSIONS)
    if layout.get("mask_only") and saved[1]:  # a benchmark's other label files: not read
        kept = [mask for mask in masks if data_stem(mask).lower().endswith(saved[1].lower())]
        mask_skipped, masks = mask_skipped + [m for m in masks if m not in set(kept)], kept
    images, notes = listed_files(root, layout, split, images, image_stems, skipped, image_dir)
    notes += skipped_notes(mask_skipped, mask_dir)
    if layout.get("lists", {}).get(split):
        masks = masks_of_listed(masks, mask_stems, images, image_stems)
    if not images and not masks:
        raise DataError(f"split {split!r} is empty: no images in {image_dir} "
                        f"(supported: {' '.join(IMAGE_EXTENSIONS)}); add images or leave the "
                        f"split out")
    pairing = pair_files(images, masks, (image_dir, mask_dir), *saved,
                         stems={**image_stems, **mask_stems})
    return pairing, image_dir, notes


def _known_pages(root, layout, path):
    """A file's page count as the layout's scan saved it (files not listed: one page), or
    counted now when the layout has no scan yet."""
    if isinstance(path, MaskUnion) or not may_be_stack(path):
        return 1
    pages = layout.get("pages")
    if pages is None:
        return page_count(path)
    return pages.get(_key(root, path), 1)


def _key(root, path):
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def short_names(pairs):
    """The pairs named by their file stems where those are unique (Cityscapes' stems hold their
    city), else by their paths under the folder (benign/a and malignant/a)."""
    short = [name.rpartition("/")[2] for name, _, _ in pairs]
    if len({name.lower() for name in short}) < len(short):
        return pairs
    return [(name, image, mask) for name, (_, image, mask) in zip(short, pairs, strict=True)]


def list_samples(root, split, layout):
    """SplitFiles of a split read from its folders (train: with the splits pooled into it,
    layout["pool"]); DataError when a folder is missing, the split is empty, a file has no
    partner, or a stack's pages differ from its mask's."""
    pool = layout.get("pool") if split == "train" else None
    if pool and len(pool) > 1:  # names of the pooled splits' samples: val/a (train's: a)
        parts = {part: list_samples(root, part, dict(layout, pool=None)) for part in pool}
        pooled = [(name if part == "train" else f"{part}/{name}", image, mask)
                  for part, found in parts.items() for name, image, mask in found.samples]
        return SplitFiles(pooled, parts["train"].suffixes, parts["train"].line,
                          {key: count for found in parts.values()
                           for key, count in found.pages.items()})
    pairing, image_dir, notes = _paired(root, split, layout)
    samples, pages, mismatched = [], {}, []
    for name, image, mask in short_names(pairing.pairs):
        image_pages, mask_pages = (_known_pages(root, layout, path) for path in (image, mask))
        if image_pages != mask_pages:
            mismatched.append(f"{image} has {image_pages} page(s), its mask {mask} "
                              f"{mask_pages}")
            continue
        if image_pages > 1:
            pages.update({_key(root, image): image_pages, _key(root, mask): mask_pages})
            width = len(str(image_pages))
            samples += [(f"{name}@{page.index + 1:0{width}d}", page, mask_page)
                        for page, mask_page in zip(pages_of(image, image_pages),
                                                   pages_of(mask, mask_pages), strict=True)]
        else:
            samples.append((name, image, mask))
    if mismatched:
        raise DataError(f"{len(mismatched)} stack(s) and their masks have different page counts:"
                        f" {'; '.join(mismatched[:5])}; a stack pairs page by page, so give "
                        f"each image stack a mask stack of the same pages")
    return SplitFiles(samples, (pairing.image_suffix, pairing.mask_suffix),
                      pairing.line(f"{split} ({image_dir})"), pages, notes)
