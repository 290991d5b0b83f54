"""One training run: its plan (the checkpoint's, or made from the flags, the data and the
measured speed), its pieces (a Run: model, data, optimiser, schedule, losses), the loop in rounds
(train to the next validation, validate, record, save), the time budget's re-planning, choosing
and settling best.pt, and the health warnings. train.py gets a Run from build_run and calls
fit; the run folder's files are runfiles.py's."""
import argparse
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from model import imagenet_weights_file
from segnet import utils
from segnet.data.feed import loaders
from segnet.data.files.pairs import HOLDOUT_SHARE
from segnet.inference import plots
from segnet.inference.measures import HEALTH_MIN_IOU, health_warnings
from segnet.plan import plan as planning, saves
from segnet.runtime import (Runtime, all_reduce_sum, broadcast_object, global_batchnorm,
                            is_distributed, is_main, precision_name, unwrapped)
from segnet.training import ending, engine, losses
from segnet.training.runfiles import Logger, metric_columns, plain_args, read_metrics, write_metrics
from segnet.training.timing import measure_speed

# Kept from the checkpoint on --resume unless the command line names them: the schedule a
# run started with (older checkpoints: cosine, without plateau ends), and where it decays.
KEPT_ON_RESUME = ("scheduler", "plateau_gain", "decay_start")
BUDGET_CHECKS = 4  # under a time budget, the end of the run is re-planned this often a round


# ---------------------------------------------------------------- the run's plan

def base_plan(args):
    """A Plan holding the flags that are not planned (augmentation, optimiser, hardware...)."""
    fields = {field.name for field in dataclasses.fields(planning.Plan)}
    values = {name: value for name, value in vars(args).items()
              if name in fields and value is not None and value != "auto"}
    if args.scale is not None:
        values["scale"] = tuple(args.scale)
    return planning.Plan(**dict(values, flip=not args.no_flip, augment=not args.no_augment))


def planned_flags(args):
    """The planned values the command line sets explicitly ({name: value}); time in seconds."""
    flags = {name: getattr(args, name) for name in planning.PLANNED_FLAGS
             if getattr(args, name, None) not in (None, "auto")}
    if "scale" in flags:
        flags["scale"] = tuple(flags["scale"])
    if args.time_budget:
        flags["time_budget"] = 60 * args.time_budget
    elif args.time_budget == 0:  # --time-budget none
        flags["no_budget"] = True
    return flags


def resolve_plan(args, info, model, runtime, world_size, started, checkpoint=None, root=None):
    """The run's Plan: the checkpoint's when resuming, else made once by rank 0 (which times
    a few steps, and reading samples from `root`, when a budget applies) and sent to every
    rank. `started`: when the run's time budget began (None: a plan for a run that starts
    afresh, the timing not charged to it: a cross-validation's planning pass).
    planning.BudgetError on every rank when the budget cannot buy a useful run."""
    if checkpoint is not None and checkpoint.get("plan"):
        return resumed_plan(checkpoint["plan"], args, info, world_size)
    if checkpoint is not None:  # written before plans: its flags were the whole recipe
        saved = checkpoint.get("args") or {}
        args = argparse.Namespace(**{**vars(args), **{
            name: saved[name] for name in planning.PLANNED_FLAGS
            if getattr(args, name) is None and saved.get(name) is not None}})
    made = None
    if is_main():
        flags, fp = planned_flags(args), planning.fingerprint(info, args.image_size)
        budgeted = not (args.epochs or args.steps or args.dry_run or flags.get("no_budget"))
        default_budget = planning.default_budget_seconds(runtime.device.type)
        speed = None
        budget = budgeted and (flags.get("time_budget") or default_budget)
        if budget or runtime.device.type == "cuda":  # CUDA: the memory a step needs, too
            candidates = planning.speed_candidates(fp, flags, runtime.device.type, world_size)
            speed = measure_speed(model, base_plan(args), runtime, candidates, fp.val_size,
                                  info, root=root)
        try:
            made = planning.make_plan(fp, flags, runtime.device.type, speed, default_budget,
                                      world_size, 0.0 if started is None else
                                      time.monotonic() - started, base_plan(args),
                                      imagenet_weights_file().is_file()).to_dict()
        except planning.BudgetError as error:
            made = {"error": str(error)}
    made = broadcast_object(made)
    if "error" in made:  # every rank stops alike
        raise planning.BudgetError(made["error"])
    return planning.Plan.from_dict(made)


