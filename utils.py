"""Shared pieces of training, evaluation and prediction: device and precision, metrics from a
confusion matrix, atomic checkpoints, the notebook API (load_model, predict) and pictures."""
import argparse
import contextlib
import ctypes
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
    import datetime
    import torch.distributed as dist
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), world_size, local_rank


def is_distributed():
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor):
    """Sum over ranks in place (a no-op in a single process); returns the tensor."""
    if is_distributed():
        import torch.distributed as dist
        dist.all_reduce(tensor)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(sum) whose backward is the same all_reduce: every rank's loss depends on
    every rank's contribution to the global statistics."""

    @staticmethod
    def forward(ctx, tensor):
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_sum(grad.clone())


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch of all ranks.

    torch.nn.SyncBatchNorm runs on GPUs only; this one also runs on CPU (gloo). The sums go
    through a differentiable all-reduce, so gradients are those of one big batch.
    """

    def forward(self, x):
        if not (self.training and is_distributed()):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        values = x.float()
        local = torch.cat([values.sum((0, 2, 3)), values.square().sum((0, 2, 3)), count])
        total = _SumOverRanks.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        variance = (total[channels:2 * channels] / count - mean.square()).clamp(min=0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = variance * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        scale = self.weight * torch.rsqrt(variance + self.eps)
        shift = self.bias - mean * scale
        return (x * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def convert_global_batchnorm(module):
    """Replace every BatchNorm2d by GlobalBatchNorm2d, keeping parameters and statistics."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement.to(child.weight.device))
        else:
            convert_global_batchnorm(child)
    return module


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


def class_weights(data_info, mode):
    """Per-class loss weights from the training split's pixel counts, or None.

    median-freq (SegNet paper, after Eigen & Fergus): f_c = pixels of class c / pixels of the
    images in which c appears; w_c = median(f) / f_c. inverse: w_c proportional to 1 / (share of
    class c), scaled so the weights average 1. A class with no training pixels gets weight 0.
    """
    if mode == "none":
        return None
    pixels = torch.tensor(data_info["class_pixels"], dtype=torch.float64)
    present = pixels > 0
    if mode == "median-freq":
        image_pixels = torch.tensor(data_info["class_image_pixels"], dtype=torch.float64)
        freq = pixels / image_pixels.clamp(min=1)
        median = freq[present].quantile(0.5)  # the mean of the middle two for an even count
        weights = torch.where(present, median / freq.clamp(min=1e-12), 0.0)
    elif mode == "inverse":
        share = pixels / pixels.sum()
        weights = torch.where(present, 1 / share.clamp(min=1e-12), 0.0)
        weights = weights * present.sum() / weights.sum()
    else:
        raise ValueError(f"unknown class weighting {mode!r}")
    return weights.float()


def dice_loss(logits, targets, ignore_index=255, eps=1.0):
    """1 - mean soft Dice over classes; ignored pixels count for nothing."""
    num_classes = logits.shape[1]
    valid = (targets != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    one_hot = F.one_hot(targets.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + eps) / (cardinality + eps)).mean()


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


