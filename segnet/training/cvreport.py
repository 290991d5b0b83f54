"""A cross-validation's scores: each fold's final model on the images it held out, scored as
evaluate.py scores right after the fold trains (RUN/fold_k/cv_score.json, with the seconds it
took: the job's budget prices the later folds' scoring from fold 0's), and the CV report that
pools them (RUN/cv.json): every image scored by the fold that did not train on it."""
import time
from pathlib import Path

import numpy as np
import torch

from segnet import utils
from segnet.inference import inference, measures

# nnU-Net scores each fold's final model: picking best.pt on the very images it is scored on is
# optimistic (nnU-Net #1206).
SCORED_CHECKPOINT = "last.pt"
SCORE_FILE = "cv_score.json"  # in RUN/fold_k: the fold's scores on its held-out images


def score_fold(fold_folder, root, fold, device="auto", amp="auto"):
    """{fold, steps, seconds, class_names, confusion [K][K], images: [{name, miou}]} of fold
    k's SCORED_CHECKPOINT on the images it held out, scored as evaluate.py scores
    (inference.evaluate_split); seconds: the whole scoring, the checkpoint's loading included."""
    start = time.monotonic()
    path = Path(fold_folder) / SCORED_CHECKPOINT
    model, info, dtype = inference.load_for_inference(path, device, amp)
    confusion, per_image = inference.evaluate_split(model, info, root, "val", dtype=dtype)
    names = info["class_names"]
    images = [{"name": entry["name"],
               "miou": measures.metrics_from_confusion(entry["confusion"], names)["miou"]}
              for entry in per_image]
    return {"fold": fold, "steps": utils.load_checkpoint(path)["global_step"],
            "class_names": names, "confusion": confusion.tolist(), "images": images,
            "images_count": len(images), "seconds": round(time.monotonic() - start, 2)}


def cv_report(scores, splits, commands, timing=None):
    """The cv.json dict from the folds' scores (score_fold's, in fold order, each with the
    fold's training seconds where known): pooled per-class scores of every held-out image,
    each fold's mIoU, length and times, their mean and standard deviation, per-image scores,
    the checkpoint, the split hash and the job's time against its budget."""
    names = scores[0]["class_names"]
    confusions = [torch.tensor(score["confusion"]) for score in scores]
    pooled = sum(confusions)
    fold_scores = [measures.metrics_from_confusion(confusion, names)["miou"]
                   for confusion in confusions]
    images = [dict(entry, fold=score["fold"]) for score in scores for entry in score["images"]]
    return {"pooled": measures.metrics_from_confusion(pooled, names),
            "confusion": pooled.tolist(), "folds": [
                {"fold": score["fold"], "miou": miou, "images": len(score["images"]),
                 "steps": score.get("steps"), "train_seconds": score.get("train_seconds"),
                 "score_seconds": score.get("seconds")}
                for score, miou in zip(scores, fold_scores, strict=True)],
            "fold_mean": float(np.mean(fold_scores)), "fold_std": float(np.std(fold_scores)),
            "images": images, "checkpoint": SCORED_CHECKPOINT,
            "checkpoint_why": "each fold's final model, as nnU-Net scores it: best.pt is chosen "
                              "on the held-out images themselves, so its score is optimistic",
            "split_hash": splits["hash"], "folds_count": splits["folds"], "commands": commands,
            "time": timing}


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
    lines.append("  steps: " + ", ".join(str(entry["steps"]) for entry in report["folds"]))
    timing = report.get("time") or {}
    if timing.get("budget_seconds"):
        lines.append(f"  time: {timing['seconds'] / 60:.2f} min of the "
                     f"{timing['budget_seconds'] / 60:.2f} min budget (from the command's "
                     f"start to this report)")
    lines += [f"  {command}" for command in report["commands"]]
    return lines


def cv_commands(run_dir, root):
    """The commands that use the fold ensemble (their softmax averaged)."""
    return [f"evaluate the fold ensemble: python evaluate.py --checkpoint {run_dir} --data "
            f"{root} --split test",
            f"predict with it: python predict.py --checkpoint {run_dir} --input IMAGES "
            f"--output OUT"]
