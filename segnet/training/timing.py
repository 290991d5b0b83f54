"""Timing on this machine: the plan's Speed from real training steps and an inference pass
(`measure_speed`, through engine.train_step and inference.batch_probs), and a call's img/s, CPU
time, page faults and peak memory for bench.py."""
import copy
import dataclasses
import resource
import statistics
import sys
import time

import torch

from segnet.data.feed import augment, loaders
from segnet.data.feed.dataset import SegmentationDataset
from segnet.data.feed.transforms import WorkerCrop
from segnet.inference.inference import TILE, batch_probs
from segnet.plan.plan import Speed
from segnet.runtime import synchronize
from segnet.training.engine import build_optimizer, build_scheduler, train_step
from segnet.training.losses import build_criterion

WARMUP_STEPS = 2
LOAD_SAMPLES = 4  # train samples read to time the loader


# ---------------------------------------------------------------- the plan's Speed

def time_training_steps(model, config, runtime, info, repeats=3):
    """Seconds per training step at config's crop and batch: real steps of `model` (which
    they train: pass a copy) through train_step, with the run's precision, layout, optimizer
    and loss, on a synthetic batch; WARMUP_STEPS untimed steps (the first ones of a new shape
    are slow), then the fastest of `repeats` (a busy neighbour only ever slows a step down).
    No collective: under torchrun, rank 0 times alone."""
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model, runtime.device)
    scheduler, _ = build_scheduler(config, optimizer, steps_per_epoch=1)
    criterion, _ = build_criterion(config, info, runtime.device)
    generator = torch.Generator().manual_seed(0)
    side = config.crop_size
    images = torch.randn(config.batch_size, model.in_channels, side, side, generator=generator)
    masks = torch.randint(0, model.num_classes, (config.batch_size, side, side),
                          generator=generator)
    model.train()
    seconds = []
    for _ in range(WARMUP_STEPS + repeats):
        synchronize(runtime.device)
        start = time.perf_counter()
        train_step(model, images, masks, criterion, optimizer, scheduler, runtime, config)
        synchronize(runtime.device)
        seconds.append(time.perf_counter() - start)
    return min(seconds[WARMUP_STEPS:])


def time_inference(model, runtime, size):
    """Seconds to predict one image of `size` (height, width) the way validation does (the
    inference form, inference.batch_probs): one untimed warm-up, then one timed pass."""
    folded = runtime.inference_form(model.to(runtime.device))
    image = torch.randn(1, folded.in_channels, *size)
    batch_probs(folded, image, dtype=runtime.dtype)
    start = time.perf_counter()
    batch_probs(folded, image, dtype=runtime.dtype)
    return time.perf_counter() - start


def time_loading(root, info, plan, device=torch.device("cpu"), count=LOAD_SAMPLES):
    """Seconds to read one training sample as the run's loader does: decoded from its file (no
    cache: the first pass, the slowest) and through the training transform at the plan's crop,
    or, where the augmentation ends on the device (loaders.finish_on_device), the workers' cut
    and, when no worker reads between steps, the device's finish of it; the median over
    `count` samples spread over the train split."""
    transform = loaders.train_transform(plan, info)
    finish = None
    if loaders.finish_on_device(plan, device):
        finish = augment.FinishBatch(transform, info["normalization"], device)
        transform = WorkerCrop(transform)
    dataset = SegmentationDataset(root, "train", info, transform=transform,
                                  class_sampling=plan.class_sampling)
    serial = finish is not None and loaders.loader_workers(plan, device) == 0
    indices = sorted({round(i * len(dataset) / count) for i in range(count)} - {len(dataset)})
    seconds = []
    for index in indices:
        start = time.perf_counter()
        sample = dataset[index]
        if serial:
            finish(*augment.crop_collate([sample], plan.ignore_index))
            synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def free_bytes(device):
    """Device memory this process may use for training: what the card has free, plus what
    PyTorch's allocator already holds for it; 0 off CUDA (no limit the plan must read)."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return float(free + torch.cuda.memory_reserved(device))


def measure_speed(model, plan, runtime, candidates, val_size, info, repeats=3, root=None):
    """Speed from real training steps (time_training_steps: a synthetic batch, the run's
    precision, layout, optimizer and loss) of a copy of `model` at each (crop, batch)
    candidate, one inference pass of a val-sized image (at most a tile: larger images are
    tiled, at the same speed per pixel) and, with the data's `root`, the reading of real
    samples through the loader's dataset and transform (time_loading), which a step adds to
    its compute (Speed.step_seconds). The model's weights and the RNG streams are kept."""
    steps, memory = [], []
    free = free_bytes(runtime.device)
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda"
                               else []):
        for crop, batch in candidates:
            trial = dataclasses.replace(plan, crop_size=crop, batch_size=batch, steps=1,
                                        warmup_steps=0, log_every=10**9)
            reset_peak_memory(runtime.device)
            seconds = time_training_steps(copy.deepcopy(model), trial, runtime, info, repeats)
            steps.append((crop, batch, seconds))
            if free:
                memory.append((crop, batch, torch.cuda.max_memory_allocated(runtime.device)))
        size = tuple(min(side, TILE) for side in val_size)
        infer_seconds = time_inference(model, runtime, size)
        load_seconds = 0.0
        if root is not None:
            load_seconds = time_loading(root, info, dataclasses.replace(
                plan, crop_size=candidates[0][0]), runtime.device)
    pixels = size[0] * size[1]
    return Speed(device=runtime.device.type, steps=tuple(steps),
                 infer_pixels_per_second=pixels / max(infer_seconds, 1e-9),
                 load_seconds=load_seconds,
                 load_workers=loaders.loader_workers(plan, runtime.device),
                 memory=tuple(memory), free_bytes=free)


# ---------------------------------------------------------------- a call, for bench.py

def timed(call, device):
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def measure(call, device, args, images_per_call):
    """img/s of `call`: warm-up, then timed calls with their CPU usage and page faults."""
    warmup = [timed(call, device) for _ in range(args.warmup)]
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = [timed(call, device) for _ in range(args.repeats)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    rates = [images_per_call / s for s in seconds]
    return {"img_s": statistics.median(rates), "img_s_min": min(rates), "img_s_max": max(rates),
            "seconds": seconds, "warmup_seconds": warmup,
            "page_faults_per_call": (after.ru_minflt - before.ru_minflt) / args.repeats,
            "sys_s_per_call": (after.ru_stime - before.ru_stime) / args.repeats,
            "user_s_per_call": (after.ru_utime - before.ru_utime) / args.repeats}


def peak_memory_mb(device):
    """Peak resident set size of this process (CPU, MPS), or peak allocated CUDA memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
