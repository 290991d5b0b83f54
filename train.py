"""Train SegNet on data/{train,val}/{images,masks}: `python train.py` (demo data) or
`python train.py --data path/to/data`. Writes a run folder with config, log, metrics, curves,
sample pictures and checkpoints; `--resume` continues a run exactly where it stopped."""
import argparse
import csv
import datetime
import functools
import json
import math
import platform
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm import tqdm

import dataset as data
import utils
from model import SegNet, load_vgg16_bn_encoder

DEFAULT_DATA = Path(__file__).resolve().parent / "data"
AUTO_RESUME = Path("auto")  # --resume auto
# What a run writes before its first checkpoint: --resume auto may start afresh over these.
RUN_LEFTOVERS = ("config.json", "train.log", "metrics.csv", "curves.png",
                 "val_samples_epoch*.png", ".*.tmp*")
NUM_SAMPLE_IMAGES = 4


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=utils.HelpFormatter)
    add = parser.add_argument
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=None,
                       help="dataset root with {train,val}/{images,masks}; default: ./data, "
                            "where the demo set is generated if it has no train split")
    group.add_argument("--num-classes", type=int, default=None,
                       help="number of classes (default: inferred from the training masks)")
    group.add_argument("--in-channels", type=int, default=1, choices=[1, 3],
                       help="1 = grayscale (RGB files converted), 3 = RGB")
    group.add_argument("--class-table", type=Path, default=None,
                       help="JSON class table (names, colours, void) for RGB colour masks")
    group.add_argument("--mask-threshold", type=int, default=None,
                       help="binarise single-channel masks at this value (e.g. 128 for JPEG masks)")
    group.add_argument("--ignore-index", type=int, default=255,
                       help="mask value that is excluded from loss and metrics")
    group.add_argument("--crop-size", type=int, default=64,
                       help="random training crop (pixels, square); 0 = whole images")
    group.add_argument("--image-size", type=int, default=None,
                       help="resize images (and masks, nearest) to this square size for "
                            "training and validation; default: native size")
    group.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.25),
                       metavar=("MIN", "MAX"), help="random scale range before cropping")
    group.add_argument("--no-flip", action="store_true", help="disable random h/v flips")
    group.add_argument("--rotate", type=float, default=15.0,
                       help="random rotation range in degrees (+-); 0 disables")
    group.add_argument("--jitter", type=float, default=0.2,
                       help="brightness/contrast/gamma jitter strength; 0 disables")
    group.add_argument("--noise", type=float, default=0.02,
                       help="std of added gaussian noise (images in [0,1]); 0 disables")
    group.add_argument("--no-augment", action="store_true",
                       help="disable all augmentation except cropping")
    group.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                       help="keep decoded training images in memory (small datasets)")
    group.add_argument("--workers", type=int, default=None,
                       help="DataLoader worker processes (default: 0 on CPU, where workers "
                            "compete with compute threads; 4 on GPU)")

    group = parser.add_argument_group("model")
    group.add_argument("--dropout", type=float, default=0.0,
                       help="Bayesian SegNet dropout on the two deepest encoder/decoder stages "
                            "(the paper uses 0.5); 0 = plain SegNet")
    group.add_argument("--encoder-weights", type=Path, default=None,
                       help="VGG16-BN state dict (torchvision key format) to initialise the "
                            "encoder from; see README")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=12, help="number of epochs")
    group.add_argument("--batch-size", type=int, default=8, help="images per step (per process)")
    group.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    group.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adamw",
                       help="the paper used SGD with momentum; AdamW converges faster here")
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / Adam beta1")
    group.add_argument("--weight-decay", type=float, default=1e-4,
                       help="L2 penalty on all parameters (decoupled for adamw)")
    group.add_argument("--scheduler", choices=["none", "cosine", "poly", "step", "plateau"],
                       default="cosine", help="learning-rate schedule after warm-up")
    group.add_argument("--warmup-epochs", type=float, default=0.5,
                       help="linear warm-up length in epochs (fractions allowed)")
    group.add_argument("--step-size", type=int, default=10, help="epochs per decay (step)")
    group.add_argument("--gamma", type=float, default=0.1, help="decay factor (step, plateau)")
    group.add_argument("--loss", choices=["ce", "dice", "ce+dice"], default="ce",
                       help="cross-entropy, soft Dice, or their sum (Dice helps rare classes)")
    group.add_argument("--class-weights", choices=["none", "median-freq", "inverse"],
                       default="none", help="class weighting of the cross-entropy")
    group.add_argument("--grad-clip", type=float, default=0.0,
                       help="clip the gradient norm to this value; 0 disables")

    group = parser.add_argument_group("hardware")
    group.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                       help="auto = CUDA if available (under torchrun: this process's GPU), "
                            "else MPS, else CPU")
    group.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                       help="mixed precision; auto = bf16 where the hardware has it natively, "
                            "fp16 on older GPUs, fp32 otherwise")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory format (default: on for CPU and CUDA)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm statistics over the global batch "
                            "(SyncBatchNorm on GPUs, an all-reduce BatchNorm on CPU)")
    group.add_argument("--dist-timeout", type=int, default=600,
                       help="seconds a collective waits for the other ranks before the job "
                            "fails (torchrun only)")
    group.add_argument("--seed", type=int, default=0,
                       help="seeds weights, data order and augmentation (rank r uses seed + r "
                            "for dropout)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms (bit-exact resume on CPU)")

    group = parser.add_argument_group("run")
    group.add_argument("--out", type=Path, default=None,
                       help="run folder (default: runs/<timestamp>); an existing run is "
                            "never overwritten")
    group.add_argument("--resume", type=Path, default=None,
                       help="checkpoint (or run folder, meaning its last.pt) to continue from; "
                            "'auto': the newest checkpoint in --out that loads, or a new run "
                            "there if it has none (a job that reruns one command after a crash "
                            "or pre-emption)")
    group.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    group.add_argument("--save-every", type=int, default=1, help="write last.pt every N epochs")
    group.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                       help="stop after PATIENCE validations without a better mIoU; 0 = never")
    group.add_argument("--dry-run", action="store_true",
                       help="one training and one validation batch, then stop")
    group.add_argument("--overfit-batch", action="store_true",
                       help="train and validate on one fixed batch (sanity check: loss -> 0)")
    group.add_argument("--log-every", type=int, default=20,
                       help="steps between log lines when output is not a terminal")
    return parser


