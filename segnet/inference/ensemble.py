"""Fold ensembles at inference: the checkpoints of a cross-validation run (RUN/fold_<k>/, the file
each fold's model comes from named in RUN/cv.json), the model that averages their probabilities
(EnsembleSegNet), and loading it as inference.load_for_inference loads one checkpoint."""
import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from segnet import utils
from segnet.runtime import (device_inference_model, resolve_channels_last, resolve_device,
                            resolve_precision)

CV_FILE = "cv.json"  # in a CV run folder: {"folds_count": K, "checkpoint": "last.pt", ...}
DEFAULT_CHECKPOINT = "last.pt"  # each fold's model when cv.json names none
# What train.py --folds (segnet/training/folds.py) writes: the split, and a fold's end.
SPLITS_FILE, DONE_FILE = "splits.json", "done.json"
FOLD = re.compile(r"fold_(\d+)")
# What every member must share (utils.checkpoint_info's keys): how images are read, resized and
# labelled. The normalisation may differ (each fold's train split has its own statistics).
AGREED_KEYS = ("in_channels", "num_classes", "class_names", "mask_decoding", "ignore_index",
               "train_image_size", "train_scale")
TINY = torch.finfo(torch.float32).tiny  # keeps the log of a probability that underflowed finite


# ---------------------------------------------------------------- which checkpoints

def fold_number(path):
    """k for a folder named fold_<k>, else None."""
    match = FOLD.fullmatch(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_cv_folder(path):
    """Whether `path` is a cross-validation run folder: a folder holding cv.json or fold_<k>/."""
    path = Path(path)
    return path.is_dir() and ((path / CV_FILE).is_file()
                              or any(fold_number(child) is not None for child in path.iterdir()))


def read_cv_file(run):
    """RUN/cv.json as a dict, {} when there is none; ValueError naming the file when it is not
    a JSON object."""
    path = Path(run) / CV_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the cross-validation run wrote "
                         f"it: restore it, or name the fold checkpoints themselves") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} holds a {type(settings).__name__}, not a JSON object with "
                         f"\"folds\" and \"checkpoint\"")
    return settings


def cv_settings(run):
    """(fold count, checkpoint file name) of a CV run: cv.json's "folds_count", or its "folds"
    (a count, or the list of per-fold entries segnet.training.folds writes), by default the
    fold_<k>/ folders there are; and its "checkpoint" (default last.pt). ValueError naming
    cv.json when one is of the wrong kind, FileNotFoundError when the run has no fold at all."""
    settings = read_cv_file(run)
    name = settings.get("checkpoint") or DEFAULT_CHECKPOINT
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"{Path(run) / CV_FILE}: \"checkpoint\" must be a file name such as "
                         f"\"last.pt\" or \"best.pt\", got {name!r}")
    folds = settings.get("folds_count", settings.get("folds"))
    if isinstance(folds, list):
        folds = len(folds)
    if folds is None:
        folds = sum(fold_number(child) is not None for child in Path(run).iterdir())
        if not folds:
            raise FileNotFoundError(f"cross-validation run {run} has no fold_<k>/ folders")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
        raise ValueError(f"{Path(run) / CV_FILE}: \"folds_count\" (or \"folds\") must be an "
                         f"integer >= 1, got {folds!r}")
    return folds, name


def fold_checkpoints(run):
    """RUN/fold_0/NAME, RUN/fold_1/NAME, ... in fold order, NAME and the fold count from
    cv_settings. FileNotFoundError naming the fold folders or checkpoints that are missing."""
    run = Path(run)
    folds, name = cv_settings(run)
    found = {fold_number(child) for child in run.iterdir()} - {None}
    missing = [f"fold_{k}" for k in range(folds) if k not in found]
    if missing:
        raise FileNotFoundError(f"cross-validation run {run} has {folds} folds but no "
                                f"{utils.name_list(missing)} folder: its training has not "
                                f"finished; finish it, or name the fold checkpoints there are")
    paths = [run / f"fold_{k}" / name for k in range(folds)]
    unfinished = [path.parent for path in paths if (run / SPLITS_FILE).is_file()
                  and not (path.parent / DONE_FILE).is_file()]
    if unfinished:  # train.py --folds marks a fold done when its run ends
        raise FileNotFoundError(f"{utils.name_list(unfinished)} of {run} has not finished "
                                f"training (no {DONE_FILE}): rerun the train.py --folds command "
                                f"to finish it, or name the fold checkpoints to use them as "
                                f"they are")
    absent = [path for path in paths if not path.is_file()]
    if absent:
        raise FileNotFoundError(f"fold checkpoint {utils.name_list(absent)} does not exist "
                                f"(each fold's model is its {name}, as {run / CV_FILE} says or "
                                f"by default): that fold has not finished training; finish "
                                f"it, or name the fold checkpoints there are")
    return paths


