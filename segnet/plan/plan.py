"""The training plan: the recipe (crop, batch, length, validation interval, learning rate, loss)
derived from the dataset's fingerprint, the machine's measured speed and a time budget, the way
nnU-Net plans from a dataset fingerprint, plus the time budget nnU-Net does not have.

`make_plan` is a pure function of a Fingerprint, the explicit flags and a Speed; train.py scans
the data, measures the speed (timing.measure_speed, a few real training steps) and prints the
plan. The resulting Plan is the one configuration the training machinery (engine.py) reads.
"""
import dataclasses
import math
from dataclasses import dataclass, field

from model import IMAGENET
from segnet.data.feed import loaders
from segnet.data.check.fingerprint import (SMALL_IMAGES, Fingerprint, fingerprint,  # noqa: F401
                                     size_counts)
from segnet.plan.curve import OPEN_FACTOR, PLATEAU_GAIN, PLATEAU_WINDOW
from segnet.plan.dataplan import plan_data
from segnet.plan.plantable import table_lines  # noqa: F401  (printed with the plan)
from segnet.plan.saves import plan_save_steps
from segnet.plan.sizes import (CROP_CAP, MAX_BATCH, MIN_BATCH, MIN_STEP_PIXELS,  # noqa: F401
                               TARGET_BATCH, crop_ladder, fit_memory, floor_to_grid, plan_crop,
                               target_batch)
from segnet.plan.speed import (CALIBRATION_IMAGES, CALIBRATION_PIXELS, CHECK_OVERHEAD,  # noqa: F401
                               Speed, plan_compile)

# ---------------------------------------------------------------- the rules' constants
# Length: what the data needs. A small dataset still needs this many optimiser steps to
# converge; a large one needs this many passes over its pixels. (Measured: see docs/plan.md.)
MIN_STEPS = 1000
MIN_PASSES = 10
MAX_STEPS = 200_000
MIN_BUDGET_STEPS = 300  # below this, a smaller crop buys more steps
# Below this at the smallest crop a run is not worth starting: stop (exit 2) and say what budget
# would buy MIN_BUDGET_STEPS. Between the two the run trains what it can (the membrane set buys
# 223 steps of 168 px in 10 minutes on a 2-core AVX2 CPU, and learns well in them).
MIN_USEFUL_STEPS = 100
# Validation: this many checks in a run, taking at most this share of its time.
VALIDATIONS = 10
VAL_SHARE = 0.15
# Learning rate at LR_BATCH images a step, scaled with the square root of the global batch.
BASE_LR = {"adamw": 2e-3, "adam": 2e-3, "sgd": 0.01}
LR_BATCH = 8
WARMUP_SHARE = 0.03
# Loss: cross-entropy plus batch Dice, as nnU-Net trains. Dice weighs each class equally,
# whatever its pixel count; measured, it helped a rare class (demo set, 0.943 -> 0.947 val
# mIoU) and a 22% one alike (membrane, 0.787 -> 0.792, ahead at every check after the first
# 40% of the run), while class weights lost (membrane 0.745).
PLANNED_LOSS = "ce+dice"
# Training scale: under a budget that buys fewer than SCALE_PASSES passes over the train
# pixels (as budget_passes estimates them from the timed steps: about 2/3 of what a run then
# makes), train (and predict) on images resized by the largest factor of SCALES that buys them,
# keeping the thinnest class MIN_WIDTH pixels wide and the short side MIN_SCALED_SIDE pixels.
# Measured on Stanford Background in 10 CPU minutes (docs/plan.md): scale 0.5 -> 1.8 passes
# made, test mIoU 0.41; 0.3 -> 5.5 passes, 0.45.
SCALES = (1.0, 0.75, 0.5, 0.4, 0.3, 0.25)
SCALE_PASSES = 3.0
MIN_WIDTH = 4.0
MIN_SCALED_SIDE = 48
# Augmentation: full, or light when the run makes fewer than LIGHT_PASSES passes over the
# train pixels (too short to overfit: Stanford Background 0.446 -> 0.493 test mIoU).
AUGMENTATION = {"full": {"scale": (0.75, 1.25), "jitter": 0.2, "noise": 0.02},
                "light": {"scale": (0.9, 1.1), "jitter": 0.1, "noise": 0.0}}
