"""Cross-validation (training/folds.py, train.py --folds): splits by group that are disjoint,
complete, balanced and stable; K folds trained into RUN/fold_k with one plan, their settings
handed to train() as a FoldRun (nothing added to args); under a budget fold 0 sets the length
and later folds get a deadline; a kill mid-fold resumed without retraining finished folds;
torchrun with a fold a process; bad --folds values stop with one line."""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from helpers import write_tiny_dataset
from segnet.inference import ensemble
from segnet.training import engine, foldclock, folds
from segnet.utils import DataError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--steps", "2", "--batch-size", "2", "--crop-size", "16", "--workers", "0",
         "--log-every", "1"]


def cv_args(data, out, *extra):
    return train.get_args_parser().parse_args(
        ["--data", str(data), "--out", str(out), "--folds", "2", *SMALL, *extra])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("cv") / "data",
                              counts=(("train", 5), ("val", 2)))


def samples(names):
    return [(name, None, None) for name in names]


def test_splits_are_disjoint_complete_grouped_balanced_and_stable():
    names = [f"case{case}_slice{index}" for case in range(7) for index in range(3)]
    splits = folds.make_splits(samples(names), 3, pattern=r"case\d+")
    held = [name for fold in splits["val"] for name in fold]
    assert sorted(held) == sorted(names) and len(set(held)) == len(names)
    for fold in splits["val"]:  # whole cases, 2 or 3 of them
        cases = {name.split("_")[0] for name in fold}
        assert len(fold) == 3 * len(cases) and len(cases) in (2, 3)
    again = folds.make_splits(samples(reversed(names)), 3, pattern=r"case\d+")
    assert again == splits and again["hash"] == folds.split_hash(splits["val"])


@pytest.mark.parametrize("count", [1, 8])
def test_folds_outside_2_to_the_groups_stop_with_one_line(count):
    with pytest.raises(DataError, match=rf"--folds {count}: needs 2 <= K <= the 7 groups"):
        folds.make_splits(samples([f"a{index}" for index in range(7)]), count)


def test_folds_train_into_their_folders_and_the_report_scores_every_image(tiny, tmp_path):
    out = tmp_path / "cv"
    assert train.main(cv_args(tiny, out)) == 0
    splits = json.loads((out / "splits.json").read_text())
    report = json.loads((out / "cv.json").read_text())
    assert sorted(name for fold in splits["val"] for name in fold) == [
        f"img_{index}" for index in range(5)] + ["val/img_0", "val/img_1"]
    assert len(report["images"]) == 7 and report["split_hash"] == splits["hash"]
    assert report["checkpoint"] == "last.pt" and len(report["folds"]) == 2
    for fold in range(2):
        checkpoint = torch.load(out / f"fold_{fold}" / "last.pt", weights_only=True)
        assert checkpoint["data"]["holdout"] == splits["val"][fold]
        assert checkpoint["global_step"] == 2
        assert checkpoint["plan"]["crop_size"] == 16
    assert "python evaluate.py --checkpoint" in report["commands"][0]
    assert [entry["steps"] for entry in report["folds"]] == [2, 2]
    for fold in range(2):  # each fold scored right after it trained, the seconds it took kept
        score = json.loads((out / f"fold_{fold}" / "cv_score.json").read_text())
        assert score["steps"] == 2 and score["seconds"] > 0
        assert [entry["name"] for entry in score["images"]] == sorted(splits["val"][fold])