# ---------------------------------------------------------------- start-up checks

def validate_args(args):
    """Reject impossible flag values before any work starts."""
    positive = {"epochs": args.epochs, "batch-size": args.batch_size,
                "eval-every": args.eval_every, "save-every": args.save_every,
                "log-every": args.log_every, "step-size": args.step_size,
                "dist-timeout": args.dist_timeout}
    non_negative = {"weight-decay": args.weight_decay, "grad-clip": args.grad_clip,
                    "warmup-epochs": args.warmup_epochs, "rotate": args.rotate,
                    "jitter": args.jitter, "noise": args.noise, "early-stop": args.early_stop,
                    "crop-size": args.crop_size}
    problems = [f"--{name} must be >= 1, got {value}" for name, value in positive.items()
                if value < 1]
    problems += [f"--{name} must be >= 0, got {value}" for name, value in non_negative.items()
                 if value < 0]
    if not (args.lr > 0 and math.isfinite(args.lr)):
        problems.append(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.momentum < 1:
        problems.append(f"--momentum must be in [0, 1), got {args.momentum}")
    if not 0 < args.gamma <= 1:
        problems.append(f"--gamma must be in (0, 1], got {args.gamma}")
    if not 0 < args.scale[0] <= args.scale[1] < math.inf:
        problems.append(f"--scale must be 0 < MIN <= MAX (finite), got {args.scale}")
    problems += [f"--{name} must be a finite number, got {value}" for name, value in
                 non_negative.items() if not math.isfinite(value)]  # NaN passes `< 0`
    if not args.rotate <= 180:
        problems.append(f"--rotate must be in [0, 180] degrees, got {args.rotate}")
    if not args.jitter < 1:
        problems.append(f"--jitter must be in [0, 1), got {args.jitter}")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if args.num_classes is not None and not 2 <= args.num_classes <= data.MAX_MASK_VALUE:
        problems.append(f"--num-classes must be in 2..{data.MAX_MASK_VALUE} (binary is 2), got "
                        f"{args.num_classes}")
    if args.image_size is not None and args.image_size < 8:
        problems.append(f"--image-size must be >= 8, got {args.image_size}")
    if 0 < args.crop_size < 8:
        problems.append(f"--crop-size must be 0 (whole images) or >= 8, got {args.crop_size}")
    if args.workers is not None and args.workers < 0:
        problems.append(f"--workers must be >= 0, got {args.workers}")
    if not 0 <= args.ignore_index <= 255 and args.ignore_index != -100:
        problems.append(f"--ignore-index must be in 0..255 (or -100), got {args.ignore_index}")
    if not 0 <= args.dropout < 1:
        problems.append(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.encoder_weights is not None and not args.encoder_weights.is_file():
        problems.append(f"--encoder-weights {args.encoder_weights} does not exist")
    if args.class_table is not None and not args.class_table.is_file():
        problems.append(f"--class-table {args.class_table} does not exist")
    if args.resume == AUTO_RESUME and args.out is None:
        problems.append("--resume auto needs --out: the run folder to continue (or start)")
    elif args.resume is not None and args.resume != AUTO_RESUME and not args.resume.exists():
        problems.append(f"--resume {args.resume} does not exist")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} is a file, not a folder")
    try:  # a missing GPU is found now, not after the run folder is made
        utils.resolve_precision(utils.resolve_device(args.device), args.amp)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def resolve_data_root(args, log):
    """--data given: it must exist. Not given: ./data, generating the demo set if needed."""
    if args.data is not None:
        if not args.data.is_dir():
            raise SystemExit(f"error: --data {args.data} is not a folder (expected "
                             f"{args.data}/train/images and {args.data}/train/masks)")
        return args.data
    if not (DEFAULT_DATA / "train").is_dir() and is_main():
        log(f"no dataset in {DEFAULT_DATA}: generating the demo dataset there "
            f"(python dataset.py make-demo {DEFAULT_DATA})")
        data.make_demo(DEFAULT_DATA, seed=0)
    barrier()  # other ranks wait for rank 0's demo set
    return DEFAULT_DATA


def check_crop_fits(args, info):
    """A crop larger than every training image can never be filled: stop now, not later."""
    sizes = (info.get("image_sizes") or {}).get("train")
    if args.crop_size == 0 or args.image_size or not sizes:
        return
    largest = min(sizes["max"])  # no image's short side exceeds the smaller of the maxima
    if args.crop_size > largest:
        raise SystemExit(f"error: --crop-size {args.crop_size} is larger than every training "
                         f"image (largest {sizes['max'][0]}x{sizes['max'][1]}); use "
                         f"--crop-size <= {largest}, or 0 for whole images")


# ---------------------------------------------------------------- run folder

def choose_run_folder(args, allow_leftovers=False):
    """--out, the resumed run's folder, or runs/<timestamp>; never an existing run.
    allow_leftovers: --resume auto found a run that died before its first checkpoint."""
    if args.resume is not None and args.out is None:
        checkpoint_path = resolve_resume_path(args.resume)
        return checkpoint_path.parent
    if args.out is not None:
        if (args.resume is None and not allow_leftovers and args.out.exists()
                and any(args.out.iterdir())):
            raise SystemExit(f"error: --out {args.out} already holds a run; pass --resume "
                             f"{args.out} to continue it, or choose another --out")
        return args.out
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, suffix = Path("runs") / stamp, 1
    while folder.exists():
        folder, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
    return folder


def resolve_resume_path(path):
    path = Path(path)
    return path / "last.pt" if path.is_dir() else path


def resolve_auto_resume(args):
    """--resume auto: set args.resume to the newest checkpoint in --out that loads (most
    training steps; last.pt on a tie), or to None when there is none. Returns True when a new
    run may start in a folder holding what a run writes before its first checkpoint."""
    if args.resume != AUTO_RESUME:
        return False
    loaded, broken = [], []
    for path in (args.out / "last.pt", args.out / "best.pt"):
        if not path.is_file():
            continue
        try:
            loaded.append((utils.load_checkpoint(path).get("global_step", -1), path))
        except ValueError as error:
            broken.append(str(error))
    if loaded:
        args.resume = max(loaded, key=lambda item: item[0])[1]
        for message in broken:
            print(f"warning: {message}; resuming from {args.resume} instead", file=sys.stderr)
        return False
    if broken:
        raise SystemExit(f"error: --resume auto: no checkpoint in {args.out} loads:\n"
                         + "\n".join(broken) + "\nmove them away to start a new run there")
    others = sorted(path.name for path in args.out.iterdir()
                    if not any(path.match(pattern) for pattern in RUN_LEFTOVERS)
                    ) if args.out.is_dir() else []
    if others:
        raise SystemExit(f"error: --resume auto: {args.out} has no checkpoint but holds files "
                         f"a run does not write ({', '.join(others[:5])}); choose another --out")
    args.resume = None
    return True


def remove_temp_files(run_dir, log):
    """Delete temp files left by a run killed mid-write (.last.pt.tmp-<pid>, ...): none is
    ever read, and a checkpoint's is as large as the checkpoint."""
    for path in sorted(run_dir.glob(".*.tmp*")):
        if path.is_file():
            path.unlink()
            log(f"removed {path.name}, left by a run that stopped while writing it")


class Logger:
    """Print and append to train.log; the file is flushed every line."""

    def __init__(self, path=None, quiet=False):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.quiet = quiet

    def __call__(self, message):
        if self.quiet:
            return
        tqdm.write(message) if sys.stdout.isatty() else print(message, flush=True)
        if self.file:
            self.file.write(message + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()


def git_commit():
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def write_json(path, payload):
    with utils.atomic_write(path, encoding="utf-8") as handle:
        handle.write(json.dumps(payload, indent=2, default=str) + "\n")


def metric_columns(class_names):
    return (["epoch", "train_loss", "val_loss", "pixel_acc", "mean_acc", "miou", "mean_dice"]
            + [f"iou_{name}" for name in class_names] + ["lr", "seconds", "img/s"])


def read_metrics(path, up_to_epoch):
    """Rows of metrics.csv up to (and including) an epoch: a resumed run drops later rows."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) <= up_to_epoch]


def write_metrics(path, rows, columns):
    """Rewrite metrics.csv atomically, so a crash never leaves a torn or duplicated row."""
    with utils.atomic_write(path, newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- data

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


class Compose:
    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, image, mask):
        for transform in self.transforms:
            image, mask = transform(image, mask)
        return image, mask


def build_datasets(args, root, info):
    augment = not (args.no_augment or args.overfit_batch)  # overfit: one fixed batch
    flip = augment and not args.no_flip
    train_transform = data.TrainTransform(
        crop_size=args.crop_size or None, scale=tuple(args.scale) if augment else None,
        hflip=flip, vflip=flip, rotate=args.rotate if augment else 0,
        jitter=args.jitter if augment else 0, noise=args.noise if augment else 0,
        ignore_index=args.ignore_index)
    if args.image_size:
        train_transform = Compose(data.EvalTransform(args.image_size), train_transform)
    eval_transform = data.EvalTransform(args.image_size)
    train_set = data.SegmentationDataset(root, "train", info, transform=train_transform,
                                         cache=args.cache)
    val_set = data.SegmentationDataset(root, "val", info, transform=eval_transform,
                                       cache=args.cache)
    return EpochSeeded(train_set, args.seed), val_set


def quiet_worker(worker_id):
    """Ctrl-C is handled by the main process (which saves a checkpoint), not by workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loaders(args, train_set, val_set, device, rank=0, world_size=1):
    """Train loader (EpochSampler, whole batches; this rank's shard) and val loader (fixed
    order; under torchrun each rank gets every world_size-th image, none twice)."""
    workers = args.workers if args.workers is not None else (0 if device.type == "cpu" else 4)
    collate = functools.partial(data.pad_collate, ignore_index=args.ignore_index)
    common = dict(num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                  persistent_workers=workers > 0, worker_init_fn=quiet_worker)
    if args.overfit_batch or args.dry_run:
        first = Subset(train_set.dataset, range(min(args.batch_size, len(train_set))))
        train_set = EpochSeeded(first, train_set.seed, fixed=args.overfit_batch)
        val_set = Subset(val_set, range(min(args.batch_size, len(val_set))))
    if args.overfit_batch:
        val_set = train_set  # validate on the very batch being memorised
    # Drop a last partial batch: a batch of one breaks BatchNorm statistics.
    drop_last = len(train_set) // world_size > args.batch_size
    sampler = EpochSampler(len(train_set), args.seed, shuffle=not args.overfit_batch,
                           rank=rank, world_size=world_size)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                              drop_last=drop_last, **common)
    val_shard = Subset(val_set, range(rank, len(val_set), world_size))
    val_loader = DataLoader(val_shard, batch_size=val_batch_size(args, val_set), shuffle=False,
                            **common)
    return train_loader, val_loader


def val_batch_size(args, val_set):
    """--batch-size, or 1 when val images differ in size: padding a smaller image in a batch
    would change its border predictions, so scores would depend on the batching."""
    if args.image_size or args.overfit_batch or not isinstance(val_set, data.SegmentationDataset):
        return args.batch_size
    sizes = val_set.info["image_sizes"].get(val_set.split)
    return 1 if sizes and sizes["min"] != sizes["max"] else args.batch_size


# ---------------------------------------------------------------- model and optimisation

def build_optimizer(args, model, device):
    """Fused (one kernel for all parameters) on CPU and CUDA: on a 2-core CPU the unfused
    AdamW step took 0.3-0.6 s per step, the fused one 0.05-0.07 s."""
    params = model.parameters()
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                               weight_decay=args.weight_decay, nesterov=args.momentum > 0,
                               **fused)
    optimizer_class = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(params, lr=args.lr, betas=(args.momentum, 0.999),
                           weight_decay=args.weight_decay, **fused)


