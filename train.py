"""Train SegNet on data/{train,val}/{images,masks}: `python train.py` (demo data) or
`python train.py --data path/to/data`. The recipe (crop, batch, length, validation, learning
rate, loss) is planned from the data, the machine and a time budget (plan.py) unless flags set
it; `--plan-only` prints the plan. Writes a run folder with config, log, metrics, curves,
sample pictures and checkpoints; `--resume` continues a run exactly where it stopped."""
import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from model import IMAGENET, SegNet, load_imagenet_weights, load_vgg16_bn_encoder
from segnet import utils
from segnet.utils import DataError
from segnet.data.demo import make_demo
from segnet.data.files.layouts import add_layout_args, layout_from_args
from segnet.data.check.scancache import cached_scan
from segnet.plan import plan as planning
from segnet.plan.trainflags import (AUTO_RESUME, exclusive_flag_problems, minutes_or_none,
                                    number_problems, place_problems)
from segnet.runtime import (PeerLost, Runtime, barrier, init_distributed, is_distributed, is_main,
                            peer_failures, seed_everything, tune_cpu_allocator)
from segnet.training import engine, folds, memory, trainer
from segnet.training.runfiles import Logger, remove_temp_files, write_config

# What a run writes before its first checkpoint: --resume auto may start afresh over these.
RUN_LEFTOVERS = ("config.json", "train.log", "metrics.csv", "curves.png",
                 "val_samples_epoch*.png", "val_samples_step*.png", ".*.tmp*")
