"""Small pieces every other module shares: command-line helpers, data errors and their wording,
device and precision, RNG states, torchrun helpers, metrics (a confusion matrix), atomic files
and checkpoint I/O, and a progress reporter. Imports nothing of this project but model.py."""
import argparse
import contextlib
import ctypes
import datetime
import importlib
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm import tqdm

from model import SegNet

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


DEFAULT_DATA = Path(__file__).resolve().parent / "data"  # train.py's --data default (demo set)
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


def name_list(paths, limit=MAX_LISTED):
    """'a.png, b.png and 3 more' for a list of paths."""
    names = [str(path) for path in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def open_image(path):
    """A fully decoded PIL image; DataError naming the file when it is unreadable or truncated."""
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now: truncated files fail here, not in a DataLoader worker
            return pil
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} cannot be read ({error}): the file is corrupt, truncated or "
                        f"not an image; re-export it or remove it and its pair") from error


# ---------------------------------------------------------------- device and precision

def resolve_device(name="auto"):
    """'auto' -> cuda, then mps, then cpu; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False "
                         "(no GPU, or a CPU-only torch build); use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for but MPS is not available on this machine")
    return torch.device(name)


def cpu_has_fast_bf16():
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(device, amp="auto"):
    """The autocast dtype for `--amp` on `device`, or None for fp32.

    auto: bf16 where the hardware runs it natively (Ampere+ GPUs, AVX512-BF16/AMX CPUs), fp16 on
    older CUDA GPUs (with a GradScaler), fp32 elsewhere. Emulated bf16 is many times slower than
    fp32 (measured 14x on an AVX2 CPU), so auto never picks it.
    """
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type == "cpu":
            raise ValueError("--amp fp16 is for GPUs; on a CPU use --amp bf16 or off")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def resolve_channels_last(device, setting=None):
    """channels_last on CPU (oneDNN's native layout) and on CUDA; None means auto."""
    if setting is not None:
        return setting
    return device.type in ("cpu", "cuda")


def autocast(device, dtype):
    """Autocast context for `dtype`, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype):
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def tune_cpu_allocator():
    """Keep freed activation buffers in the heap instead of returning them to the OS.

    glibc's malloc gives large blocks back with munmap/trim, so every training step page-faults
    its ~GB of activations in again (measured 25-40% of a CPU step). Raising the mmap and trim
    thresholds once at start-up removes that; LD_PRELOAD of tcmalloc/jemalloc does the same.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)  # an int that does not fit raises
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 2**31 - 1)
    return bool(ok)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**64)  # derived seeds (seed * 10**13 + ...) overflow torch's range