def build_scheduler(args, optimizer, steps_per_epoch):
    """Per-step linear warm-up, then the chosen decay (per step; plateau per validation)."""
    total = max(1, args.epochs * steps_per_epoch)
    warmup = int(args.warmup_epochs * steps_per_epoch)

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if args.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if args.scheduler == "poly":
            return max(0.0, 1 - progress) ** 0.9
        if args.scheduler == "step":
            return args.gamma ** (step // (args.step_size * steps_per_epoch))
        return plateau.scale if plateau else 1.0  # none; plateau: its cuts so far

    plateau = PlateauScale(args.gamma) if args.scheduler == "plateau" else None
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


def build_criterion(args, info, device):
    weights = utils.class_weights(info, args.class_weights)
    weights = weights.to(device) if weights is not None else None

    def criterion(logits, masks):
        logits = logits.float()
        loss = 0.0
        if args.loss in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, masks, weight=weights,
                                          ignore_index=args.ignore_index)
        if args.loss in ("dice", "ce+dice"):
            loss = loss + utils.dice_loss(logits, masks, args.ignore_index)
        return loss
    return criterion, weights


class Runtime:
    """Device, precision and memory format, decided once and asked by everything else."""

    def __init__(self, args, local_rank=0):
        self.device = utils.resolve_device(args.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
        self.dtype = utils.resolve_precision(self.device, args.amp)
        self.channels_last = utils.resolve_channels_last(self.device, args.channels_last)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        if self.device.type == "cpu":
            utils.tune_cpu_allocator()

    def autocast(self):
        return utils.autocast(self.device, self.dtype)

    def to_device(self, images, masks):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def describe(self):
        return {"device": str(self.device), "precision": utils.precision_name(self.dtype),
                "channels_last": self.channels_last}


# ---------------------------------------------------------------- loops

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


def train_one_epoch(model, loader, criterion, optimizer, scheduler, runtime, state, args,
                    stop, log):
    """One pass over the training loader from batch state['batch'] (non-zero after a resume
    mid-epoch). Returns (mean loss, img/s, seconds, interrupted by a signal mid-epoch)."""
    model.train()
    total = state["batch"] + len(loader)
    loss_sum = torch.tensor(state["loss_sum"], dtype=torch.float64, device=runtime.device)
    images_seen, start = 0, time.perf_counter()
    bar = tqdm(total=total, initial=state["batch"], desc=f"epoch {state['epoch'] + 1}",
               leave=False, disable=not sys.stdout.isatty(), dynamic_ncols=True)
    for images, masks in loader:
        images, masks = runtime.to_device(images, masks)
        with runtime.autocast():
            loss = criterion(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        runtime.scaler.scale(loss).backward()
        if args.grad_clip:
            runtime.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        runtime.scaler.step(optimizer)
        runtime.scaler.update()
        scheduler.step()
        loss_sum += loss.detach().double() * images.shape[0]
        images_seen += images.shape[0]
        state["batch"] += 1
        state["global_step"] += 1
        state["images"] += images.shape[0]
        bar.update(1)
        if state["batch"] % args.log_every == 0 or state["batch"] == total:
            current = loss.item()  # the only host sync of a step, and only when logging
            check_finite(current, state)
            report_progress(bar, log, state, current, images_seen, start, total, args)
        state["loss_sum"] = loss_sum  # a tensor until the epoch ends or a checkpoint is made
        if (stop_requested(stop) and state["batch"] < total) or args.dry_run:
            break
    bar.close()
    elapsed = time.perf_counter() - start
    totals = utils.all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(state["images"])]))
    mean_loss = totals[0].item() / max(totals[1].item(), 1)
    check_finite(mean_loss, state)
    interrupted = state["batch"] < total and not args.dry_run
    return mean_loss, images_seen / max(elapsed, 1e-9), elapsed, interrupted