def resumed_plan(saved, args, info, world_size):
    """The checkpoint's plan, with the current non-planned flags; an explicit --epochs or
    --steps extends (or shortens) the run, other planned flags must agree with it."""
    plan = planning.Plan.from_dict(saved)
    current = base_plan(args)
    for field in dataclasses.fields(planning.Plan):
        if field.name in KEPT_ON_RESUME and getattr(args, field.name, None) is None:
            continue  # the run's own schedule, unless this launch names another
        if field.name not in planning.PLANNED + ("sources", "measured", "notes"):
            setattr(plan, field.name, getattr(current, field.name))
    fp = planning.fingerprint(info, args.image_size)
    if args.steps or args.epochs:
        plan.steps = args.steps or args.epochs * planning.steps_per_epoch(
            fp, plan, plan.batch_size, world_size)
        plan.sources.update(steps="flag", time_budget="flag")
        plan.time_budget = None
    for name in ("batch_size", "crop_size"):  # after an out-of-memory: a size that fits
        value = getattr(args, name, None)
        if value is not None and value != getattr(plan, name):
            setattr(plan, name, value)
            plan.sources[name] = "flag"
    if args.save_steps:  # when to save never changes the training: this launch's flag wins
        plan.save_steps, plan.sources["save_steps"] = args.save_steps, "flag"
    if args.compile is not None:  # nor does compiling
        plan.compile, plan.sources["compile"] = args.compile, "flag"
    return plan


# ---------------------------------------------------------------- the run

@dataclass
class Run:
    """The pieces of one training run that every round needs (build_run puts them together)."""

    model: torch.nn.Module  # the plain SegNet on its device: what checkpoints are saved from
    train_model: torch.nn.Module  # what the loop calls: the model in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    schedulers: tuple  # (per-step LambdaLR, engine.PlateauScale or None): build_scheduler's
    criterion: Callable  # the training loss on the device (Dice over the global batch)
    weights: torch.Tensor | None  # the cross-entropy's class weights, if any
    val_criterion: Callable  # the same loss on the CPU, where validation's probabilities are
    loader: loaders.TrainBatches  # the train batches: one stream for the run (build_loader)
    val_set: Dataset
    runtime: Runtime
    plan: planning.Plan
    info: dict  # the data's description (dataset.scan_dataset)
    run_args: dict  # the flags as plain data (config.json, the checkpoint's "args")
    run_dir: Path | None  # None on every rank but 0
    log: Logger
    stop: engine.StopFlag
    rank: int
    world_size: int
    steps_per_epoch: int
    started: float  # time.monotonic() at the start; a resumed run moves it back by its past
    deadline: float | None = None  # time.monotonic() a run of fixed length must end by (ending)
    best_weights: dict | None = None  # kept while intermediate checks score part of val
    health: list = dataclasses.field(default_factory=list)  # the last validation's health warnings
    weak_classes: list = dataclasses.field(default_factory=list)  # their classes' indices
    step_seconds: float = 0.0  # measured seconds a step and a validation (the time budget)
    val_seconds: float = 0.0
    save_timer: saves.StepTimer = dataclasses.field(default_factory=saves.StepTimer)

    def save(self, name, state, alone=False):
        """Rank 0 writes; the model saved is the plain SegNet, never the DDP wrapper.
        Every rank calls it (at points they agree on): a mid-epoch checkpoint holds the loss
        sum and image count of all ranks, which restore() gives back to rank 0 alone. alone:
        a rank that cannot count on the others (an out-of-memory) saves its own sums."""
        state["seconds"] = time.monotonic() - self.started
        if is_distributed() and state["batch"] and not alone:
            totals = all_reduce_sum(torch.tensor(
                [float(state["loss_sum"]), float(state["images"])], dtype=torch.float64,
                device=self.runtime.device))
            state = dict(state, loss_sum=totals[0].item(), images=int(totals[1].item()))
        if is_main():
            utils.save_checkpoint(self.run_dir / name, engine.make_checkpoint(
                self.model, self.optimizer, self.schedulers, self.runtime, state, self.info,
                self.run_args, self.plan))

    def epochs(self, state):
        """Epochs done, fractional between epoch ends (metrics.csv's "epoch" column)."""
        epochs = round(state["global_step"] / max(self.steps_per_epoch, 1), 3)
        return int(epochs) if epochs == int(epochs) else epochs


