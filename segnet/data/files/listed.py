"""The files of a split that are its samples: where a split list names them, those files only
(a listed name with no file is an error naming it); files that are no data (a `.mat`, `.xml`
or `.txt` among the images) skipped with a note, never a refusal."""
from collections import Counter
from pathlib import Path

from segnet.data.files.pairing import SEPARATORS, data_stem, data_suffix
from segnet.data.files.splitlists import matches, read_list
from segnet.utils import DataError, name_list


def skipped_notes(skipped, folder):
    """One note for the files of a folder that are not read (no data type), or none."""
    if not skipped:
        return []
    kinds = Counter(data_suffix(path) or path.name for path in skipped)
    listed = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(5))
    return [f"{folder}: {len(skipped)} file(s) that are not images or masks skipped ({listed}: "
            f"{name_list([path.name for path in skipped])})"]


def listed_files(root, layout, split, files, stems, skipped, folder):
    """(the files of a split: those its list names, else all; notes). DataError naming the
    listed names that have no file."""
    notes = skipped_notes(skipped, folder)
    list_path = (layout.get("lists") or {}).get(split)
    if not list_path:
        return files, notes
    path = Path(list_path) if Path(list_path).is_absolute() else Path(root) / list_path
    names = read_list(path)
    wanted = {name.lower() for name in names}
    kept = [file for file in files if matches(_relative_stem(file, stems), wanted)]
    found = {_relative_stem(file, stems).lower() for file in kept} | {
        data_stem(file).lower() for file in kept}
    missing = [name for name in names if name.lower() not in found]
    if missing:
        raise DataError(f"{len(missing)} name(s) in the split list {path} have no image in "
                        f"{folder}: {name_list(missing)}; restore the files or remove the names")
    return kept, notes + [f"{split}: {len(kept)} samples named by {path.name}"]


def masks_of_listed(masks, mask_stems, images, image_stems):
    """The masks that belong to the listed images: those whose stem is an image's, or an
    image's followed by a suffix (a_mask); the other splits' masks stay out."""
    keys = {_relative_stem(image, image_stems).lower() for image in images}
    kept = []
    for mask in masks:
        stem = _relative_stem(mask, mask_stems).lower()
        prefixes = {stem} | {stem[:index] for index in range(1, len(stem))
                             if stem[index] in SEPARATORS}
        if prefixes & keys:
            kept.append(mask)
    return kept


def _relative_stem(path, stems):
    return stems.get(path) or data_stem(path)