LIGHT_PASSES = 20
DEFAULT_BUDGET_MINUTES = {"cpu": 10.0, "mps": 10.0, "cuda": None}  # CUDA: the steps needed
PLANNED = ("crop_size", "batch_size", "steps", "val_every", "val_images", "lr", "warmup_steps",
           "loss", "class_weights", "time_budget", "in_channels", "train_scale",
           "class_sampling", "hflip", "vflip", "rotate", "augmentation", "scale", "jitter",
           "noise", "encoder_weights", "save_steps", "scheduler", "compile")  # planned values
# The flags (argparse names) whose values make_plan reads as they are, for the planned values
# they are not named after: --time-budget is in minutes (trainer.planned_flags converts it on
# its own), and val_images has no flag. PLANNED_FLAGS: every such flag, in PLANNED's order.
FLAGS_OF = {"steps": ("steps", "epochs"), "val_every": ("val_every", "eval_every"),
            "val_images": (), "warmup_steps": ("warmup_epochs",), "time_budget": (),
            "augmentation": ()}
PLANNED_FLAGS = tuple(flag for name in PLANNED for flag in FLAGS_OF.get(name, (name,)))
# The final validation(s) and saves are reserved out of the budget, with this margin.
BUDGET_MARGIN = 0.03


@dataclass
class Plan:
    """Everything the training machinery reads, resolved once: from the flags where given
    (source "flag"), else planned from the data, the machine and the budget ("auto").
    Saved in config.json and the checkpoint, so --resume continues the same plan."""

    # planned (see PLANNED): sizes, length, validation, learning rate, loss
    crop_size: int = 64  # 0 = whole images
    batch_size: int = 8  # per process
    steps: int = 1000  # optimiser steps of the whole run
    val_every: int = 100  # steps between validations (the last step always validates)
    val_images: int | None = None  # intermediate checks on this many val images; None: all
    lr: float = 2e-3
    warmup_steps: int = 30
    loss: str = "ce"
    class_weights: str = "none"
    time_budget: float | None = None  # seconds for the whole run; None: no budget
    # planned from the labels, the images and the budget (see PLANNED)
    in_channels: int = 1  # 3: the images carry colour
    train_scale: float = 1.0  # images resized by this for training and prediction
    class_sampling: float = 0.0  # share of crops centred on a pixel of a drawn class
    hflip: bool = True
    vflip: bool = True
    rotate: float = 15.0
    augmentation: str = "full"  # "full" or "light" (AUGMENTATION): scale, jitter, noise
    scale: tuple = (0.75, 1.25)
    jitter: float = 0.2
    noise: float = 0.02
    encoder_weights: str | None = None  # "imagenet" or a file: VGG16-BN encoder initialisation
    # augmentation and data
    image_size: int | None = None
    flip: bool = True  # False: --no-flip, no flips at all
    augment: bool = True
    cache: bool = True
    workers: int | None = None  # None: 0 on CPU, 4 on GPU
    ignore_index: int = 255
    # optimiser and schedule
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "wsd"  # warm-up, stable, decay (curve.py): needs no length in advance
    plateau_gain: float = PLATEAU_GAIN  # val mIoU gain below which the curve has plateaued
    decay_start: int | None = None  # the step the decay began (a plateau, the budget's end)
    step_size: int = 10  # epochs per decay of the "step" schedule
    gamma: float = 0.1
    grad_clip: float = 0.0
    # hardware and run
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None  # None: on for CPU and CUDA
    compile: bool = False  # planned (plan_compile): on CUDA for runs long enough to repay it
    seed: int = 0
    log_every: int = 20
    save_every: int | None = None  # epochs between saves of last.pt; None: at validations
    save_steps: int | None = None  # steps between saves between validations (saves.py)
    early_stop: int = 0  # validations without a better mIoU before stopping; 0: never
    dry_run: bool = False
    overfit_batch: bool = False
    # how it was made: {value name: "auto" | "flag"}, the measured speed, and why
    sources: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self):
        """Plain data (config.json, the checkpoint)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "scale" in values:
            values["scale"] = tuple(values["scale"])
        values.setdefault("plateau_gain", 0.0)  # plans from before plateau ends never had them
        return cls(**values)


# ---------------------------------------------------------------- the machine's speed

def speed_candidates(fp, flags, device_type, world_size=1):
    """The (crop, batch) pairs worth timing: the planned crop at full size and a small one
    (what a reduced training scale or the crop ladder may pick), at the smallest batch (or
    --batch-size): a line through both prices every crop and batch in between, its intercept
    the fixed cost of a step. Small, so that timing costs the budget little."""
    crop = flags.get("crop_size")
    side = (plan_crop(fp, device_type) if crop is None else crop) or fp.short_side
    batch = flags.get("batch_size") or MIN_BATCH
    small = floor_to_grid(max(MIN_SCALED_SIDE, side // 3))
    return [(side, batch)] + ([(small, batch)] if small < side and crop is None else [])


# ---------------------------------------------------------------- the rules

def needed_steps(fp, crop, batch, world_size=1):
    """What the data needs: MIN_STEPS, or MIN_PASSES over the train pixels if more."""
    passes = MIN_PASSES * fp.train_pixels / (batch * world_size * crop * crop)
    return int(min(max(MIN_STEPS, math.ceil(passes)), MAX_STEPS))


def steps_per_epoch(fp, plan, batch, world_size=1):
    """Steps of one pass over the train images (one fixed batch with --overfit-batch)."""
    if plan.overfit_batch:
        return 1
    return loaders.steps_per_epoch(fp.train_images, batch, world_size)


def plan_lr(optimizer, global_batch):
    return BASE_LR[optimizer] * math.sqrt(global_batch / LR_BATCH)


def plan_validation(fp, steps, step_seconds, val_seconds):
    """(val_every, val_images): VALIDATIONS checks, on a subset of the val images when full
    checks would take more than VAL_SHARE of the training time."""
    checks = min(VALIDATIONS, steps)
    val_every = math.ceil(steps / checks)
    allowed = VAL_SHARE * steps * step_seconds / checks  # seconds per check
    if val_seconds <= allowed or fp.val_images <= 1:
        return val_every, None
    return val_every, max(1, int(fp.val_images * allowed / val_seconds))


def scale_floor(fp):
    """The smallest training scale that keeps the thinnest class MIN_WIDTH pixels wide and the
    short side MIN_SCALED_SIDE pixels; 1 when no class width is known."""
    if not fp.thinnest:
        return 1.0
    return min(1.0, max(MIN_WIDTH / fp.thinnest, MIN_SCALED_SIDE / fp.short_side))


def plan_scale(fp, flags, speed, seconds, device, world_size):
    """The training scale: 1, or under a budget that buys fewer than SCALE_PASSES passes at
    full size the largest of SCALES (not below scale_floor) that buys them, else the
    smallest allowed."""
    if flags.get("train_scale"):
        return flags["train_scale"]
    if speed is None or not seconds or flags.get("crop_size") is not None:
        return 1.0
    allowed = [factor for factor in SCALES if factor >= scale_floor(fp) - 1e-9] or [1.0]
    for factor in allowed:
        if budget_passes(fp.scaled(factor), speed, seconds, device, world_size) >= SCALE_PASSES:
            return factor
    return allowed[-1]


def budget_passes(fp, speed, seconds, device, world_size=1):
    """Passes over the train pixels that `seconds` of run buy at the planned crop."""
    crop = plan_crop(fp, device)
    batch = target_batch(fp, crop, world_size, device)
    steps = usable_seconds(fp, speed, seconds) / max(speed.step_seconds(crop, batch), 1e-9)
    return steps * batch * world_size * crop * crop / max(fp.train_pixels, 1)


def plan_augmentation(fp, flags, crop, batch, steps, world_size):
    """{augmentation, scale, jitter, noise}: light for a run of fewer than LIGHT_PASSES passes
    over the train pixels; explicit flags win. Also returns the passes."""
    side = crop or fp.short_side
    passes = steps * batch * world_size * side * side / max(fp.train_pixels, 1)
    kind = "light" if passes < LIGHT_PASSES else "full"
    values = dict(AUGMENTATION[kind], augmentation=kind)
    return {name: flags[name] if flags.get(name) is not None else value
            for name, value in values.items()}, round(passes, 1)


def plan_encoder(flags, in_channels, imagenet_cached, plan):
    """The encoder's initialisation: the flag's, else ImageNet VGG16-BN for colour data when
    torch.hub's cache holds it (a note when it does not), else None (random)."""
    if flags.get("encoder_weights"):
        return flags["encoder_weights"]
    if in_channels == 3 and imagenet_cached:
        return IMAGENET
    if in_channels == 3:
        plan.notes.append("encoder: random; --encoder-weights imagenet downloads ImageNet "
                          "VGG16-BN once (528 MB), and later colour runs use it")
    return None