DEFAULTS = planning.Plan()
# Minutes of the no-flag demo run: it reaches val mIoU 0.948 in 2 min 48 s on a 2-core CPU (its
# curve plateaus near step 1000; the 10-minute default budget took 7-10 minutes for 0.954).
DEMO_BUDGET = 3.0
AUTO = "(default: planned from the data, the machine and the time budget)"


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=utils.HelpFormatter)
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=None,
                       help="dataset root, in any layout of data/README.md (found from its "
                            "folder names); default: ./data, where the demo set is generated "
                            "if it has no train split")
    add_layout_args(group)
    group.add_argument("--num-classes", type=int, default=None,
                       help="number of classes (default: inferred from the training masks)")
    group.add_argument("--in-channels", type=utils.channels_flag, default="auto",
                       help="1 = grey (RGB converted), 3 = RGB (grey repeated); auto: 3 when "
                            "10 percent of the train images carry colour")
    group.add_argument("--class-table", type=Path, default=None,
                       help="JSON class table (names, colours, void) for RGB colour masks")
    group.add_argument("--mask-threshold", type=int, default=None,
                       help="binarise single-channel masks at this value (e.g. 128 for JPEG masks)")
    group.add_argument("--ignore-index", type=int, default=DEFAULTS.ignore_index,
                       help="mask value that is excluded from loss and metrics")
    group.add_argument("--crop-size", type=int, default=None,
                       help=f"random training crop (pixels, square); 0 = whole images {AUTO}")
    group.add_argument("--image-size", type=int, default=None,
                       help="resize images (and masks, nearest) to this square size for "
                            "training and validation; default: native size")
    group.add_argument("--train-scale", type=float, default=None, metavar="FACTOR",
                       help="resize images by this factor for training and prediction "
                            "(predictions at full size) {AUTO}".format(AUTO=AUTO))
    group.add_argument("--class-sampling", type=float, default=None, metavar="SHARE",
                       help="share of crops centred on a pixel of a class drawn among those in "
                            f"the image (rare-class sampling); 0 = off {AUTO}")
    group.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                       help=f"random scale range before cropping {AUTO}")
    group.add_argument("--no-flip", action="store_true", help="disable random h/v flips")
    group.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                       help="random horizontal flips (default: on unless the classes keep to "
                            "one side)")
    group.add_argument("--vflip", action=argparse.BooleanOptionalAction, default=None,
                       help="random vertical flips (default: on unless the classes keep to the "
                            "top or bottom, as sky and road)")
    group.add_argument("--rotate", type=float, default=None,
                       help="random rotation range in degrees (+-); 0 disables (default: 15 "
                            "with both flips, else 0)")
    group.add_argument("--jitter", type=float, default=None,
                       help=f"brightness/contrast/gamma jitter, relative to the images' range; "
                            f"0 disables {AUTO}")
    group.add_argument("--noise", type=float, default=None,
                       help=f"std of gaussian noise, relative to the images' range {AUTO}")
    group.add_argument("--no-augment", action="store_true",
                       help="disable all augmentation except cropping")
    group.add_argument("--cache", action=argparse.BooleanOptionalAction, default=DEFAULTS.cache,
                       help="keep decoded train and val images in memory, compactly, all "
                            "copies (one per loader worker) together in at most a quarter of "
                            "the machine's memory; the rest are read from disk each time")
    group.add_argument("--workers", type=int, default=None,
                       help="DataLoader worker processes (default: 0 on CPU, where workers "
                            "compete with compute threads; 4 on GPU)")

    group = parser.add_argument_group("model")
    group.add_argument("--dropout", type=float, default=0.0,
                       help="Bayesian SegNet dropout on the two deepest encoder/decoder stages "
                            "(the paper uses 0.5); 0 = plain SegNet")
    group.add_argument("--encoder-weights", default=None,
                       help="VGG16-BN encoder: 'imagenet' (torch.hub, hash-checked, cached; "
                            "the default for colour data once cached) or a file; docs/model.md")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--time-budget", type=minutes_or_none, default=None, metavar="MINUTES",
                       help="bound the whole run, validation included: the step count comes "
                            "from the measured step time and the schedule still completes; "
                            "'none' (or 0): no budget, the run ends when val mIoU plateaus "
                            "(default: 10 on a CPU or MPS, none on CUDA; 3 for the demo "
                            "set, when --data is not given)")
    group.add_argument("--epochs", type=int, default=None,
                       help="train this many epochs instead of planning the length (no budget)")
    group.add_argument("--steps", type=int, default=None,
                       help="train this many optimiser steps instead of planning the length "
                            "(no budget)")
    group.add_argument("--batch-size", type=int, default=None,
                       help=f"images per step (per process) {AUTO}")
    group.add_argument("--lr", type=float, default=None,
                       help=f"peak learning rate {AUTO}: 2e-3 (AdamW) at 8 images a step, "
                            f"scaled with the square root of the global batch")
    group.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=DEFAULTS.optimizer,
                       help="the paper used SGD with momentum; AdamW converges faster here")
    group.add_argument("--momentum", type=float, default=DEFAULTS.momentum,
                       help="SGD momentum / Adam beta1")
    group.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                       help="L2 penalty on all parameters (decoupled for adamw)")
    group.add_argument("--scheduler", choices=["wsd", "none", "cosine", "poly", "step",
                                               "plateau"],
                       default=None, help="learning-rate schedule after warm-up (default: "
                       f"planned: {DEFAULTS.scheduler}, or cosine where the time budget ends the "
                       "run before the steps the data needs; a resumed run keeps its own); wsd: "
                       "constant, then a cosine decay over the run's last 20 percent, started "
                       "early when val mIoU plateaus (docs/plan.md)")
    group.add_argument("--warmup-epochs", type=float, default=None,
                       help="linear warm-up length in epochs (fractions allowed; default: "
                            "3 percent of the steps)")
    group.add_argument("--step-size", type=int, default=DEFAULTS.step_size,
                       help="epochs per decay (step)")
    group.add_argument("--gamma", type=float, default=DEFAULTS.gamma,
                       help="decay factor (step, plateau)")
    group.add_argument("--loss", choices=["ce", "dice", "ce+dice"], default=None,
                       help="cross-entropy, soft Dice over the batch, or their sum "
                            "(default: ce+dice, as nnU-Net; Dice weighs every class equally)")
    group.add_argument("--class-weights", choices=["none", "median-freq", "inverse",
                                                   "sqrt-inverse"],
                       default=None, help=f"class weighting of the cross-entropy {AUTO}")
    group.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip,
                       help="clip the gradient norm to this value; 0 disables")

    group = parser.add_argument_group("hardware")
    utils.add_hardware_args(group)
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory format (default: on for CPU and CUDA)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the training model (default: on CUDA where the "
                            "planned run repays the compile time, at a fixed crop; off on "
                            "the CPU)")
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
    group.add_argument("--eval-every", type=int, default=None,
                       help="validate every N epochs (with --epochs: default 1; otherwise the "
                            "interval is planned in steps, keeping validation under 15 percent of "
                            "the run)")
    group.add_argument("--val-every", type=int, default=None, metavar="STEPS",
                       help="validate every N optimiser steps (default: planned)")
    group.add_argument("--save-every", type=int, default=None,
                       help="write last.pt every N epochs (default: at every validation)")
    group.add_argument("--save-steps", type=int, default=None, metavar="STEPS", help="also "
                       "write last.pt every N steps between validations " + AUTO)
    group.add_argument("--plateau-gain", type=float, default=None, metavar="MIOU",
                       help="a run whose length no flag fixes ends when val mIoU gains less "
                       "than this over the last 25 percent of its steps (the learning rate "
                       f"then decays over a last 20 percent); 0: never (default: "
                       f"{DEFAULTS.plateau_gain:g}; a resumed run keeps its own)")
    group.add_argument("--folds", type=int, default=None, metavar="K",
                       help="K-fold cross-validation over train + val by group: RUN/fold_k "
                            "runs, RUN/cv.json; the time budget covers the whole job; rerun "
                            "to resume (docs/cross-validation.md)")
    group.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                       help="stop after PATIENCE validations without a better mIoU; 0 = never")
    group.add_argument("--dry-run", action="store_true",
                       help="one training and one validation batch, then stop")
    group.add_argument("--plan-only", action="store_true",
                       help="print the training plan and exit, without training or writing "
                            "a run folder")
    group.add_argument("--overfit-batch", action="store_true",
                       help="train and validate on one fixed batch (sanity check: loss -> 0)")
    group.add_argument("--log-every", type=int, default=DEFAULTS.log_every,
                       help="steps between log lines when output is not a terminal")
    return parser


