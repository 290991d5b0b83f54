"""Small pieces every other module shares: command-line helpers, data errors and their wording,
atomic files and checkpoint I/O (atomic write, save, load, build, validate), and a progress
reporter. Imports nothing of this project but model.py and segnet/runtime.py, whose device,
precision, seeds and torchrun helpers it re-exports (they were here once)."""
import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from model import SegNet
from segnet.runtime import (all_reduce_sum, all_reduce_sum_with_grad, autocast,  # noqa: F401
                            barrier, broadcast_object, cpu_has_fast_bf16, init_distributed,
                            is_distributed, is_main, physical_memory, precision_name,
                            resolve_channels_last, resolve_device, resolve_precision, rng_states,
                            seed_everything, set_rng_states, tune_cpu_allocator, unwrapped)

CHECKPOINT_VERSION = 1
# Keys a checkpoint must have for load_model; the rest (optimizer, RNG states...) is for --resume.
CHECKPOINT_KEYS = ("format_version", "model_args", "model", "data")


# ---------------------------------------------------------------- command lines

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless its help already explains it or there is none to
    show (None, or False for an on/off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def channels_flag(text):
    """argparse type of --in-channels: 'auto', 1 or 3."""
    if text not in ("auto", "1", "3"):
        raise argparse.ArgumentTypeError(f"expected auto, 1 or 3, got {text!r}")
    return text if text == "auto" else int(text)


# train.py's --data default (the demo set): the data/ folder beside the commands
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data"
SPLITS = ("train", "val", "test")


def add_hardware_args(parser, amp=True):
    """--device (and --amp), the same for every script."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="auto = CUDA if available (under torchrun: this process's GPU), "
                             "else MPS, else CPU")
    if amp:
        parser.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                            help="mixed precision; auto = bf16 where the hardware has it "
                                 "natively, fp16 on older GPUs, fp32 otherwise")


# ---------------------------------------------------------------- data errors and their wording

MAX_LISTED = 5  # files named per problem before "and N more"


class DataError(ValueError):
    """A problem with the user's data: the message names the file(s), the problem and the fix."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems with the data:\n" + "\n".join(
                f"- {problem}" for problem in self.problems)
        super().__init__(message)


class Problem(str):
    """A problem's text that knows how many files it covers (a plain string covers one)."""

    def __new__(cls, text, files=1):
        problem = super().__new__(cls, text)
        problem.files = files
        return problem


def format_values(values, limit=8):
    """Integers as a short set, runs written a..b: {0, 3, 10..254}; long sets keep their ends:
    {0, 1, 5, ..., 251, 255} (66 values)."""
    values = sorted(int(value) for value in values)
    pieces, start = [], 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[end + 1] == values[end] + 1:
            end += 1
        if end - start >= 2:
            pieces.append(f"{values[start]}..{values[end]}")
        else:
            pieces.extend(str(value) for value in values[start:end + 1])
        start = end + 1
    if len(pieces) > limit:
        pieces = pieces[:limit - 2] + ["..."] + pieces[-2:]
        return "{" + ", ".join(pieces) + f"}} ({len(values)} values)"
    return "{" + ", ".join(pieces) + "}"


def format_colors(packed, limit=6):
    """Packed 0xRRGGBB colours as '(r, g, b)' text."""
    colors = [f"({value >> 16 & 255}, {value >> 8 & 255}, {value & 255})"
              for value in sorted(int(v) for v in packed)]
    more = f" and {len(colors) - limit} more" if len(colors) > limit else ""
    return ", ".join(colors[:limit]) + more


def json_safe(value):
    """NaN (a class absent from labels and predictions) -> null, recursively: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def name_list(paths, limit=MAX_LISTED):
    """'a.png, b.png and 3 more' for a list of paths."""
    names = [str(path) for path in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------- checkpoints

@contextlib.contextmanager
def atomic_write(path, mode="w", **open_args):
    """A file handle to write `path` through: a temp file beside it (.NAME.tmp-PID), fsynced
    and moved over `path` with os.replace when the block ends. A crash, a full disk or an
    exception leaves the previous file untouched (and the temp file removed)."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_checkpoint(path, checkpoint):
    """Write atomically (atomic_write), then fsync the folder.

    A crash or a full disk leaves the previous file at `path` untouched.
    """
    path = Path(path)
    try:
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)
    except OSError as error:
        raise OSError(f"could not save checkpoint {path}: {error.strerror or error}; "
                      f"the previous checkpoint there (if any) is unchanged") from error
    _fsync_dir(path.parent)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the file itself is already synced
    finally:
        os.close(fd)


