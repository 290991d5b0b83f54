"""Training machinery: the epoch-seeded sampler and loader, the runtime (device, precision,
memory format), optimiser, schedule and losses, training steps (and timing them for the plan),
validation through the scoring path evaluate.py uses, and the checkpoint's training state.

`config` is everywhere a plan.Plan: the one resolved configuration. train.py drives this
module; nothing here reads the command line or prints on its own."""
import functools
import math
import random
import signal
import sys
import time
from collections import namedtuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm import tqdm

import transforms
import utils
from dataset import SegmentationDataset, normalize
from inference import batch_probs, score_dataset
from model import inference_model

NUM_SAMPLE_IMAGES = 4  # validation images drawn in val_samples_epochNNN.png
# BatchNorm statistics are re-estimated before each validation from whole, unaugmented train
# images, up to this many pixels (four 512x512 images; on the membrane set, four images gave
# the statistics of all 22 to within 0.002 mIoU).
CALIBRATION_PIXELS = 4 * 512 * 512
CALIBRATION_IMAGES = 16  # and at most this many images (each a forward pass of its own)
CALIBRATION_SIDE = 1024  # larger images give their centre
CACHE_MEMORY_SHARE = 0.25  # of the machine's memory, for all the decoded-sample caches together


# ----------------------------------------------------- data: epoch-seeded samples, sampler, loaders