def build_run(args, plan, info, model, runtime, root, run_dir, log, rank, world_size,
              started, deadline=None):
    """The model on its device, data, optimiser, schedule and losses of one run; `deadline`:
    time.monotonic() it must end by, keeping its length while it can (ending.hold_deadline)."""
    train_set, val_set = loaders.build_datasets(
        plan, root, info, loaders.loader_workers(plan, runtime.device), world_size,
        device_finish=loaders.finish_on_device(plan, runtime.device))
    loader = loaders.build_loader(plan, train_set, runtime.device, rank, world_size)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1 and args.sync_bn:  # before the optimizer: it must see the new modules
        model = global_batchnorm(model, runtime.device)
    optimizer = engine.build_optimizer(plan, model, runtime.device)
    criterion, weights = losses.build_criterion(plan, info, runtime.device, global_batch=True)
    return Run(
        model=model, train_model=engine.wrap_model(model, plan, runtime, world_size),
        optimizer=optimizer, schedulers=engine.build_scheduler(plan, optimizer, len(loader)),
        criterion=criterion, weights=weights,
        val_criterion=losses.build_criterion(plan, info, torch.device("cpu"))[0],
        loader=loader, val_set=val_set, runtime=runtime, plan=plan, info=info,
        run_args=plain_args(args), run_dir=run_dir, log=log, stop=engine.StopFlag(),
        rank=rank, world_size=world_size, steps_per_epoch=len(loader), started=started,
        deadline=deadline, best_weights=None, health=[], step_seconds=plan.measured.get("step_seconds", 0.0),
        val_seconds=plan.measured.get("val_seconds", 0.0))


def log_start(run, root, train_images, val_images):
    info, runtime, log = run.info, run.runtime, run.log
    log(f"run folder: {run.run_dir}")
    log(f"data: {root} | train {train_images} | val {val_images} images | "
        f"{info['num_classes']} classes {info['class_names']} | masks: "
        f"{info['mask_decoding'].get('kind')}")
    log(f"device: {runtime.device} | precision {precision_name(runtime.dtype)} | "
        f"channels_last {runtime.channels_last} | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()}"
        + (f" | {run.world_size} processes, global batch {run.plan.batch_size * run.world_size}"
           if run.world_size > 1 else ""))
    if info.get("scan_reused"):
        log("data: the scan of an unchanged dataset was reused (scancache.py)")
    for line in info.get("layout_lines", []):
        log(f"data: {line}")
    if info.get("holdout") and (info.get("layout") or {}).get("pool"):
        log(f"cross-validation fold: validating on the {len(info['holdout'])} images it holds "
            f"out of {train_images + len(info['holdout'])} (train and val pooled; splits.json)")
    elif info.get("holdout"):
        held = info["holdout"]
        log(f"no val/ split in {root}: validating on {len(held)} of {train_images + len(held)}"
            f" train images held out (about {HOLDOUT_SHARE:.0%}, whole stacks and groups chosen "
            f"by a hash of the name; config.json lists them under 'holdout'): "
            f"{', '.join(held[:5])}" + (f" and {len(held) - 5} more" if len(held) > 5 else ""))
    for line in planning.table_lines(run.plan, run.world_size):
        log(line)
    if run.weights is not None:
        log(f"class weights ({run.plan.class_weights}): "
            + ", ".join(f"{name} {w:.3f}" for name, w in zip(info["class_names"],
                                                            run.weights.tolist())))


