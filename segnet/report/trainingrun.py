"""What the page shows of the training behind a checkpoint: its run folder(s), the validation
curve rows of metrics.csv and the plan table train.log opens with."""
import csv
from pathlib import Path


def run_folders(checkpoint, ensemble_paths=None):
    """The run folder of each model scored: a checkpoint's folder, or each fold's (the paths an
    ensemble was built from: info["ensemble"])."""
    paths = ensemble_paths or ([checkpoint] if not isinstance(checkpoint, list) else checkpoint)
    return [Path(path).parent for path in paths if Path(path).is_file()]


def metrics_rows(folder):
    """metrics.csv's rows (dicts), or [] when the folder has none or it is unreadable."""
    path = Path(folder) / "metrics.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    needed = {"epoch", "train_loss", "val_loss", "miou", "mean_dice"}
    return rows if rows and needed <= set(rows[0]) else []


def plan_lines(folder):
    """The last plan table in train.log ("plan:" and its indented lines, as printed at the
    start of the run or of a resume), or [] when there is none."""
    try:
        lines = (Path(folder) / "train.log").read_text(encoding="utf-8",
                                                       errors="replace").splitlines()
    except OSError:
        return []
    table, inside = [], False
    for line in lines:
        if line.rstrip() == "plan:":
            table, inside = [line.rstrip()], True
        elif inside and line.startswith("  "):
            table.append(line.rstrip())
        else:
            inside = False
    return table
