"""bench.py's loader line: train.py's train loader over a synthetic dataset, from the files to a
batch on the device, for each worker count."""
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segnet.data.feed import loaders
from segnet.data.check.scan import scan_dataset


def write_synthetic_dataset(root, count, size, in_channels, num_classes):
    """ROOT/{train,val}/{images,masks}/*.png: random 8-bit images of size x size and index
    masks 0..num_classes-1 (1 val pair); quick to write, and as costly to augment as real data."""
    rng = np.random.default_rng(0)
    for split, number in (("train", count), ("val", 1)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(number):
            shape = (size, size, 3) if in_channels == 3 else (size, size)
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            mask = (np.arange(size * size).reshape(size, size) + index) % num_classes
            Image.fromarray(image).save(root / split / "images" / f"{index:04d}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / split / "masks" / f"{index:04d}.png")
    return root


def endless(loader):
    """A TrainBatches' batches, epoch after epoch, as training reads them."""
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def loader_rate(loader, batches, batch_size, device):
    """img/s of a loader (loaders.TrainBatches) over `batches` batches, each made ready on
    `device` as training makes it (files -> workers -> pinned batch -> device, and there the
    end of the augmentation where it runs on the device), after one untimed epoch (worker
    start-up, image decoding into the cache); epoch ends fall inside the timed batches, as in
    a run."""
    stream = endless(loader)
    for _ in range(len(loader)):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        images, masks = next(stream)
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def loader_images(args):
    """Train images for the loader measurement: an epoch of at least two batches a worker (as
    a real dataset gives them), so that no worker waits for the epoch's end. With 2 images a
    batch size, as before, 15 workers had 2 batches an epoch to share: they measured no faster
    than 4."""
    return args.batch_size * max(2, 2 * max([*args.loader_workers, loaders.default_workers()]))


def run_loader(args, device, project_config):
    """train.py's training loader (loaders.build_datasets + build_loader: the training
    transform at --size crops, its collate and pinning) for each worker count, and for the
    default count; project_config(args, workers=...) is bench's Plan of the project."""
    rates, default_workers = {}, None
    with tempfile.TemporaryDirectory() as folder:
        root = write_synthetic_dataset(Path(folder), loader_images(args), args.size,
                                       args.in_channels, args.num_classes)
        info = scan_dataset(root, in_channels=args.in_channels)
        for workers in [None, *args.loader_workers]:
            config = project_config(args, workers=workers)
            finish = loaders.finish_on_device(config, device)
            train_set, _ = loaders.build_datasets(config, root, info, device_finish=finish)
            loader = loaders.build_loader(config, train_set, device)
            if workers is None:
                default_workers = loader.num_workers
            if loader.num_workers not in rates:
                rates[loader.num_workers] = loader_rate(loader, args.loader_batches,
                                                        args.batch_size, device)
            del loader  # stops persistent workers before the next count starts its own
    return {"img_s": {str(w): rate for w, rate in sorted(rates.items())},
            "default_workers": default_workers,
            "augment_on": "device" if finish else "workers"}
