"""Where and how the code runs: device, precision and memory format (decided once, in
`Runtime`), the CPU allocator, seeds and RNG states, torchrun helpers and all-reduces, and
BatchNorm over the global batch. Imports nothing of this project but model.py."""
import contextlib
import ctypes
import datetime
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from model import fuse_conv_relu, inference_model

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
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout,
                            **_attempt_store(world_size, timeout))
    return dist.get_rank(), world_size, local_rank


def _attempt_store(world_size, timeout):
    """{store, rank, world_size} for init_process_group under a torchrun that restarts its
    workers (--max-restarts), else {} (env:// as usual). torchrun keeps one key-value store for
    the whole job, so a restarted worker could read the addresses the dead attempt's workers
    left in it and connect to nobody (gloo: "connectFullMesh failed ... Connection refused",
    then a hang). Each attempt gets its own key prefix, TORCHELASTIC_RESTART_COUNT."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "MASTER_ADDR" not in os.environ:
        return {}
    rank = int(os.environ["RANK"])
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=not agent_store and rank == 0, timeout=timeout,
                          multi_tenant=not agent_store)
    return {"store": dist.PrefixStore(f"segnet/attempt_{attempt}", store), "rank": rank,
            "world_size": world_size}


# What the backends say when a peer process is gone (gloo; NCCL raises DistBackendError).
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "connectFullMesh failed",
             "Broken pipe")


class PeerLost(RuntimeError):
    """A collective failed because another process of the job died (peer_failures)."""


@contextlib.contextmanager
def peer_failures(rank):
    """Turn a collective that failed because another process of the job died into PeerLost,
    whose one line train.py prints before exiting with code 1 (which makes torchrun
    --max-restarts restart the job, and --resume auto continue it); other errors pass."""
    try:
        yield
    except RuntimeError as error:
        backend = getattr(dist, "DistBackendError", ())
        if not is_distributed() or not (isinstance(error, backend) or any(
                text in str(error) for text in LOST_PEER)):
            raise
        first = str(error).strip().splitlines()[0][:200]
        raise PeerLost(f"rank {rank}: a collective failed ({first}): another process of this "
                       f"job failed; torchrun --max-restarts N restarts the job and --resume "
                       f"auto continues it from the newest checkpoint") from None


def physical_memory():
    """Bytes of memory of this machine, None where the OS does not say (os.sysconf: Linux,
    macOS)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def usable_cores():
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def unwrapped(model):
    """The plain SegNet inside DDP / torch.compile wrappers (so keys have no prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ---------------------------------------------------------------- the inference form

# A fused conv+bias+ReLU must run at most this share of the plain model's time to be used.
FUSION_MARGIN = 0.95
FUSION_TOLERANCE = 0.05  # largest logit difference allowed, as a share of the largest logit
FUSION_CHOICES = {}  # (device, dtype, layout, in_channels) -> measure_fusion's result, a process


def device_inference_model(model, dtype=None, channels_last=None):
    """model.inference_model (BatchNorm folded, weights cast once), then on CUDA each
    conv+bias+ReLU as one cuDNN kernel where that measured faster on this GPU
    (fused_if_faster). What validation, evaluate.py, predict.py and the notebook run;
    export.py keeps the plain folded model (ONNX has no such kernel)."""
    folded = inference_model(model, dtype, channels_last)
    return fused_if_faster(folded, dtype, channels_last)


def fused_if_faster(folded, dtype=None, channels_last=False):
    """`folded` with its conv+bias+ReLU layers fused (model.fuse_conv_relu) when, on this
    CUDA device, the fused model agreed with it and ran in under FUSION_MARGIN of its time
    (measure_fusion, once a process for a device, precision, layout and channel count);
    `folded` itself off CUDA, where the fused layer has no kernel of its own."""
    device = next(folded.parameters()).device
    if device.type != "cuda":
        return folded
    key = (str(device), dtype, bool(channels_last), folded.in_channels)
    if key not in FUSION_CHOICES:
        FUSION_CHOICES[key] = measure_fusion(folded, dtype, channels_last)
    return fuse_conv_relu(folded) if FUSION_CHOICES[key]["fused"] else folded


def measure_fusion(folded, dtype=None, channels_last=False, side=256, batch=4, calls=5):
    """Time the folded model against its fused copy on a random [batch, C, side, side] batch
    (calls each, alternated, the fastest kept): {"fused": use it, "plain_ms", "fused_ms"}, or
    {"fused": False, "why": ...} when the fused outputs differ or it raises."""
    device = next(folded.parameters()).device
    images = torch.randn(batch, folded.in_channels, side, side, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    times = {"plain": [], "fused": []}
    try:
        fused = fuse_conv_relu(folded)
        with torch.inference_mode(), autocast(device, dtype):
            plain_out, fused_out = folded(images).float(), fused(images).float()
            error = (fused_out - plain_out).abs().max().item()
            if not error <= FUSION_TOLERANCE * plain_out.abs().max().item():
                return {"fused": False, "why": f"outputs differ by {error:.3g}"}
            for _ in range(calls):
                for name, candidate in (("plain", folded), ("fused", fused)):
                    synchronize(device)
                    start = time.perf_counter()
                    candidate(images)
                    synchronize(device)
                    times[name].append(time.perf_counter() - start)
    except RuntimeError as error:  # no cuDNN kernel for this layout, type or version
        return {"fused": False, "why": str(error).splitlines()[0][:200]}
    plain_ms, fused_ms = 1000 * min(times["plain"]), 1000 * min(times["fused"])
    return {"fused": fused_ms < FUSION_MARGIN * plain_ms, "plain_ms": round(plain_ms, 3),
            "fused_ms": round(fused_ms, 3)}


def synchronize(device):
    """Wait for queued GPU work, so that a timer sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# -------------------------------------------------------- runtime: device, precision, memory format

class Runtime:
    """Device, precision and memory format, decided once and asked by everything else."""

    def __init__(self, config, local_rank=0):
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
        self.dtype = resolve_precision(self.device, config.amp)
        self.channels_last = resolve_channels_last(self.device, config.channels_last)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return autocast(self.device, self.dtype)

    def to_device(self, images, masks):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def inference_form(self, model):
        """The model as evaluate.py loads it (model.inference_model): BatchNorm folded, the
        weights cast once to this run's precision and layout. A copy; `model` is untouched."""
        return device_inference_model(unwrapped(model), self.dtype, self.channels_last)

    def describe(self):
        return {"device": str(self.device), "precision": precision_name(self.dtype),
                "channels_last": self.channels_last}


# ---------------------------------------------------------------- BatchNorm over the global batch

class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch of all ranks.

    torch.nn.SyncBatchNorm runs on GPUs only; this one also runs on CPU (gloo). The sums go
    through a differentiable all-reduce, so gradients are those of one big batch. With
    momentum None (recalibrate_batchnorm: every rank passes the same images) the statistics
    are the rank's own, which are then the same everywhere.
    """

    def forward(self, x):
        if not (self.training and is_distributed()) or self.momentum is None:
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        values = x.float()
        local = torch.cat([values.sum((0, 2, 3)), values.square().sum((0, 2, 3)), count])
        total = all_reduce_sum_with_grad(local)
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


def global_batchnorm(model, device):
    """BatchNorm over the global batch: SyncBatchNorm on GPUs, GlobalBatchNorm2d on
    CPU. Parameter and buffer names are unchanged, so checkpoints stay plain SegNet ones."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_global_batchnorm(model)
