"""Crashes lose nothing: a real `python train.py` killed with SIGKILL at random moments and
resumed with `--resume auto` ends exactly where an uninterrupted run does; a failing save keeps
the previous checkpoint. SEGNET_SOAK_KILLS=50 runs a longer soak (default 10 kills)."""
import csv
import errno
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from helpers import data_info
from model import SegNet
from segnet import utils
from segnet.training import engine

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("SEGNET_SOAK_KILLS", "10"))
KILL_SEED = int(os.environ.get("SEGNET_KILL_SEED", "0"))
EPOCHS = max(8, KILLS // 2 + 2)  # enough that the kills end before the training does
TIMING_COLUMNS = {"seconds", "img/s"}
# One intra-op thread: results then do not depend on the core count, and a process started
# beside busy neighbours does not stall in OpenMP barriers.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def write_dataset(root, counts=(("train", 4), ("val", 2)), size=24, seed=0):
    """Index masks, 3 classes: a bright square (1) and a dark bar (2) on a mid background."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True)
        for index in range(count):
            mask = np.zeros((size, size), dtype=np.uint8)
            top, left = rng.integers(0, size - 10, 2)
            mask[top:top + 8, left:left + 8] = 1
            mask[rng.integers(0, size - 3):][:3, 2:size - 2] = 2
            image = np.choose(mask, [120, 220, 30]) + rng.normal(0, 10, mask.shape)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / split / "images" / f"img_{index}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"img_{index}.png")
    return root


def command(data_root, out):
    """Deterministic CPU training, 2 steps an epoch (4 images, batch 2), augmentation on (so
    the RNG states must survive every resume), restartable with one unchanged command."""
    return [sys.executable, str(ROOT / "train.py"), "--data", str(data_root), "--out", str(out),
            "--epochs", str(EPOCHS), "--batch-size", "2", "--crop-size", "16", "--workers", "0",
            "--deterministic", "--amp", "off", "--log-every", "1", "--resume", "auto"]


class Training:
    """A train.py subprocess whose output lines are collected (with their arrival time) by a
    thread, so the test can wait for a line and kill at a chosen moment."""

    def __init__(self, argv, cwd):
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put(None)

    def wait_for(self, pattern, timeout=120):
        """Arrival time of the first line matching pattern; None when the process ended
        first or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if item is None:
                self.lines.put(None)  # finish() waits for it too
                return None
            self.output.append(item[1])
            if re.search(pattern, item[1]):
                return item[0]

    def kill_at(self, moment):
        """SIGKILL at monotonic time `moment` (now if past); returns False if it had ended."""
        time.sleep(max(0.0, moment - time.monotonic()))
        if self.process.poll() is not None:
            return False
        os.kill(self.process.pid, signal.SIGKILL)
        self.finish()
        return True

    def finish(self, timeout=300):
        returncode = self.process.wait(timeout=timeout)
        while (item := self.lines.get(timeout=30)) is not None:
            self.output.append(item[1])
        return returncode

    def stop(self):
        """Kill it if a failed check left it running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def metric_rows(path):
    """(header, rows as lists) of metrics.csv, read raw so a torn row would show."""
    with open(path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def comparable(header, rows):
    """Rows without the timing columns (which differ between runs)."""
    keep = [index for index, name in enumerate(header) if name not in TIMING_COLUMNS]
    return [[row[index] for index in keep] for row in rows]


def check_run_folder(run_dir, reference_rows):
    """Everything a kill may leave must be valid; returns (newest epoch saved, temp files)."""
    visible = [path for path in run_dir.iterdir() if not path.name.startswith(".")]
    progress = [(0, 0)]  # (global_step, epoch) of each checkpoint
    for path in visible:
        if path.suffix == ".pt":
            checkpoint = utils.load_checkpoint(path)  # weights_only, every key present
            assert checkpoint["batch"] == 0 and checkpoint["epoch"] >= 1, path
            progress.append((checkpoint["global_step"], checkpoint["epoch"]))
        elif path.suffix == ".png":
            with Image.open(path) as picture:
                picture.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
    saved = max(progress)[1]  # where --resume auto continues: the most steps
    if (run_dir / "metrics.csv").exists():
        header, rows = metric_rows(run_dir / "metrics.csv")
        assert header == reference_rows[0]
        assert all(len(row) == len(header) for row in rows), "torn row"
        assert [row[0] for row in rows] == [str(n) for n in range(1, len(rows) + 1)]
        # The csv is written just before the checkpoint: at most one epoch ahead of it.
        assert saved <= len(rows) <= saved + 1
        assert comparable(header, rows) == reference_rows[1][:len(rows)]
    temps = [path.name for path in run_dir.iterdir() if path.name.startswith(".")]
    return saved, temps


def kill_kinds(count, rng):
    """Where each kill aims, shuffled: 2 in 10 at start-up (loading, config, first lines),
    3 around an epoch's saves (metrics, pictures, checkpoints), 5 anywhere in training."""
    cycle = ["startup", "saving", "training", "training", "saving", "training", "startup",
             "training", "saving", "training"]
    kinds = [cycle[index % len(cycle)] for index in range(count)]
    rng.shuffle(kinds)
    return kinds


def plan_kill(kind, rng, remaining_epochs, timings):
    """(kind, pattern to wait for, seconds after it). Near the end only start-up kills, so
    the training cannot finish before the last kill."""
    startup, epoch = timings
    if remaining_epochs <= 2 or kind == "startup":
        return "startup", None, rng.uniform(0.05, 0.95) * startup
    if kind == "saving":  # the epoch line comes just before metrics, pictures and checkpoints
        return kind, r"^epoch \d+/\d+ train_loss", rng.uniform(0, 0.5 * epoch)
    return kind, r"^run folder:", rng.uniform(0, 1.5 * epoch)


def run_with_kills(data_root, out, kills, rng, timings, reference_rows):
    """Kill and restart the same command `kills` times, checking the folder after each."""
    log, saved = [], 0
    for number, aim in enumerate(kill_kinds(kills, rng)):
        kind, pattern, delay = plan_kill(aim, rng, EPOCHS - saved, timings)
        run = Training(command(data_root, out), cwd=out.parent)
        try:
            if pattern is None:  # before training starts: at the moment, or at "run folder:"
                seen = run.wait_for(r"^run folder:", timeout=delay)
                moment = seen or run.started + delay
            else:
                seen = run.wait_for(pattern)
                assert seen is not None, "\n".join(run.output[-30:])
                moment = seen + delay
            assert run.kill_at(moment), f"kill {number + 1}: the training ended by itself"
        finally:
            run.stop()
        check_resumed_from(run.output, saved)
        saved_before, (saved, temps) = saved, check_run_folder(out, reference_rows)
        assert saved >= saved_before, "a kill lost a completed save"
        log.append((kind, round(time.monotonic() - run.started, 2), saved, temps))
    return log, saved


def check_resumed_from(output, saved):
    """The process continued from the newest checkpoint there was (or started afresh)."""
    resumed = [int(match.group(1)) for line in output
               if (match := re.search(r"^resumed from .*: (\d+) epochs done", line))]
    if resumed:
        assert resumed == [saved], output
    else:
        assert saved == 0 or not any(line.startswith("run folder:") for line in output), output


def timed_reference(data_root, out):
    """An uninterrupted run; returns (start-up seconds, seconds an epoch)."""
    run = Training(command(data_root, out), cwd=out.parent)
    ready = run.wait_for(r"^run folder:")
    assert run.finish() == 0, "\n".join(run.output[-30:])
    total = time.monotonic() - ready
    return ready - run.started, total / EPOCHS


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path):
    data_root = write_dataset(tmp_path / "data")
    reference = tmp_path / "reference"
    timings = timed_reference(data_root, reference)
    header, rows = metric_rows(reference / "metrics.csv")
    reference_rows = (header, comparable(header, rows))
    assert len(rows) == EPOCHS

    killed = tmp_path / "killed"
    log, saved = run_with_kills(data_root, killed, KILLS, random.Random(KILL_SEED), timings,
                                reference_rows)
    final = Training(command(data_root, killed), cwd=tmp_path)
    assert final.finish() == 0, "\n".join(final.output[-30:])
    check_resumed_from(final.output, saved)
    check_run_folder(killed, reference_rows)

    assert len(log) == KILLS
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]  # temps cleaned
    header, rows = metric_rows(killed / "metrics.csv")
    assert comparable(header, rows) == reference_rows[1]
    for name in ("last.pt", "best.pt"):
        expected = torch.load(reference / name, weights_only=True)
        got = torch.load(killed / name, weights_only=True)
        assert (got["epoch"], got["global_step"]) == (expected["epoch"],
                                                      expected["global_step"])
        for key, value in expected["model"].items():
            assert torch.equal(got["model"][key], value), (name, key)
    kinds = [entry[0] for entry in log]
    print(f"\n{KILLS} kills survived (startup {kinds.count('startup')}, saving "
          f"{kinds.count('saving')}, training {kinds.count('training')}); kills that left temp "
          f"files: {sum(bool(entry[3]) for entry in log)}; start-up {timings[0]:.1f}s, epoch "
          f"{timings[1]:.2f}s")