class BudgetError(ValueError):
    """The time budget left cannot buy a useful run (MIN_USEFUL_STEPS at the smallest crop)."""


# ---------------------------------------------------------------- make_plan

def make_plan(fp, flags, device="cpu", speed=None, default_budget=None, world_size=1,
              elapsed=0.0, base=None, imagenet_cached=False):
    """The Plan for a dataset: a pure function of the fingerprint, the explicit flags ({name:
    value}; None or absent = plan it), the device type, the measured Speed (needed when a
    budget applies), the default budget in seconds, the process count, the seconds already
    spent, `base` (a Plan holding the flags that are not planned) and whether torch.hub's cache
    holds the ImageNet VGG16-BN weights (used for colour data when it does).

    Explicit flags always win. With a time budget the run trains for all it affords, at the
    largest batch, then crop, that affords what the data needs (the batch shrinking first, down
    to MIN_BATCH, then the crop); without one (`--time-budget none`, CUDA's default) until val
    mIoU plateaus (curve.py), at most OPEN_FACTOR times what the data needs. Either way the
    run ends early when the curve plateaus. --epochs or --steps set the length and switch the
    budget off."""
    plan = dataclasses.replace(base or Plan(), sources={}, measured={}, notes=[])
    data = plan_data(fp, flags, plan)
    budget = run_budget(flags, plan, default_budget)
    scale = plan_scale(fp, flags, speed, budget and budget - elapsed, device, world_size)
    fp = fp.scaled(scale)
    if scale != 1 and not flags.get("train_scale"):
        plan.notes.append(f"scale {scale:g}: the budget buys fewer than {SCALE_PASSES} passes "
                          f"at full size (thinnest class {fp.thinnest:.1f} px wide at this scale)")
    encoder = plan_encoder(flags, data["in_channels"], imagenet_cached, plan)
    chosen_saves = flags.get("save_steps") or plan.save_every  # before --epochs sets it
    crop, batch, steps, budget = plan_length(fp, flags, plan, device, speed, default_budget,
                                             world_size, elapsed)
    augmentation, passes = plan_augmentation(fp, flags, crop, batch, steps, world_size)
    epoch = steps_per_epoch(fp, plan, batch, world_size)
    side = crop or fp.short_side  # crop 0 (whole images) is priced at the typical side
    step_seconds = speed.step_seconds(side, batch) if speed else 0.0
    val_seconds = speed.validation_seconds(fp.val_pixels) if speed else 0.0
    needed = needed_steps(fp, side, batch, world_size)
    horizon = needed if open_run(flags, plan, budget) else steps
    val_every, val_images = validation_values(fp, flags, epoch, horizon, step_seconds,
                                              val_seconds)
    planned = {
        "crop_size": crop, "batch_size": batch, "steps": steps,
        "val_every": min(val_every, steps), "val_images": val_images,
        "lr": flags.get("lr") or plan_lr(plan.optimizer, batch * world_size),
        "warmup_steps": plan_warmup(flags.get("warmup_epochs"), epoch, horizon),
        "loss": flags.get("loss") or PLANNED_LOSS, "time_budget": budget,
        "train_scale": scale, **data,
        "scheduler": plan_scheduler(flags, plan, budget, steps, needed),
        "compile": plan_compile(flags, plan, device, crop, horizon * step_seconds),
        "encoder_weights": encoder, "save_steps": flags.get("save_steps") or (
            None if chosen_saves else plan_save_steps(min(val_every, steps), step_seconds)),
        **augmentation}
    explicit = explicit_values(flags, chosen_saves)
    for name, value in planned.items():
        setattr(plan, name, value)
        plan.sources[name] = "flag" if explicit.get(name, flags.get(name) is not None) else "auto"
    if speed is not None:
        plan.measured = measured_values(fp, speed, side, batch, world_size)
    plan.measured["passes"] = passes
    return plan