# ---------------------------------------------------------------- the loop

def fit(run, state):
    """Train to the plan's last step in rounds: train to the next validation (or save),
    validate, record, save; under a time budget, re-plan the steps left after each round."""
    columns = metric_columns(run.info["class_names"])
    rows = read_metrics(run.run_dir / "metrics.csv", run.epochs(state)) if is_main() else []
    if is_main() and (run.run_dir / "metrics.csv").is_file():
        # Rows after the checkpoint (a crash before its save) go now, not a round later.
        write_metrics(run.run_dir / "metrics.csv", rows, columns)
    while state["global_step"] < run.plan.steps:
        start = time.monotonic()
        loss, rate = train_round(run, state)
        train_seconds = time.monotonic() - start
        if run.plan.time_budget and run.plan.steps - state["global_step"] < run.plan.val_every / 2:
            run.plan.steps = state["global_step"]  # a last round this short is not worth a check
        last = state["global_step"] >= run.plan.steps or run.plan.dry_run
        row = {"epoch": run.epochs(state), "train_loss": round(loss, 6),
               "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(train_seconds, 2),
               "img/s": round(rate, 2)}
        state.update(loss_sum=0.0, images=0)
        improved, metrics = False, None
        if last or state["global_step"] % run.plan.val_every == 0:
            metrics = validate(run, state, final=last)
            row.update(metric_row(metrics, run.info["class_names"]))
            improved, run.health = record_best(run, state, metrics["miou"]), metrics["health"]
            run.weak_classes = weak_classes(metrics)
            run.val_seconds = time.monotonic() - start - train_seconds
            summary(run, row, metrics, state, run.val_seconds)
            state["curve"].append([state["global_step"], metrics["miou"]])
            ending.check_plateau(run, state)
            ending.replan(run, state)
            ending.hold_deadline(run, state)
        else:
            run.log(f"{progress_text(run, state)} train_loss {loss:.4f} {rate:.1f} img/s "
                    f"{train_seconds:.0f}s")
        rows.append({key: row.get(key, "") for key in columns})
        if is_main():
            write_metrics(run.run_dir / "metrics.csv", rows, columns)
            plots.plot_curves(run.run_dir / "curves.png", rows)
        if last and metrics is not None:
            settle_best(run, state, metrics)
        if improved:
            run.save("best.pt", state)
        stopping = engine.stop_requested(run.stop)  # every rank decides alike, once, here
        if (metrics is not None or last or stopping
                or saves.epoch_save_due(run.plan, state["global_step"], run.steps_per_epoch)):
            run.save("last.pt", state)
        if stopping and not last:
            raise engine.Interrupted(f"stopped by {run.stop.signal}")
        if run.plan.early_stop and state["stale"] >= run.plan.early_stop:
            state["ending"] = "early_stop"
            break
        if last:
            break
    ending.finish(run, state)


