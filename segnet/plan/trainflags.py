"""The checks of train.py's flags before any work starts: values out of range, flags that would
set the same thing, and files, folders and the device the flags name; each problem a line that
train.validate_args prints together; and the type of --time-budget."""
import argparse
import math
from pathlib import Path

from model import IMAGENET, MIN_SIZE
from segnet.data.pixels.masks import MAX_MASK_VALUE
from segnet.runtime import resolve_device, resolve_precision

AUTO_RESUME = Path("auto")  # --resume auto


def number_problems(args):
    """Flag values out of their range."""
    problems = _sign_problems(args)
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        problems.append(f"--lr must be a positive number, got {args.lr}")
    if args.time_budget is not None and not 0 <= args.time_budget < math.inf:
        problems.append(f"--time-budget must be a positive number of minutes or none, got "
                        f"{args.time_budget}")
    if args.plateau_gain is not None and not 0 <= args.plateau_gain < 1:
        problems.append(f"--plateau-gain must be an mIoU gain in [0, 1) (0: never end early), "
                        f"got {args.plateau_gain}")
    if not 0 <= args.momentum < 1:
        problems.append(f"--momentum must be in [0, 1), got {args.momentum}")
    if not 0 < args.gamma <= 1:
        problems.append(f"--gamma must be in (0, 1], got {args.gamma}")
    if args.scale is not None and not 0 < args.scale[0] <= args.scale[1] < math.inf:
        problems.append(f"--scale must be 0 < MIN <= MAX (finite), got {args.scale}")
    if args.rotate is not None and not args.rotate <= 180:
        problems.append(f"--rotate must be in [0, 180] degrees, got {args.rotate}")
    if args.jitter is not None and not args.jitter < 1:
        problems.append(f"--jitter must be in [0, 1), got {args.jitter}")
    if args.class_sampling is not None and not 0 <= args.class_sampling <= 1:
        problems.append(f"--class-sampling must be a share in [0, 1], got "
                        f"{args.class_sampling}")
    if args.train_scale is not None and not 0.05 <= args.train_scale <= 1:
        problems.append(f"--train-scale must be in [0.05, 1], got {args.train_scale}")
    if args.train_scale not in (None, 1) and args.image_size:
        problems.append("pass --train-scale or --image-size, not both (each resizes the "
                        "images)")
    if args.no_flip and (args.hflip or args.vflip):
        problems.append("--no-flip turns every flip off: drop it, or --hflip / --vflip")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if args.num_classes is not None and not 2 <= args.num_classes <= MAX_MASK_VALUE:
        problems.append(f"--num-classes must be in 2..{MAX_MASK_VALUE} (binary is 2), got "
                        f"{args.num_classes}")
    if args.image_size is not None and args.image_size < MIN_SIZE:
        problems.append(f"--image-size must be >= {MIN_SIZE}, got {args.image_size}")
    if args.crop_size is not None and 0 < args.crop_size < MIN_SIZE:
        problems.append(f"--crop-size must be 0 (whole images) or >= {MIN_SIZE}, got "
                        f"{args.crop_size}")
    if args.workers is not None and args.workers < 0:
        problems.append(f"--workers must be >= 0, got {args.workers}")
    if not 0 <= args.ignore_index <= 255 and args.ignore_index != -100:
        problems.append(f"--ignore-index must be in 0..255 (or -100), got {args.ignore_index}")
    if not 0 <= args.dropout < 1:
        problems.append(f"--dropout must be in [0, 1), got {args.dropout}")
    return problems


def place_problems(args):
    """Files and folders the flags name, and the device, checked before the run folder exists."""
    problems = []
    if args.encoder_weights not in (None, IMAGENET) and not Path(args.encoder_weights).is_file():
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
        resolve_precision(resolve_device(args.device), args.amp)
    except ValueError as error:
        problems.append(str(error))
    return problems


def exclusive_flag_problems(args):
    """Flags that would each set the same thing."""
    sets = {"steps": "length of the run", "val_every": "validation interval",
            "save_steps": "save interval"}
    pairs = [("epochs", "steps"), ("time_budget", "epochs"), ("time_budget", "steps"),
             ("eval_every", "val_every"), ("save_every", "save_steps")]
    return [f"pass --{a.replace('_', '-')} or --{b.replace('_', '-')}, not both (each sets "
            f"the {sets[b]})"
            for a, b in pairs if getattr(args, a) is not None and getattr(args, b) is not None]


def _sign_problems(args):
    """Counts that must be >= 1, amounts that must be finite and >= 0."""
    positive = {"epochs": args.epochs, "steps": args.steps, "batch-size": args.batch_size,
                "eval-every": args.eval_every, "val-every": args.val_every,
                "save-every": args.save_every, "save-steps": args.save_steps,
                "log-every": args.log_every,
                "step-size": args.step_size, "dist-timeout": args.dist_timeout}
    non_negative = {"weight-decay": args.weight_decay, "grad-clip": args.grad_clip,
                    "warmup-epochs": args.warmup_epochs, "rotate": args.rotate,
                    "jitter": args.jitter, "noise": args.noise, "early-stop": args.early_stop,
                    "crop-size": args.crop_size}
    positive = {name: value for name, value in positive.items() if value is not None}
    non_negative = {name: value for name, value in non_negative.items() if value is not None}
    problems = [f"--{name} must be >= 1, got {value}" for name, value in positive.items()
                if value < 1]
    problems += [f"--{name} must be >= 0, got {value}" for name, value in non_negative.items()
                 if value < 0]
    problems += [f"--{name} must be a finite number, got {value}" for name, value in
                 non_negative.items() if not math.isfinite(value)]  # NaN passes `< 0`
    return problems


def minutes_or_none(text):
    """--time-budget: minutes, or 'none' (0): no budget."""
    if text.strip().lower() == "none":
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes or 'none', got {text!r}") from None
