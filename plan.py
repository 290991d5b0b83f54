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

import loaders
from model import MIN_SIZE, context_radius

# ---------------------------------------------------------------- the rules' constants
# Crop: square, a multiple of the pooling grid, no larger than the typical image, and at most
# this large (about 3x SegNet's 87-pixel receptive field on a CPU, where every pixel costs).
CROP_CAP = {"cuda": 512, "cpu": 256, "mps": 256}
SMALL_IMAGES = 0.10  # the crop fits the short side of all but the smallest 10% of images
# Images per (global) step when the budget allows: on a CPU, where a larger batch buys no
# parallelism, more and smaller steps learn more from the same compute.
TARGET_BATCH = {"cuda": 8, "cpu": 4, "mps": 4}
MIN_BATCH = 2        # BatchNorm needs two samples
MAX_BATCH = 64
MIN_STEP_PIXELS = 64 * 64 * 8  # tiny crops get a larger batch, so a step sees enough pixels
# Length: what the data needs. A small dataset still needs this many optimiser steps to
# converge; a large one needs this many passes over its pixels. (Measured: see docs/plan.md.)
MIN_STEPS = 1000
MIN_PASSES = 10
MAX_STEPS = 200_000
MIN_BUDGET_STEPS = 300  # below this, a smaller crop buys more steps
# Validation: this many checks in a run, taking at most this share of its time.
VALIDATIONS = 10
VAL_SHARE = 0.15
CHECK_OVERHEAD = 2.0  # seconds a check spends beyond scoring (samples figure, curves, saves)
# BatchNorm statistics are re-estimated before each validation from whole, unaugmented train
# images, up to this many pixels (four 512x512 images; on the membrane set, four images gave
# the statistics of all 22 to within 0.002 mIoU).
CALIBRATION_PIXELS = 4 * 512 * 512
CALIBRATION_IMAGES = 16  # and at most this many images (each a forward pass of its own)
# Learning rate at LR_BATCH images a step, scaled with the square root of the global batch.
BASE_LR = {"adamw": 2e-3, "adam": 2e-3, "sgd": 0.01}
LR_BATCH = 8
WARMUP_SHARE = 0.03
# Loss: cross-entropy plus batch Dice, as nnU-Net trains. Dice weighs each class equally,
# whatever its pixel count; measured, it helped a rare class (demo set, 0.943 -> 0.947 val
# mIoU) and a 22% one alike (membrane, 0.787 -> 0.792, ahead at every check after the first
# 40% of the run), while class weights lost (membrane 0.745).
PLANNED_LOSS = "ce+dice"
DEFAULT_BUDGET_MINUTES = {"cpu": 10.0, "mps": 10.0, "cuda": None}  # CUDA: the steps needed
PLANNED = ("crop_size", "batch_size", "steps", "val_every", "val_images", "lr", "warmup_steps",
           "loss", "class_weights", "time_budget")  # the Plan's planned values
# The flags (argparse names) whose values make_plan reads as they are, for the planned values
# they are not named after: --time-budget is in minutes (trainer.planned_flags converts it on
# its own), and val_images has no flag. PLANNED_FLAGS: every such flag, in PLANNED's order.
FLAGS_OF = {"steps": ("steps", "epochs"), "val_every": ("val_every", "eval_every"),
            "val_images": (), "warmup_steps": ("warmup_epochs",), "time_budget": ()}
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
    # augmentation and data
    image_size: int | None = None
    scale: tuple = (0.75, 1.25)
    flip: bool = True
    rotate: float = 15.0
    jitter: float = 0.2
    noise: float = 0.02
    augment: bool = True
    cache: bool = True
    workers: int | None = None  # None: 0 on CPU, 4 on GPU
    ignore_index: int = 255
    # optimiser and schedule
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    step_size: int = 10  # epochs per decay of the "step" schedule
    gamma: float = 0.1
    grad_clip: float = 0.0
    # hardware and run
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None  # None: on for CPU and CUDA
    compile: bool = False
    seed: int = 0
    log_every: int = 20
    save_every: int | None = None  # epochs between saves of last.pt; None: at validations
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
        return cls(**values)


# ---------------------------------------------------------------- the dataset's fingerprint

@dataclass(frozen=True)
class Fingerprint:
    """What the plan needs to know of a dataset (from dataset.scan_dataset's info)."""

    train_images: int
    val_images: int
    sizes: tuple  # ((height, width, count), ...) of the train images as the model sees them
    val_pixels: int
    val_size: tuple  # (height, width) of the most common val image
    class_shares: tuple  # of each class among the labelled train pixels
    void_share: float  # of the train pixels with the ignore value

    @property
    def train_pixels(self):
        return sum(height * width * count for height, width, count in self.sizes)

    @property
    def short_side(self):
        """The short side that all but the smallest SMALL_IMAGES of the images reach."""
        sides = sorted((min(height, width), count) for height, width, count in self.sizes)
        skip, seen = SMALL_IMAGES * self.train_images, 0
        for side, count in sides:
            seen += count
            if seen > skip:
                return side
        return sides[-1][0]