def stop_requested(stop):
    """A signal seen by any rank stops every rank at the same step (they must agree, or the
    next collective would wait forever)."""
    if not utils.is_distributed():
        return stop.signal is not None
    flag = torch.tensor([float(stop.signal is not None)])
    torch.distributed.all_reduce(flag, group=CPU_GROUP.get())
    if flag.item() and stop.signal is None:
        stop.signal = "a signal on another rank"
    return bool(flag.item())


class _CpuGroup:
    """A gloo group for tiny CPU-side agreements (works beside nccl without a GPU sync)."""

    def __init__(self):
        self.group = None

    def get(self):
        if self.group is None:
            self.group = torch.distributed.new_group(backend="gloo")
        return self.group


CPU_GROUP = _CpuGroup()


def check_finite(loss, state):
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} at epoch {state['epoch'] + 1}, step "
            f"{state['global_step']}: lower --lr, set --grad-clip, or use --amp off; the last "
            f"good checkpoint is kept")


def report_progress(bar, log, state, loss, images_seen, start, total, args):
    rate = images_seen / max(time.perf_counter() - start, 1e-9)
    if not bar.disable:
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        return
    remaining = (total - state["batch"]) * args.batch_size / max(rate, 1e-9)
    log(f"  epoch {state['epoch'] + 1} step {state['batch']}/{total} loss {loss:.4f} "
        f"{rate:.1f} img/s eta {remaining:.0f}s")


