"""Class tables: the JSON file that names the classes, gives their colours and marks void
entries (ROOT/classes.json when present), and the class names and colours of a decoding (from
the table, a palette, or defaults)."""
import json
from pathlib import Path

from segnet.utils import DataError

CLASS_TABLE_NAME = "classes.json"  # used when no class table is given and ROOT has one


def load_class_table(path):
    """Class table JSON -> list of {"name", "color" ([r,g,b] or None), "void"}.

    Accepts {"classes": [...]} or a bare list of {"name": ..., "color": [r, g, b],
    "void": true|false}.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"class table {path} cannot be read ({error}): it is a JSON file "
                        f'{{"classes": [{{"name": "sky", "color": [128, 128, 128]}}, ...]}}'
                        ) from error
    if isinstance(entries, dict):
        entries = entries.get("classes")
    if not isinstance(entries, list) or not entries:
        raise DataError(f'class table {path} has no class list: write {{"classes": [{{"name": '
                        f'"sky", "color": [128, 128, 128]}}, ...]}}')
    return [_class_entry(entry, index, path) for index, entry in enumerate(entries)]


def _class_entry(entry, index, path):
    """One validated class table entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError(f"class table {path}: entry {index} ({entry!r}) needs a \"name\" string")
    color = entry.get("color")
    if color is not None and not (isinstance(color, list) and len(color) == 3 and all(
            isinstance(c, int) and 0 <= c <= 255 for c in color)):
        raise DataError(f"class table {path}: entry {index} ({entry['name']}) has colour "
                        f"{color!r}; write three integers 0..255, e.g. [128, 64, 128]")
    return {"name": entry["name"], "color": color, "void": bool(entry.get("void", False))}


def table_classes(table):
    """The non-void entries of a class table: class id i is the i-th of them."""
    return [entry for entry in table if not entry["void"]]


def voc_color(index):
    """The PASCAL VOC colour map: distinct, deterministic colours for class ids."""
    red = green = blue = 0
    for bit in range(8):
        red |= ((index >> 0) & 1) << (7 - bit)
        green |= ((index >> 1) & 1) << (7 - bit)
        blue |= ((index >> 2) & 1) << (7 - bit)
        index >>= 3
    return [red, green, blue]


def class_names_colors(decoding, table, palette):
    """Class names and [r, g, b] colours: from the class table, the palette, or defaults."""
    count = decoding["num_classes"]
    if table:
        classes = table_classes(table)
        return ([entry["name"] for entry in classes],
                [entry["color"] or voc_color(index) for index, entry in enumerate(classes)])
    names = ["background", "foreground"] if count == 2 else [f"class_{i}" for i in range(count)]
    if decoding.get("source") == "palette" and palette:
        padded = list(palette) + [0] * (3 * count)
        return names, [padded[3 * index:3 * index + 3] for index in range(count)]
    if count == 2:
        return names, [[0, 0, 0], [255, 255, 255]]
    return names, [voc_color(index) for index in range(count)]
