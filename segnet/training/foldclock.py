"""The time budget of a whole cross-validation (train.py --folds K): one deadline for the
command, a share of the time left for each fold (its training and the scoring of its held-out
images), fold 0's measured length and scoring time for the folds after it, and the lines that
say so. Pure functions of the clock; folds.py runs the folds."""
from dataclasses import dataclass

from segnet.plan import plan as planning
from segnet.runtime import resolve_device

REPORT_SECONDS = 5.0  # kept at the end for pooling the folds' scores into cv.json


@dataclass(frozen=True)
class JobClock:
    """The command's time budget on time.monotonic()'s clock: its start, its length (None: no
    budget) and how many folds the busiest process trains one after another (slots)."""

    started: float
    seconds: float | None
    slots: int

    @property
    def deadline(self):
        return None if self.seconds is None else self.started + self.seconds

    def slot_seconds(self, now, slots_left):
        """A fold's share of the time left: training it and scoring its held-out images, the
        time left divided between this process's folds still to train (REPORT_SECONDS kept
        for the report)."""
        return max(self.deadline - now - REPORT_SECONDS, 0.0) / max(slots_left, 1)


def job_budget(args):
    """The whole job's time budget in seconds (None: none): --time-budget, or the device's
    default (plan.default_budget_seconds); none with --steps or --epochs."""
    if args.steps or args.epochs:
        return None
    if args.time_budget is not None:
        return 60 * args.time_budget or None
    return planning.default_budget_seconds(resolve_device(args.device).type)


def folds_of(rank, processes, folds):
    """The folds rank r trains: r, r + G, ..."""
    return list(range(rank, folds, processes))


def fold_slots(folds, processes, budgeted=True):
    """Folds the busiest process trains one after another: under a budget the other ranks
    start after fold 0, which sets the common length (its time counts as one of theirs)."""
    return max(len(folds_of(rank, processes, folds)) + (budgeted and rank > 0)
               for rank in range(processes))


def job_clock(started, seconds, folds, processes):
    return JobClock(started=started, seconds=seconds,
                    slots=fold_slots(folds, processes, budgeted=seconds is not None))


def fold_zero_budget(slot_seconds, scoring_guess):
    """Fold 0's time budget in seconds: its share less the scoring of its held-out images,
    priced by the plan (one validation of them, Speed.check_seconds) until it is measured.
    Fold 0 trains under it as a plain run does, re-planning its length from its own measured
    seconds a step and a validation; its last step is every later fold's length."""
    return max(slot_seconds - scoring_guess, 0.0)


def scoring_seconds(fold_zero_score, images):
    """Seconds to score `images` held-out images, at fold 0's measured rate (its score's
    seconds and image count: the checkpoint loaded, every image predicted as evaluate.py does)."""
    return fold_zero_score["seconds"] * images / max(fold_zero_score["images_count"], 1)


def fold_deadline(now, slot_seconds, scoring):
    """time.monotonic() a later fold's training must end by: its share of the time left, less
    its measured scoring (ending.hold_deadline keeps its length while it can)."""
    return now + max(slot_seconds - scoring, 0.0)


def division_line(clock, folds, processes):
    """The line that says how the budget is divided."""
    if clock.seconds is None:
        return (f"cross-validation: {folds} folds on {processes} process(es), no time budget: "
                f"fold 0's plan for every fold, each ended by its learning curve")
    share = max(clock.seconds - REPORT_SECONDS, 0.0) / clock.slots
    return (f"cross-validation: {folds} folds on {processes} process(es); the time budget of "
            f"{clock.seconds / 60:.1f} min covers the command: {clock.slots} fold(s) a process "
            f"one after another, about {share / 60:.2f} min each (training with its validations, "
            f"then scoring its held-out images; the planning pass comes out of them) + "
            f"{REPORT_SECONDS:.0f} s for the report; fold 0 measures the length every fold "
            f"trains")


def budget_hint(clock, folds):
    """What a planning pass that found the budget too short means under --folds."""
    share = max(clock.seconds - REPORT_SECONDS, 0.0) / clock.slots
    return (f"with --folds {folds} that is one fold's share ({share / 60:.1f} min of the "
            f"{clock.seconds / 60:.1f}): the whole command needs about {clock.slots} times the "
            f"--time-budget it names, or fewer folds")


def time_summary(clock, now):
    """cv.json's "time": the budget and the seconds the job took up to its report."""
    return {"budget_seconds": clock.seconds, "seconds": round(now - clock.started, 1),
            "slots": clock.slots,
            "within_budget": None if clock.seconds is None else now <= clock.deadline}