# ---------------------------------------------------------------- start-up checks

def validate_args(args):
    """Reject impossible flag values before any work starts."""
    problems = number_problems(args) + exclusive_flag_problems(args) + place_problems(args)
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def resolve_data_root(args, log):
    """--data given: it must exist. Not given: ./data, generating the demo set if needed."""
    if args.data is not None:
        if not args.data.is_dir():
            raise SystemExit(f"error: --data {args.data} is not a folder (expected "
                             f"{args.data}/train/images and {args.data}/train/masks, or another "
                             f"layout of data/README.md)")
        return args.data
    if args.images:  # the folders' common parent holds classes.json, if any
        return Path(os.path.commonpath([Path(item.rpartition("=")[2]).resolve()
                                        for item in args.images + (args.masks or [])]))
    if args.time_budget is None and not (args.steps or args.epochs or args.resume):
        args.time_budget, args.demo_budget = DEMO_BUDGET, True  # a newcomer's first command
    if not (utils.DEFAULT_DATA / "train").is_dir() and is_main():
        log(f"no dataset in {utils.DEFAULT_DATA}: generating the demo dataset there "
            f"(python dataset.py make-demo {utils.DEFAULT_DATA})")
        make_demo(utils.DEFAULT_DATA, seed=0)
    barrier()  # other ranks wait for rank 0's demo set
    return utils.DEFAULT_DATA


def check_crop_fits(args, info):
    """A crop larger than every training image can never be filled: stop now, not later."""
    sizes = (info.get("image_sizes") or {}).get("train")
    if not args.crop_size or args.image_size or not sizes:  # auto crops always fit
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


