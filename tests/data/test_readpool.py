"""Reading with every core (segnet/data/check/readpool.py): results in the items' order from
worker processes of one torch thread, small jobs in this process, and a check whose report,
info and problems are the same from 1 and 2 processes; the scan cache keys on neither."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from segnet.data.check import readpool, scan, scancache
from segnet.data.check.scan import inspect_dataset


def where_read(item):
    """(item squared, the reading process, its torch threads): a top-level function pickles."""
    return item * item, os.getpid(), torch.get_num_threads()


def fail_on_seven(item):
    if item == 7:
        raise RuntimeError("item 7 is broken")
    return item


def test_a_pool_returns_every_result_in_order_from_other_processes():
    reads = list(readpool.read_in_order(where_read, range(100), workers=2))
    assert [square for square, _, _ in reads] == [item * item for item in range(100)]
    assert os.getpid() not in {pid for _, pid, _ in reads}
    assert {threads for _, _, threads in reads} == {1}


def test_one_worker_reads_in_this_process():
    reads = list(readpool.read_in_order(where_read, range(5), workers=1))
    assert [pid for _, pid, _ in reads] == [os.getpid()] * 5


def test_a_failure_in_a_worker_is_raised_here():
    with pytest.raises(RuntimeError, match="item 7 is broken"):
        list(readpool.read_in_order(fail_on_seven, range(20), workers=2))


def test_a_failed_pool_ends_under_a_sigterm_handler_of_the_parent():
    """Training's stop flag catches SIGTERM; forked workers inherit it, and the pool ends its
    workers with SIGTERM: they must die, not wait for ever."""
    code = ("import signal\n"
            "from segnet.data.check import readpool\n"
            "signal.signal(signal.SIGTERM, lambda signum, frame: None)\n"
            "try:\n"
            "    list(readpool.read_in_order(int, ['1', 'x', '3'] * 20, workers=2))\n"
            "except ValueError:\n"
            "    print('raised')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "raised", result.stderr[-2000:]


def test_every_core_for_large_jobs_one_process_for_small_ones(monkeypatch):
    monkeypatch.setattr(readpool, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert readpool.read_workers(None, readpool.POOL_FROM) == 16
    assert readpool.read_workers(None, readpool.POOL_FROM - 1) == 1
    assert readpool.read_workers(3, 10) == 3  # as asked, however small the job
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: the cores shared between ranks
    assert readpool.read_workers(None, 10_000) == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            readpool.read_workers(bad)


def test_chunks_cover_every_item_once_in_order():
    chunks = readpool._chunks(list(range(10_000)), 2)
    assert [item for chunk in chunks for item in chunk] == list(range(10_000))
    assert max(map(len, chunks)) == readpool.MAX_CHUNK
    assert len(readpool._chunks(list(range(40)), 2)) == 14  # ~8 a worker: ceil(40 / 16) = 3


# ---------------------------------------------------------------- the check, 1 and 2 processes

def save(path, array, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)


def mixed_dataset(root, count=9, size=(20, 28)):
    """train and val of RGB and grey images (one with an EXIF orientation tag, one grey stored
    as RGB) and 3-class masks: every kind of record the scan folds."""
    rng = np.random.default_rng(0)
    for index in range(count):
        split = "val" if index % 3 == 2 else "train"
        mask = rng.integers(0, 3, size, dtype=np.uint8)
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        if index % 4 == 1:
            image = image[..., 0]  # grey
        if index == 3:
            image = np.repeat(image[..., :1], 3, axis=2)  # grey stored as RGB
        exif = Image.Exif()
        exif[0x0112] = 3 if index == 5 else 1  # rotated 180°: same size, read as shown
        save(root / split / "images" / f"s{index}.png", image, exif=exif)
        save(root / split / "masks" / f"s{index}.png", mask)
    return root


def check_text(root, capsys, workers, *flags):
    status = dataset.main(["check", str(root), "--workers", str(workers), *flags])
    return status, capsys.readouterr().out


def test_the_report_and_info_are_the_same_from_one_and_two_processes(tmp_path, capsys):
    root = mixed_dataset(tmp_path / "data")
    one, two = check_text(root, capsys, 1), check_text(root, capsys, 2)
    assert one == two and one[0] == 0 and "intensity-only baseline" in one[1]
    infos = [json.dumps(inspect_dataset(root, in_channels="auto", workers=workers),
                        sort_keys=True, default=str) for workers in (1, 2)]
    assert infos[0] == infos[1]


def test_problems_are_reported_alike_and_name_their_files(tmp_path, capsys):
    root = mixed_dataset(tmp_path / "data")
    (root / "train" / "images" / "s4.png").write_bytes(b"not a png")  # unreadable image
    (root / "train" / "masks" / "s6.png").write_bytes(b"\x89PNG broken")  # unreadable mask
    save(root / "train" / "masks" / "s7.png", np.zeros((12, 28), np.uint8))  # wrong size
    save(root / "val" / "images" / "s8.png", np.zeros((4, 4), np.uint8))  # too small
    save(root / "val" / "masks" / "s8.png", np.zeros((4, 4), np.uint8))
    one, two = check_text(root, capsys, 1), check_text(root, capsys, 2)
    assert one == two and one[0] == 1
    problems = [line for line in one[1].splitlines() if line.startswith("problem:")]
    for name in ("train/images/s4.png", "train/masks/s6.png", "train/masks/s7.png",
                 "val/images/s8.png"):
        assert sum(name in problem for problem in problems) == 1, (name, problems)


@pytest.mark.filterwarnings("ignore:.*converted grey -> RGB")
def test_a_rerun_reads_nothing_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNET_CACHE", str(tmp_path / "cache"))
    root = mixed_dataset(tmp_path / "data")
    first, reused_first = scancache.cached_scan(root, workers=2, in_channels="auto")

    def no_reading(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(scan, "read_in_order", no_reading)
    second, reused_second = scancache.cached_scan(root, workers=1, in_channels="auto")
    assert (reused_first, reused_second) == (False, True) and first == second