# --------------------------------------------------------------------------- failing saves

@pytest.fixture
def one_thread():
    """In-process training of a tiny model: one thread is fastest beside busy neighbours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def in_process_args(data_root, out, *extra):
    argv = ["--data", str(data_root), "--out", str(out), "--batch-size", "2", "--crop-size",
            "16", "--workers", "0", "--amp", "off", "--resume", "auto", *extra]
    return train.get_args_parser().parse_args(argv)


def hidden_files(folder):
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                              one_thread):
    data_root = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    real_save = torch.save

    def fills_the_disk(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            handle.write(b"\0" * 4096)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(OSError, match=r"could not save checkpoint .*run.(best|last)\.pt: No "
                                      r"space left on device; the previous checkpoint there"):
        train.main(in_process_args(data_root, out, "--epochs", "2"))
    monkeypatch.undo()
    assert utils.load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not hidden_files(out)  # the partial temp file was removed
    # Space freed: the same command continues from epoch 1.
    assert train.main(in_process_args(data_root, out, "--epochs", "2")) == 0
    assert utils.load_checkpoint(out / "last.pt")["epoch"] == 2
    assert [row["epoch"] for row in csv.DictReader(open(out / "metrics.csv"))] == ["1", "2"]


@pytest.mark.parametrize("failure", ["open", "replace"])
def test_read_only_folder_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    """chmod cannot make a folder read-only for root, so the refusal is simulated where the
    file is opened (a read-only folder) or renamed into place (a read-only mount)."""
    path = tmp_path / "last.pt"
    utils.save_checkpoint(path, {"epoch": 1})

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    if failure == "open":
        monkeypatch.setattr(utils, "open", refuse, raising=False)
    else:
        monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match=r"could not save checkpoint .*last\.pt: Read-only file "
                                      r"system; the previous checkpoint there .* unchanged"):
        utils.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert not hidden_files(tmp_path)


def test_resume_drops_metric_rows_the_checkpoint_does_not_have(tmp_path, monkeypatch,
                                                                one_thread):
    """A crash between writing metrics.csv and the checkpoint leaves a row ahead: the resumed
    run removes it at once, not only when it rewrites that epoch."""
    data_root = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert train.main(in_process_args(data_root, out, "--epochs", "1")) == 0
    epoch_one = (out / "last.pt").read_bytes()
    assert train.main(in_process_args(data_root, out, "--epochs", "2")) == 0
    (out / "last.pt").write_bytes(epoch_one)
    (out / "best.pt").write_bytes(epoch_one)

    def killed(*args, **kwargs):
        raise RuntimeError("killed in the first step")

    monkeypatch.setattr(engine, "train_one_epoch", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train.main(in_process_args(data_root, out, "--epochs", "2"))
    assert [row["epoch"] for row in csv.DictReader(open(out / "metrics.csv"))] == ["1"]


# --------------------------------------------------------------------------- --resume auto

def fake_checkpoint(path, global_step):
    utils.save_checkpoint(path, utils.build_checkpoint(SegNet(), data_info(),
                                                       training={"global_step": global_step}))


def auto_args(out):
    return train.get_args_parser().parse_args(["--out", str(out), "--resume", "auto"])


@pytest.mark.parametrize("steps,chosen", [((6, 4), "last.pt"), ((4, 6), "best.pt"),
                                          ((5, 5), "last.pt"), ((3, None), "last.pt"),
                                          ((None, 3), "best.pt")])
def test_resume_auto_takes_the_checkpoint_with_most_steps(tmp_path, steps, chosen):
    for name, step in zip(("last.pt", "best.pt"), steps):
        if step is not None:
            fake_checkpoint(tmp_path / name, step)
    args = auto_args(tmp_path)
    assert train.resolve_auto_resume(args) is False
    assert args.resume == tmp_path / chosen


def test_resume_auto_skips_a_corrupt_checkpoint_and_says_so(tmp_path, capsys):
    fake_checkpoint(tmp_path / "best.pt", 4)
    (tmp_path / "last.pt").write_bytes(b"PK\3\4 torn")
    args = auto_args(tmp_path)
    train.resolve_auto_resume(args)
    assert args.resume == tmp_path / "best.pt"
    assert re.search(r"warning: checkpoint .*last\.pt could not be loaded.*resuming from "
                     r".*best\.pt instead", capsys.readouterr().err)


def test_resume_auto_never_starts_afresh_over_checkpoints_that_do_not_load(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"no checkpoint in .* loads:\n.*last\.pt"):
        train.resolve_auto_resume(auto_args(tmp_path))
    assert (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("files", [[], ["train.log", "config.json", "metrics.csv",
                                        "curves.png", "val_samples_epoch001.png",
                                        ".last.pt.tmp-123", ".config.json.tmp"]])
def test_resume_auto_starts_afresh_over_what_a_run_leaves_before_its_first_save(tmp_path,
                                                                               files):
    for name in files:
        (tmp_path / name).write_text("left by a killed run")
    args = auto_args(tmp_path)
    assert train.resolve_auto_resume(args) is True and args.resume is None
    assert train.choose_run_folder(args, allow_leftovers=True) == tmp_path
    logged = []
    train.remove_temp_files(tmp_path, logged.append)
    assert not hidden_files(tmp_path) and len(logged) == sum(n.startswith(".") for n in files)


def test_resume_auto_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "train.log").write_text("")
    (tmp_path / "thesis.docx").write_text("precious")
    with pytest.raises(SystemExit, match=r"holds files a run does not write \(thesis\.docx\)"):
        train.resolve_auto_resume(auto_args(tmp_path))