class EpochSeeded(Dataset):
    """Seeds every RNG from (seed, epoch, index) before each sample's augmentation, so the
    augmented data is the same whatever the worker count or where a run was resumed.

    The key is (epoch, index), as EpochSampler yields it: persistent DataLoader workers keep
    the dataset copy of their start, so an epoch stored on the dataset would never reach them.
    The process's own RNG states (dropout, ...) are put back after each sample.
    """

    def __init__(self, dataset, seed, fixed=False):
        self.dataset, self.seed, self.fixed = dataset, seed, fixed  # fixed: epoch 0 always

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        epoch = 0 if self.fixed else epoch
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        utils.seed_everything((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
        try:
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class EpochSampler(Sampler):
    """Shuffled order from (seed, epoch) alone, this process's shard of it, and a start offset
    so a run resumed mid-epoch continues with exactly the batches it had not seen.

    With world_size > 1 (torchrun) the order is padded by repetition to a multiple of
    world_size, as DistributedSampler does; evaluation uses its own exact sharding.
    """

    def __init__(self, size, seed, shuffle=True, rank=0, world_size=1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def full_order(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world_size)
        order += order[:per_rank * self.world_size - self.size]
        return order[self.rank::self.world_size]

    def __iter__(self):
        """(epoch, index) keys for EpochSeeded."""
        return iter([(self.epoch, index) for index in self.full_order()[self.start:]])

    def __len__(self):
        return len(self.full_order()) - self.start


def loader_workers(config, device):
    """DataLoader worker processes: config.workers, else 0 on a CPU (the cores train) and 4."""
    if config.workers is not None:
        return config.workers
    return 0 if device.type == "cpu" else 4


def cache_bytes(workers, processes=1):
    """What one dataset copy may cache: CACHE_MEMORY_SHARE of the machine's memory over every
    copy on it (the train set in each loader worker or in the process, the val set, in each of
    `processes` local processes). None where the memory size is unknown: no limit."""
    memory = utils.physical_memory()
    if memory is None:
        return None
    return int(CACHE_MEMORY_SHARE * memory / ((max(workers, 1) + 1) * max(processes, 1)))


def build_datasets(config, root, info, workers=0, processes=1):
    """(train set: augmented, seeded per (epoch, index); val set: whole images, read as
    evaluate.py reads them). With config.cache, each keeps decoded samples in memory up to
    cache_bytes(workers, processes): a large dataset is partly cached, never a memory error.
    With --overfit-batch or --dry-run, train is its first batch, and --overfit-batch validates
    on that very batch, unaugmented."""
    limit = cache_bytes(workers, processes)
    augment = config.augment and not config.overfit_batch  # overfit: one fixed batch
    train_transform = transforms.train_transform(
        crop_size=config.crop_size, scale=config.scale, flip=config.flip, rotate=config.rotate,
        jitter=config.jitter, noise=config.noise, ignore_index=config.ignore_index,
        image_size=config.image_size, augment=augment)
    train_set = SegmentationDataset(root, "train", info, transform=train_transform,
                                    cache=config.cache, cache_bytes=limit)
    val_set = SegmentationDataset(root, "val", info, cache=config.cache, cache_bytes=limit)
    train_set = EpochSeeded(train_set, config.seed)
    if config.overfit_batch or config.dry_run:
        first = Subset(train_set.dataset, range(min(config.batch_size, len(train_set))))
        train_set = EpochSeeded(first, config.seed, fixed=config.overfit_batch)
        val_set = Subset(val_set, range(min(config.batch_size, len(val_set))))
    if config.overfit_batch:
        val_set = train_set  # validate on the very batch being memorised
    return train_set, val_set


def quiet_worker(worker_id):
    """Ctrl-C is handled by the main process (which saves a checkpoint), not by workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def steps_per_epoch(train_images, batch_size, world_size=1):
    """Optimiser steps of one pass over the train images, as build_loader batches them."""
    per_rank = math.ceil(train_images / world_size)
    if train_images // world_size > batch_size:  # whole batches only (drop_last)
        return per_rank // batch_size
    return math.ceil(per_rank / batch_size)


def build_loader(config, train_set, device, rank=0, world_size=1):
    """The train loader: EpochSampler order (this rank's shard), whole batches."""
    workers = loader_workers(config, device)
    collate = functools.partial(transforms.pad_collate, ignore_index=config.ignore_index)
    # Drop a last partial batch: a batch of one breaks BatchNorm statistics.
    drop_last = len(train_set) // world_size > config.batch_size
    sampler = EpochSampler(len(train_set), config.seed, shuffle=not config.overfit_batch,
                           rank=rank, world_size=world_size)
    return DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                      drop_last=drop_last, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      worker_init_fn=quiet_worker)


# -------------------------------------------------------- runtime: device, precision, memory format

class Runtime:
    """Device, precision and memory format, decided once and asked by everything else."""

    def __init__(self, config, local_rank=0):
        self.device = utils.resolve_device(config.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
        self.dtype = utils.resolve_precision(self.device, config.amp)
        self.channels_last = utils.resolve_channels_last(self.device, config.channels_last)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return utils.autocast(self.device, self.dtype)

    def to_device(self, images, masks):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def inference_form(self, model):
        """The model as evaluate.py loads it (model.inference_model): BatchNorm folded, the
        weights cast once to this run's precision and layout. A copy; `model` is untouched."""
        return inference_model(utils.unwrapped(model), self.dtype, self.channels_last)

    def describe(self):
        return {"device": str(self.device), "precision": utils.precision_name(self.dtype),
                "channels_last": self.channels_last}


# ---------------------------------------------------------------- model, optimiser, schedule, loss

class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch of all ranks.

    torch.nn.SyncBatchNorm runs on GPUs only; this one also runs on CPU (gloo). The sums go
    through a differentiable all-reduce, so gradients are those of one big batch. With
    momentum None (recalibrate_batchnorm: every rank passes the same images) the statistics
    are the rank's own, which are then the same everywhere.
    """

    def forward(self, x):
        if not (self.training and utils.is_distributed()) or self.momentum is None:
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        values = x.float()
        local = torch.cat([values.sum((0, 2, 3)), values.square().sum((0, 2, 3)), count])
        total = utils.all_reduce_sum_with_grad(local)
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
    """BatchNorm over the global batch: SyncBatchNorm on GPUs, utils.GlobalBatchNorm2d on
    CPU. Parameter and buffer names are unchanged, so checkpoints stay plain SegNet ones."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_global_batchnorm(model)


def wrap_model(model, config, runtime, world_size):
    """The module the loop calls: DDP and/or torch.compile around the plain SegNet, which
    stays what checkpoints are saved from."""
    train_model = model
    if world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model,
                                                                device_ids=device_ids)
    return torch.compile(train_model) if config.compile else train_model


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
    decay then still reaches its end); plateau decides per validation."""
    def factor(step):
        warmup, total = config.warmup_steps, max(1, config.steps)
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


def dice_loss(logits, targets, ignore_index=255, eps=1.0, global_batch=False):
    """1 - mean soft Dice over classes, over the whole batch; ignored pixels count for nothing.
    global_batch: under DDP, all-reduce the sums (with their gradient), so that every rank's
    loss is the Dice of the global batch, as in one process (nnU-Net does the same); every rank
    must then call it the same number of times, as training steps do."""
    num_classes = logits.shape[1]
    valid = (targets != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    one_hot = F.one_hot(targets.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot * valid
    dims = (0, 2, 3)
    sums = torch.stack([(probs * one_hot).sum(dims), probs.sum(dims) + one_hot.sum(dims)])
    if global_batch:
        sums = utils.all_reduce_sum_with_grad(sums)
    intersection, cardinality = sums
    return 1 - ((2 * intersection + eps) / (cardinality + eps)).mean()


def build_criterion(config, info, device, global_batch=False):
    """criterion(logits, masks) for config.loss; global_batch: see dice_loss (training under
    DDP; validation scores each rank's own images and must not)."""
    weights = class_weights(info, config.class_weights)
    weights = weights.to(device) if weights is not None else None

    def criterion(logits, masks):
        logits = logits.float()
        loss = 0.0
        if config.loss in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, masks, weight=weights,
                                          ignore_index=config.ignore_index)
        if config.loss in ("dice", "ce+dice"):
            loss = loss + dice_loss(logits, masks, config.ignore_index, global_batch=global_batch)
        return loss
    return criterion, weights


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
    if not utils.is_distributed():
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
    """Train over the loader from batch state['batch'] (non-zero after a resume mid-epoch) to
    the epoch's end, or until state['global_step'] reaches until_step, or a signal. Returns an
    EpochResult: the mean loss over state's running sums (since they were last reset), img/s,
    seconds, whether a signal stopped it, and whether the epoch was finished."""
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
    totals = utils.all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(state["images"])]))
    mean_loss = totals[0].item() / max(totals[1].item(), 1)
    check_finite(mean_loss, state)
    return EpochResult(mean_loss, images_seen / max(elapsed, 1e-9), elapsed,
                       signalled and not config.dry_run, state["batch"] == total)