def load_checkpoint(path, map_location="cpu"):
    """torch.load with weights_only=True (never runs pickled code), with clear errors."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder: name the file in it "
                                f"(train.py writes last.pt and best.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        reason = (str(error).splitlines() or ["no message"])[0][:200]  # an empty file: none
        raise ValueError(f"checkpoint {path} could not be loaded safely: it is corrupt, "
                         f"truncated, or holds objects other than tensors and plain data "
                         f"({type(error).__name__}: {reason})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict)
               or key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of this project (missing {missing}); "
                         f"it may be a bare state_dict or another repo's file")
    if not isinstance(checkpoint["format_version"], int):
        raise ValueError(f"{path} has format version {checkpoint['format_version']!r}, not an "
                         f"integer: it is not a checkpoint of this project")
    if checkpoint["format_version"] > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {checkpoint['format_version']}, "
                         f"newer than this code ({CHECKPOINT_VERSION}); update the code")
    return checkpoint


# What inference needs to rebuild the data pipeline exactly as in training (a checkpoint's "data").
DATA_KEYS = ("in_channels", "ignore_index", "num_classes", "class_names", "class_colors",
             "mask_decoding", "normalization")


def data_metadata(info):
    """The checkpoint's "data" entry from a dataset description (dataset.scan_dataset's info),
    with the hold-out validated on when the data has no val/ split (None otherwise) and the
    layout that found its files (data/layouts.py)."""
    return dict({key: info[key] for key in DATA_KEYS}, holdout=info.get("holdout"),
                layout=info.get("layout"))


def build_checkpoint(model, info, training=None, args=None):
    """The one place a checkpoint dict is put together (docs/checkpoints.md): the model's
    constructor arguments and weights (no DDP / compile prefixes), the data description, then
    `training` (optimizer, scheduler, progress, RNG states: what --resume needs; none for a
    model that is only to be used) and the run's plain-data `args`."""
    model = unwrapped(model)
    return {"format_version": CHECKPOINT_VERSION, "model_args": model.constructor_args(),
            "model": model.state_dict(), "data": data_metadata(info), **(training or {}),
            "args": dict(args or {})}


def checkpoint_info(checkpoint):
    """What inference needs from a loaded checkpoint: its "data" entry plus train_image_size
    (training's --image-size, or None), dropout (the model's), train_scale (the factor images
    were resized by in training; 1 = native) and flips (those training used, "h" and/or "v":
    test-time augmentation uses the same)."""
    train_image_size = (checkpoint.get("args") or {}).get("image_size")
    plan = checkpoint.get("plan") or {}
    return dict(checkpoint["data"], train_image_size=train_image_size,
                dropout=checkpoint["model_args"].get("dropout", 0.0),
                train_scale=plan.get("train_scale") or 1.0, flips=list(training_flips(plan)))


def training_flips(plan):
    """("h", "v"), ("h",), ... : the flips training used, from its plan (a dict): none with
    --no-flip, --no-augment or --overfit-batch; plans before per-axis flips had one switch,
    "flip"; a checkpoint without a plan trained with both."""
    if not (plan.get("flip", True) and plan.get("augment", True)) or plan.get("overfit_batch"):
        return ()
    if "hflip" in plan:
        return tuple(name for name, key in (("h", "hflip"), ("v", "vflip")) if plan[key])
    return ("h", "v")


def build_model(checkpoint, path="checkpoint"):
    """A SegNet from a checkpoint's constructor arguments, with its weights loaded.

    ValueError in one paragraph (not a page of state_dict key differences) when the file is for
    another architecture, channel or class count, or holds non-finite weights.
    """
    model_args = checkpoint["model_args"]
    try:
        model = SegNet(**model_args)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: model_args {model_args!r} do not describe a SegNet ({error}): "
                         f"the file comes from another architecture or was modified") from None
    problem = (_weights_problem(model.state_dict(), checkpoint["model"])
               or _metadata_problem(model, checkpoint["data"]))
    if problem:
        raise ValueError(f"{path}: the weights do not fit SegNet{model_args} (another "
                         f"architecture or a modified file): {problem}")
    model.load_state_dict(checkpoint["model"])
    return model


def _weights_problem(expected, weights):
    """What keeps `weights` from loading into a model with state dict `expected`, in one
    line (None when they fit): missing, unexpected and reshaped keys, non-finite values."""
    if not isinstance(weights, dict):
        return f"'model' is a {type(weights).__name__}, not a state dict"
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [f"{key} {list(getattr(weights[key], 'shape', []))} (expected "
                f"{list(value.shape)})" for key, value in expected.items()
                if key in weights and (not isinstance(weights[key], torch.Tensor)
                                       or weights[key].shape != value.shape)]
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:2])})" for what, keys in
             (("missing keys", missing), ("unexpected keys", unexpected),
              ("tensors of another shape", reshaped)) if keys]
    if parts:
        return "; ".join(parts)
    broken = [key for key, value in weights.items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        return (f"{len(broken)} tensors hold NaN or inf (e.g. {broken[0]}): training diverged "
                f"before this was saved")
    return None


def _metadata_problem(model, data):
    """A disagreement between the model and the checkpoint's data description, or None."""
    if not isinstance(data, dict):
        return f"'data' is a {type(data).__name__}, not a dict"
    for key in ("in_channels", "num_classes"):
        if key in data and data[key] != getattr(model, key):
            return f"its data entry says {key}={data[key]!r}, the model has {getattr(model, key)}"
    return None


# ---------------------------------------------------------------- progress

class Progress:
    """A tqdm bar on a terminal; in a log file or a pipe, a plain line at most every `interval`
    seconds (and, with `leave`, one at the end) instead of tqdm's carriage returns.
    enabled=False: silent."""

    def __init__(self, total, desc, unit, enabled=True, leave=True, interval=10.0):
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.interactive = enabled and sys.stderr.isatty()
        self.plain = enabled and not self.interactive
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave,
                        disable=not self.interactive)
        self.done, self.interval = 0, interval
        self.start = self.last = time.monotonic()

    def update(self, count=1):
        self.bar.update(count)
        self.done += count
        now = time.monotonic()
        finished = self.done >= self.total and self.leave
        if self.plain and (finished or now - self.last >= self.interval):
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {now - self.start:.1f} s",
                  file=sys.stderr, flush=True)
            self.last = now

    def write(self, message):
        """A line of its own, above the bar."""
        if self.interactive:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self):
        self.bar.close()