def size_counts(sizes, images):
    """((height, width, count), ...) of a split from scan_dataset's image_sizes entry: its
    per-size counts when the scan lists them; else a stand-in, the most common size for all
    images but one each at the smallest and the largest size."""
    listed = sizes.get("counts")
    if listed:
        return tuple((int(height), int(width), int(count)) for height, width, count in listed)
    most_common = tuple(sizes["most_common"])
    others = sorted({tuple(sizes["min"]), tuple(sizes["max"])} - {most_common})
    return ((*most_common, max(images - len(others), 1)), *((h, w, 1) for h, w in others))


def fingerprint(info, image_size=None):
    """The Fingerprint of a scanned dataset; with image_size, every image is that square."""
    splits, image_sizes = info["splits"], info["image_sizes"]
    train_images, val_images = splits["train"], splits.get("val", 0)
    sizes = size_counts(image_sizes["train"], train_images)
    val_sizes = size_counts(image_sizes["val"], val_images) if image_sizes.get("val") else ()
    val_pixels = sum(h * w * count for h, w, count in val_sizes)
    val_size = tuple(image_sizes["val"]["most_common"]) if val_sizes else sizes[0][:2]
    if image_size:
        sizes = ((image_size, image_size, train_images),)
        val_pixels, val_size = val_images * image_size * image_size, (image_size, image_size)
    labelled = sum(info["class_pixels"])
    ignored = info.get("ignore_pixels", 0)
    return Fingerprint(train_images=train_images, val_images=val_images, sizes=sizes,
                       val_pixels=val_pixels, val_size=val_size,
                       class_shares=tuple(p / max(labelled, 1) for p in info["class_pixels"]),
                       void_share=ignored / max(labelled + ignored, 1))


# ---------------------------------------------------------------- the machine's speed

@dataclass(frozen=True)
class Speed:
    """Measured seconds per training step at a few (crop, batch) pairs, and inference pixels
    per second; step_seconds() interpolates linearly in the pixels of a step."""

    device: str  # "cpu", "cuda" or "mps"
    steps: tuple = ()  # ((crop, batch, seconds per step), ...)
    infer_pixels_per_second: float = 0.0

    def step_seconds(self, crop, batch):
        pixels = batch * crop * crop
        points = sorted((b * c * c, seconds) for c, b, seconds in self.steps)
        if len(points) == 1:
            return points[0][1] * pixels / points[0][0]
        (low_pixels, low), (high_pixels, high) = points[0], points[-1]
        per_pixel = max((high - low) / max(high_pixels - low_pixels, 1), 0.0)
        overhead = max(low - per_pixel * low_pixels, 0.0)
        if per_pixel == 0:  # noise: fall back to proportional
            return high * pixels / high_pixels
        return overhead + per_pixel * pixels

    def validation_seconds(self, pixels):
        return pixels / self.infer_pixels_per_second if self.infer_pixels_per_second else 0.0

    def check_seconds(self, fp):
        """A validation: scoring the val split, re-estimating BatchNorm on train images (a
        train-mode pass, about twice inference's cost a pixel) and CHECK_OVERHEAD."""
        largest = max(h * w for h, w, _ in fp.sizes)
        calibration = min(fp.train_pixels, CALIBRATION_PIXELS, CALIBRATION_IMAGES * largest)
        return (self.validation_seconds(fp.val_pixels) + 2 * self.validation_seconds(calibration)
                + CHECK_OVERHEAD)


def speed_candidates(fp, flags, device_type, world_size=1):
    """The (crop, batch) pairs worth timing: the planned crop at the target batch and at the
    smallest one; a line through both prices every batch and crop in between."""
    crop = flags.get("crop_size")
    side = (plan_crop(fp, device_type) if crop is None else crop) or fp.short_side
    batches = {flags["batch_size"]} if flags.get("batch_size") else {
        target_batch(fp, side, world_size, device_type), MIN_BATCH}
    return [(side, batch) for batch in sorted(batches)]


# ---------------------------------------------------------------- the rules

