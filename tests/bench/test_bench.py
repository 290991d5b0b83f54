"""bench.py end to end on a tiny size: every worker process runs and the JSON has the issue's
headline keys with sane values (speed is measured by running bench.py, not by tests)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bench
from segnet.bench import gpucheck, speedreport
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
    for key in ("train_speedup", "infer_speedup", "train_peak_fraction", "loader_ratio",
                "infer_path_share"):
        assert report[key] > 0, key
    assert report["raw_pairs"][0]["project"]["infer"]["bare_img_s"] > 0
    assert "of the bare model's img/s" in subprocess.run(
        [sys.executable, "-c", "import json, sys; from segnet.bench.speedreport import "
         "table_lines; print(chr(10).join(table_lines(json.load(sys.stdin))))"],
        input=result.stdout, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
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


def test_fp32_is_held_against_the_tf32_peak_where_bench_measured_it():
    """On CUDA cuDNN runs fp32 convolutions in TF32: against the plain fp32 matmul peak they
    read over 100% (139% on an H200). Where run_peak measured TF32, fp32 is held against it."""
    phase = {"img_s": 10.0, "peak_memory_mb": 1.0, "page_faults_per_call": 0.0,
             "sys_s_per_call": 0.0}
    pairs = [{"baseline": {"precision": "fp32", "train": phase, "infer": phase}}]
    flops = {"train_per_image": 30e9, "infer_per_image": 10e9}  # 300 and 100 GFLOP/s
    cuda_peak = {"gflops": {"fp32": 50.0, "tf32": 400.0, "bf16": 800.0}}
    summary = speedreport.config_summary(pairs, "baseline", flops, cuda_peak)
    assert summary["train"]["peak_fraction"] == pytest.approx(300 / 400)
    assert summary["infer"]["peak_fraction"] == pytest.approx(100 / 400)
    cpu_peak = {"gflops": {"fp32": 500.0}}
    assert speedreport.config_summary(pairs, "baseline", flops, cpu_peak)["train"][
        "peak_fraction"] == pytest.approx(300 / 500)
    assert speedreport.peak_key("bf16", cuda_peak) == "bf16"


def test_the_gpu_check_reads_each_command_and_prints_one_table(monkeypatch, tmp_path):
    """gpucheck runs the commands as a user would; here their processes are stood in for by
    canned outputs, so the parsing (why a run stopped, the test score, bench's JSON) and the
    table are checked on the CPU."""
    calls = []
    bench_json = json.dumps({"train_speedup": 2.5, "infer_speedup": 3.0,
                             "train_peak_fraction": 0.31, "loader_ratio": 1.2,
                             "infer_path_share": 0.8, "peak": {"gflops": {"tf32": 400.0}},
                             "project": {"train": {"img_s": 314.0}},
                             "conv_relu_fusion": {"fused": True, "plain_ms": 2.0,
                                                  "fused_ms": 1.5}})

    def fake_run(arguments, folder, timeout):
        calls.append([str(argument) for argument in arguments])
        script = Path(arguments[1]).name if len(arguments) > 1 else ""
        if script == "evaluate.py":
            out = Path(arguments[arguments.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "report.json").write_text(json.dumps({"miou": 0.655}))
            return 0, 3.0, ""
        if script == "train.py" and "none" in arguments:
            run_dir = Path(arguments[arguments.index("--out") + 1])
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text(json.dumps({"plan": {"compile": True}}))
            return 0, 200.0, "plateau at step 9000\nstopped at step 11250: val mIoU stopped"
        if script == "train.py":
            return 0, 120.0, "stopped at step 8000: the time budget's end\n"
        if script == "bench.py":
            return 0, 60.0, "[bench] ...\n" + bench_json
        return 1, 5.0, "torchrun failed: NCCL error"

    monkeypatch.setattr(gpucheck, "run", fake_run)
    rows = gpucheck.gpu_check(ROOT, tmp_path / "data", tmp_path, "NVIDIA H200")
    budget, free = rows["training"]
    assert (budget["steps"], budget["test_miou"], budget["why"]) == (
        8000, 0.655, "the time budget's end")
    assert free["steps"] == 11250 and free["why"].startswith("val mIoU stopped")
    assert rows["bench"]["infer_path_share"] == 0.8 and rows["torchrun"]["status"] == 1
    assert ["--time-budget", "2"] == calls[0][calls[0].index("--time-budget"):][:2]
    assert any("torch.distributed.run" in " ".join(call) for call in calls)
    table = "\n".join(gpucheck.table_lines("NVIDIA H200", rows))
    assert "GPU check on NVIDIA H200" in table and "0.655" in table and "11250" in table
    assert "inference path 80% of the bare model" in table and "NCCL error" in table
    assert (budget["compiled"], free["compiled"]) == (None, True)  # no config.json: not known
    assert "conv+bias+ReLU as one cuDNN kernel: used (1.50 ms" in table
    assert [line.split()[7] for line in table.splitlines()[2:4]] == ["-", "yes"]


def test_the_gpu_check_needs_a_dataset_root(tmp_path):
    args = bench.get_args_parser().parse_args(["--gpu-check", str(tmp_path)])
    with pytest.raises(SystemExit, match="has no train/ folder"):
        bench.run_gpu_check(args, torch.device("cuda"))  # a GPU's device, built, not used


def test_the_gpu_check_without_cuda_says_so_at_once_in_one_line(tmp_path):
    (tmp_path / "train").mkdir()
    start = time.monotonic()
    result = subprocess.run([sys.executable, "bench.py", "--gpu-check", str(tmp_path),
                             "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert time.monotonic() - start < 60  # the interpreter and torch's import, no training run
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "CUDA GPU" in result.stderr


def test_the_gpu_check_names_the_device_at_fault():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert gpucheck.device_problem(cuda, True, "2.13.0") is None
    assert "leave out --device" in gpucheck.device_problem(cpu, True, "2.13.0")
    assert "torch 2.13.0+cpu" in gpucheck.device_problem(cpu, False, "2.13.0+cpu")


def test_the_fusion_choice_is_reported_as_measured():
    assert speedreport.fusion_lines(None) == []  # the CPU: nothing measured
    used = speedreport.fusion_lines({"fused": True, "plain_ms": 2.0, "fused_ms": 1.5})
    assert used == ["conv+bias+ReLU as one cuDNN kernel: used (1.50 ms against 2.00 ms "
                    "unfused, a batch of 4 at 256 px)"]
    slower = speedreport.fusion_lines({"fused": False, "plain_ms": 2.0, "fused_ms": 1.99})
    assert slower[0].startswith("conv+bias+ReLU as one cuDNN kernel: not used (1.99 ms")
    failed = speedreport.fusion_lines({"fused": False, "why": "outputs differ by 3"})
    assert failed == ["conv+bias+ReLU as one cuDNN kernel: not used (outputs differ by 3)"]