def checkpoint_paths(path_or_paths):
    """The checkpoint files of a model or a fold ensemble, in order: a cross-validation run
    folder (is_cv_folder) -> its fold checkpoints (fold_checkpoints); a list of checkpoint
    files -> those; one checkpoint file -> [it]. A one-item list is its item. Files are not
    opened here (utils.load_checkpoint names one that is missing or not a checkpoint)."""
    items = as_list(path_or_paths)
    if not items:
        raise ValueError("no checkpoint given: name a checkpoint file, several, or a "
                         "cross-validation run folder")
    if len(items) == 1 and is_cv_folder(items[0]):
        return fold_checkpoints(items[0])
    folders = [path for path in items if is_cv_folder(path)]
    if folders:
        raise ValueError(f"{folders[0]} is a cross-validation run folder: give it alone, or "
                         f"name checkpoint files only")
    return [Path(path) for path in items]


def check_members(members):
    """ValueError naming two checkpoints and the entry they disagree on, when the members
    ([(path, checkpoint)]) would not read, resize and label images alike (AGREED_KEYS)."""
    first_path, first = members[0]
    reference = utils.checkpoint_info(first)
    for path, checkpoint in members[1:]:
        info = utils.checkpoint_info(checkpoint)
        for key in AGREED_KEYS:
            if info.get(key) != reference.get(key):
                raise ValueError(f"{path} and {first_path} disagree on {key} "
                                 f"({info.get(key)!r} vs {reference.get(key)!r}): the members "
                                 f"of an ensemble must be trained on the same data and "
                                 f"classes; leave out the one that is not")


def load_members(path_or_paths):
    """[(path, checkpoint)] of checkpoint_paths(path_or_paths), each loaded safely
    (utils.load_checkpoint); combine checks that they agree, once each is built (build_model
    names a file that is no SegNet checkpoint first)."""
    return [(path, utils.load_checkpoint(path)) for path in checkpoint_paths(path_or_paths)]


# ---------------------------------------------------------------- the ensemble model

def renormalisation(normalizations):
    """(scales, shifts) float32 [M, C] that take images normalised with member 0's statistics
    to member m's: x_m = x * scales[m] + shifts[m], the affine map of x_raw = x * std_0 + mean_0
    then (x_raw - mean_m) / std_m, composed in float64 (member 0's is exactly the identity)."""
    mean = torch.tensor([norm["mean"] for norm in normalizations], dtype=torch.float64)
    std = torch.tensor([norm["std"] for norm in normalizations], dtype=torch.float64)
    return (std[0] / std).float(), ((mean[0] - mean) / std).float()


