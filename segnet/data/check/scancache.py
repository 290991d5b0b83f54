"""A scan of an unchanged dataset, kept: dataset.scan_dataset's info cached on disk, keyed on
the scan's arguments, the code that scans, and every data file's path, size and modification
time, so a second run on the same data spends its time budget training. Any change to a file
(added, removed, rewritten) or to an argument (the layout among them) scans again."""
import hashlib
import json
import os
import warnings
from pathlib import Path

from segnet.data.check.scan import scan_dataset
from segnet.data.files.layouts import find_layout, layout_folders
from segnet.utils import atomic_write

CACHE_ENV = "SEGNET_CACHE"  # the cache folder; default ~/.cache/segnet
# The rooms whose code decides what a scan finds: a change to any of their modules scans again.
SCAN_ROOMS = ("files", "pixels", "check")


def cache_folder():
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "segnet") / "scans"


def _files(root, layout, class_table):
    """(path, size, mtime in ns) of every file a scan may read (in the layout's folders, and
    the class tables), sorted."""
    root = Path(root)
    found = []
    folders = {folder for split in layout["folders"]
               for folder in layout_folders(root, layout, split)}
    for top in sorted(folders):
        for folder, _, names in os.walk(top):
            for name in names:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:  # a broken link: the scan names it; key it as unreadable
                    found.append((str(path), -1, -1))
                    continue
                found.append((str(path), stat.st_size, stat.st_mtime_ns))
    for table in {root / "classes.json", root / "dataset.json",
                  Path(class_table) if class_table else None} - {None}:
        if table.is_file():
            stat = table.stat()
            found.append((str(table), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def _code_digest():
    data = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(path for room in SCAN_ROOMS for path in (data / room).glob("*.py")):
        digest.update(path.relative_to(data).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def scan_key(root, arguments):
    """The key of a scan: its arguments, the scanning code and the files' sizes and times."""
    payload = json.dumps({"arguments": arguments, "code": _code_digest(),
                          "files": _files(root, arguments["layout"],
                                          arguments.get("class_table"))},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached_scan(root, workers=None, **arguments):
    """(info, reused): scan_dataset(root, workers=workers, **arguments), or the info of an
    identical earlier scan (its warnings shown again). The info is returned as JSON gives it
    back (lists, not tuples) either way, so a reused scan is the same data as a fresh one. The
    key leaves workers out: any number of processes scans the same. A cache that cannot be
    written is a warning, never an error."""
    root = Path(root)
    arguments["layout"] = arguments.get("layout") or find_layout(root)
    path = cache_folder() / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()}.json"
    key = scan_key(root, arguments)
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        saved = {}  # unreadable or torn: scan again and rewrite it
    if saved.get("key") == key:
        for message in saved["info"]["warnings"]:
            warnings.warn(message, stacklevel=2)
        return saved["info"], True
    info = json.loads(json.dumps(scan_dataset(root, workers=workers, **arguments)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, encoding="utf-8") as handle:
            json.dump({"key": key, "root": str(root.resolve()), "info": info}, handle)
    except OSError as error:
        warnings.warn(f"could not keep the scan in {path} ({error.strerror or error}); the next "
                      f"run scans again (set {CACHE_ENV} to a writable folder)", stacklevel=2)
    return info, False
