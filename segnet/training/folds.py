"""Cross-validation: K folds by group over train + val (nnU-Net's 5-fold CV by case; splits.json
kept in the run folder and reused), one normal run folder a fold (RUN/fold_k), every fold the
same plan and length, folds r, r+G, ... on rank r of a torchrun job (independent runs, no DDP),
and the CV report (RUN/cv.json, cvreport.py). The time budget covers the whole command
(foldclock.py): fold 0 trains under its share as a plain run does, re-planning from its measured
step and validation times, and its length is every later fold's, each of them with a deadline
that it keeps by validating less often, or at worst by ending early. It sits above the training
loop and calls it (train.py hands it the function that trains one run) with a FoldRun: the loop
knows nothing of folds."""
import argparse
import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from segnet.data.files.index import build_index
from segnet.data.files.splits import groups_of
from segnet.inference.ensemble import CV_FILE as REPORT_FILE
from segnet.inference.ensemble import DONE_FILE, SPLITS_FILE
from segnet.training import cvreport, foldclock
from segnet.training.foldclock import folds_of
from segnet.utils import DataError, atomic_write, json_safe

PLAN_FILE = "plan.json"  # the planning pass's plan, every fold's
SPLIT_SEED = 12345  # nnU-Net's KFold seed: the same folds on every machine
WAIT_SECONDS = 5.0  # how often rank 0 looks whether the other ranks' folds are done


@dataclasses.dataclass(frozen=True)
class FoldRun:
    """What a cross-validation hands one run of train.py's train(), as a value (never as
    attributes added to args): which run it is, the data it validates on, the plan it follows
    and the time it must end by. The flags of the run (its --out, --steps, --resume auto) are
    train.py's own, in its arguments."""

    fold: int | None  # None: the planning pass, which plans (RUN/plan.json) and trains nothing
    layout: dict  # the pooled layout: train and val in the train split (pooled_layout)
    holdout: tuple  # the names it validates on (and the fold scores): fold 0's when planning
    plan: dict | None = None  # the plan a fold follows: the planning pass's, with its budget
    plan_file: Path | None = None  # where the planning pass writes its plan
    deadline: float | None = None  # time.monotonic() a fold of fold 0's length must end by

    @property
    def planning(self):
        return self.fold is None


def pooled_layout(layout):
    """The layout whose train split holds train and val (a val folder is pooled into the folds;
    a test split stays out)."""
    pooled = copy.deepcopy(layout)
    pooled["pool"] = ["train"] + (["val"] if "val" in layout["folders"] else [])
    pooled.pop("pairing", None)
    return pooled


def pool_samples(root, layout):
    """The samples of the pooled train split: the index (files.index.build_index) of the
    pooled layout, whose train split holds every pooled folder; a fold is a subset of it."""
    return build_index(root, layout, ("train",)).split("train")


def make_splits(samples, folds, pattern=None, seed=SPLIT_SEED):
    """{folds, seed, group_pattern, val: [[names] of fold k], hash}: KFold over the sorted
    groups (stacks, --group-pattern groups, else files), shuffled with a fixed seed, in K
    parts of sizes differing by at most one group. DataError when K < 2 or K > groups."""
    groups = groups_of(samples, pattern)
    if not 2 <= folds <= len(groups):
        raise DataError(f"--folds {folds}: needs 2 <= K <= the {len(groups)} groups of the data "
                        f"({'stacks or --group-pattern groups' if len(groups) < len(samples) else 'images'})")
    order = [sorted(groups)[index] for index in
             np.random.default_rng(seed).permutation(len(groups))]
    parts = np.array_split(np.arange(len(order)), folds)
    val = [sorted(name for index in part for name in groups[order[index]]) for part in parts]
    return {"folds": folds, "seed": seed, "group_pattern": pattern, "val": val,
            "hash": split_hash(val)}


def split_hash(val):
    return hashlib.sha256(json.dumps(val).encode("utf-8")).hexdigest()[:16]


