"""Cross-validation: K folds by group over train + val (nnU-Net's 5-fold CV by case; splits.json
kept in the run folder and reused), one normal run folder a fold (RUN/fold_k), every fold the
same plan and length, the time budget divided between the folds and the final scoring, folds
r, r+G, ... on rank r of a torchrun job (independent runs, no DDP), and the CV report
(RUN/cv.json): every image scored by the fold that did not train on it. It sits above the
training loop and calls it (train.py hands it the function that trains one run): the loop
knows nothing of folds."""
import argparse
import copy
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from segnet.data.files.pairs import list_samples
from segnet.data.files.splits import groups_of
from segnet.inference import inference, measures
from segnet.inference.ensemble import CV_FILE as REPORT_FILE
from segnet.inference.ensemble import DONE_FILE, SPLITS_FILE
from segnet.plan import plan as planning
from segnet.runtime import resolve_device
from segnet.utils import DataError, atomic_write, json_safe

PLAN_FILE = "plan.json"  # the planning pass's plan, every fold's
# nnU-Net scores each fold's final model: picking best.pt on the very images it is scored on is
# optimistic (nnU-Net #1206).
SCORED_CHECKPOINT = "last.pt"
SCORING_SHARE = 0.05  # of the time budget kept for scoring every fold's held-out images
SPLIT_SEED = 12345  # nnU-Net's KFold seed: the same folds on every machine
WAIT_SECONDS = 5.0  # how often rank 0 looks whether the other ranks' folds are done


def pooled_layout(layout):
    """The layout whose train split holds train and val (a val folder is pooled into the folds;
    a test split stays out)."""
    pooled = copy.deepcopy(layout)
    pooled["pool"] = ["train"] + (["val"] if "val" in layout["folders"] else [])
    pooled.pop("pairing", None)
    return pooled


def pool_samples(root, layout):
    """The samples of the pooled train split (pairs.list_samples of each pooled folder)."""
    return list_samples(root, "train", layout).samples


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