def validation_values(fp, flags, epoch, horizon, step_seconds, val_seconds):
    """(val_every, val_images): --val-every, --eval-every or --epochs (every epoch, all val
    images), else planned (plan_validation)."""
    if flags.get("val_every") or flags.get("eval_every") or flags.get("epochs"):
        return flags.get("val_every") or (flags.get("eval_every") or 1) * epoch, None
    return plan_validation(fp, horizon, step_seconds, val_seconds)


def explicit_values(flags, chosen_saves):
    """{planned name: True where a flag set it} for the values no single flag of that name
    sets; the other values are "flag" exactly when their flag was given."""
    length = bool(flags.get("steps") or flags.get("epochs"))  # which also turns the budget off
    return {"steps": length, "time_budget": length or bool(flags.get("time_budget")),
            "val_every": bool(flags.get("val_every") or flags.get("eval_every")),
            "warmup_steps": flags.get("warmup_epochs") is not None,
            "save_steps": bool(chosen_saves),
            "augmentation": all(flags.get(name) is not None
                                for name in ("scale", "jitter", "noise"))}


def plan_scheduler(flags, plan, budget, steps, needed):
    """--scheduler, else cosine where a time budget ends the run before the steps the data
    needs (no plateau is expected first, and the whole run can decay: on Stanford Background
    in 10 CPU minutes cosine scored 0.499 test mIoU where wsd scored 0.488, docs/plan.md),
    else wsd, whose decay can start wherever the learning curve plateaus."""
    if flags.get("scheduler"):
        return flags["scheduler"]
    if budget and steps < needed:
        plan.notes.append(f"cosine schedule: the budget ends the run before the {needed} steps "
                          f"the data needs, so no plateau is awaited")
        return "cosine"
    return "wsd"