def rng_states():
    """RNG states of python, numpy and torch as plain data (loadable with weights_only=True)."""
    numpy_state = np.random.get_state()
    states = {"python": _to_plain(random.getstate()),
              "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # this process's GPU only: a run may resume on fewer GPUs
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states):
    random.setstate(_to_tuple(states["python"]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"]
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible GPU
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(
                cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _to_plain(value):
    return [_to_plain(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


# ---------------------------------------------------------------- distributed (torchrun)

def init_distributed(device_name="auto", timeout_s=600):
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it.

    nccl when each rank has a GPU, gloo otherwise. The timeout bounds how long a collective
    waits for a rank that died or hangs, so the job ends with an error instead of hanging.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), world_size, local_rank


def physical_memory():
    """Bytes of memory of this machine, None where the OS does not say (os.sysconf: Linux,
    macOS)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor):
    """Sum over ranks in place (a no-op in a single process); returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """all_reduce (sum) whose backward pass is the same all_reduce: every rank's loss depends
    on every rank's contribution (global BatchNorm statistics, the global batch's Dice)."""

    @staticmethod
    def forward(ctx, tensor):
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_sum(grad.clone())


def all_reduce_sum_with_grad(tensor):
    """Sum over ranks, differentiably (a new tensor; the tensor itself in a single process):
    every rank must call it, the same number of times."""
    return _SumOverRanks.apply(tensor) if is_distributed() and dist.get_world_size() > 1 \
        else tensor


def is_main():
    """Rank 0 (or the only process): the one that prints and writes files."""
    return not is_distributed() or dist.get_rank() == 0


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(value, source=0):
    """Rank `source`'s value (plain, picklable data) on every rank; the value alone."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


# ---------------------------------------------------------------- metrics

def confusion_matrix(preds, targets, num_classes, ignore_index=255):
    """[num_classes, num_classes] int64 counts, rows = true class, columns = predicted.

    Pixels whose target is ignore_index (or out of range) are left out. Stays on the device.
    """
    valid = (targets >= 0) & (targets < num_classes) & (targets != ignore_index)
    index = targets[valid] * num_classes + preds[valid]
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(confusion, class_names=None):
    """SegNet's global (G) and class-average (C) accuracy, IoU, Dice, precision, recall.

    Classes absent from both targets and predictions get NaN IoU/Dice and are left out of the
    means, so a val split without some class is not scored as a failure on it.
    """
    confusion = confusion.double().cpu()
    true_positive = confusion.diag()
    support = confusion.sum(1)          # pixels of each true class
    predicted = confusion.sum(0)        # pixels predicted as each class
    union = support + predicted - true_positive
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * true_positive / (support + predicted).clamp(min=1), nan)
    recall = torch.where(support > 0, true_positive / support.clamp(min=1), nan)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), nan)
    total = confusion.sum()
    names = class_names or [f"class_{c}" for c in range(len(support))]
    return {
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else float("nan"),
        "mean_acc": float(recall.nanmean()),
        "miou": float(iou.nanmean()),
        "mean_dice": float(dice.nanmean()),
        "per_class": [{"name": name, "iou": float(iou[c]), "dice": float(dice[c]),
                       "precision": float(precision[c]), "recall": float(recall[c]),
                       "support": int(support[c])} for c, name in enumerate(names)],
    }


# A model is not useful yet when, on labelled data, some class present there is never predicted
# or has IoU below this, or when one class takes nearly every pixel it is not.
HEALTH_MIN_IOU = 0.05
HEALTH_ONE_CLASS_SHARE = 0.98


def health_warnings(confusion, class_names=None):
    """What makes a model useless yet, from its confusion matrix [true, predicted] on labelled
    data, as sentences (none for a healthy model): classes present in the labels but never
    predicted or with IoU below HEALTH_MIN_IOU, and one class predicted for nearly every pixel."""
    confusion = confusion.double().cpu()
    per_class = metrics_from_confusion(confusion, class_names)["per_class"]
    labelled, predicted = confusion.sum(1) / confusion.sum().clamp(min=1), confusion.sum(0)
    found = []
    for index, entry in enumerate(per_class):
        share = float(labelled[index])
        if share and not predicted[index]:
            found.append(f"class '{entry['name']}' ({share:.1%} of the labelled pixels) is never "
                         f"predicted")
        elif share and entry["iou"] < HEALTH_MIN_IOU:
            found.append(f"class '{entry['name']}' ({share:.1%} of the labelled pixels) has IoU "
                         f"{entry['iou']:.3f}, below {HEALTH_MIN_IOU}")
    top = int(predicted.argmax())
    predicted_share = float(predicted[top] / predicted.sum().clamp(min=1))
    true_share = float(labelled[top])
    if predicted_share >= HEALTH_ONE_CLASS_SHARE and predicted_share - true_share > 0.05:
        found.append(f"the model predicts '{per_class[top]['name']}' for {predicted_share:.1%} of "
                     f"the pixels (it is {true_share:.1%} of the labels): it has not learned the "
                     f"other classes")
    return found



class ConfusionMatrix:
    """Pixel counts [true class, predicted class] accumulated over a split (torchvision's
    references keep one like it): update() per batch or image, all_reduce() under torchrun,
    compute() for the metrics. Training's validation, evaluate.py and the notebook API all
    score through it."""

    def __init__(self, num_classes, ignore_index=255, device="cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, preds, targets):
        """Add the counts of one batch (any shape, same for both); returns them alone."""
        counts = confusion_matrix(preds, targets.to(preds.device), self.num_classes,
                                  self.ignore_index)
        self.matrix += counts.to(self.matrix.device)
        return counts

    def all_reduce(self, device=None):
        """Sum over torchrun ranks (each rank scored its own shard); a no-op alone. device:
        where the counts go first (nccl reduces GPU tensors only)."""
        if device is not None:
            self.matrix = self.matrix.to(device)
        all_reduce_sum(self.matrix)
        return self

    def compute(self, class_names=None):
        """metrics_from_confusion of the counts so far."""
        return metrics_from_confusion(self.matrix, class_names)


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
    """The checkpoint's "data" entry from a dataset description (dataset.scan_dataset's info)."""
    return {key: info[key] for key in DATA_KEYS}


def build_checkpoint(model, info, training=None, args=None):
    """The one place a checkpoint dict is put together (README, "Checkpoints"): the model's
    constructor arguments and weights (no DDP / compile prefixes), the data description, then
    `training` (optimizer, scheduler, progress, RNG states: what --resume needs; none for a
    model that is only to be used) and the run's plain-data `args`."""
    model = unwrapped(model)
    return {"format_version": CHECKPOINT_VERSION, "model_args": model.constructor_args(),
            "model": model.state_dict(), "data": data_metadata(info), **(training or {}),
            "args": dict(args or {})}


def checkpoint_info(checkpoint):
    """What inference needs from a loaded checkpoint: its "data" entry plus train_image_size
    (training's --image-size, or None) and dropout (the model's)."""
    train_image_size = (checkpoint.get("args") or {}).get("image_size")
    return dict(checkpoint["data"], train_image_size=train_image_size,
                dropout=checkpoint["model_args"].get("dropout", 0.0))


def unwrapped(model):
    """The plain SegNet inside DDP / torch.compile wrappers (so keys have no prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


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


# ---------------------------------------------------------------- moved names

MOVED = {"load_model": "inference", "predict": "inference"}  # the README once taught these


def __getattr__(name):
    """`from utils import load_model, predict` keeps working (PEP 562 module __getattr__):
    the notebook API lives in inference.py, which imports this module, so the names are
    fetched from there on first use, with a DeprecationWarning."""
    if name not in MOVED:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    warnings.warn(f"utils.{name} moved to {MOVED[name]}.{name}; import it from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(MOVED[name]), name)
