"""bench.py end to end on a tiny size: every worker process runs and the JSON has the issue's
headline keys with sane values (speed is measured by running bench.py, not by tests)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
from segnet.bench import speedreport
from segnet.inference import deploy
from segnet.training import engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_json_report_has_the_headline_figures():
    command = [sys.executable, "bench.py", "--size", "32", "--batch-size", "2", "--pairs", "1",
               "--repeats", "1", "--warmup", "0", "--peak-size", "128", "--loader-workers", "0",
               "--loader-batches", "2", "--device", "cpu", "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for key in ("train_speedup", "infer_speedup", "train_peak_fraction", "loader_ratio"):
        assert report[key] > 0, key
    assert report["settings"]["size"] == 32 and report["settings"]["batch_size"] == 2
    assert report["baseline"]["precision"] == "fp32"
    assert report["baseline"]["channels_last"] is False
    assert set(report["peak"]["gflops"]) >= {"fp32", report["project"]["precision"]}
    assert report["loader"]["default_workers"] == 0  # CPU default of train.py
    # FLOPs of one 32x32 forward: 53.24 GFLOP at 256x256 scales with the pixel count.
    assert report["flops"]["infer_per_image"] == pytest.approx(53.24e9 / 64, rel=0.01)
    assert report["flops"]["train_per_image"] > 2 * report["flops"]["infer_per_image"]
    for phase in ("train", "infer"):
        assert report["allocator"][phase]["on"]["img_s"] > 0
    if deploy.missing_packages():  # the ONNX Runtime row is optional: a note, not a failure
        assert "requirements-export.txt" in report["onnx"]["skipped"]
    else:
        assert report["onnx"]["infer_img_s"] > 0 and report["onnx"]["torch_fp32_img_s"] > 0
        assert report["onnx"]["ratio_to_project"]["median"] > 0


def test_project_training_runs_train_py_code(monkeypatch):
    """The project's configuration goes through train.py's own loop (engine.py), not a copy."""
    calls = []
    original = engine.train_one_epoch
    monkeypatch.setattr(engine, "train_one_epoch",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    args = bench.get_args_parser().parse_args(["--size", "16", "--batch-size", "2",
                                               "--repeats", "1", "--warmup", "0",
                                               "--device", "cpu"])
    result, runtime = bench.project_training(args)
    assert len(calls) == 1 and result["img_s"] > 0
    assert runtime.device.type == "cpu"


def test_the_onnx_row_is_skipped_with_a_note_without_onnxruntime(monkeypatch):
    args = bench.get_args_parser().parse_args(["--device", "cpu"])
    monkeypatch.setattr(deploy, "missing_packages", lambda names=None: ["onnxruntime"])
    note = bench.onnx_skip_note(args, torch.device("cpu"))
    assert "onnxruntime not installed" in note and "requirements-export.txt" in note
    assert speedreport.onnx_lines(speedreport.onnx_summary([], note), "fp32") == [
        f"ONNX Runtime row skipped: {note}"]
    assert bench.onnx_skip_note(bench.get_args_parser().parse_args(["--no-onnx"]),
                                torch.device("cpu")) == "--no-onnx"


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit, match="--size must be >= 8"):
        bench.validate_args(bench.get_args_parser().parse_args(["--size", "4"]))
    with pytest.raises(SystemExit, match="--loader-workers must be >= 0"):
        bench.validate_args(bench.get_args_parser().parse_args(["--loader-workers", "-1"]))