def plan_warmup(warmup_epochs, epoch, horizon):
    """Warm-up steps: --warmup-epochs, else WARMUP_SHARE of the run's horizon (the steps the
    data needs where the curve decides the length), at most 500."""
    if warmup_epochs is not None:
        return round(warmup_epochs * epoch)
    return max(1, min(500, round(WARMUP_SHARE * horizon)))


def measured_values(fp, speed, side, batch, world_size=1):
    """What the plan measured and derived for a crop side and batch, as the checkpoint keeps it."""
    return {"step_seconds": speed.step_seconds(side, batch),
            "val_seconds": speed.validation_seconds(fp.val_pixels),
            "check_seconds": speed.check_seconds(fp),
            "steps_needed": needed_steps(fp, side, batch, world_size),
            "steps_timed": [list(step) for step in speed.steps],
            "infer_pixels_per_second": speed.infer_pixels_per_second}


def plan_length(fp, flags, plan, device, speed, default_budget, world_size, elapsed):
    """(crop, batch, steps, budget seconds or None): the sizes and the length of the run."""
    crop = flags.get("crop_size")
    crop = plan_crop(fp, device) if crop is None else crop
    batch = flags.get("batch_size") or target_batch(fp, crop or fp.short_side, world_size,
                                                    device)
    crop, batch = fit_memory(fp, flags, speed, crop, batch, plan.notes)
    if flags.get("steps"):
        plan.notes.append(f"{flags['steps']} steps: --steps")
        return crop, batch, flags["steps"], None
    if flags.get("epochs"):  # as before plans: a row, and a save, every epoch by default
        plan.save_every = plan.save_every or 1
        steps = flags["epochs"] * steps_per_epoch(fp, plan, batch, world_size)
        plan.notes.append(f"{steps} steps: --epochs {flags['epochs']}")
        return crop, batch, steps, None
    if plan.dry_run:
        return crop, batch, 1, None
    budget = run_budget(flags, plan, default_budget)
    if budget and speed is not None:
        return (*fit_budget(fp, flags, speed, budget - elapsed, crop, batch, world_size,
                            plan.notes), budget)
    steps = needed_steps(fp, crop or fp.short_side, batch, world_size)
    if open_run(flags, plan, budget):
        cap = min(MAX_STEPS, OPEN_FACTOR * steps)
        plan.notes.append(f"until val mIoU plateaus (gain under {plan.plateau_gain:g} over the "
                          f"last {PLATEAU_WINDOW:.0%} of the steps), at most {cap} steps "
                          f"({OPEN_FACTOR}x the {steps} the data needs)")
        return crop, batch, cap, None
    plan.notes.append(f"{steps} steps: what the data needs (at least {MIN_STEPS}, or "
                      f"{MIN_PASSES} passes over the train pixels)")
    return crop, batch, steps, budget


def run_budget(flags, plan, default_budget):
    """The run's time budget in seconds, or None: --steps, --epochs, --dry-run and
    `--time-budget none` switch it off."""
    if flags.get("steps") or flags.get("epochs") or plan.dry_run or flags.get("no_budget"):
        return None
    return flags.get("time_budget") or default_budget