@torch.inference_mode()
def evaluate(model, loader, criterion, runtime, num_classes, ignore_index, dry_run=False):
    """Validation loss and the confusion matrix over the whole loader (on the device)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=runtime.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    count = 0
    for images, masks in loader:
        images, masks = runtime.to_device(images, masks)
        with runtime.autocast():
            logits = model(images)
        loss_sum += criterion(logits, masks).double() * images.shape[0]
        count += images.shape[0]
        confusion += utils.confusion_matrix(logits.argmax(1), masks, num_classes, ignore_index)
        if dry_run:
            break
    # Under torchrun each rank saw its own shard: sum them (each image counted once).
    totals = utils.all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(count)]))
    utils.all_reduce_sum(confusion)
    return (totals[0] / totals[1].clamp(min=1)).item(), confusion


@torch.inference_mode()
def sample_predictions(model, val_set, runtime, count=NUM_SAMPLE_IMAGES):
    """(image, mask, prediction) for a fixed handful of validation images."""
    model.eval()
    samples = []
    for index in range(min(count, len(val_set))):
        image, mask = val_set[index]
        images, _ = runtime.to_device(image[None], mask[None])
        with runtime.autocast():
            pred = model(images).argmax(1)[0].cpu().numpy()
        samples.append((image.numpy(), mask.numpy(), pred))
    return samples


# ---------------------------------------------------------------- checkpoints

STATE_KEYS = ("epoch", "batch", "global_step", "best_metric", "best_epoch", "stale",
              "loss_sum", "images")


def new_state():
    """Training progress. epoch = completed epochs; batch = batches done in the epoch in
    flight (non-zero only in a checkpoint written on SIGINT/SIGTERM)."""
    return {"epoch": 0, "batch": 0, "global_step": 0, "best_metric": -1.0, "best_epoch": 0,
            "stale": 0, "loss_sum": 0.0, "images": 0}


def make_checkpoint(model, optimizer, schedulers, runtime, state, args, info):
    progress = {key: state[key] for key in STATE_KEYS}
    progress["loss_sum"] = float(progress["loss_sum"])
    return {
        "format_version": utils.CHECKPOINT_VERSION,
        "model_args": utils.unwrapped(model).constructor_args(),
        "model": utils.unwrapped(model).state_dict(),
        "data": data_metadata(info),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedulers[0].state_dict(),
        "plateau": schedulers[1].state_dict() if schedulers[1] else None,
        "scaler": runtime.scaler.state_dict(),
        **progress,
        "rng": utils.rng_states(),
        "args": plain_args(args),
    }


def plain_args(args):
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()}


def data_metadata(info):
    """What evaluate/predict need to rebuild the data pipeline exactly as in training."""
    keys = ("in_channels", "ignore_index", "num_classes", "class_names", "class_colors",
            "mask_decoding", "normalization")
    return {key: info[key] for key in keys}


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
    progress = {key: checkpoint[key] for key in STATE_KEYS}
    if rank:
        utils.seed_everything((checkpoint["args"]["seed"] + rank) * 1_000_003
                              + checkpoint["global_step"])
        progress.update(loss_sum=0.0, images=0)  # rank 0 holds the epoch's sums so far
    return progress


def check_resume_compatible(checkpoint, info, args, path):
    """Resuming on other data, or with another optimizer, cannot continue the same run."""
    saved = checkpoint["data"]
    for key in ("num_classes", "in_channels", "class_names", "mask_decoding"):
        if saved[key] != info[key]:
            raise SystemExit(f"error: --resume {path} was trained with {key}={saved[key]!r} "
                             f"but the data now gives {info[key]!r}; resume on the same data")
    for key in ("optimizer", "scheduler", "batch_size"):
        before = checkpoint.get("args", {}).get(key)
        if before is not None and before != getattr(args, key):
            raise SystemExit(f"error: --resume {path} was trained with --{key.replace('_', '-')}"
                             f" {before}, not {getattr(args, key)}; pass the same value")


def save_checkpoint(path, model, optimizer, schedulers, runtime, state, args, info):
    utils.save_checkpoint(path, make_checkpoint(model, optimizer, schedulers, runtime, state,
                                                args, info))


# ---------------------------------------------------------------- main

def setup(args):
    """Everything that can fail on bad input, checked before the first step."""
    validate_args(args)
    allow_leftovers = resolve_auto_resume(args)
    run_dir = choose_run_folder(args, allow_leftovers) if is_main() else None
    root = resolve_data_root(args, Logger())
    try:
        info = data.scan_dataset(root, in_channels=args.in_channels,
                                 num_classes=args.num_classes, class_table=args.class_table,
                                 mask_threshold=args.mask_threshold,
                                 ignore_index=args.ignore_index)
    except data.DataError as error:
        raise SystemExit(f"error: {error}\n(run `python dataset.py check {root}` for a full "
                         f"report)") from None
    check_crop_fits(args, info)
    checkpoint = None
    if args.resume is not None:
        resume_path = resolve_resume_path(args.resume)
        try:
            checkpoint = utils.load_checkpoint(resume_path)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}") from None
        check_resume_compatible(checkpoint, info, args, resume_path)
    model = build_model(args, info, checkpoint)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, root, info, checkpoint, model


def build_model(args, info, checkpoint):
    """SegNet for the data; the encoder from VGG16-BN weights when asked (not on resume)."""
    dropout = checkpoint["model_args"]["dropout"] if checkpoint else args.dropout
    model = SegNet(in_channels=info["in_channels"], num_classes=info["num_classes"],
                   dropout=dropout)
    if args.encoder_weights is not None and checkpoint is None:
        try:
            load_vgg16_bn_encoder(model, args.encoder_weights)
        except (ValueError, RuntimeError) as error:
            raise SystemExit(f"error: --encoder-weights {args.encoder_weights}: {error}") from None
    return model


def write_config(run_dir, args, info, runtime, root, world_size=1):
    config = {
        "args": plain_args(args),
        "data_root": str(root),
        **data_metadata(info),
        "splits": info.get("splits"),
        "runtime": dict(runtime.describe(), world_size=world_size,
                        global_batch_size=args.batch_size * world_size),
        "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "git_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_json(run_dir / "config.json", config)


def main(args):
    """Train; returns 0, or 130 after SIGINT/SIGTERM (checkpoint saved). Under torchrun each
    process runs this with its own rank; only rank 0 writes the run folder."""
    rank, world_size, local_rank = utils.init_distributed(args.device, args.dist_timeout)
    try:
        return train(args, rank, world_size, local_rank)
    finally:
        if utils.is_distributed():
            torch.distributed.destroy_process_group()


def train(args, rank, world_size, local_rank):
    utils.seed_everything(args.seed)  # the same initial weights on every rank
    run_dir, root, info, checkpoint, model = setup(args)
    log = Logger(run_dir / "train.log") if is_main() else Logger(quiet=True)
    if is_main():
        remove_temp_files(run_dir, log)
    utils.seed_everything(args.seed + rank)  # dropout differs per rank; augmentation does not
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    runtime = Runtime(args, local_rank)
    train_set, val_set = build_datasets(args, root, info)
    train_loader, val_loader = build_loaders(args, train_set, val_set, runtime.device, rank,
                                             world_size)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1 and args.sync_bn:  # before the optimizer: it must see the new modules
        model = global_batchnorm(model, runtime.device)
    optimizer = build_optimizer(args, model, runtime.device)
    schedulers = build_scheduler(args, optimizer, len(train_loader))
    criterion, weights = build_criterion(args, info, runtime.device)
    state = new_state()
    if checkpoint is not None:
        state = restore(checkpoint, model, optimizer, schedulers, runtime, rank)
        log(f"resumed from {resolve_resume_path(args.resume)}: {state['epoch']} epochs done"
            + (f" and {state['batch']} batches of the next" if state["batch"] else ""))
    if is_main():
        write_config(run_dir, args, info, runtime, root, world_size)
    log_start(log, run_dir, root, info, runtime, args, train_set, val_set, weights, world_size)
    run = Run(model=model, train_model=wrap_model(model, args, runtime, world_size),
              optimizer=optimizer, schedulers=schedulers, criterion=criterion,
              runtime=runtime, args=args, info=info, run_dir=run_dir, log=log,
              stop=StopFlag())
    run.stop.install()
    try:
        fit(run, train_loader, val_loader, val_set, state)
    except Interrupted as interruption:
        log(f"{interruption}: saved {run_dir / 'last.pt' if run_dir else 'last.pt'} "
            f"({state['epoch']} epochs and {state['batch']} batches done); continue with: "
            f"python train.py --resume {run_dir}")
        return 130
    finally:
        log.close()
    return 0


def global_batchnorm(model, device):
    """BatchNorm over the global batch: SyncBatchNorm on GPUs, utils.GlobalBatchNorm2d on
    CPU. Parameter and buffer names are unchanged, so checkpoints stay plain SegNet ones."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return utils.convert_global_batchnorm(model)


