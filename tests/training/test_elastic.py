"""Elastic torchrun (gloo, 2 processes, --max-restarts): a rank killed with SIGKILL after the
first checkpoint makes torchrun restart both; --resume auto continues from the newest complete
checkpoint (a save between validations, mid-epoch) and the job ends with exit code 0 and the
metrics of an uninterrupted run."""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import write_tiny_dataset

pytestmark = pytest.mark.slow  # three torchrun jobs: ~40 s together
ROOT = Path(__file__).resolve().parents[2]
# 8 train images, 2 processes of batch 2: 2 steps an epoch; validations at steps 4 and 8, saves
# of last.pt between them at steps 3 and 7 (mid-epoch).
COMMON = ["--steps", "8", "--val-every", "4", "--save-steps", "3", "--batch-size", "2", "--crop-size", "16", "--workers", "0",
          "--deterministic", "--amp", "off", "--log-every", "1",
          "--resume", "auto"]

# Rank 1 kills itself (SIGKILL: no handler, no clean-up, as a machine failure) once, at the
# first validation after the first checkpoint, while rank 0 waits for it in a collective; the
# marker file, which outlives the restart, holds the step of the checkpoint there was. Before each attempt had its own store prefix
# (runtime._attempt_store), the restarted workers then hung.
KILLED_RANK = """
import os, signal, sys
import torch
import train
from segnet.training import engine
args = train.get_args_parser().parse_args()
marker = args.out.parent / "killed_once"
original = engine.validate
def dying(*positional, **keywords):
    import torch.distributed as dist
    if dist.get_rank() == 1 and (args.out / "last.pt").is_file() and not marker.exists():
        saved = torch.load(args.out / "last.pt", weights_only=False)
        marker.write_text(f"{saved['global_step']} {saved['batch']}")
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*positional, **keywords)
engine.validate = dying
sys.exit(train.main(args))
"""


def elastic(script, out, data, timeout=150):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", "--max-restarts=3", "--monitor-interval=0.5", str(script),
               "--data", str(data), "--out", str(out), *COMMON]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.reader(handle))


def test_a_killed_rank_restarts_the_job_which_resumes_and_ends_as_if_uninterrupted(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", counts=(("train", 8), ("val", 3)))
    script = tmp_path / "killed_rank.py"
    script.write_text(KILLED_RANK)
    start = time.monotonic()
    killed = elastic(script, tmp_path / "killed" / "run", data)
    seconds = time.monotonic() - start
    assert killed.returncode == 0, killed.stderr[-3000:]
    # The kill did happen, in the validation at step 4, after the save at step 3 (epoch 2's
    # first batch): the restart resumed mid-epoch.
    assert (tmp_path / "killed" / "killed_once").read_text() == "3 1"
    assert seconds < 120
    reference = elastic(ROOT / "train.py", tmp_path / "reference", data)
    assert reference.returncode == 0, reference.stderr[-3000:]
    header, *body = rows(tmp_path / "killed" / "run")
    expected_header, *expected = rows(tmp_path / "reference")
    assert header == expected_header
    assert all(len(row) == len(header) for row in body), "torn row"
    epochs = [row[header.index("epoch")] for row in body]
    assert epochs == ["2", "4"], "a row duplicated, missing or added"
    miou = header.index("miou")
    assert float(body[-1][miou]) == pytest.approx(float(expected[-1][miou]), abs=1e-4)
    log = (tmp_path / "killed" / "run" / "train.log").read_text()
    assert "resumed from" in log
    assert "another process of this job failed; torchrun --max-restarts" in killed.stderr