def load_or_make_splits(run_dir, samples, folds, pattern=None):
    """The run's splits.json when it has one (a resume, a rerun into the folder), else new ones
    written there. DataError when the saved folds differ from --folds or name gone samples."""
    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        splits = make_splits(samples, folds, pattern)
        write_json(path, splits)
        return splits
    splits = json.loads(path.read_text(encoding="utf-8"))
    if splits["folds"] != folds:
        raise DataError(f"{path} holds {splits['folds']} folds, not --folds {folds}: pass "
                        f"--folds {splits['folds']}, or choose another --out")
    missing = {name for fold in splits["val"] for name in fold} - {name for name, _, _ in samples}
    if missing:
        raise DataError(f"{path} names samples that are gone from the data ({len(missing)}, "
                        f"e.g. {sorted(missing)[0]}): put them back, or choose another --out")
    return splits



def write_json(path, value):
    with atomic_write(path, encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def process_slot():
    """(rank, processes, local rank) of a torchrun job from its environment, (0, 1, 0) alone:
    the folds need no process group (each fold is a run of its own)."""
    return tuple(int(os.environ.get(name, default)) for name, default in
                 (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")))


def fold_dir(run_dir, fold):
    return Path(run_dir) / f"fold_{fold}"


def is_done(run_dir, fold):
    return (fold_dir(run_dir, fold) / DONE_FILE).is_file()


def mark_done(run_dir, fold, seconds):
    write_json(fold_dir(run_dir, fold) / DONE_FILE,
               {"fold": fold, "finished": time.time(), "seconds": round(seconds, 1)})


def score_path(run_dir, fold):
    return fold_dir(run_dir, fold) / cvreport.SCORE_FILE


def shared_file(path, log, poll=WAIT_SECONDS / 5):
    """A file a process writes for the job (the splits, the plan, fold 0's score), once it is
    there."""
    if not path.is_file():
        log(f"waiting for {path.parent.name}/{path.name}")
        while not path.is_file():
            time.sleep(poll)
    return read_json(path)


def wait_for_scores(run_dir, folds, log, poll=WAIT_SECONDS):
    """Rank 0: every fold's score (the other ranks' too), with its training seconds."""
    waiting = [fold for fold in range(folds) if not score_path(run_dir, fold).is_file()]
    if waiting:
        log(f"waiting for folds {waiting} of the other processes")
    while waiting:
        time.sleep(poll)
        waiting = [fold for fold in waiting if not score_path(run_dir, fold).is_file()]
    return [dict(read_json(score_path(run_dir, fold)),
                 train_seconds=read_json(fold_dir(run_dir, fold) / DONE_FILE).get("seconds"))
            for fold in range(folds)]


# ---------------------------------------------------------------- each run's arguments

def plan_arguments(args, seconds):
    """train.py's flags for the planning pass: plan only, for a run of `seconds` (None: the
    command's own budget flag, e.g. none)."""
    planning = argparse.Namespace(**vars(args))
    vars(planning).update(folds=None, out=None, resume=None, plan_only=True,
                          time_budget=seconds / 60 if seconds else args.time_budget)
    return planning


def fold_arguments(args, run_dir, fold, steps):
    """train.py's flags for fold k: its own run folder (resumed where it has a checkpoint) and
    its length (--steps; None: the plan's, or the time budget's in its FoldRun plan)."""
    fold_args = argparse.Namespace(**vars(args))
    vars(fold_args).update(folds=None, out=fold_dir(run_dir, fold), resume=Path("auto"),
                           plan_only=False, time_budget=None, steps=steps)
    return fold_args


def fold_setting(args, run_dir, fold, splits, layout, plan, clock, slots_left, log):
    """(train.py's flags, FoldRun) for fold k. No budget: the plan for every fold, each ended
    by its learning curve or the command's --steps / --epochs. Under a budget, fold 0 trains
    under its share of the time left as a plain run does (re-planning its length from its
    measured step and validation times); a later fold trains fold 0's steps (read from its
    score, which also prices this fold's scoring) with a deadline: its share of the time left
    less that scoring."""
    holdout = tuple(splits["val"][fold])
    if clock.seconds is None:
        return (fold_arguments(args, run_dir, fold, args.steps),
                FoldRun(fold, layout, holdout, dict(plan, time_budget=None)))
    if fold == 0:
        budget = foldclock.fold_zero_budget(clock.slot_seconds(time.monotonic(), slots_left),
                                            plan.get("measured", {}).get("check_seconds", 0.0))
        log(f"fold 0 sets the length: it trains under a time budget of {budget / 60:.2f} min, "
            f"re-planning from its measured step and validation times")
        return (fold_arguments(args, run_dir, fold, None),
                FoldRun(fold, layout, holdout, dict(plan, time_budget=budget)))
    first = shared_file(score_path(run_dir, 0), log)
    now = time.monotonic()
    deadline = foldclock.fold_deadline(now, clock.slot_seconds(now, slots_left),
                                       foldclock.scoring_seconds(first, len(holdout)))
    log(f"fold {fold}: fold 0's {first['steps']} steps, to end within {deadline - now:.0f} s")
    notes = [f"{first['steps']} steps: fold 0's length (its time budget re-planned from its "
             f"measured step and validation times)"] + [
        note for note in plan.get("notes", []) if not note.startswith(f"{plan['steps']} steps")]
    return (fold_arguments(args, run_dir, fold, first["steps"]),
            FoldRun(fold, layout, holdout, dict(plan, time_budget=None, notes=notes),
                    deadline=deadline))


# ---------------------------------------------------------------- the job

def plan_folds(args, run_dir, splits, layout, clock, train_run, log):
    """Rank 0's planning pass (fold 0's data, a fold's share of the time): RUN/plan.json.
    Returns the exit code."""
    seconds = None
    if clock.seconds is not None:
        seconds = clock.slot_seconds(time.monotonic(), clock.slots)
    fold_run = FoldRun(None, layout, tuple(splits["val"][0]),
                       plan_file=Path(run_dir) / PLAN_FILE)
    code = train_run(plan_arguments(args, seconds), fold_run)
    if code and clock.seconds is not None:
        log(f"error: {foldclock.budget_hint(clock, args.folds)}")
    return code or (0 if fold_run.plan_file.is_file() else 2)


def train_fold(run_dir, fold, setting, train_run):
    """Fold k trained (train_run(flags, FoldRun)); RUN/fold_k/done.json with its training
    seconds when it ends well. Returns the exit code."""
    start = time.monotonic()
    code = train_run(*setting)
    if not code:
        mark_done(run_dir, fold, time.monotonic() - start)
    return code


def score_fold(args, run_dir, root, fold):
    """Fold k scored on its held-out images (cvreport.score_fold): RUN/fold_k/cv_score.json."""
    score = cvreport.score_fold(fold_dir(run_dir, fold), root, fold, args.device, args.amp)
    write_json(score_path(run_dir, fold), json_safe(score))


def run_folds(args, root, layout, train_run, started, log=print):
    """Train and score this process's folds (train_run(arguments, FoldRun) -> exit code:
    train.py's one run), then, on rank 0, pool every fold's scores into RUN/cv.json. The time
    budget counts from `started` (time.monotonic()). Returns the exit code (a fold's non-zero
    code stops the job: rerunning the command resumes it)."""
    rank, processes, _ = process_slot()
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    pooled = pooled_layout(layout)
    if rank == 0:
        load_or_make_splits(run_dir, pool_samples(root, pooled), args.folds,
                            layout.get("group_pattern"))
    splits = shared_file(run_dir / SPLITS_FILE, log)
    clock = foldclock.job_clock(started, foldclock.job_budget(args), args.folds, processes)
    log(foldclock.division_line(clock, args.folds, processes) + f"; splits {splits['hash']}")
    if rank == 0 and not (run_dir / PLAN_FILE).is_file():
        code = plan_folds(args, run_dir, splits, pooled, clock, train_run, log)
        if code:
            return code
    plan = shared_file(run_dir / PLAN_FILE, log)
    mine = folds_of(rank, processes, args.folds)
    for index, fold in enumerate(mine):
        if is_done(run_dir, fold):
            log(f"fold {fold}: done already ({fold_dir(run_dir, fold)})")
        else:
            log(f"fold {fold} of {args.folds}: {len(splits['val'][fold])} held-out images")
            slots_left = clock.slots if fold == 0 else len(mine) - index
            code = train_fold(run_dir, fold, fold_setting(
                args, run_dir, fold, splits, pooled, plan, clock, slots_left, log), train_run)
            if code:
                return code
        if not score_path(run_dir, fold).is_file():
            score_fold(args, run_dir, root, fold)
    if rank != 0:
        return 0
    scores = wait_for_scores(run_dir, args.folds, log)
    report = cvreport.cv_report(scores, splits, cvreport.cv_commands(run_dir, root),
                                foldclock.time_summary(clock, time.monotonic()))
    write_json(run_dir / REPORT_FILE, json_safe(report))
    for line in cvreport.report_lines(report):
        log(line)
    return 0