def wrap_model(model, args, runtime, world_size):
    """The module the loop calls: DDP and/or torch.compile around the plain SegNet, which
    stays what checkpoints are saved from."""
    train_model = model
    if world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model,
                                                                device_ids=device_ids)
    return torch.compile(train_model) if args.compile else train_model


def is_main():
    """Rank 0 (or the only process): the one that prints and writes files."""
    return not utils.is_distributed() or torch.distributed.get_rank() == 0


def barrier():
    if utils.is_distributed():
        torch.distributed.barrier()


class Run(types.SimpleNamespace):
    """The pieces of one training run that every epoch needs (model, optimizer, ...)."""

    def save(self, name, state):
        """Rank 0 writes; the model saved is the plain SegNet, never the DDP wrapper.
        Every rank calls it (at points they agree on): a mid-epoch checkpoint holds the loss
        sum and image count of all ranks, which restore() gives back to rank 0 alone."""
        if utils.is_distributed() and state["batch"]:
            totals = utils.all_reduce_sum(torch.tensor(
                [float(state["loss_sum"]), float(state["images"])], dtype=torch.float64,
                device=self.runtime.device))
            state = dict(state, loss_sum=totals[0].item(), images=int(totals[1].item()))
        if is_main():
            save_checkpoint(self.run_dir / name, self.model, self.optimizer, self.schedulers,
                            self.runtime, state, self.args, self.info)


