"""Cross-validation (training/folds.py, train.py --folds): splits by group that are disjoint,
complete, balanced and stable; K folds trained into RUN/fold_k with one plan; a kill mid-fold
resumed without retraining finished folds; torchrun with a fold a process; the pooled scores
equal a hand computation; bad --folds values stop with one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from helpers import write_tiny_dataset
from segnet.inference import ensemble, measures
from segnet.training import engine, folds
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


def test_budget_is_divided_between_folds_and_scoring():
    per_fold, scoring = folds.budget_division(600, 3, 1)
    assert (per_fold, scoring) == pytest.approx((190, 30))
    assert folds.budget_division(600, 3, 2)[0] == pytest.approx(285)  # 2 folds on rank 0
    assert "3 fold(s) a process x 3.17 min + 0.50 min scoring" in folds.division_line(600, 3, 1)
    assert folds.folds_of(1, 2, 5) == [1, 3]


def test_cv_report_pools_every_held_out_image_as_by_hand():
    confusion = [np.array([[3, 1], [0, 4]]), np.array([[2, 0], [2, 2]])]
    scored = [(fold, torch.tensor(matrix), [{"name": f"i{fold}", "confusion": torch.tensor(
        matrix)}]) for fold, matrix in enumerate(confusion)]
    report = folds.cv_report(scored, ["a", "b"], {"hash": "h", "folds": 2}, [])
    pooled = np.array([[5, 1], [2, 6]])  # the sum: IoU a = 5 / (5 + 1 + 2), b = 6 / (6 + 1 + 2)
    assert report["pooled"]["miou"] == pytest.approx((5 / 8 + 6 / 9) / 2)
    first, second = (3 / 4 + 4 / 5) / 2, (2 / 4 + 2 / 4) / 2
    assert [entry["miou"] for entry in report["folds"]] == pytest.approx([first, second])
    assert report["fold_mean"] == pytest.approx((first + second) / 2)
    assert report["fold_std"] == pytest.approx(abs(first - second) / 2)
    assert report["confusion"] == pooled.tolist()
    assert report["pooled"] == measures.metrics_from_confusion(torch.tensor(pooled), ["a", "b"])


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


def test_a_fold_killed_midway_resumes_and_finished_folds_stay(tiny, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    assert train.main(cv_args(tiny, out, "--steps", "4")) == 0
    fold_0 = (out / "fold_0" / "last.pt").stat().st_mtime_ns
    (out / "fold_1" / "done.json").unlink()
    (out / "cv.json").unlink()
    for name in ("last.pt", "best.pt"):
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