# ---------------------------------------------------------------- validation

def calibration_images(train_set, image_size=None, max_pixels=CALIBRATION_PIXELS):
    """Normalised train images [1, C, H, W], whole and unaugmented (resized with
    image_size, as training resizes), in a fixed shuffled order (neighbouring files are often
    alike: consecutive slices, one acquisition session), up to max_pixels and
    CALIBRATION_IMAGES images."""
    dataset = train_set
    while not isinstance(dataset, SegmentationDataset):  # EpochSeeded, Subset
        dataset = dataset.dataset
    pixels, images, generator = 0, 0, torch.Generator().manual_seed(0)
    for index in torch.randperm(len(dataset), generator=generator).tolist():
        image, mask = dataset.load_sample(index)
        if image_size:
            image, _ = transforms.resize_pair(image, mask, image_size)
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
    two drift by a few mIoU points (README, "The training plan"). Training itself is not
    affected: in train mode BatchNorm normalises with the batch's own statistics."""
    model = utils.unwrapped(model)
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
             max_batches=None, rank=0, world_size=1, images=None):
    """(mean val loss, utils.ConfusionMatrix) of `model` in its inference form
    (Runtime.inference_form) on the val split (or `images` of it, validation_indices), scored
    by inference.score_dataset: the path evaluate.py takes, so a checkpoint scores the same
    there as it did here. Under torchrun each rank scores every world_size-th image and the
    sums are all-reduced (each image counted once). criterion: build_criterion's, on the CPU
    (the probabilities come back there)."""
    indices = validation_indices(len(val_set), images)[rank::world_size]
    scores = score_dataset(model, val_set, num_classes, ignore_index, indices=indices,
                           dtype=runtime.dtype, image_size=image_size, criterion=criterion,
                           max_batches=max_batches)
    totals = utils.all_reduce_sum(torch.tensor([scores.loss_sum, scores.images],
                                               dtype=torch.float64, device=runtime.device))
    scores.confusion.all_reduce(runtime.device)
    return (totals[0] / totals[1].clamp(min=1)).item(), scores.confusion


