"""Training machinery: the model the loop calls (DDP, torch.compile), optimiser and schedule,
training steps and epochs, stop signals, BatchNorm re-estimation, validation through the scoring
path evaluate.py uses, and the checkpoint's training state. (Data and loaders: loaders.py; device,
precision and global BatchNorm: runtime.py; the loss: losses.py; timing steps: timing.py.)

`config` is everywhere a plan.Plan: the one resolved configuration. train.py drives this
module; nothing here reads the command line or prints on its own."""
import math
import signal
import sys
import time
from collections import namedtuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from segnet.data.feed import transforms
from segnet.data.pixels.images import normalize
from segnet.data.feed.loaders import (EpochSampler, EpochSeeded, base_dataset,  # noqa: F401
                                 build_datasets, build_loader, cache_bytes, loader_workers,
                                 quiet_worker, steps_per_epoch)
from segnet.inference.inference import batch_probs, model_size, score_dataset
from segnet.plan.curve import wsd_factor
from segnet.plan.plan import CALIBRATION_IMAGES, CALIBRATION_PIXELS
from segnet.runtime import (GlobalBatchNorm2d, Runtime, all_reduce_sum,  # noqa: F401
                            convert_global_batchnorm, global_batchnorm, is_distributed, rng_states,
                            seed_everything, set_rng_states, unwrapped)
from segnet.training.losses import build_criterion, class_weights, dice_loss  # noqa: F401
from segnet.utils import build_checkpoint

NUM_SAMPLE_IMAGES = 4  # validation images drawn in val_samples_epochNNN.png
CALIBRATION_SIDE = 1024  # larger calibration images give their centre


# -------------------------------------------------------- model wrappers, optimiser, schedule

def wrap_model(model, config, runtime, world_size):
    """The module the loop calls: DDP and/or torch.compile around the plain SegNet, which
    stays what checkpoints are saved from."""
    train_model = model
    if world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model,
                                                                device_ids=device_ids)
    if not config.compile:
        return train_model
    if config.sources.get("compile") == "auto":  # a planned compile that fails trains eagerly
        torch._dynamo.config.suppress_errors = True
    return torch.compile(train_model)


def build_optimizer(config, model, device):
    """Fused (one kernel for all parameters) on CPU and CUDA: on a 2-core CPU the unfused
    AdamW step took 0.3-0.6 s per step, the fused one 0.05-0.07 s."""
    params = model.parameters()
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0,
                               **fused)
    optimizer_class = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(params, lr=config.lr, betas=(config.momentum, 0.999),
                           weight_decay=config.weight_decay, **fused)


def build_scheduler(config, optimizer, steps_per_epoch):
    """Per-step linear warm-up over config.warmup_steps, then the chosen decay over
    config.steps (read at every step: a time budget may move the end of the run, and the
    decay then still reaches its end); wsd holds the rate until config.decay_start (a plateau,
    or the last share of the run) and decays from there; plateau decides per validation."""
    def factor(step):
        warmup, total = config.warmup_steps, max(1, config.steps)
        if config.scheduler == "wsd":  # warm-up, stable, decay: curve.py
            return wsd_factor(step, warmup, total, config.decay_start)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if config.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if config.scheduler == "poly":
            return max(0.0, 1 - progress) ** 0.9
        if config.scheduler == "step":
            return config.gamma ** (step // (config.step_size * steps_per_epoch))
        return plateau.scale if plateau else 1.0  # none; plateau: its cuts so far

    plateau = PlateauScale(config.gamma) if config.scheduler == "plateau" else None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), plateau


class PlateauScale:
    """ReduceLROnPlateau's decisions as a factor of the per-step schedule. (Acting on the
    optimizer itself, its cuts would be overwritten by LambdaLR at the next step.)"""

    def __init__(self, gamma, patience=2):
        self.holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.holder, mode="max", factor=gamma, patience=patience)

    @property
    def scale(self):
        return self.holder.param_groups[0]["lr"]

    def step(self, metric):
        self.scheduler.step(metric)

    def state_dict(self):
        return self.scheduler.state_dict()  # its _last_lr is the scale

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)
        self.holder.param_groups[0]["lr"] = state["_last_lr"][0]


# ---------------------------------------------------------------- one training epoch

