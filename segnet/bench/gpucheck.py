"""`python bench.py --gpu-check DATA`: what a GPU does with this project, in one table and at most
about 8 minutes on one GPU. It runs the commands as a user would, each in its own process:

1. `train.py --time-budget 2` on DATA (no other flag but --ignore-index), then its test score;
2. `train.py --time-budget none`: how long it took and why it stopped, then its test score
   (stopped after `limit_minutes` if the curve has not plateaued by then: said so);
3. `bench.py` at 480 px, batch 16 (speed-ups, share of the peak, loader ratio, the
   inference path's share of the bare model);
4. a one-step `torchrun` job (NCCL where the process has a GPU).
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from segnet.bench import speedreport

STOPPED = re.compile(r"stopped at step (\d+): (.*)")


def device_problem(device, cuda_available, torch_version):
    """Why the check cannot run on `device`, in one sentence, or None on a CUDA device."""
    if device.type == "cuda":
        return None
    if cuda_available:
        return (f"--gpu-check runs on a CUDA GPU, not --device {device.type}: leave out "
                f"--device")
    return (f"--gpu-check needs a CUDA GPU and this machine has none that torch "
            f"{torch_version} can use (torch.cuda.is_available() is False); run it on a GPU "
            f"machine")


def command(script, *args):
    return [sys.executable, str(script), *map(str, args)]


def run(arguments, folder, timeout):
    """(exit status, seconds, stdout + stderr) of one command; 124 when it ran past timeout."""
    start = time.monotonic()
    try:
        result = subprocess.run(arguments, cwd=folder, capture_output=True, text=True,
                                timeout=timeout)
        status, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        status, output = 124, f"{expired.stdout or ''}{expired.stderr or ''}"
        output = output.decode() if isinstance(output, bytes) else output
    return status, time.monotonic() - start, output


def test_miou(repo, run_dir, data, seconds=180):
    """Test mIoU of run_dir/best.pt by evaluate.py, or None where it could not be scored."""
    out = run_dir / "eval-test"
    status, _, _ = run(command(repo / "evaluate.py", "--checkpoint", run_dir / "best.pt",
                               "--data", data, "--split", "test", "--out", out), repo, seconds)
    if status != 0 or not (out / "report.json").is_file():
        return None
    return json.loads((out / "report.json").read_text())["miou"]


def training_row(repo, data, work, name, budget, ignore_index, limit_minutes):
    """One train.py run and its test score: {run, status, seconds, steps, why, test_miou}."""
    run_dir = work / name
    status, seconds, output = run(command(
        repo / "train.py", "--data", data, "--ignore-index", ignore_index, "--time-budget",
        budget, "--out", run_dir), repo, 60 * limit_minutes)
    stopped = STOPPED.findall(output)
    why = stopped[-1][1] if stopped else ("not stopped within the check's limit"
                                          if status == 124 else output.strip()[-200:])
    return {"run": f"train.py --time-budget {budget}", "status": status,
            "seconds": round(seconds, 1), "steps": int(stopped[-1][0]) if stopped else None,
            "why": why, "test_miou": test_miou(repo, run_dir, data),
            "compiled": planned(run_dir, "compile")}


def planned(run_dir, name):
    """A value of the run's plan (config.json), or None where the run wrote none."""
    try:
        return json.loads((run_dir / "config.json").read_text())["plan"].get(name)
    except (OSError, ValueError, KeyError):
        return None


def bench_row(repo, timeout=240):
    """bench.py at 480 px, batch 16, colour, 8 classes (Stanford Background's shape)."""
    status, seconds, output = run(command(
        repo / "bench.py", "--size", 480, "--batch-size", 16, "--in-channels", 3,
        "--num-classes", 8, "--pairs", 1, "--json"), repo, timeout)
    if status != 0:
        return {"status": status, "error": output.strip()[-300:]}
    report = json.loads(output[output.index("{"):])
    keys = ("train_speedup", "infer_speedup", "train_peak_fraction", "loader_ratio",
            "infer_path_share")
    return {"status": 0, "seconds": round(seconds, 1), **{key: report[key] for key in keys},
            "train_img_s": report["project"]["train"]["img_s"],
            "peak_gflops": report["peak"]["gflops"],
            "conv_relu_fusion": report.get("conv_relu_fusion")}


def torchrun_row(repo, data, work, ignore_index, timeout=180):
    """A one-step torchrun job: the launcher, the process group (NCCL with a GPU), DDP."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "1"]
    status, seconds, output = run(launcher + command(
        repo / "train.py", "--data", data, "--steps", 1, "--ignore-index", ignore_index,
        "--out", work / "torchrun")[1:], repo, timeout)
    return {"status": status, "seconds": round(seconds, 1),
            "error": None if status == 0 else output.strip()[-300:]}


def table_lines(device_name, rows):
    """The check's one table."""
    lines = [f"GPU check on {device_name}", f"{'run':<34}{'exit':>5}{'seconds':>9}"
             f"{'steps':>8}{'test mIoU':>11}{'compiled':>10}  why it stopped"]
    for row in rows["training"]:
        miou = "-" if row["test_miou"] is None else f"{row['test_miou']:.3f}"
        compiled = {True: "yes", False: "no"}.get(row.get("compiled"), "-")
        lines.append(f"{row['run']:<34}{row['status']:>5}{row['seconds']:>9.0f}"
                     f"{row['steps'] or '-':>8}{miou:>11}{compiled:>10}  {row['why']}")
    bench = rows["bench"]
    if bench["status"] == 0:
        lines.append(f"{'bench.py 480 px, batch 16':<34}{0:>5}{bench['seconds']:>9.0f}  train "
                     f"{bench['train_img_s']:.0f} img/s (x{bench['train_speedup']:.2f} the "
                     f"baseline, {bench['train_peak_fraction']:.0%} of the peak), loader ratio "
                     f"{bench['loader_ratio']:.2f}x, inference path {bench['infer_path_share']:.0%}"
                     f" of the bare model")
        fusion = bench.get("conv_relu_fusion")
        if fusion:
            lines.append(f"{'':<48}{speedreport.fusion_lines(fusion)[0]}")
    else:
        lines.append(f"{'bench.py 480 px, batch 16':<34}{bench['status']:>5}  {bench['error']}")
    torchrun = rows["torchrun"]
    lines.append(f"{'torchrun, 1 step':<34}{torchrun['status']:>5}{torchrun['seconds']:>9.0f}  "
                 + ("ok" if torchrun["status"] == 0 else torchrun["error"]))
    return lines


def gpu_check(repo, data, work, device_name, ignore_index=15, limit_minutes=3.5):
    """Every row of the check ({training: [...], bench, torchrun}), run one after another."""
    work = Path(work)
    rows = {"training": [training_row(repo, data, work, "budget-2", 2, ignore_index, 4),
                         training_row(repo, data, work, "no-budget", "none", ignore_index,
                                      limit_minutes)]}
    rows["bench"] = bench_row(repo)
    rows["torchrun"] = torchrun_row(repo, data, work, ignore_index)
    rows["device"] = device_name
    return rows