class EnsembleSegNet(nn.Module):
    """M SegNets as one model whose softmax is the mean of their probabilities.

    Input: images float [N, C, H, W] normalised with member 0's normalisation (what
    inference.py passes with member 0's info). Each member was trained on its own fold's
    statistics, so each re-normalises its input to them first (renormalisation: the raw pixels
    x * std_0 + mean_0, then (raw - mean_m) / std_m), and the model takes one normalisation.
    Output: log of the members' mean softmax [N, K, H, W] (floored at the smallest float32, to
    stay finite), so forward_probs, tiled_probs, TTA, Monte Carlo dropout and ONNX export, which
    take a softmax of what a model returns, get the ensemble's probabilities unchanged.
    """

    def __init__(self, members, normalizations):
        super().__init__()
        assert members and len(members) == len(normalizations), "one normalisation a member"
        self.members = nn.ModuleList(members)
        self.in_channels, self.num_classes = members[0].in_channels, members[0].num_classes
        self.normalizations = [dict(norm) for norm in normalizations]
        scales, shifts = renormalisation(normalizations)
        self.register_buffer("scales", scales)
        self.register_buffer("shifts", shifts)

    @property
    def mc_dropout(self):
        """Monte Carlo dropout (SegNet.mc_dropout): on when the members have it on."""
        return any(member.mc_dropout for member in self.members)

    @mc_dropout.setter
    def mc_dropout(self, value):
        for member in self.members:
            member.mc_dropout = value

    def forward(self, images):
        probs = 0
        for index, member in enumerate(self.members):
            # [N, C, H, W] in member 0's normalisation -> member index's
            inputs = (images * self.scales[index][:, None, None]
                      + self.shifts[index][:, None, None])
            probs = probs + member(inputs).float().softmax(1)  # [N, K, H, W]
        return (probs / len(self.members)).clamp(min=TINY).log()


def combine(models, members):
    """(model, info) of models built from members ([(path, checkpoint)], load_members): the
    one model and its checkpoint_info for one member; else an EnsembleSegNet of them on their
    device, with member 0's info plus "ensemble": the checkpoint paths as text. ValueError
    naming two members that disagree (check_members)."""
    check_members(members)
    info = utils.checkpoint_info(members[0][1])
    if len(models) == 1:
        return models[0], info
    device = next(models[0].parameters()).device
    normalizations = [checkpoint["data"]["normalization"] for _, checkpoint in members]
    ensemble = EnsembleSegNet(models, normalizations).to(device)
    return ensemble, dict(info, ensemble=[str(path) for path, _ in members])


def load_ensemble_for_inference(path_or_paths, device="auto", amp="auto"):
    """(model, info, autocast dtype or None) as inference.load_for_inference gives for one
    checkpoint, for a checkpoint file, several, or a cross-validation run folder
    (checkpoint_paths). Each member is built in its inference form (runtime.
    device_inference_model) before they are put together (combine): for one checkpoint, the
    very model and info load_for_inference returns. ValueError / FileNotFoundError name the
    file at fault or the two members that disagree."""
    device = resolve_device(device)
    dtype = resolve_precision(device, amp)
    members = load_members(path_or_paths)
    models = [device_inference_model(utils.build_model(checkpoint, path).to(device), dtype,
                                     resolve_channels_last(device))
              for path, checkpoint in members]
    model, info = combine(models, members)
    return model, info, dtype


# ---------------------------------------------------------------- the scripts' --checkpoint

CHECKPOINT_HELP = ("checkpoint written by train.py (best.pt or last.pt); several checkpoint files, "
                   "or a cross-validation run folder (fold_<k>/ and cv.json), make a fold "
                   "ensemble that averages their probabilities")


def as_list(path_or_paths):
    """A path (text or os.PathLike) as a one-item list; a list or tuple as a list; None as []."""
    if path_or_paths is None:
        return []
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [path_or_paths]
    return list(path_or_paths)


def checkpoint_argument(checkpoints):
    """--checkpoint's paths as the loaders take them: one path (a checkpoint file or a CV run
    folder) for one, the list for several, None for none."""
    checkpoints = as_list(checkpoints)
    if not checkpoints:
        return None
    return checkpoints[0] if len(checkpoints) == 1 else checkpoints


def checkpoint_names(path_or_paths):
    """A checkpoint argument as printed: its paths, separated by spaces."""
    return " ".join(str(path) for path in as_list(path_or_paths))


def checkpoint_problems(checkpoints):
    """What is wrong with --checkpoint's paths before anything is loaded: each must be a file,
    or a lone one a cross-validation run folder (is_cv_folder)."""
    checkpoints = as_list(checkpoints)
    if not checkpoints or (len(checkpoints) == 1 and is_cv_folder(checkpoints[0])):
        return []
    return [f"--checkpoint {path} is not a file" + (
        " (a folder: name the checkpoint file in it, or give a cross-validation run folder, "
        "which holds fold_<k>/)" if Path(path).is_dir() else "")
        for path in checkpoints if not Path(path).is_file()]