def check_resume_compatible(checkpoint, info, args, path):
    """Resuming on other data, or with another optimizer, cannot continue the same run."""
    saved = checkpoint["data"]
    for key in ("num_classes", "in_channels", "class_names", "mask_decoding"):
        if saved[key] != info[key]:
            raise SystemExit(f"error: --resume {path} was trained with {key}={saved[key]!r} "
                             f"but the data now gives {info[key]!r}; resume on the same data")
    planned = checkpoint.get("plan") or checkpoint.get("args", {})
    for key in ("optimizer", "scheduler", "loss"):  # batch and crop may change (out of memory)
        before, now = planned.get(key), getattr(args, key)
        if before is not None and now is not None and before != now:
            raise SystemExit(f"error: --resume {path} was trained with --{key.replace('_', '-')}"
                             f" {before}, not {now}; pass the same value")


# ---------------------------------------------------------------- main

def setup(args, fold=None):
    """Everything that can fail on bad input, checked before the first step."""
    validate_args(args)
    allow_leftovers = resolve_auto_resume(args)
    run_dir = choose_run_folder(args, allow_leftovers) if is_main() else None
    root = resolve_data_root(args, Logger())
    checkpoint = None
    if args.resume is not None:
        resume_path = resolve_resume_path(args.resume)
        try:
            checkpoint = utils.load_checkpoint(resume_path)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}") from None
    saved = checkpoint["data"] if checkpoint else {}
    holdout = saved.get("holdout") or (list(fold.holdout) if fold else None)
    try:
        layout = saved.get("layout") or (fold and fold.layout) or layout_from_args(root, args)
        info, reused = cached_scan(root, in_channels=args.in_channels,
                                   num_classes=args.num_classes, class_table=args.class_table,
                                   mask_threshold=args.mask_threshold,
                                   ignore_index=args.ignore_index, holdout=holdout,
                                   layout=layout)
    except DataError as error:
        raise SystemExit(f"error: {error}\n(run `python dataset.py check {root}` for a full "
                         f"report)") from None
    info["scan_reused"] = reused
    check_crop_fits(args, info)
    if checkpoint is not None:
        check_resume_compatible(checkpoint, info, args, resume_path)
    seed_everything(args.seed)  # the same first weights on every rank, scan reused or not
    model = SegNet(in_channels=info["in_channels"], num_classes=info["num_classes"],
                   dropout=checkpoint["model_args"]["dropout"] if checkpoint else args.dropout)
    return run_dir, root, info, checkpoint, model


def out_of_memory(run, state, run_dir, log):
    """A CUDA out-of-memory: last.pt at the last finished step, then one line naming a
    --batch-size (or --crop-size) that fits, tried on the device; exit status 1. Under
    torchrun other ranks may wait in this step's collectives: rank 0 saves last.pt without
    them (when it is a rank that ran out: usually all do, at the same step), no rank probes
    (SyncBatchNorm would need the others), each says on stderr what to resume with, and the
    exit ends the job (memory.distributed_line)."""
    memory.release(run.model, run.optimizer)
    if run.world_size > 1:
        run.save("last.pt", state, alone=True)  # rank 0 alone writes
        print(f"error: {memory.distributed_line(run.rank, state['global_step'], run.plan)}",
              file=sys.stderr, flush=True)
        return 1
    run.save("last.pt", state)
    plan = run.plan
    fitting = memory.fitting_size(run.model, run.runtime, plan.batch_size, plan.crop_size,
                                  plan.in_channels)
    line = memory.advice_line(state["global_step"], plan.batch_size, plan.crop_size, fitting,
                              run_dir)
    log(f"error: {line}")
    return 1


def init_encoder(model, weights, log):
    """The encoder from VGG16-BN weights when the plan says so."""
    if weights:
        try:
            load_vgg16_bn_encoder(model, load_imagenet_weights() if weights == IMAGENET
                                  else weights)
        except (ValueError, RuntimeError) as error:
            raise SystemExit(f"error: --encoder-weights {weights}: {error}") from None
        log(f"encoder initialised from VGG16-BN ({weights})")


