"""Split list files: a text file a split naming its samples (train.txt, val.txt, test.txt at
ROOT, in splits/ or in ImageSets/Segmentation/; VOC's and Oxford-IIIT Pet's lists as they ship).
A line's first word is a sample's name (Pet's `Abyssinian_100 1 1 1`), with or without its
extension or a folder; blank lines and `#` comments are skipped."""
from pathlib import Path

from segnet.data.files.finders import DATA_SUFFIXES, SPLIT_NAMES
from segnet.utils import DataError, name_list

LIST_FOLDERS = ("", "splits", "ImageSets/Segmentation", "ImageSets")


def find_lists(root):
    """{split: list file} from the first folder of LIST_FOLDERS that holds a train list."""
    for folder in LIST_FOLDERS:
        found = {split: path for split, names in SPLIT_NAMES.items() for name in names
                 if (path := Path(root) / folder / f"{name}.txt").is_file()}
        if "train" in found:
            return found
    return {}


def read_list(path):
    """The names a list file gives, in its order (first word of each line, extension off)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"split list {path} cannot be read ({error}): save it as UTF-8 text, "
                        f"a sample name a line") from error
    names = []
    for line in lines:
        words = line.strip().split()
        if not words or words[0].startswith("#"):
            continue
        name = words[0].replace("\\", "/").lstrip("./")
        for suffix in DATA_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[:-len(suffix)]
                break
        names.append(name)
    if not names:
        raise DataError(f"split list {path} names no sample: a sample name a line")
    return names


def list_leaks(lists):
    """DataError naming the samples that two split lists both name."""
    seen, leaks = {}, []
    for split, names in lists.items():
        for name in names:
            if name in seen and seen[name] != split:
                leaks.append(f"{name} ({seen[name]} and {split})")
            seen.setdefault(name, split)
    if leaks:
        raise DataError(f"{len(leaks)} sample(s) are in two split lists: {name_list(leaks)}; a "
                        f"sample in two splits leaks (its val or test score is optimistic): "
                        f"keep each name in one list")


def matches(relative_stem, names):
    """Whether a file (its path under the folder, without extension) is one the list names:
    by that path or, for names without a folder, by its stem."""
    lowered = relative_stem.lower()
    return lowered in names or lowered.rpartition("/")[2] in names