def open_run(flags, plan, budget):
    """A run whose end its learning curve decides: no budget, no fixed length, and the
    plateau rule on (--plateau-gain > 0)."""
    return (budget is None and not (flags.get("steps") or flags.get("epochs") or plan.dry_run)
            and plan.plateau_gain > 0)


def fit_budget(fp, flags, speed, seconds, crop, batch, world_size, notes):
    """(crop, batch, steps) for `seconds` of run: the steps the data needs at the largest
    batch, then crop, that affords them; else the combination that affords the most steps
    (at least MIN_BUDGET_STEPS if a smaller crop gets there). Explicit crop or batch stay."""
    usable = usable_seconds(fp, speed, seconds)
    crops = [crop] if flags.get("crop_size") is not None else crop_ladder(crop)
    batches = [batch] if flags.get("batch_size") else list(range(batch, MIN_BATCH - 1, -1))
    most = None
    for trial_crop in crops:
        side = trial_crop or fp.short_side
        for trial_batch in batches or [batch]:
            need = needed_steps(fp, side, trial_batch, world_size)
            afford = int(usable / max(speed.step_seconds(side, trial_batch), 1e-9))
            if afford >= need:
                notes.append(f"{afford} steps: all the budget affords at crop {trial_crop}, "
                             f"batch {trial_batch} (the data needs {need}); fewer if val mIoU "
                             f"plateaus first")
                return trial_crop, trial_batch, afford
            if most is None or afford > most[2]:
                most = (trial_crop, trial_batch, max(afford, 1))
        if most[2] >= MIN_BUDGET_STEPS:
            break
    if most[2] < MIN_USEFUL_STEPS:
        raise BudgetError(hopeless_text(fp, speed, seconds, most, usable))
    notes.append(f"{most[2]} steps: all the budget affords (the data needs "
                 f"{needed_steps(fp, most[0] or fp.short_side, most[1], world_size)}); a "
                 f"longer --time-budget trains longer")
    return most


def usable_seconds(fp, speed, seconds):
    """Training seconds in `seconds` of run: the final full validation and the best
    checkpoint's re-scoring come out first, then the intermediate checks (at most VAL_SHARE
    of the training time)."""
    check = speed.check_seconds(fp)
    available = max(seconds * (1 - BUDGET_MARGIN) - 2 * check, 0.0)
    return available - min(VALIDATIONS * check, VAL_SHARE * available / (1 + VAL_SHARE))


def hopeless_text(fp, speed, seconds, most, usable):
    """The one-line reason a budget cannot buy a useful run, with the budget that would buy
    MIN_BUDGET_STEPS (what the crop ladder aims at)."""
    crop, batch, afford = most
    training = MIN_BUDGET_STEPS * speed.step_seconds(crop or fp.short_side, batch)
    needed = (seconds - usable) + training * (1 + VAL_SHARE)  # checks, margin, training
    minutes = math.ceil(needed / 60 * 10) / 10
    return (f"the time budget left ({max(seconds, 0) / 60:.1f} min) buys {afford} training "
            f"steps at the smallest crop ({crop} px, batch {batch}); a useful run needs "
            f"{MIN_USEFUL_STEPS}, a good one {MIN_BUDGET_STEPS}: pass --time-budget "
            f"{minutes:g} or more, or --steps")


def replan_steps(plan, done, seconds_left, step_seconds, val_seconds):
    """The run's new last step under its time budget, from the speed measured so far: what
    `seconds_left` affords at `step_seconds` a step plus a `val_seconds` check every
    plan.val_every steps, after the final whole-split checks; unchanged when within 3% (a
    schedule that keeps moving helps nobody)."""
    final = 2 * max(plan.measured.get("check_seconds", 0.0), val_seconds)
    per_step = step_seconds + val_seconds / max(plan.val_every, 1)
    afford = int((seconds_left * (1 - BUDGET_MARGIN) - final) / max(per_step, 1e-9))
    steps = max(done + 1, done + afford)
    return plan.steps if abs(steps - plan.steps) <= 0.03 * plan.steps else steps


def default_budget_seconds(device_type):
    """The budget when no --time-budget, --epochs or --steps is given (None: no budget)."""
    minutes = DEFAULT_BUDGET_MINUTES.get(device_type)
    return None if minutes is None else 60 * minutes