def cross_validate(args):
    """--folds K: this process's folds, then (rank 0) the CV report (training/folds.py)."""
    started = time.monotonic()  # the time budget covers the whole command from here
    if args.folds < 2 or args.resume not in (None, AUTO_RESUME) or (
            args.out is None and (args.resume or folds.process_slot()[1] > 1)):
        raise SystemExit("error: --folds needs K >= 2, --resume auto or none (the command "
                         "resumes itself when rerun) and, with it or under torchrun, --out")
    validate_args(args)
    args.out = args.out or Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-cv")
    root = resolve_data_root(args, Logger())
    try:
        return folds.run_folds(args, root, layout_from_args(root, args), run_fold, started)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None


def run_fold(args, fold):
    """One run of a cross-validation (its planning pass, or a fold: a folds.FoldRun), in this
    process alone; its time budget, if any, counts from here."""
    return train(args, 0, 1, folds.process_slot()[2], time.monotonic(), fold=fold)


def main(args):
    """Train; 0, or 130 after SIGINT/SIGTERM (checkpoint saved). One call per torchrun rank."""
    if args.folds is not None:
        return cross_validate(args)
    started = time.monotonic()  # the time budget counts from here
    rank, world_size, local_rank = init_distributed(args.device, args.dist_timeout)
    try:
        with peer_failures(rank):
            return train(args, rank, world_size, local_rank, started)
    except PeerLost as error:  # one line and exit code 1: torchrun restarts the job
        raise SystemExit(f"error: {error}") from None
    finally:
        if is_distributed():
            dist.destroy_process_group()


def train(args, rank, world_size, local_rank, started, fold=None):
    """One run; fold: a cross-validation's folds.FoldRun (None: a plain run)."""
    run_dir, root, info, checkpoint, model = setup(args, fold)
    runtime = Runtime(trainer.base_plan(args), local_rank)
    if runtime.device.type == "cpu":
        tune_cpu_allocator()
    template = fold and fold.plan  # a fold's plan: the planning pass's (fold 0's length)
    try:  # a planning pass's timing is not charged to the folds it plans
        plan = trainer.resolve_plan(args, info, model, runtime, world_size,
                                    None if fold and fold.planning else started,
                                    checkpoint or (template and {"plan": template}), root)
    except planning.BudgetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "demo_budget", False):
        plan.sources["time_budget"] = "demo"
    if args.plan_only:
        print("\n".join(planning.table_lines(plan, world_size)))
        if fold and fold.planning:
            folds.write_json(fold.plan_file, plan.to_dict())
        return 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(run_dir / "train.log") if is_main() else Logger(quiet=True)
    if is_main():
        remove_temp_files(run_dir, log)
    if checkpoint is None and is_main():  # DDP gives every rank rank 0's weights
        init_encoder(model, plan.encoder_weights, log)
    seed_everything(args.seed + rank)  # dropout differs per rank; augmentation does not
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    run = trainer.build_run(args, plan, info, model, runtime, root, run_dir, log, rank,
                            world_size, started, deadline=fold and fold.deadline)
    state = engine.new_state()
    if checkpoint is not None:
        state = trainer.rebatched(engine.restore(checkpoint, run.model, run.optimizer,
                                                 run.schedulers, runtime, rank),
                                  checkpoint, plan)
        run.started -= state["seconds"]  # a time budget counts the time before the resume
        log(f"resumed from {resolve_resume_path(args.resume)}: {state['epoch']} epochs done"
            + (f" and {state['batch']} batches of the next" if state["batch"] else "")
            + f" ({state['global_step']} of {plan.steps} steps)")
    if is_main():
        write_config(run_dir, args, plan, info, runtime, root, world_size)
    trainer.log_start(run, root, len(run.loader.dataset), len(run.val_set))
    run.stop.install()
    try:
        trainer.fit(run, state)
    except engine.Interrupted as interruption:
        log(f"{interruption}: saved {run_dir / 'last.pt' if run_dir else 'last.pt'} "
            f"({state['global_step']} of {plan.steps} steps done); continue with: "
            f"python train.py --resume {run_dir}")
        return 130
    except memory.OUT_OF_MEMORY:
        return out_of_memory(run, state, run_dir, log)
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
