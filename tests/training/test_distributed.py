"""torchrun / DDP on CPU (gloo, 2 processes): same metrics as one process with the same global
batch, rank-0-only files, checkpoints that load in a single process, and a failing rank ending
the job."""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import segnet
from helpers import write_tiny_dataset

pytestmark = pytest.mark.slow  # torchrun processes: ~30 s together
ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--epochs", "1", "--crop-size", "16", "--no-augment", "--workers", "0",
          "--sync-bn", "--deterministic", "--log-every", "1", "--scheduler", "none",
          "--optimizer", "sgd", "--lr", "0.01", "--amp", "off",
          "--loss", "ce"]  # Dice's all-reduce is tested on its own (test_global_batch_dice_...)


def torchrun(script, *args, nproc=2, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", str(script), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def single(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def last_row(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    data = write_tiny_dataset(base / "data", counts=(("train", 8), ("val", 3)))
    two = torchrun("train.py", "--data", data, "--out", base / "two", "--batch-size", "2",
                   *COMMON)
    assert two.returncode == 0, two.stderr[-3000:]
    one = single("--data", data, "--out", base / "one", "--batch-size", "4", *COMMON)
    assert one.returncode == 0, one.stderr[-3000:]
    return base, data, two


def test_two_processes_match_one_process_with_the_same_global_batch(ddp_runs):
    base, _, _ = ddp_runs
    two, one = last_row(base / "two"), last_row(base / "one")
    # Float rounding differs (other summation order), and SegNet's pooling arg-max can flip on
    # a near-tie, so runs drift apart slowly: compare after one epoch. The val loss, after
    # BatchNorm is re-estimated on 3 images, moves most: a change of 1e-6 in the input pixels
    # (the crop's resampling) moved it by 0.9% between these two runs, the train loss by 3e-5.
    assert float(two["train_loss"]) == pytest.approx(float(one["train_loss"]), rel=1e-4)
    assert float(two["val_loss"]) == pytest.approx(float(one["val_loss"]), rel=2e-2)
    for key in ("pixel_acc", "miou", "mean_dice"):
        assert float(two[key]) == pytest.approx(float(one[key]), abs=0.01), key


def test_only_rank_zero_writes_and_writes_once(ddp_runs):
    base, _, result = ddp_runs
    run_dir = base / "two"
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["best.pt", "config.json", "curves.png", "last.pt", "metrics.csv",
                     "train.log", "val_samples_epoch001.png"]
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/1 train_loss") == 1 and log.count("run folder:") == 1
    assert "2 processes, global batch 4" in log
    assert [row["epoch"] for row in csv.DictReader(open(run_dir / "metrics.csv"))] == ["1"]
    assert result.stdout.count("epoch 1/1 train_loss") == 1  # one rank prints


def test_ddp_checkpoint_loads_and_predicts_in_one_process(ddp_runs):
    base, _, _ = ddp_runs
    model, info = segnet.load_model(base / "two" / "last.pt")
    labels = segnet.predict(model, info, np.zeros((19, 23), dtype=np.uint8))
    assert labels.shape == (19, 23) and labels.max() < info["num_classes"]


def test_ddp_resume_continues_the_run(ddp_runs):
    base, data, _ = ddp_runs
    resumed = torchrun("train.py", "--data", data, "--resume", base / "two", "--batch-size",
                       "2", "--epochs", "2", *COMMON[2:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert last_row(base / "two")["epoch"] == "2"
    assert "resumed from" in (base / "two" / "train.log").read_text()


FAILING_RANK = """
import sys, train
from segnet.training import engine
original = engine.train_one_epoch
def failing(*args, **kwargs):
    import torch.distributed as dist
    if dist.get_rank() == 1:
        raise RuntimeError("rank 1 failed on purpose")
    return original(*args, **kwargs)
engine.train_one_epoch = failing
sys.exit(train.main(train.get_args_parser().parse_args()))
"""


def torchrun_script(source, data, folder, dist_timeout):
    """(result, seconds) of train.main run under torchrun by the script `source`, which
    patches the training first; the run folder is folder/run."""
    script = folder / "patched_train.py"
    script.write_text(source)
    start = time.monotonic()
    result = torchrun(script, "--data", data, "--out", folder / "run", "--batch-size", "2",
                      "--dist-timeout", dist_timeout, *COMMON, timeout=180)
    return result, time.monotonic() - start


def test_a_failing_rank_ends_the_whole_job(ddp_runs, tmp_path):
    _, data, _ = ddp_runs
    result, seconds = torchrun_script(FAILING_RANK, data, tmp_path, 30)
    assert result.returncode != 0
    assert "rank 1 failed on purpose" in result.stderr + result.stdout
    assert seconds < 150


OUT_OF_MEMORY = """
import sys, train
from segnet.training import engine, memory
original, calls = engine.train_step, []
def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # every rank, at the same step (the usual case: equal shapes)
        raise memory.OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 2.00 GiB")
    return original(*args, **kwargs)
engine.train_step = failing
sys.exit(train.main(train.get_args_parser().parse_args()))
"""


def test_an_out_of_memory_under_torchrun_saves_and_stops_without_waiting(ddp_runs, tmp_path):
    """Each rank says what ran out and how to resume; rank 0 writes last.pt at the last
    finished step without the other ranks (no collective that could wait for the timeout)."""
    _, data, _ = ddp_runs
    result, seconds = torchrun_script(OUT_OF_MEMORY, data, tmp_path, 60)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "rank 0 ran out of memory at step 1 (crop 16 px, batch 2 per process)" in output
    assert "rerun the same torchrun command with --resume <the run folder>" in output
    assert seconds < 60  # the 60 s process-group timeout was never reached
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (checkpoint["global_step"], checkpoint["batch"]) == (1, 1)


GLOBAL_DICE = """
import sys, torch, torch.distributed as dist
from segnet.training import losses
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
logits = torch.randn(4, 3, 8, 8, generator=generator)
targets = torch.randint(0, 3, (4, 8, 8), generator=generator)
targets[0, 0, :4] = 255
mine = slice(2 * rank, 2 * rank + 2)
part = logits[mine].clone().requires_grad_()
loss = losses.dice_loss(part, targets[mine], global_batch=True)
loss.backward()
whole = logits.clone().requires_grad_()
reference = losses.dice_loss(whole, targets)
reference.backward()
local = losses.dice_loss(logits[mine], targets[mine])
# DDP averages the ranks' gradients: part.grad / world is what reaches the weights
error = (part.grad / world - whole.grad[mine]).abs().max().item()
with open(f"{sys.argv[1]}/rank{rank}.txt", "w") as out:  # own file: stdout lines interleave
    out.write(f"rank {rank} {loss.item():.7f} {reference.item():.7f} {local.item():.7f} "
              f"{error:.1e}")
dist.destroy_process_group()
"""


def test_global_batch_dice_equals_one_process_dice_and_gradient(tmp_path):
    script = tmp_path / "global_dice.py"
    script.write_text(GLOBAL_DICE)
    result = torchrun(script, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    for _, _, loss, reference, local, error in lines:
        assert float(loss) == pytest.approx(float(reference), abs=1e-6)
        assert float(error) < 1e-7
    assert lines[0][4] != lines[1][4]  # each shard alone gives another Dice: the sums matter