def log_start(log, run_dir, root, info, runtime, args, train_set, val_set, weights, world_size):
    log(f"run folder: {run_dir}")
    log(f"data: {root} | train {len(train_set)} | val {len(val_set)} images | "
        f"{info['num_classes']} classes {info['class_names']} | masks: "
        f"{info['mask_decoding'].get('kind')}")
    log(f"device: {runtime.device} | precision {utils.precision_name(runtime.dtype)} | "
        f"channels_last {runtime.channels_last} | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()}"
        + (f" | {world_size} processes, global batch {args.batch_size * world_size}"
           if world_size > 1 else ""))
    if weights is not None:
        log(f"class weights ({args.class_weights}): "
            + ", ".join(f"{name} {w:.3f}" for name, w in zip(info["class_names"],
                                                            weights.tolist())))


def fit(run, train_loader, val_loader, val_set, state):
    """The epoch loop: train, validate, record, save."""
    args, names = run.args, run.info["class_names"]
    columns = metric_columns(names)
    rows = read_metrics(run.run_dir / "metrics.csv", state["epoch"]) if is_main() else []
    if is_main() and (run.run_dir / "metrics.csv").is_file():
        # Rows of epochs after the checkpoint (a crash before its save) go now, not an epoch later.
        write_metrics(run.run_dir / "metrics.csv", rows, columns)
    for epoch in range(state["epoch"], args.epochs):
        set_epoch(train_loader, epoch, state["batch"])
        train_loss, rate, seconds, interrupted = train_one_epoch(
            run.train_model, train_loader, run.criterion, run.optimizer, run.schedulers[0],
            run.runtime, state, args, run.stop, run.log)
        if interrupted:
            run.save("last.pt", state)
            raise Interrupted(f"stopped by {run.stop.signal}")
        state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, images=0)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
               "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
               "img/s": round(rate, 2)}
        last_epoch = epoch + 1 == args.epochs or args.dry_run
        improved = False
        if (epoch + 1) % args.eval_every == 0 or last_epoch:
            metrics = validate(run, val_loader, val_set, epoch)
            row.update(metric_row(metrics, names))
            improved = record_best(state, metrics["miou"], epoch + 1)
            summary(run.log, row, metrics, state, args)
        else:
            run.log(f"epoch {epoch + 1}/{args.epochs} train_loss {train_loss:.4f} "
                    f"{rate:.1f} img/s {seconds:.0f}s")
        rows.append({key: row.get(key, "") for key in columns})
        if is_main():
            write_metrics(run.run_dir / "metrics.csv", rows, columns)
            utils.plot_curves(run.run_dir / "curves.png", rows)
        if improved:
            run.save("best.pt", state)
        stopping = stop_requested(run.stop)  # every rank decides alike, once, here
        if (epoch + 1) % args.save_every == 0 or last_epoch or stopping:
            run.save("last.pt", state)
        if stopping and not last_epoch:
            raise Interrupted(f"stopped by {run.stop.signal}")
        if args.early_stop and state["stale"] >= args.early_stop:
            run.log(f"early stop: no better val mIoU for {state['stale']} validations")
            break
        if args.dry_run:
            break
    run.log(f"done: best val mIoU {state['best_metric']:.4f} at epoch {state['best_epoch']}; "
            f"run folder {run.run_dir}")


