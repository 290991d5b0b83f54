"""The length of a run from its learning curve: when validation mIoU has stopped paying, and
the warm-up / stable / decay learning-rate schedule ("wsd") that needs no length in advance.

A run whose length no flag fixes trains at a constant learning rate after its warm-up; the
decay phase (cosine to 0 over DECAY_SHARE of the run) starts when the curve plateaus, or when
the time budget's last DECAY_SHARE begins, and the run ends with it. --steps and --epochs fix
the length: the decay then takes their last DECAY_SHARE.
"""
import math

DECAY_SHARE = 0.2  # the decay phase: this share of the run, at its end
# A plateau: over the last PLATEAU_WINDOW of the steps so far (and at least PLATEAU_CHECKS
# validations), the best val mIoU beat the best before by less than the gain (--plateau-gain).
# Relative windows make the rule scale-free: a curve that keeps rising like the log of the
# steps (as segmentation curves do until they saturate) gains the same in every last quarter.
PLATEAU_GAIN = 0.005
PLATEAU_WINDOW = 0.25
PLATEAU_CHECKS = 3
OPEN_FACTOR = 20  # without a budget: at most this many times the steps the data needs
STOP_REASONS = {
    "length": "the length --steps / --epochs set",
    "budget": "the time budget's end (its last {share:.0%} decayed the learning rate)",
    "budget_schedule": "the time budget's end (the {scheduler} schedule)",
    "plateau": "val mIoU stopped improving: gain under {gain:g} over the last {window:.0%} of "
               "the steps from step {plateau_step}, then the decay phase",
    "deadline": "the deadline of its share of a time budget, before its planned length",
    "cap": "the step cap ({factor}x the steps the data needs) before val mIoU plateaued",
    "early_stop": "--early-stop: no better val mIoU for {stale} validations",
}


def plateaued(curve, gain=PLATEAU_GAIN, window=PLATEAU_WINDOW, checks=PLATEAU_CHECKS):
    """Whether a learning curve [(step, val mIoU), ...] (in step order) has plateaued: the
    best mIoU of its last `window` share of steps (at least its last `checks` points) beat
    the best before them by less than `gain`. Never before `checks` earlier points exist."""
    if gain <= 0 or len(curve) < 2 * checks:
        return False
    since = curve[-1][0] * (1 - window)
    recent = max(len([step for step, _ in curve if step > since]), checks)
    before = [miou for _, miou in curve[:-recent]]
    if not before:
        return False
    return max(miou for _, miou in curve[-recent:]) - max(before) < gain


def planned_decay_start(steps):
    """The step the decay starts at when the run ends at `steps` and no plateau came first."""
    return steps - max(1, round(DECAY_SHARE * steps))


def decay_end(step, steps):
    """The run's last step when its decay starts at `step` (a plateau): the decay takes
    DECAY_SHARE of the whole run, never past the planned end `steps`."""
    return min(steps, step + max(1, round(step * DECAY_SHARE / (1 - DECAY_SHARE))))


def wsd_factor(step, warmup, steps, decay_start=None):
    """The learning rate's factor at `step`: linear warm-up, 1 until the decay starts (at
    decay_start, else planned_decay_start(steps)), then a cosine to 0 at `steps`; a decay
    that starts within the warm-up caps it."""
    warm = (step + 1) / (warmup + 1) if step < warmup else 1.0
    start = planned_decay_start(steps) if decay_start is None else decay_start
    if step < start:
        return warm
    progress = min(1.0, (step - start) / max(1, steps - start))
    return min(warm, 0.5 * (1 + math.cos(math.pi * progress)))


def stop_text(reason, **values):
    """Why the run stopped, in words (STOP_REASONS filled in)."""
    return STOP_REASONS[reason].format(share=DECAY_SHARE, window=PLATEAU_WINDOW,
                                       factor=OPEN_FACTOR, **values)