def train_round(run, state):
    """Train from the current (epoch, batch) to the round's end, across epoch ends; under a
    time budget or a deadline in BUDGET_CHECKS chunks a validation interval, re-planning the
    run's end after each, so a machine that slows down mid-round is noticed; last.pt at the plan's save points
    between validations (saves.py). Returns (mean loss of the round, img/s). Saves last.pt and
    raises engine.Interrupted after SIGINT/SIGTERM."""
    plan = run.plan
    timed = bool(plan.time_budget or run.deadline)
    seconds, end = 0.0, saves.round_end(plan, state["global_step"], run.steps_per_epoch)
    while True:
        until = min(end, saves.next_save(plan, state["global_step"]))
        if timed:
            until = min(until, state["global_step"] + max(1, plan.val_every // BUDGET_CHECKS))
        probe = saves.probing(plan) and run.save_timer.chunk(state["global_step"])
        if probe:
            until = min(until, state["global_step"] + probe)
        start, first_step = time.monotonic(), state["global_step"]
        loss = train_to(run, state, until)
        seconds += time.monotonic() - start
        latest = (time.monotonic() - start) / max(state["global_step"] - first_step, 1)
        if probe and run.save_timer.timed:
            plan_saves(run, latest)
        if timed:  # an average over chunks: one noisy chunk moves little
            run.step_seconds = (run.step_seconds + latest) / 2 if run.step_seconds else latest
            ending.replan(run, state)
            ending.hold_deadline(run, state)
            end = min(end, plan.steps)
        if state["global_step"] >= end or plan.dry_run:
            return loss, state["images"] / max(seconds, 1e-9)
        if saves.step_save_due(plan, state["global_step"]):
            run.save("last.pt", state)


def plan_saves(run, step_seconds):
    """The save interval from the run's own step time (rank 0's, so every rank saves alike)."""
    plan = run.plan
    step_seconds = broadcast_object(step_seconds)
    plan.measured["save_step_seconds"] = round(step_seconds, 4)
    plan.save_steps = saves.plan_save_steps(plan.val_every, step_seconds)
    run.log(f"save last.pt: {saves.describe(plan)} ({step_seconds:.3f} s a step)")


def train_to(run, state, until_step):
    """Train to until_step across epoch ends; the mean loss since the sums were reset."""
    while True:
        result = engine.train_one_epoch(
            run.train_model, run.loader.epoch(state["epoch"], state["batch"]), run.criterion,
            run.optimizer, run.schedulers[0], run.runtime, state, run.plan, run.stop, run.log,
            until_step=until_step)
        if result.interrupted:
            run.save("last.pt", state)
            raise engine.Interrupted(f"stopped by {run.stop.signal}")
        if result.finished:
            state.update(epoch=state["epoch"] + 1, batch=0)
        if state["global_step"] >= until_step or run.plan.dry_run:
            return result.loss


# ---------------------------------------------------------------- validation

def validate(run, state, final=False):
    """Metrics on the val split (scored as evaluate.py scores a checkpoint; intermediate
    checks on plan.val_images of it when the plan says so), after re-estimating BatchNorm's
    statistics on whole train images; the plateau scheduler's step, the samples picture and
    the health warnings."""
    engine.recalibrate_batchnorm(run.model, engine.calibration_images(
        run.loader.dataset, run.plan.image_size, scale=run.plan.train_scale), run.runtime)
    model = run.runtime.inference_form(run.model)
    val_loss, confusion = engine.validate(
        model, run.val_set, run.val_criterion, run.runtime, run.info["num_classes"],
        run.plan.ignore_index, image_size=run.plan.image_size,
        max_batches=1 if run.plan.dry_run else None, rank=run.rank, world_size=run.world_size,
        images=None if final else run.plan.val_images, scale=run.plan.train_scale)
    metrics = confusion.compute(run.info["class_names"])
    metrics["val_loss"] = val_loss
    metrics["health"] = health_warnings(confusion.matrix, run.info["class_names"])
    if run.schedulers[1] is not None:
        run.schedulers[1].step(metrics["miou"])
    if is_main():
        samples = engine.sample_predictions(model, run.val_set, run.runtime,
                                            scale=run.plan.train_scale)
        plots.save_samples_figure(run.run_dir / samples_name(run, state), samples,
                                  run.info["class_colors"])
    return metrics


def weak_classes(metrics):
    """Indices of the classes present in val with IoU under measures.HEALTH_MIN_IOU."""
    return [index for index, entry in enumerate(metrics["per_class"])
            if entry["support"] and not entry["iou"] >= HEALTH_MIN_IOU]


def samples_name(run, state):
    """val_samples_epochNNN.png at an epoch's end, val_samples_stepNNNNNN.png between."""
    if state["batch"] == 0:
        return f"val_samples_epoch{state['epoch']:03d}.png"
    return f"val_samples_step{state['global_step']:06d}.png"


def record_best(run, state, miou):
    if miou > state["best_metric"]:
        state.update(best_metric=miou, best_epoch=state["epoch"],
                     best_step=state["global_step"], stale=0)
        if run.plan.val_images is not None:  # re-scored on the whole split at the end
            run.best_weights = copy_weights(run.model)
        return True
    state["stale"] += 1
    return False


def copy_weights(model):
    return {key: value.detach().clone() for key, value in unwrapped(model)
            .state_dict().items()}


def settle_best(run, state, last_metrics):
    """When intermediate checks used part of the val split, best.pt was chosen on those:
    score it on the whole split now, and keep the better of it and the last model."""
    if run.plan.val_images is None or run.best_weights is None or \
            state.get("best_step") == state["global_step"]:
        state["best_metric"] = max(state["best_metric"], last_metrics["miou"])
        return
    best_model = copy.deepcopy(unwrapped(run.model))
    best_model.load_state_dict(run.best_weights)
    _, confusion = engine.validate(
        run.runtime.inference_form(best_model), run.val_set, run.val_criterion, run.runtime,
        run.info["num_classes"], run.plan.ignore_index, image_size=run.plan.image_size,
        rank=run.rank, world_size=run.world_size, scale=run.plan.train_scale)
    best_miou = confusion.compute()["miou"]
    run.log(f"whole val split: best checkpoint (step {state['best_step']}) mIoU {best_miou:.4f}, "
            f"last mIoU {last_metrics['miou']:.4f}")
    if last_metrics["miou"] >= best_miou:
        state.update(best_metric=last_metrics["miou"], best_epoch=state["epoch"],
                     best_step=state["global_step"])
        run.save("best.pt", state)
    else:
        state["best_metric"] = best_miou


def metric_row(metrics, names):
    row = {key: metrics[key] for key in ("val_loss", "pixel_acc", "mean_acc", "miou",
                                         "mean_dice")}
    for name, per_class in zip(names, metrics["per_class"]):
        row[f"iou_{name}"] = per_class["iou"]
    return {key: round(value, 6) for key, value in row.items()}


def progress_text(run, state):
    """'epoch 2/4' when the run's length was set (a flag) in whole epochs, else 'step 300/1000
    (epoch 12.5)': a planned length moves under a budget, and the label with it."""
    epochs = run.plan.steps / max(run.steps_per_epoch, 1)
    if state["batch"] == 0 and epochs == int(epochs) and run.plan.sources.get("steps") == \
            "flag" and run.plan.val_every % run.steps_per_epoch == 0:
        return f"epoch {state['epoch']}/{int(epochs)}"
    return f"step {state['global_step']}/{run.plan.steps} (epoch {run.epochs(state):.1f})"


def summary(run, row, metrics, state, val_seconds):
    per_class = " ".join(f"{c['name']} {c['iou']:.3f}" for c in metrics["per_class"])
    run.log(f"{progress_text(run, state)} train_loss {row['train_loss']:.4f} "
            f"val_loss {row['val_loss']:.4f} pixel_acc {row['pixel_acc']:.4f} "
            f"miou {row['miou']:.4f} dice {row['mean_dice']:.4f} | IoU {per_class} | "
            f"lr {row['lr']:.2e} {row['img/s']:.1f} img/s {row['seconds']:.0f}s "
            f"(+{val_seconds:.0f}s val)"
            + (" *best*" if state.get("best_step") == state["global_step"] else ""))
    for warning in metrics["health"]:
        run.log(f"warning: {warning}")


def rebatched(state, checkpoint, plan):
    """The progress of a run resumed with another --batch-size (after an out-of-memory): the
    batches done in the epoch in flight counted at the new size, so that the images already
    seen there are not seen again (the steps, the schedule's clock, go on as they were)."""
    saved = (checkpoint.get("plan") or {}).get("batch_size")
    if saved and saved != plan.batch_size and state["batch"]:
        state = dict(state, batch=state["batch"] * saved // plan.batch_size)
    return state