def record_best(state, miou, epoch):
    if miou > state["best_metric"]:
        state.update(best_metric=miou, best_epoch=epoch, stale=0)
        return True
    state["stale"] += 1
    return False


def set_epoch(loader, epoch, start_batch):
    """Shuffle order and augmentation depend only on (seed, epoch): resume-proof."""
    loader.sampler.set_epoch(epoch, start_batch * loader.batch_size)


def validate(run, val_loader, val_set, epoch):
    """Metrics on the val split, the plateau scheduler's step, and the samples picture."""
    # Under DDP the plain model: DDP's forward runs collectives (buffer broadcast) that a rank
    # with an empty val shard would never join.
    model = run.model if utils.is_distributed() else run.train_model
    val_loss, confusion = evaluate(model, val_loader, run.criterion, run.runtime,
                                   run.info["num_classes"], run.args.ignore_index,
                                   dry_run=run.args.dry_run)
    metrics = utils.metrics_from_confusion(confusion, run.info["class_names"])
    metrics["val_loss"] = val_loss
    if run.schedulers[1] is not None:
        run.schedulers[1].step(metrics["miou"])
    if is_main():
        samples_from = val_loader.dataset if run.args.overfit_batch else val_set
        samples = sample_predictions(run.model, samples_from, run.runtime)
        utils.save_samples_figure(run.run_dir / f"val_samples_epoch{epoch + 1:03d}.png",
                                  samples, run.info["class_colors"])
    return metrics


def metric_row(metrics, names):
    row = {key: metrics[key] for key in ("val_loss", "pixel_acc", "mean_acc", "miou",
                                         "mean_dice")}
    for name, per_class in zip(names, metrics["per_class"]):
        row[f"iou_{name}"] = per_class["iou"]
    return {key: round(value, 6) for key, value in row.items()}


def summary(log, row, metrics, state, args):
    per_class = " ".join(f"{c['name']} {c['iou']:.3f}" for c in metrics["per_class"])
    log(f"epoch {row['epoch']}/{args.epochs} train_loss {row['train_loss']:.4f} "
        f"val_loss {row['val_loss']:.4f} pixel_acc {row['pixel_acc']:.4f} "
        f"miou {row['miou']:.4f} dice {row['mean_dice']:.4f} | IoU {per_class} | "
        f"lr {row['lr']:.2e} {row['img/s']:.1f} img/s {row['seconds']:.0f}s"
        + (" *best*" if state["best_epoch"] == row["epoch"] else ""))


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
