"""The run folder's files: train.log (Logger), metrics.csv, config.json, and the temp files a
killed run leaves; all written atomically or line by line, so a crash never tears one."""
import csv
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from segnet import utils


class Logger:
    """Print and append to train.log; the file is flushed every line."""

    def __init__(self, path=None, quiet=False):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.quiet = quiet

    def __call__(self, message):
        if self.quiet:
            return
        tqdm.write(message) if sys.stdout.isatty() else print(message, flush=True)
        if self.file:
            self.file.write(message + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()


def git_commit():
    """The checked-out commit of this code, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def write_json(path, payload):
    """Write JSON atomically (values it cannot encode written as text)."""
    with utils.atomic_write(path, encoding="utf-8") as handle:
        handle.write(json.dumps(payload, indent=2, default=str) + "\n")


def metric_columns(class_names):
    """metrics.csv's columns (names and order are a contract)."""
    return (["epoch", "train_loss", "val_loss", "pixel_acc", "mean_acc", "miou", "mean_dice"]
            + [f"iou_{name}" for name in class_names] + ["lr", "seconds", "img/s"])


def read_metrics(path, up_to_epoch):
    """Rows of metrics.csv up to (and including) an epoch count (fractional after a run that
    validates mid-epoch): a resumed run drops the rows its checkpoint does not have."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle)
                if float(row["epoch"]) <= up_to_epoch + 1e-6]


def write_metrics(path, rows, columns):
    """Rewrite metrics.csv atomically, so a crash never leaves a torn or duplicated row."""
    with utils.atomic_write(path, newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def remove_temp_files(run_dir, log):
    """Delete temp files left by a run killed mid-write (.last.pt.tmp-<pid>, ...): none is
    ever read, and a checkpoint's is as large as the checkpoint."""
    for path in sorted(run_dir.glob(".*.tmp*")):
        if path.is_file():
            path.unlink()
            log(f"removed {path.name}, left by a run that stopped while writing it")


def plain_args(args):
    """The flags as plain data (config.json, the checkpoint's "args")."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()}


def write_config(run_dir, args, plan, info, runtime, root, world_size=1):
    config = {
        "args": plain_args(args),
        "plan": plan.to_dict(),
        "data_root": str(root),
        **utils.data_metadata(info),
        "splits": info.get("splits"),
        "runtime": dict(runtime.describe(), world_size=world_size,
                        global_batch_size=plan.batch_size * world_size),
        "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "git_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_json(run_dir / "config.json", config)