def floor_to_grid(value):
    return max(MIN_SIZE, int(value) // MIN_SIZE * MIN_SIZE)


def plan_crop(fp, device_type):
    """Square crops as large as the typical image allows, capped for the device."""
    return floor_to_grid(min(fp.short_side, CROP_CAP.get(device_type, 256)))


def target_batch(fp, crop, world_size=1, device="cpu"):
    """TARGET_BATCH images a step (more for tiny crops), per process, and never more than a
    process's share of the train images."""
    images = max(TARGET_BATCH.get(device, 4), math.ceil(MIN_STEP_PIXELS / (crop * crop)))
    per_process = math.ceil(images / world_size)
    most = max(MIN_BATCH, fp.train_images // world_size)
    return int(min(max(per_process, MIN_BATCH), MAX_BATCH, most))


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


# ---------------------------------------------------------------- make_plan

def make_plan(fp, flags, device="cpu", speed=None, default_budget=None, world_size=1,
              elapsed=0.0, base=None):
    """The Plan for a dataset: a pure function of the fingerprint, the explicit flags ({name:
    value}; None or absent = plan it), the device type, the measured Speed (needed when a
    budget applies), the default budget in seconds, the process count, the seconds already
    spent, and `base` (a Plan holding the flags that are not planned).

    Explicit flags always win. The length is what the data needs; with a time budget it is
    capped by what the budget allows, the batch shrinking first (down to MIN_BATCH), then the
    crop. --epochs or --steps set the length and switch the budget off."""
    plan = dataclasses.replace(base or Plan(), sources={}, measured={}, notes=[])
    crop, batch, steps, budget = plan_length(fp, flags, plan, device, speed, default_budget,
                                             world_size, elapsed)
    epoch = steps_per_epoch(fp, plan, batch, world_size)
    side = crop or fp.short_side  # crop 0 (whole images) is priced at the typical side
    step_seconds = speed.step_seconds(side, batch) if speed else 0.0
    val_seconds = speed.validation_seconds(fp.val_pixels) if speed else 0.0
    val_every, val_images = plan_validation(fp, steps, step_seconds, val_seconds)
    check_seconds = speed.check_seconds(fp) if speed else 0.0
    if flags.get("val_every") or flags.get("eval_every") or flags.get("epochs"):
        val_every = flags.get("val_every") or (flags.get("eval_every") or 1) * epoch
        val_images = None
    warmup = flags.get("warmup_epochs")
    planned = {
        "crop_size": crop, "batch_size": batch, "steps": steps,
        "val_every": min(val_every, steps), "val_images": val_images,
        "lr": flags.get("lr") or plan_lr(plan.optimizer, batch * world_size),
        "warmup_steps": (round(warmup * epoch) if warmup is not None
                         else max(1, min(500, round(WARMUP_SHARE * steps)))),
        "loss": flags.get("loss") or PLANNED_LOSS,
        "class_weights": flags.get("class_weights") or "none", "time_budget": budget}
    length = bool(flags.get("steps") or flags.get("epochs"))  # which also turns the budget off
    explicit = {"steps": length, "time_budget": length or bool(flags.get("time_budget")),
                "val_every": bool(flags.get("val_every") or flags.get("eval_every")),
                "warmup_steps": warmup is not None}
    for name, value in planned.items():
        setattr(plan, name, value)
        plan.sources[name] = "flag" if explicit.get(name, flags.get(name) is not None) else "auto"
    if speed is not None:
        plan.measured = {"step_seconds": step_seconds, "val_seconds": val_seconds,
                         "check_seconds": check_seconds,
                         "steps_needed": needed_steps(fp, side, batch, world_size),
                         "steps_timed": [list(step) for step in speed.steps],
                         "infer_pixels_per_second": speed.infer_pixels_per_second}
    return plan


def plan_length(fp, flags, plan, device, speed, default_budget, world_size, elapsed):
    """(crop, batch, steps, budget seconds or None): the sizes and the length of the run."""
    crop = flags.get("crop_size")
    crop = plan_crop(fp, device) if crop is None else crop
    batch = flags.get("batch_size") or target_batch(fp, crop or fp.short_side, world_size,
                                                    device)
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
    budget = flags.get("time_budget") or default_budget
    if budget and speed is not None:
        return (*fit_budget(fp, flags, speed, budget - elapsed, crop, batch, world_size,
                            plan.notes), budget)
    steps = needed_steps(fp, crop or fp.short_side, batch, world_size)
    plan.notes.append(f"{steps} steps: what the data needs (at least {MIN_STEPS}, or "
                      f"{MIN_PASSES} passes over the train pixels)")
    return crop, batch, steps, budget


def fit_budget(fp, flags, speed, seconds, crop, batch, world_size, notes):
    """(crop, batch, steps) for `seconds` of run: the steps the data needs at the largest
    batch, then crop, that affords them; else the combination that affords the most steps
    (at least MIN_BUDGET_STEPS if a smaller crop gets there). Explicit crop or batch stay."""
    # The final full validation and the best checkpoint's re-scoring come out of the budget,
    # then the intermediate checks (at most VAL_SHARE of the training time).
    check = speed.check_seconds(fp)
    available = max(seconds * (1 - BUDGET_MARGIN) - 2 * check, 0.0)
    usable = available - min(VALIDATIONS * check, VAL_SHARE * available / (1 + VAL_SHARE))
    crops = [crop] if flags.get("crop_size") is not None else crop_ladder(crop)
    batches = [batch] if flags.get("batch_size") else list(range(batch, MIN_BATCH - 1, -1))
    most = None
    for trial_crop in crops:
        side = trial_crop or fp.short_side
        for trial_batch in batches or [batch]:
            need = needed_steps(fp, side, trial_batch, world_size)
            afford = int(usable / max(speed.step_seconds(side, trial_batch), 1e-9))
            if afford >= need:
                notes.append(f"{need} steps: what the data needs; the budget affords {afford} "
                             f"at crop {trial_crop}, batch {trial_batch}")
                return trial_crop, trial_batch, need
            if most is None or afford > most[2]:
                most = (trial_crop, trial_batch, max(afford, 1))
        if most[2] >= MIN_BUDGET_STEPS:
            break
    notes.append(f"{most[2]} steps: all the budget affords (the data needs "
                 f"{needed_steps(fp, most[0] or fp.short_side, most[1], world_size)}); a "
                 f"longer --time-budget trains longer")
    return most


def replan_steps(plan, done, seconds_left, step_seconds, val_seconds):
    """The run's new last step under its time budget, from the speed measured so far: what
    `seconds_left` affords at `step_seconds` a step plus a `val_seconds` check every
    plan.val_every steps, after the final whole-split checks; never beyond what the data
    needs, and unchanged when within 3% (a schedule that keeps moving helps nobody)."""
    final = 2 * max(plan.measured.get("check_seconds", 0.0), val_seconds)
    per_step = step_seconds + val_seconds / max(plan.val_every, 1)
    afford = int((seconds_left * (1 - BUDGET_MARGIN) - final) / max(per_step, 1e-9))
    needed = plan.measured.get("steps_needed", plan.steps)
    steps = max(done + 1, min(done + afford, needed))
    return plan.steps if abs(steps - plan.steps) <= 0.03 * plan.steps else steps


def crop_ladder(crop):
    """The planned crop, then smaller ones down to about twice the receptive field."""
    floor = min(crop, floor_to_grid(4 * context_radius()))
    ladder = [crop]
    while ladder[-1] > floor:
        ladder.append(max(floor, floor_to_grid(ladder[-1] * 3 // 4)))
    return ladder


# ---------------------------------------------------------------- the printed table

def table_lines(plan, world_size=1):
    """The plan as printed at start: one row per value, marked auto or flag."""
    budget = plan.time_budget
    rows = [("crop size", "whole images" if plan.crop_size == 0 else f"{plan.crop_size} px",
             "crop_size"),
            ("batch size", f"{plan.batch_size}" + (f" per process, {plan.batch_size * world_size}"
                                                   f" global" if world_size > 1 else ""),
             "batch_size"),
            ("steps", f"{plan.steps}", "steps"),
            ("validate every", f"{plan.val_every} steps" + (
                f" on {plan.val_images} val images (final: all)" if plan.val_images else ""),
             "val_every"),
            ("learning rate", f"{plan.lr:.2e} ({plan.optimizer}, {plan.scheduler})", "lr"),
            ("warm-up", f"{plan.warmup_steps} steps", "warmup_steps"),
            ("loss", plan.loss, "loss"),
            ("class weights", plan.class_weights, "class_weights"),
            ("time budget", f"{budget / 60:.1f} min" if budget else "none", "time_budget")]
    width = max(len(name) for name, _, _ in rows)
    column = max(34, *(len(value) + 1 for _, value, _ in rows))
    lines = ["plan:"] + [f"  {name:<{width}}  {value:<{column}} {plan.sources.get(key, 'flag')}"
                         for name, value, key in rows]
    if plan.measured:
        lines.append(f"  measured: {plan.measured['step_seconds']:.3f} s a training step, "
                     f"{plan.measured['val_seconds']:.1f} s a full validation")
    lines += [f"  {note}" for note in plan.notes]
    return lines


def default_budget_seconds(device_type):
    """The budget when no --time-budget, --epochs or --steps is given (None: no budget)."""
    minutes = DEFAULT_BUDGET_MINUTES.get(device_type)
    return None if minutes is None else 60 * minutes