class Interrupted(Exception):
    """Raised from the training loop after SIGINT/SIGTERM, once the step in flight is done."""


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step and exits."""

    def __init__(self):
        self.signal = None

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handler)

    def handler(self, signum, frame):
        if self.signal is not None:  # second Ctrl-C: stop immediately
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name


class _CpuGroup:
    """A gloo group for tiny CPU-side agreements (works beside nccl without a GPU sync)."""

    def __init__(self):
        self.group = None

    def get(self):
        if self.group is None:
            self.group = dist.new_group(backend="gloo")
        return self.group

CPU_GROUP = _CpuGroup()


def stop_requested(stop):
    """A signal seen by any rank stops every rank at the same step (they must agree, or the
    next collective would wait forever)."""
    if not is_distributed():
        return stop.signal is not None
    flag = torch.tensor([float(stop.signal is not None)])
    dist.all_reduce(flag, group=CPU_GROUP.get())
    if flag.item() and stop.signal is None:
        stop.signal = "a signal on another rank"
    return bool(flag.item())


def check_finite(loss, state):
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} at epoch {state['epoch'] + 1}, step "
            f"{state['global_step']}: lower --lr, set --grad-clip, or use --amp off; the last "
            f"good checkpoint is kept")


def report_progress(bar, log, state, loss, images_seen, start, total, config):
    rate = images_seen / max(time.perf_counter() - start, 1e-9)
    if not bar.disable:
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        return
    remaining = (total - state["batch"]) * config.batch_size / max(rate, 1e-9)
    log(f"  epoch {state['epoch'] + 1} step {state['batch']}/{total} loss {loss:.4f} "
        f"{rate:.1f} img/s eta {remaining:.0f}s")


def train_step(model, images, masks, criterion, optimizer, scheduler, runtime, config):
    """One optimiser step on a CPU batch; returns the loss (a tensor: no host sync)."""
    images, masks = runtime.to_device(images, masks)
    with runtime.autocast():
        loss = criterion(model(images), masks)
    optimizer.zero_grad(set_to_none=True)
    runtime.scaler.scale(loss).backward()
    if config.grad_clip:
        runtime.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    runtime.scaler.step(optimizer)
    runtime.scaler.update()
    scheduler.step()
    return loss


EpochResult = namedtuple("EpochResult", "loss images_per_second seconds interrupted finished")


def train_one_epoch(model, loader, criterion, optimizer, scheduler, runtime, state, config,
                    stop, log, until_step=None):
    """Train over `loader`, the batches of the epoch from state['batch'] (non-zero after a
    resume mid-epoch) to its end (loaders.TrainBatches.epoch; any sized iterable of
    (images, masks), on the device or not), or until state['global_step'] reaches
    until_step, or a signal. Returns an EpochResult: the mean loss over state's running sums
    (since they were last reset), img/s, seconds, whether a signal stopped it, and whether the
    epoch was finished."""
    model.train()
    total, signalled = state["batch"] + len(loader), False  # batches of the whole epoch
    loss_sum = torch.as_tensor(state["loss_sum"], dtype=torch.float64).to(runtime.device)
    images_seen, start = 0, time.perf_counter()
    bar = tqdm(total=total, initial=state["batch"], desc=f"epoch {state['epoch'] + 1}",
               leave=False, disable=not sys.stdout.isatty(), dynamic_ncols=True)
    for images, masks in loader:
        loss = train_step(model, images, masks, criterion, optimizer, scheduler, runtime, config)
        loss_sum += loss.detach().double() * images.shape[0]
        images_seen += images.shape[0]
        state["batch"] += 1
        state["global_step"] += 1
        state["images"] += images.shape[0]
        bar.update(1)
        if state["batch"] % config.log_every == 0 or state["batch"] == total:
            current = loss.item()  # the only host sync of a step, and only when logging
            check_finite(current, state)
            report_progress(bar, log, state, current, images_seen, start, total, config)
        state["loss_sum"] = loss_sum  # a tensor until the sums are reset or a checkpoint made
        signalled = stop_requested(stop) and state["batch"] < total
        if signalled or config.dry_run or (until_step and state["global_step"] >= until_step):
            break
    bar.close()
    elapsed = time.perf_counter() - start
    totals = all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(state["images"])]))
    mean_loss = totals[0].item() / max(totals[1].item(), 1)
    check_finite(mean_loss, state)
    return EpochResult(mean_loss, images_seen / max(elapsed, 1e-9), elapsed,
                       signalled and not config.dry_run, state["batch"] == total)


# ---------------------------------------------------------------- validation

def calibration_images(train_set, image_size=None, max_pixels=CALIBRATION_PIXELS, scale=1.0):
    """Normalised train images [1, C, H, W], whole and unaugmented (resized with image_size
    or by scale, as training resizes), in a fixed shuffled order (neighbouring files are often
    alike: consecutive slices, one acquisition session), up to max_pixels and
    CALIBRATION_IMAGES images."""
    dataset = base_dataset(train_set)  # inside EpochSeeded, Subset
    pixels, images, generator = 0, 0, torch.Generator().manual_seed(0)
    for index in torch.randperm(len(dataset), generator=generator).tolist():
        image, mask = dataset.load_sample(index)
        size = model_size(image.shape[-2:], image_size, scale)
        if size:
            image, _ = transforms.resize_pair(image, mask, size)
        top, left = ((side - CALIBRATION_SIDE) // 2 if side > CALIBRATION_SIDE else 0
                     for side in image.shape[-2:])
        image = image[..., top:top + CALIBRATION_SIDE, left:left + CALIBRATION_SIDE]
        yield normalize(image, dataset.info["normalization"])[None]
        pixels, images = pixels + image.shape[-2] * image.shape[-1], images + 1
        if pixels >= max_pixels or images == CALIBRATION_IMAGES:
            return


@torch.no_grad()
def recalibrate_batchnorm(model, images, runtime):
    """Set every BatchNorm's running statistics to the average of its batch statistics over
    `images` (calibration_images): what validation and inference then use matches whole,
    unaugmented images, not the augmented crops of the last few steps, which with batches of
    two drift by a few mIoU points (docs/plan.md). Training itself is not
    affected: in train mode BatchNorm normalises with the batch's own statistics."""
    model = unwrapped(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta, was_training = [norm.momentum for norm in norms], model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    for image in images:
        image, _ = runtime.to_device(image, torch.zeros(0))
        with runtime.autocast():
            model(image)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


def validation_indices(size, images=None):
    """All val indices, or `images` of them spread evenly over the split (fixed, so that
    intermediate checks on a subset compare like with like)."""
    if images is None or images >= size:
        return list(range(size))
    return sorted({round(number * size / images) for number in range(images)})


def validate(model, val_set, criterion, runtime, num_classes, ignore_index, image_size=None,
             max_batches=None, rank=0, world_size=1, images=None, scale=1.0):
    """(mean val loss, measures.ConfusionMatrix) of `model` in its inference form
    (Runtime.inference_form) on the val split (or `images` of it, validation_indices), scored
    by inference.score_dataset: the path evaluate.py takes, so a checkpoint scores the same
    there as it did here. Under torchrun each rank scores every world_size-th image and the
    sums are all-reduced (each image counted once). criterion: build_criterion's, on the CPU
    (the probabilities come back there)."""
    indices = validation_indices(len(val_set), images)[rank::world_size]
    scores = score_dataset(model, val_set, num_classes, ignore_index, indices=indices,
                           dtype=runtime.dtype, image_size=image_size, criterion=criterion,
                           max_batches=max_batches, scale=scale)
    totals = all_reduce_sum(torch.tensor([scores.loss_sum, scores.images],
                                               dtype=torch.float64, device=runtime.device))
    scores.confusion.all_reduce(runtime.device)
    return (totals[0] / totals[1].clamp(min=1)).item(), scores.confusion


def sample_predictions(model, val_set, runtime, count=NUM_SAMPLE_IMAGES, scale=1.0):
    """(image, mask, prediction) for a fixed handful of validation images; model in its
    inference form."""
    samples = []
    for index in range(min(count, len(val_set))):
        image, mask = val_set[index]
        probs, _ = batch_probs(model, image[None], dtype=runtime.dtype, scale=scale)
        samples.append((image.numpy(), mask.numpy(), probs[0].argmax(0).numpy()))
    return samples


# ---------------------------------------------------------------- checkpoints: the training state

STATE_KEYS = ("epoch", "batch", "global_step", "best_metric", "best_epoch", "best_step",
              "stale", "loss_sum", "images", "seconds", "curve", "ending")


def new_state():
    """Training progress. epoch = completed epochs; batch = batches done in the epoch in
    flight (non-zero in a checkpoint written between epoch ends); seconds = the run's wall
    time when it was saved (a time budget counts it on resume); curve = [[step, val mIoU],
    ...] of the validations so far; ending = why the decay phase began (None, "plateau",
    "budget")."""
    return {"epoch": 0, "batch": 0, "global_step": 0, "best_metric": -1.0, "best_epoch": 0,
            "best_step": 0, "stale": 0, "loss_sum": 0.0, "images": 0, "seconds": 0.0,
            "curve": [], "ending": None}


def make_checkpoint(model, optimizer, schedulers, runtime, state, info, run_args, plan):
    """A checkpoint that --resume continues exactly (utils.build_checkpoint with the training
    state: optimizer, schedules, scaler, progress, RNG states and the plan); run_args: the
    run's flags as plain data."""
    progress = {key: state[key] for key in STATE_KEYS}
    progress["loss_sum"] = float(progress["loss_sum"])
    training = {"optimizer": optimizer.state_dict(), "scheduler": schedulers[0].state_dict(),
                "plateau": schedulers[1].state_dict() if schedulers[1] else None,
                "scaler": runtime.scaler.state_dict(), **progress, "rng": rng_states(),
                "plan": plan.to_dict()}
    return build_checkpoint(model, info, training, run_args)


def restore(checkpoint, model, optimizer, schedulers, runtime, rank=0):
    """Load everything --resume needs; returns the training progress."""
    unwrapped(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedulers[0].load_state_dict(checkpoint["scheduler"])
    if schedulers[1] is not None and checkpoint.get("plateau"):
        schedulers[1].load_state_dict(checkpoint["plateau"])
    if runtime.scaler.is_enabled() and checkpoint["scaler"]:  # empty when saved without fp16
        runtime.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_states(checkpoint["rng"])  # rank 0's; other ranks re-derive their own
    progress = dict(new_state(), **{key: checkpoint[key] for key in STATE_KEYS
                                    if key in checkpoint})  # older checkpoints lack some
    if rank:
        seed_everything((checkpoint["args"]["seed"] + rank) * 1_000_003
                              + checkpoint["global_step"])
        progress.update(loss_sum=0.0, images=0)  # rank 0 holds the epoch's sums so far
    return progress
