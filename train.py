"""Train SegNet on data/{train,val}/{images,masks}: `python train.py` (demo data) or
`python train.py --data path/to/data`. Writes a run folder with config, log, metrics, curves,
sample pictures and checkpoints; `--resume` continues a run exactly where it stopped."""
import argparse
import csv
import datetime
import json
import math
import platform
import subprocess
import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

import engine
import plots
import utils
from dataset import DataError, scan_dataset
from demo import make_demo
from masks import MAX_MASK_VALUE
from model import MIN_SIZE, SegNet, load_vgg16_bn_encoder
from utils import is_main

AUTO_RESUME = Path("auto")  # --resume auto
# What a run writes before its first checkpoint: --resume auto may start afresh over these.
RUN_LEFTOVERS = ("config.json", "train.log", "metrics.csv", "curves.png",
                 "val_samples_epoch*.png", ".*.tmp*")
DEFAULTS = engine.TrainConfig()


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=utils.HelpFormatter)
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
    group.add_argument("--ignore-index", type=int, default=DEFAULTS.ignore_index,
                       help="mask value that is excluded from loss and metrics")
    group.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size,
                       help="random training crop (pixels, square); 0 = whole images")
    group.add_argument("--image-size", type=int, default=None,
                       help="resize images (and masks, nearest) to this square size for "
                            "training and validation; default: native size")
    group.add_argument("--scale", type=float, nargs=2, default=DEFAULTS.scale,
                       metavar=("MIN", "MAX"), help="random scale range before cropping")
    group.add_argument("--no-flip", action="store_true", help="disable random h/v flips")
    group.add_argument("--rotate", type=float, default=DEFAULTS.rotate,
                       help="random rotation range in degrees (+-); 0 disables")
    group.add_argument("--jitter", type=float, default=DEFAULTS.jitter,
                       help="brightness/contrast/gamma jitter strength; 0 disables")
    group.add_argument("--noise", type=float, default=DEFAULTS.noise,
                       help="std of added gaussian noise (images in [0,1]); 0 disables")
    group.add_argument("--no-augment", action="store_true",
                       help="disable all augmentation except cropping")
    group.add_argument("--cache", action=argparse.BooleanOptionalAction, default=DEFAULTS.cache,
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
    group.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="number of epochs")
    group.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                       help="images per step (per process)")
    group.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate")
    group.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=DEFAULTS.optimizer,
                       help="the paper used SGD with momentum; AdamW converges faster here")
    group.add_argument("--momentum", type=float, default=DEFAULTS.momentum,
                       help="SGD momentum / Adam beta1")
    group.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                       help="L2 penalty on all parameters (decoupled for adamw)")
    group.add_argument("--scheduler", choices=["none", "cosine", "poly", "step", "plateau"],
                       default=DEFAULTS.scheduler, help="learning-rate schedule after warm-up")
    group.add_argument("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs,
                       help="linear warm-up length in epochs (fractions allowed)")
    group.add_argument("--step-size", type=int, default=DEFAULTS.step_size,
                       help="epochs per decay (step)")
    group.add_argument("--gamma", type=float, default=DEFAULTS.gamma,
                       help="decay factor (step, plateau)")
    group.add_argument("--loss", choices=["ce", "dice", "ce+dice"], default=DEFAULTS.loss,
                       help="cross-entropy, soft Dice, or their sum (Dice helps rare classes)")
    group.add_argument("--class-weights", choices=["none", "median-freq", "inverse"],
                       default=DEFAULTS.class_weights,
                       help="class weighting of the cross-entropy")
    group.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip,
                       help="clip the gradient norm to this value; 0 disables")

    group = parser.add_argument_group("hardware")
    utils.add_hardware_args(group)
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory format (default: on for CPU and CUDA)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm statistics over the global batch "
                            "(SyncBatchNorm on GPUs, an all-reduce BatchNorm on CPU)")
    group.add_argument("--dist-timeout", type=int, default=600,
                       help="seconds a collective waits for the other ranks before the job "
                            "fails (torchrun only)")
    group.add_argument("--seed", type=int, default=DEFAULTS.seed,
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
    group.add_argument("--log-every", type=int, default=DEFAULTS.log_every,
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
    if args.num_classes is not None and not 2 <= args.num_classes <= MAX_MASK_VALUE:
        problems.append(f"--num-classes must be in 2..{MAX_MASK_VALUE} (binary is 2), got "
                        f"{args.num_classes}")
    if args.image_size is not None and args.image_size < MIN_SIZE:
        problems.append(f"--image-size must be >= {MIN_SIZE}, got {args.image_size}")
    if 0 < args.crop_size < MIN_SIZE:
        problems.append(f"--crop-size must be 0 (whole images) or >= {MIN_SIZE}, got "
                        f"{args.crop_size}")
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
    if not (utils.DEFAULT_DATA / "train").is_dir() and is_main():
        log(f"no dataset in {utils.DEFAULT_DATA}: generating the demo dataset there "
            f"(python dataset.py make-demo {utils.DEFAULT_DATA})")
        make_demo(utils.DEFAULT_DATA, seed=0)
    utils.barrier()  # other ranks wait for rank 0's demo set
    return utils.DEFAULT_DATA


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


def plain_args(args):
    """The flags as plain data (config.json, the checkpoint's "args")."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()}


def config_from_args(args):
    """The engine.TrainConfig the training machinery reads, from the flags."""
    fields = {name: getattr(args, name) for name in engine.TrainConfig.__dataclass_fields__
              if hasattr(args, name)}
    return engine.TrainConfig(**dict(fields, scale=tuple(args.scale), flip=not args.no_flip,
                                     augment=not args.no_augment))


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


# ---------------------------------------------------------------- main

def setup(args):
    """Everything that can fail on bad input, checked before the first step."""
    validate_args(args)
    allow_leftovers = resolve_auto_resume(args)
    run_dir = choose_run_folder(args, allow_leftovers) if is_main() else None
    root = resolve_data_root(args, Logger())
    try:
        info = scan_dataset(root, in_channels=args.in_channels, num_classes=args.num_classes,
                            class_table=args.class_table, mask_threshold=args.mask_threshold,
                            ignore_index=args.ignore_index)
    except DataError as error:
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
        **utils.data_metadata(info),
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
            dist.destroy_process_group()


def train(args, rank, world_size, local_rank):
    utils.seed_everything(args.seed)  # the same initial weights on every rank
    run_dir, root, info, checkpoint, model = setup(args)
    log = Logger(run_dir / "train.log") if is_main() else Logger(quiet=True)
    if is_main():
        remove_temp_files(run_dir, log)
    utils.seed_everything(args.seed + rank)  # dropout differs per rank; augmentation does not
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    config = config_from_args(args)
    runtime = engine.Runtime(config, local_rank)
    if runtime.device.type == "cpu":
        utils.tune_cpu_allocator()
    train_set, val_set = engine.build_datasets(config, root, info)
    train_loader = engine.build_loader(config, train_set, runtime.device, rank, world_size)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1 and args.sync_bn:  # before the optimizer: it must see the new modules
        model = engine.global_batchnorm(model, runtime.device)
    optimizer = engine.build_optimizer(config, model, runtime.device)
    schedulers = engine.build_scheduler(config, optimizer, len(train_loader))
    criterion, weights = engine.build_criterion(config, info, runtime.device)
    state = engine.new_state()
    if checkpoint is not None:
        state = engine.restore(checkpoint, model, optimizer, schedulers, runtime, rank)
        log(f"resumed from {resolve_resume_path(args.resume)}: {state['epoch']} epochs done"
            + (f" and {state['batch']} batches of the next" if state["batch"] else ""))
    if is_main():
        write_config(run_dir, args, info, runtime, root, world_size)
    log_start(log, run_dir, root, info, runtime, args, train_set, val_set, weights, world_size)
    run = Run(model=model, train_model=engine.wrap_model(model, config, runtime, world_size),
              optimizer=optimizer, schedulers=schedulers, criterion=criterion,
              val_criterion=engine.build_criterion(config, info, torch.device("cpu"))[0],
              val_set=val_set, runtime=runtime, args=args, config=config, info=info,
              run_dir=run_dir, log=log, stop=engine.StopFlag(), rank=rank,
              world_size=world_size)
    run.stop.install()
    try:
        fit(run, train_loader, state)
    except engine.Interrupted as interruption:
        log(f"{interruption}: saved {run_dir / 'last.pt' if run_dir else 'last.pt'} "
            f"({state['epoch']} epochs and {state['batch']} batches done); continue with: "
            f"python train.py --resume {run_dir}")
        return 130
    finally:
        log.close()
    return 0


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
            utils.save_checkpoint(self.run_dir / name, engine.make_checkpoint(
                self.model, self.optimizer, self.schedulers, self.runtime, state, self.info,
                plain_args(self.args)))


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


def fit(run, train_loader, state):
    """The epoch loop: train, validate, record, save."""
    args, names = run.args, run.info["class_names"]
    columns = metric_columns(names)
    rows = read_metrics(run.run_dir / "metrics.csv", state["epoch"]) if is_main() else []
    if is_main() and (run.run_dir / "metrics.csv").is_file():
        # Rows of epochs after the checkpoint (a crash before its save) go now, not an epoch later.
        write_metrics(run.run_dir / "metrics.csv", rows, columns)
    for epoch in range(state["epoch"], args.epochs):
        set_epoch(train_loader, epoch, state["batch"])
        train_loss, rate, seconds, interrupted = engine.train_one_epoch(
            run.train_model, train_loader, run.criterion, run.optimizer, run.schedulers[0],
            run.runtime, state, run.config, run.stop, run.log)
        if interrupted:
            run.save("last.pt", state)
            raise engine.Interrupted(f"stopped by {run.stop.signal}")
        state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, images=0)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
               "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
               "img/s": round(rate, 2)}
        last_epoch = epoch + 1 == args.epochs or args.dry_run
        improved = False
        if (epoch + 1) % args.eval_every == 0 or last_epoch:
            metrics = validate(run, epoch)
            row.update(metric_row(metrics, names))
            improved = record_best(state, metrics["miou"], epoch + 1)
            summary(run.log, row, metrics, state, args)
        else:
            run.log(f"epoch {epoch + 1}/{args.epochs} train_loss {train_loss:.4f} "
                    f"{rate:.1f} img/s {seconds:.0f}s")
        rows.append({key: row.get(key, "") for key in columns})
        if is_main():
            write_metrics(run.run_dir / "metrics.csv", rows, columns)
            plots.plot_curves(run.run_dir / "curves.png", rows)
        if improved:
            run.save("best.pt", state)
        stopping = engine.stop_requested(run.stop)  # every rank decides alike, once, here
        if (epoch + 1) % args.save_every == 0 or last_epoch or stopping:
            run.save("last.pt", state)
        if stopping and not last_epoch:
            raise engine.Interrupted(f"stopped by {run.stop.signal}")
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


def validate(run, epoch):
    """Metrics on the val split (scored as evaluate.py scores a checkpoint), the plateau
    scheduler's step, and the samples picture."""
    model = run.runtime.inference_form(run.model)
    val_loss, confusion = engine.validate(
        model, run.val_set, run.val_criterion, run.runtime, run.info["num_classes"],
        run.args.ignore_index, image_size=run.args.image_size,
        max_batches=1 if run.args.dry_run else None, rank=run.rank, world_size=run.world_size)
    metrics = confusion.compute(run.info["class_names"])
    metrics["val_loss"] = val_loss
    if run.schedulers[1] is not None:
        run.schedulers[1].step(metrics["miou"])
    if is_main():
        samples = engine.sample_predictions(model, run.val_set, run.runtime)
        plots.save_samples_figure(run.run_dir / f"val_samples_epoch{epoch + 1:03d}.png",
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
