"""When a run writes last.pt, so that a crash, a pre-emption or a killed rank loses little work:
at every validation and at the last step (trainer.fit), every --save-every epochs (a round ends
there, with a metrics row), and between validations every plan.save_steps steps: about
SAVE_SECONDS of work at the measured step time (no metrics row; a resumed run continues
mid-round). Save points depend on the step count alone, so every rank saves at the same steps
and a resumed run saves where the uninterrupted one did."""
import math
from dataclasses import dataclass

SAVE_SECONDS = 120.0  # a restart repeats at most about this much work
# With no measured speed in the plan (--steps, --epochs, no budget), the run times itself: the
# first WARM_STEPS steps warm up (allocations, autotuning, compilation), the next PROBE_STEPS
# are timed, then save_steps is set.
WARM_STEPS = 3
PROBE_STEPS = 5


def plan_save_steps(val_every, step_seconds):
    """Steps between saves inside a validation interval: about SAVE_SECONDS of work at
    `step_seconds` a step, spread evenly over the interval; None when the validations (which
    save) come at least that often, or the step time is not known."""
    if not step_seconds or step_seconds <= 0:
        return None
    saves = math.ceil(val_every / max(1, math.floor(SAVE_SECONDS / step_seconds)))
    return None if saves <= 1 else math.ceil(val_every / saves)


def round_end(plan, step, steps_per_epoch):
    """The step the current round trains to: the next validation, save or the last step."""
    ends = [plan.steps, (step // plan.val_every + 1) * plan.val_every]
    if plan.save_every:
        every = plan.save_every * steps_per_epoch
        ends.append((step // every + 1) * every)
    return min(ends)


def epoch_save_due(plan, step, steps_per_epoch):
    every = (plan.save_every or 0) * steps_per_epoch
    return bool(every) and step % every == 0


def next_save(plan, step):
    """The first step after `step` at which a save falls inside the current validation
    interval (the interval's end when there is none)."""
    start = step // plan.val_every * plan.val_every
    if not plan.save_steps:
        return start + plan.val_every
    return min(start + plan.val_every,
               start + ((step - start) // plan.save_steps + 1) * plan.save_steps)


def step_save_due(plan, step):
    """A save between validations is due at `step` (the validations save on their own)."""
    offset = step % plan.val_every
    return bool(plan.save_steps) and offset != 0 and offset % plan.save_steps == 0


def probing(plan):
    """The save interval waits for the run to time its own steps."""
    return (plan.save_steps is None and plan.sources.get("save_steps") == "auto"
            and not plan.measured.get("step_seconds") and "save_step_seconds" not in plan.measured
            and not plan.dry_run)


@dataclass
class StepTimer:
    """Chunks of the run's first steps while it times them for the save interval: the first
    WARM_STEPS of this process untimed, then PROBE_STEPS timed (`timed` once they start)."""

    warm_until: int | None = None
    timed: bool = False

    def chunk(self, step):
        """Steps the next chunk trains."""
        if self.warm_until is None:
            self.warm_until = step + WARM_STEPS
        self.timed = step >= self.warm_until
        return PROBE_STEPS if self.timed else self.warm_until - step


def describe(plan):
    """The plan table's row for saves."""
    parts = []
    seconds = plan.measured.get("step_seconds") or plan.measured.get("save_step_seconds")
    if plan.save_steps:
        parts.append(f"every {plan.save_steps} steps" + (
            f" (~{plan.save_steps * seconds / 60:.1f} min of work)" if seconds else ""))
    if plan.save_every:
        parts.append(f"every {plan.save_every} epoch" + ("s" if plan.save_every > 1 else ""))
    if probing(plan):
        parts.append(f"every ~{SAVE_SECONDS / 60:g} min of work (steps timed in the run)")
    return ", ".join(parts + ["at validations"])