def process_slot():
    """(rank, processes, local rank) of a torchrun job from its environment, (0, 1, 0) alone:
    the folds need no process group (each fold is a run of its own)."""
    return tuple(int(os.environ.get(name, default)) for name, default in
                 (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")))


def folds_of(rank, processes, folds):
    """The folds rank r trains: r, r + G, ..."""
    return list(range(rank, folds, processes))


def budget_division(total_seconds, folds, processes):
    """(seconds a fold, seconds for the scoring) of a time budget for the whole job: each
    process trains ceil(K / G) folds one after another, after SCORING_SHARE is kept aside."""
    if not total_seconds:
        return None, None
    scoring = SCORING_SHARE * total_seconds
    return (total_seconds - scoring) / math.ceil(folds / processes), scoring


def division_line(total_seconds, folds, processes):
    """The line that prints the budget's division."""
    per_fold, scoring = budget_division(total_seconds, folds, processes)
    if per_fold is None:
        return (f"cross-validation: {folds} folds on {processes} process(es), no time budget: "
                f"fold 0's plan for every fold, each ended by its learning curve")
    return (f"cross-validation: {folds} folds on {processes} process(es); the time budget of "
            f"{total_seconds / 60:.1f} min: {math.ceil(folds / processes)} fold(s) a process x "
            f"{per_fold / 60:.2f} min + {scoring / 60:.2f} min scoring the held-out folds")


def fold_dir(run_dir, fold):
    return Path(run_dir) / f"fold_{fold}"


def is_done(run_dir, fold):
    return (fold_dir(run_dir, fold) / DONE_FILE).is_file()


def mark_done(run_dir, fold):
    write_json(fold_dir(run_dir, fold) / DONE_FILE, {"fold": fold, "finished": time.time()})


def wait_for_folds(run_dir, folds, log, poll=WAIT_SECONDS):
    """Rank 0: wait until every fold's run has finished (the other ranks' too)."""
    waiting = [fold for fold in range(folds) if not is_done(run_dir, fold)]
    if waiting:
        log(f"waiting for folds {waiting} of the other processes")
    while waiting:
        time.sleep(poll)
        waiting = [fold for fold in waiting if not is_done(run_dir, fold)]


def score_folds(run_dir, root, folds, device="auto", amp="auto"):
    """[(fold, confusion [K, K], per-image entries)] of every fold's SCORED_CHECKPOINT on the
    images that fold held out, scored as evaluate.py scores (inference.evaluate_split)."""
    scored = []
    for fold in range(folds):
        path = fold_dir(run_dir, fold) / SCORED_CHECKPOINT
        model, info, dtype = inference.load_for_inference(path, device, amp)
        confusion, per_image = inference.evaluate_split(model, info, root, "val", dtype=dtype)
        scored.append((fold, confusion, per_image))
    return scored


def cv_report(scored, class_names, splits, commands):
    """The cv.json dict: pooled per-class scores of every held-out image, each fold's mIoU,
    their mean and standard deviation, per-image scores, the checkpoint and the split hash."""
    pooled = sum(confusion for _, confusion, _ in scored)
    fold_scores = [measures.metrics_from_confusion(confusion, class_names)["miou"]
                   for _, confusion, _ in scored]
    images = [{"name": entry["name"], "fold": fold,
               "miou": measures.metrics_from_confusion(entry["confusion"], class_names)["miou"]}
              for fold, _, per_image in scored for entry in per_image]
    return {"pooled": measures.metrics_from_confusion(pooled, class_names),
            "confusion": pooled.tolist(), "folds": [
                {"fold": fold, "miou": score, "images": len(per_image)}
                for (fold, _, per_image), score in zip(scored, fold_scores, strict=True)],
            "fold_mean": float(np.mean(fold_scores)), "fold_std": float(np.std(fold_scores)),
            "images": images, "checkpoint": SCORED_CHECKPOINT,
            "checkpoint_why": "each fold's final model, as nnU-Net scores it: best.pt is chosen "
                              "on the held-out images themselves, so its score is optimistic",
            "split_hash": splits["hash"], "folds_count": splits["folds"], "commands": commands}


def report_lines(report):
    """What the CV report prints."""
    pooled = report["pooled"]
    lines = [f"cross-validation ({report['folds_count']} folds, split {report['split_hash']}, "
             f"each fold's {report['checkpoint']}): pooled mIoU {pooled['miou']:.4f} over "
             f"{len(report['images'])} held-out images"]
    lines.append("  per class: " + ", ".join(f"{entry['name']} {entry['iou']:.3f}"
                                             for entry in pooled["per_class"]))
    lines.append("  folds: " + ", ".join(f"{entry['fold']}: {entry['miou']:.4f}"
                                         for entry in report["folds"])
                 + f" | mean {report['fold_mean']:.4f}, std {report['fold_std']:.4f}")
    lines += [f"  {command}" for command in report["commands"]]
    return lines


def cv_commands(run_dir, root):
    """The commands that use the fold ensemble (their softmax averaged)."""
    return [f"evaluate the fold ensemble: python evaluate.py --checkpoint {run_dir} --data "
            f"{root} --split test",
            f"predict with it: python predict.py --checkpoint {run_dir} --input IMAGES "
            f"--output OUT"]


def plan_arguments(args, run_dir, splits, layout, per_fold):
    """train.py's arguments for the planning pass: fold 0's data and the budget of one fold;
    the plan goes to RUN/plan.json, nothing is trained."""
    planning = argparse.Namespace(**vars(args))
    vars(planning).update(folds=None, out=None, resume=None, plan_only=True,
                          plan_file=Path(run_dir) / PLAN_FILE,
                          time_budget=per_fold / 60 if per_fold else args.time_budget,
                          fold_holdout=splits["val"][0], fold_layout=layout)
    return planning


def fold_arguments(args, run_dir, fold, splits, layout, plan):
    """train.py's arguments for fold k: its own run folder (resumed where it has a checkpoint),
    its held-out images, the pooled layout, and the planning pass's plan: with a budget, the
    plan's steps for every fold; without one, each fold ends by its learning curve."""
    fold_args = argparse.Namespace(**vars(args))
    template = dict(plan, time_budget=None)
    vars(fold_args).update(folds=None, out=fold_dir(run_dir, fold), resume=Path("auto"),
                           plan_only=False, plan_file=None, time_budget=None,
                           steps=plan["steps"] if plan.get("time_budget") else args.steps,
                           plan_template=template, fold_holdout=splits["val"][fold],
                           fold_layout=layout)
    return fold_args


def shared_file(path, log):
    """A file rank 0 writes for the job (the splits, the plan), once it is there."""
    if not path.is_file():
        log(f"waiting for rank 0's {path.name}")
        while not path.is_file():
            time.sleep(WAIT_SECONDS / 5)
    return json.loads(path.read_text(encoding="utf-8"))


def job_budget(args):
    """The whole job's time budget in seconds (None: none): --time-budget, or the device's
    default (plan.default_budget_seconds)."""
    if args.steps or args.epochs:
        return None
    if args.time_budget is not None:
        return 60 * args.time_budget or None
    return planning.default_budget_seconds(resolve_device(args.device).type)


def run_folds(args, root, layout, train_run, log=print):
    """Train this process's folds (train_run(arguments) -> exit code: train.py's one run),
    then, on rank 0, score every fold's held-out images and write RUN/cv.json. Returns the
    exit code (a fold's non-zero code stops the job: rerunning the command resumes it)."""
    rank, processes, _ = process_slot()
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    pooled = pooled_layout(layout)
    if rank == 0:
        load_or_make_splits(run_dir, pool_samples(root, pooled), args.folds,
                            layout.get("group_pattern"))
    splits = shared_file(run_dir / SPLITS_FILE, log)
    total_seconds = job_budget(args)
    per_fold, _ = budget_division(total_seconds, args.folds, processes)
    log(division_line(total_seconds, args.folds, processes) + f"; splits {splits['hash']}")
    if rank == 0 and not (run_dir / PLAN_FILE).is_file():
        code = train_run(plan_arguments(args, run_dir, splits, pooled, per_fold))
        if code or not (run_dir / PLAN_FILE).is_file():
            return code or 2
    plan = shared_file(run_dir / PLAN_FILE, log)
    for fold in folds_of(rank, processes, args.folds):
        if is_done(run_dir, fold):
            log(f"fold {fold}: done already ({fold_dir(run_dir, fold)})")
            continue
        log(f"fold {fold} of {args.folds}: {len(splits['val'][fold])} held-out images")
        code = train_run(fold_arguments(args, run_dir, fold, splits, pooled, plan))
        if code:
            return code
        mark_done(run_dir, fold)
    if rank != 0:
        return 0
    wait_for_folds(run_dir, args.folds, log)
    scored = score_folds(run_dir, root, args.folds, args.device, args.amp)
    class_names = inference.load_model(fold_dir(run_dir, 0) / SCORED_CHECKPOINT)[1]["class_names"]
    report = cv_report(scored, class_names, splits, cv_commands(run_dir, root))
    write_json(run_dir / REPORT_FILE, json_safe(report))
    for line in report_lines(report):
        log(line)
    return 0

