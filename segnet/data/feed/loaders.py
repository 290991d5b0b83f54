"""Training data: samples seeded per (epoch, index) so augmentation never depends on the worker
count or a resume, the epoch sampler (this rank's shard, a start offset), the train and val
sets with their memory cache, and the train loader. `config` is a plan.Plan."""
import functools
import math
import os
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from segnet.data.feed import augment, transforms
from segnet.data.feed.dataset import SegmentationDataset
from segnet.data.files.index import build_index
from segnet.runtime import physical_memory, seed_everything

CACHE_MEMORY_SHARE = 0.25  # of the machine's memory, for all the decoded-sample caches together
MAX_WORKERS = 16  # loader workers a process starts by default at most (memory, start-up)
MIN_DEVICE_SCALE = 0.25  # below this image scale the train augmentation stays in the workers
DEVICE_FINISH_ON_CPU = True  # the batched path on the CPU too: measured faster (docs/speed.md)


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
        seed_everything((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
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

    def full_order(self, epoch=None):
        """This rank's share of the order of `epoch` (default: the one set)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
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


class EpochBatches(Sampler):
    """Batches of (epoch, index) keys in EpochSampler's order, epoch after epoch without end,
    from a start (epoch, batch): one DataLoader iterator then serves a whole run, and its
    workers never drain and refill at an epoch's end, a validation or a save (a new iterator
    waits for every batch in flight and then for the first new one, which on a GPU showed as
    the img/s falling ten-fold every few dozen steps). drop_last: per epoch, as DataLoader's."""

    def __init__(self, sampler, batch_size, drop_last):
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.epoch, self.batch = 0, 0

    def start(self, epoch, batch=0):
        self.epoch, self.batch = epoch, batch

    def epoch_batches(self, epoch):
        order = [(epoch, index) for index in self.sampler.full_order(epoch)]
        size = self.batch_size
        stop = len(order) - len(order) % size if self.drop_last else len(order)
        return [order[start:start + size] for start in range(0, stop, size)]

    def per_epoch(self):
        return len(self.epoch_batches(0))

    def __iter__(self):
        epoch, skip = self.epoch, self.batch
        while True:
            yield from self.epoch_batches(epoch)[skip:]
            epoch, skip = epoch + 1, 0


class TrainBatches:
    """The train loader as one stream of batches for the whole run (EpochBatches), read an
    epoch's rest at a time (`epoch(epoch, batch)`): the iterator is only replaced when asked
    for another position than the next one (a resume). finish: augment.FinishBatch for a
    batch whose augmentation ends on the device, else None (the batch is ready)."""

    def __init__(self, loader, finish=None):
        self.loader, self.finish = loader, finish
        self.iterator, self.position = None, None

    def __len__(self):
        """Batches in one epoch."""
        return self.loader.batch_sampler.per_epoch()

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def num_workers(self):
        return self.loader.num_workers

    @property
    def batch_size(self):
        return self.loader.batch_sampler.batch_size

    def epoch(self, epoch, batch=0):
        """The batches of `epoch` from `batch` to its end (len() of them)."""
        return EpochRest(self, epoch, batch)

    def next_batch(self, epoch, batch):
        if self.position != (epoch, batch):
            self.loader.batch_sampler.start(epoch, batch)
            self.iterator = iter(self.loader)
        sample = next(self.iterator)
        self.position = (epoch, batch + 1) if batch + 1 < len(self) else (epoch + 1, 0)
        return self.finish(*sample) if self.finish else sample


class EpochRest:
    """TrainBatches.epoch's batches: iterable once, with a length."""

    def __init__(self, stream, epoch, batch):
        self.stream, self.epoch_index, self.start = stream, epoch, batch

    def __len__(self):
        return max(len(self.stream) - self.start, 0)

    def __iter__(self):
        for batch in range(self.start, len(self.stream)):
            yield self.stream.next_batch(self.epoch_index, batch)


def base_dataset(dataset):
    """The SegmentationDataset inside EpochSeeded / Subset wrappers."""
    while not isinstance(dataset, SegmentationDataset):
        dataset = dataset.dataset
    return dataset


def finish_on_device(config, device):
    """Whether the train augmentation ends on the device (augment.FinishBatch: workers decode
    and cut uint8 windows, the device resamples, jitters, adds noise and normalises a batch at
    once) rather than in the workers. On an accelerator, unless the plan first resizes images
    to a square (--image-size: done in the workers, antialiased) or shrinks them below
    MIN_DEVICE_SCALE (the windows would be many times the crop's size to copy), or validates
    on the train batch itself (--overfit-batch). On the CPU: DEVICE_FINISH_ON_CPU, the faster
    of the two as measured (docs/speed.md)."""
    if config.image_size or config.overfit_batch:
        return False
    low = (min(config.scale) if config.augment and config.scale else 1.0) * config.train_scale
    if low < MIN_DEVICE_SCALE:
        return False
    return device.type != "cpu" or DEVICE_FINISH_ON_CPU


def loader_workers(config, device):
    """DataLoader worker processes: config.workers, else 0 on a CPU (the cores train) and
    default_workers() on an accelerator."""
    if config.workers is not None:
        return config.workers
    return 0 if device.type == "cpu" else default_workers()


def default_workers(processes=None):
    """Loader workers of a process that trains on an accelerator: the cores it may use, shared
    among the local processes (torchrun's LOCAL_WORLD_SIZE), one core left to the process
    itself, at most MAX_WORKERS. A fixed 4 left 11 of an H200 machine's 16 cores idle while
    the GPU waited for batches."""
    processes = processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cores // max(processes, 1) - 1))


def cache_bytes(workers, processes=1):
    """What one dataset copy may cache: CACHE_MEMORY_SHARE of the machine's memory over every
    copy on it (the train set in each loader worker or in the process, the val set, in each of
    `processes` local processes). None where the memory size is unknown: no limit."""
    memory = physical_memory()
    if memory is None:
        return None
    return int(CACHE_MEMORY_SHARE * memory / ((max(workers, 1) + 1) * max(processes, 1)))


def build_datasets(config, root, info, workers=0, processes=1, device_finish=False,
                   index=None):
    """(train set: augmented, seeded per (epoch, index); val set: whole images, read as
    evaluate.py reads them). With config.cache, each keeps decoded samples in memory up to
    cache_bytes(workers, processes): a large dataset is partly cached, never a memory error.
    With --overfit-batch or --dry-run, train is its first batch, and --overfit-batch validates
    on that very batch, unaugmented. index: the run's files.index.DataIndex (built here, once
    for both sets, when not given)."""
    limit = cache_bytes(workers, processes)
    index = index or build_index(root, info["layout"], ("train", "val"), info.get("holdout"))
    augment = config.augment and not config.overfit_batch  # overfit: one fixed batch
    transform = train_transform(config, info, augment)
    if device_finish:
        transform = transforms.WorkerCrop(transform)
    train_set = SegmentationDataset(root, "train", info, transform=transform,
        cache=config.cache, cache_bytes=limit,
        class_sampling=config.class_sampling if augment else 0.0, index=index)
    val_set = SegmentationDataset(root, "val", info, cache=config.cache, cache_bytes=limit,
                                  index=index)
    train_set = EpochSeeded(train_set, config.seed)
    if config.overfit_batch or config.dry_run:
        first = Subset(train_set.dataset, range(min(config.batch_size, len(train_set))))
        train_set = EpochSeeded(first, config.seed, fixed=config.overfit_batch)
        val_set = Subset(val_set, range(min(config.batch_size, len(val_set))))
    if config.overfit_batch:
        val_set = train_set  # validate on the very batch being memorised
    return train_set, val_set


def train_transform(config, info, augment=True):
    """The plan's training transform: crop, training scale, flips, rotation, augmentation
    relative to the images' value range (info["intensity_range"])."""
    return transforms.train_transform(
        crop_size=config.crop_size, scale=config.scale, hflip=config.hflip and config.flip,
        vflip=config.vflip and config.flip, rotate=config.rotate, jitter=config.jitter,
        noise=config.noise, ignore_index=config.ignore_index, image_size=config.image_size,
        augment=augment, base_scale=config.train_scale,
        value_range=info.get("intensity_range") or (0.0, 1.0))


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
    """The train loader: EpochSampler order (this rank's shard), whole batches, one stream for
    the run (TrainBatches); batches finished on the device when the train set's transform is
    a transforms.WorkerCrop (build_datasets with device_finish)."""
    workers = loader_workers(config, device)
    dataset = base_dataset(train_set)
    finish = None
    if getattr(dataset.transform, "packed", False):
        collate = functools.partial(augment.crop_collate, ignore_index=config.ignore_index)
        finish = augment.FinishBatch(dataset.transform.transform,
                                     dataset.info["normalization"], device)
    else:
        collate = functools.partial(transforms.pad_collate, ignore_index=config.ignore_index)
    # Drop a last partial batch: a batch of one breaks BatchNorm statistics.
    drop_last = len(train_set) // world_size > config.batch_size
    sampler = EpochSampler(len(train_set), config.seed, shuffle=not config.overfit_batch,
                           rank=rank, world_size=world_size)
    batches = EpochBatches(sampler, config.batch_size, drop_last)
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0, worker_init_fn=quiet_worker)
    return TrainBatches(loader, finish)