def load_model(path, device="cpu"):
    """Notebook API: (model in eval mode on `device`, metadata dict) from a checkpoint file.

    The metadata holds class_names, class_colors, mask_decoding, normalization, in_channels,
    ignore_index, num_classes, train_image_size and dropout: everything predict() needs.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint, path).to(device).eval()
    info = dict(checkpoint_info(checkpoint), model_args=checkpoint["model_args"],
                epoch=checkpoint.get("epoch"), best_metric=checkpoint.get("best_metric"))
    return model, info


def checkpoint_info(checkpoint):
    """What inference needs from a loaded checkpoint: its "data" entry plus train_image_size
    (training's --image-size, or None) and dropout (the model's)."""
    train_image_size = (checkpoint.get("args") or {}).get("image_size")
    return dict(checkpoint["data"], train_image_size=train_image_size,
                dropout=checkpoint["model_args"].get("dropout", 0.0))


def predict(model, info, image):
    """Notebook API: label map (int64 numpy [H, W]) for a PIL image or numpy array of any size.

    Converts to the checkpoint's channel count, applies the training normalisation, and runs
    predict.py's inference path (sliding-window tiling for large images).
    """
    import dataset
    import predict as inference  # predict.py imports this module: import it at call time
    array = dataset.to_model_array(image, info["in_channels"])  # float32 [C, H, W] in [0, 1]
    return inference.predict_probs(model, info, array).argmax(0).astype(np.int64)


@torch.inference_mode()
def mc_dropout_probs(model, images, samples, chunk=8):
    """Bayesian SegNet (Kendall et al. 2015): softmax averaged over `samples` stochastic passes.

    Dropout stays active while BatchNorm keeps its running statistics (eval mode); passes run
    `chunk` at a time as one batch. Returns (mean probs [N, K, H, W], predictive entropy
    [N, H, W], variance of the class probabilities averaged over classes [N, H, W]).
    With dropout 0 every pass is the deterministic one.
    """
    model.eval()
    model.mc_dropout = True
    total = squares = 0
    try:
        for start in range(0, samples, chunk):
            passes = min(chunk, samples - start)
            logits = model(images.repeat(passes, 1, 1, 1))
            probs = logits.float().softmax(1).unflatten(0, (passes, images.shape[0]))
            total = total + probs.sum(0)
            squares = squares + probs.square().sum(0)
    finally:
        model.mc_dropout = False
    mean = total / samples
    variance = (squares / samples - mean.square()).clamp(min=0).mean(1)
    entropy = -(mean * mean.clamp(min=1e-12).log()).sum(1)
    return mean, entropy, variance


# ---------------------------------------------------------------- pictures

def default_colors(num_classes):
    """Distinct RGB colours; class 0 (background) is black."""
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
            (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
            (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
            (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128)]
    generator = np.random.default_rng(0)
    extra = [tuple(int(v) for v in generator.integers(0, 256, 3))
             for _ in range(max(0, num_classes - len(base)))]
    return [list(color) for color in (base + extra)[:num_classes]]


def colorize(labels, colors, ignore_index=255):
    """uint8 [H, W, 3] picture of a label map; ignored pixels are white."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(colors)] = np.asarray(colors, dtype=np.uint8)
    palette[ignore_index % 256] = 255
    return palette[np.asarray(labels).astype(np.int64) % 256]


def to_display(image):
    """uint8 [H, W, 3] from a [C, H, W] float image in any range (min-max stretched)."""
    image = np.asarray(image, dtype=np.float32)
    image = image[:3].transpose(1, 2, 0) if image.ndim == 3 else image[..., None]
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    image = (image * 255).round().astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def overlay(image_rgb, labels, colors, alpha=0.45):
    """Image with a translucent colour mask; background (class 0) left clear."""
    colored = colorize(labels, colors).astype(np.float32)
    mixed = image_rgb.astype(np.float32)
    foreground = (np.asarray(labels) > 0)[..., None]
    mixed = np.where(foreground, (1 - alpha) * mixed + alpha * colored, mixed)
    return mixed.round().astype(np.uint8)


def save_samples_figure(path, samples, colors, class_names=None):
    """Rows of image | ground truth | prediction | overlay. samples: (image, mask, pred)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(samples), 4, figsize=(12, 3 * len(samples)), squeeze=False)
    for row, (image, mask, pred) in zip(axes, samples):
        picture = to_display(image)
        panels = (picture, colorize(mask, colors), colorize(pred, colors),
                  overlay(picture, pred, colors))
        for axis, panel, title in zip(row, panels, ("image", "ground truth", "prediction",
                                                    "overlay")):
            axis.imshow(panel, interpolation="nearest")
            axis.set_title(title)
            axis.axis("off")
    _save_figure(fig, path)


def plot_curves(path, rows):
    """Loss and mIoU / mean Dice per epoch from metrics.csv rows (dicts)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [int(row["epoch"]) for row in rows]
    fig, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        loss_axis.plot(epochs, [_float(row[key]) for row in rows], marker="o", label=key)
    for key in ("miou", "mean_dice"):
        score_axis.plot(epochs, [_float(row[key]) for row in rows], marker="o", label=key)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    score_axis.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0, 1))
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    _save_figure(fig, path)


def _float(value):
    return float(value) if value not in ("", None) else float("nan")


def _save_figure(fig, path):
    """Save through a temp file so a reader never sees a half-written PNG."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=80)
    finally:
        plt.close(fig)