def test_fold_settings_reach_train_as_a_typed_value_and_args_gain_nothing(tiny, tmp_path,
                                                                          monkeypatch):
    args = cv_args(tiny, tmp_path / "cv")
    before = dict(vars(args))
    calls, original = [], train.train

    def recording_train(run_args, rank, world_size, local_rank, started, fold=None):
        calls.append((dict(vars(run_args)), fold))
        return original(run_args, rank, world_size, local_rank, started, fold=fold)

    monkeypatch.setattr(train, "train", recording_train)
    assert train.main(args) == 0
    assert vars(args) == before  # the command's own arguments are never written to
    splits = json.loads((tmp_path / "cv" / "splits.json").read_text())
    assert [call[1].fold for call in calls] == [None, 0, 1]  # the planning pass, two folds
    for run_args, fold in calls:
        assert set(run_args) == set(before)  # real flags only: no attribute added for folds
        assert isinstance(fold, folds.FoldRun)
        assert list(fold.holdout) == splits["val"][fold.fold or 0]
        assert fold.layout["pool"] == ["train", "val"] and fold.deadline is None
    planning, *trained = calls
    assert planning[1].planning and planning[1].plan_file.name == "plan.json"
    assert planning[0]["plan_only"] and planning[1].plan is None
    for run_args, fold in trained:
        assert not fold.planning and run_args["out"] == tmp_path / "cv" / f"fold_{fold.fold}"
        assert fold.plan["crop_size"] == 16 and fold.plan["time_budget"] is None
        assert run_args["steps"] == 2 and run_args["resume"] == Path("auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        trained[0][1].deadline = 1.0  # frozen: one value, handed down unchanged


def budget_clock(seconds=600.0, folds_count=5):
    return foldclock.job_clock(time.monotonic(), seconds, folds_count, 1)


def test_under_a_budget_fold_0_sets_the_length_and_later_folds_get_a_deadline(tmp_path):
    """Fold 0 trains under its share of the time left, less the plan's price of scoring its
    held-out images; a later fold trains fold 0's measured steps with a deadline: its share
    less its scoring at fold 0's measured rate."""
    args = argparse.Namespace(steps=None, epochs=None, time_budget=10.0, folds=5, out=None,
                              resume=None, plan_only=False, device="cpu")
    splits = {"val": [[f"a{index}", f"b{index}"] for index in range(4)] + [["c", "d", "e"]]}
    plan = {"steps": 303, "crop_size": 256, "time_budget": 114.0,
            "measured": {"check_seconds": 12.0}}
    clock = budget_clock()
    fold_args, fold_run = folds.fold_setting(args, tmp_path, 0, splits, {}, plan, clock, 5,
                                             print)
    share = (600 - foldclock.REPORT_SECONDS) / 5
    assert fold_args.steps is None and fold_args.time_budget is None
    assert fold_run.plan["time_budget"] == pytest.approx(share - 12.0, abs=0.5)
    assert fold_run.deadline is None and fold_run.plan["steps"] == 303
    folds.fold_dir(tmp_path, 0).mkdir()
    folds.write_json(folds.score_path(tmp_path, 0), {"steps": 211, "seconds": 10.0,
                                                      "images_count": 2})
    fold_args, fold_run = folds.fold_setting(args, tmp_path, 4, splits, {}, plan, clock, 4,
                                             print)
    assert fold_args.steps == 211 and fold_run.plan["time_budget"] is None
    assert fold_run.plan["notes"][0].startswith("211 steps: fold 0's length")
    expected = time.monotonic() + share * 5 / 4 - 15.0  # three images at 5 s each
    assert fold_run.deadline == pytest.approx(expected, abs=0.5)


def test_a_fold_killed_midway_resumes_and_finished_folds_stay(tiny, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    assert train.main(cv_args(tiny, out, "--steps", "4")) == 0
    fold_0 = (out / "fold_0" / "last.pt").stat().st_mtime_ns
    (out / "fold_1" / "done.json").unlink()
    (out / "cv.json").unlink()
    for name in ("last.pt", "best.pt", "cv_score.json"):  # as a fold killed mid-training
        (out / "fold_1" / name).unlink()
    captured = {}
    original = engine.new_state

    def new_state():
        captured["state"] = original()
        return captured["state"]

    class StopAfter(engine.StopFlag):
        signal = property(lambda self: "SIGTERM" if captured["state"]["global_step"] >= 2
                          else None, lambda self, value: None)

        def install(self):
            pass

    monkeypatch.setattr(engine, "new_state", new_state)
    monkeypatch.setattr(engine, "StopFlag", StopAfter)
    assert train.main(cv_args(tiny, out, "--steps", "4")) == 130
    assert not (out / "cv.json").exists()
    with pytest.raises(FileNotFoundError, match="fold_1 of .* has not finished training"):
        ensemble.checkpoint_paths(out)  # an ensemble never takes a fold cut off midway
    monkeypatch.undo()
    assert train.main(cv_args(tiny, out, "--steps", "4", "--resume", "auto")) == 0
    assert (out / "fold_0" / "last.pt").stat().st_mtime_ns == fold_0  # not retrained
    log = (out / "fold_1" / "train.log").read_text()
    assert "resumed from" in log
    assert torch.load(out / "fold_1" / "last.pt", weights_only=True)["global_step"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--folds", "1"], "--folds needs K >= 2"),
    (["--folds", "2", "--resume", "x.pt"], "--folds needs K >= 2, --resume auto or none"),
    (["--folds", "9"], "--folds 9: needs 2 <= K <= the 7 groups"),
])
def test_bad_folds_values_stop_with_one_line(tiny, tmp_path, flags, message):
    args = train.get_args_parser().parse_args(
        ["--data", str(tiny), "--out", str(tmp_path / "cv"), *SMALL, *flags])
    with pytest.raises(SystemExit, match=message):
        train.main(args)


@pytest.mark.slow
def test_torchrun_trains_a_fold_a_process_and_rank_0_reports(tiny, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", "train.py", "--data", str(tiny), "--out",
               str(tmp_path / "cv"), "--folds", "3", *SMALL]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert len(report["folds"]) == 3 and len(report["images"]) == 7
    for fold in range(3):
        assert (tmp_path / "cv" / f"fold_{fold}" / "done.json").is_file()