def sample_predictions(model, val_set, runtime, count=NUM_SAMPLE_IMAGES):
    """(image, mask, prediction) for a fixed handful of validation images; model in its
    inference form."""
    samples = []
    for index in range(min(count, len(val_set))):
        image, mask = val_set[index]
        probs, _ = batch_probs(model, image[None], dtype=runtime.dtype)
        samples.append((image.numpy(), mask.numpy(), probs[0].argmax(0).numpy()))
    return samples


# ---------------------------------------------------------------- timing, for the plan

WARMUP_STEPS = 2

def synchronize(device):
    """Wait for queued GPU work, so that a timer sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


# ---------------------------------------------------------------- checkpoints: the training state

STATE_KEYS = ("epoch", "batch", "global_step", "best_metric", "best_epoch", "best_step",
              "stale", "loss_sum", "images", "seconds")


def new_state():
    """Training progress. epoch = completed epochs; batch = batches done in the epoch in
    flight (non-zero in a checkpoint written between epoch ends); seconds = the run's wall
    time when it was saved (a time budget counts it on resume)."""
    return {"epoch": 0, "batch": 0, "global_step": 0, "best_metric": -1.0, "best_epoch": 0,
            "best_step": 0, "stale": 0, "loss_sum": 0.0, "images": 0, "seconds": 0.0}


def make_checkpoint(model, optimizer, schedulers, runtime, state, info, run_args, plan):
    """A checkpoint that --resume continues exactly (utils.build_checkpoint with the training
    state: optimizer, schedules, scaler, progress, RNG states and the plan); run_args: the
    run's flags as plain data."""
    progress = {key: state[key] for key in STATE_KEYS}
    progress["loss_sum"] = float(progress["loss_sum"])
    training = {"optimizer": optimizer.state_dict(), "scheduler": schedulers[0].state_dict(),
                "plateau": schedulers[1].state_dict() if schedulers[1] else None,
                "scaler": runtime.scaler.state_dict(), **progress, "rng": utils.rng_states(),
                "plan": plan.to_dict()}
    return utils.build_checkpoint(model, info, training, run_args)


def restore(checkpoint, model, optimizer, schedulers, runtime, rank=0):
    """Load everything --resume needs; returns the training progress."""
    utils.unwrapped(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedulers[0].load_state_dict(checkpoint["scheduler"])
    if schedulers[1] is not None and checkpoint.get("plateau"):
        schedulers[1].load_state_dict(checkpoint["plateau"])
    if runtime.scaler.is_enabled() and checkpoint["scaler"]:  # empty when saved without fp16
        runtime.scaler.load_state_dict(checkpoint["scaler"])
    utils.set_rng_states(checkpoint["rng"])  # rank 0's; other ranks re-derive their own
    progress = dict(new_state(), **{key: checkpoint[key] for key in STATE_KEYS
                                    if key in checkpoint})  # older checkpoints lack some
    if rank:
        utils.seed_everything((checkpoint["args"]["seed"] + rank) * 1_000_003
                              + checkpoint["global_step"])
        progress.update(loss_sum=0.0, images=0)  # rank 0 holds the epoch's sums so far
    return progress
