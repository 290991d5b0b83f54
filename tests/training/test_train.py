"""train.py end to end on a tiny generated dataset: run folder, resume, interruption, flags."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
from PIL import Image

import train
from helpers import write_tiny_dataset
from model import SegNet
from segnet.data.feed import loaders
from segnet.data.check.scan import scan_dataset
from segnet.inference import inference
from segnet.plan.plan import Plan
from segnet.runtime import Runtime
from segnet.training import engine, losses
from segnet.training.trainer import resumed_plan

ROOT = Path(__file__).resolve().parents[2]
TIMING_COLUMNS = {"seconds", "img/s"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def run_args(data_root, out, *extra):
    args = ["--data", str(data_root), "--out", str(out), "--epochs", "2", "--batch-size", "2",
            "--crop-size", "16", "--workers", "0", "--log-every", "1", *extra]
    return train.get_args_parser().parse_args(args)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_smoke_run_writes_a_complete_run_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out)) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "train.log", "metrics.csv", "last.pt", "best.pt", "curves.png",
            "val_samples_epoch001.png", "val_samples_epoch002.png"} <= names
    assert not [name for name in names if name.startswith(".")]  # no temp files left

    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 3 and config["class_names"] == [
        "class_0", "class_1", "class_2"]
    assert config["args"]["epochs"] == 2 and config["runtime"]["device"] == "cpu"
    assert {"mask_decoding", "normalization", "torch", "python", "git_commit"} <= set(config)

    rows = read_csv(out / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "pixel_acc", "mean_acc", "miou",
                             "mean_dice", "iou_class_0", "iou_class_1", "iou_class_2", "lr",
                             "seconds", "img/s"]
    for row in rows:
        assert 0 <= float(row["miou"]) <= 1 and float(row["train_loss"]) > 0

    for name in ("curves.png", "val_samples_epoch002.png"):
        with Image.open(out / name) as picture:
            assert picture.size[0] > 100
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["batch"] == 0
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["model"])
    model, info = inference.load_model(out / "best.pt")
    assert info["num_classes"] == 3 and not model.training
    log = (out / "train.log").read_text()
    assert "epoch 2/2" in log and "miou" in log


def weights_and_rows(run_dir):
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    rows = [{key: value for key, value in row.items() if key not in TIMING_COLUMNS}
            for row in read_csv(run_dir / "metrics.csv")]
    return checkpoint["model"], rows


def assert_same_run(run_a, run_b):
    weights_a, rows_a = weights_and_rows(run_a)
    weights_b, rows_b = weights_and_rows(run_b)
    assert rows_a == rows_b
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


def test_resume_reproduces_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    common = ("--deterministic", "--epochs", "4", "--scheduler", "poly")
    straight = tmp_path / "straight"
    assert train.main(run_args(tiny_data, straight, *common)) == 0
    # The same run stopped after 2 epochs (6 train images / batch 2 = 3 steps an epoch).
    resumed = tmp_path / "resumed"
    stop_after_steps(monkeypatch, steps=2 * 3)
    assert train.main(run_args(tiny_data, resumed, *common)) == 130
    monkeypatch.undo()
    checkpoint = torch.load(resumed / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch"]) == (2, 0)
    assert train.main(run_args(tiny_data, resumed, *common, "--resume", str(resumed))) == 0
    assert_same_run(straight, resumed)


def test_interrupt_mid_epoch_then_resume(tiny_data, tmp_path, monkeypatch):
    common = ("--deterministic", "--epochs", "3")
    straight = tmp_path / "straight"
    assert train.main(run_args(tiny_data, straight, *common)) == 0
    interrupted = tmp_path / "interrupted"
    stop_after_steps(monkeypatch, steps=4)  # epoch 2, after its first batch
    assert train.main(run_args(tiny_data, interrupted, *common)) == 130
    monkeypatch.undo()
    checkpoint = torch.load(interrupted / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch"]) == (1, 1)
    assert len(read_csv(interrupted / "metrics.csv")) == 1
    assert train.main(run_args(tiny_data, interrupted, *common, "--resume",
                               str(interrupted / "last.pt"))) == 0
    assert_same_run(straight, interrupted)


def stop_after_steps(monkeypatch, steps):
    """Make the next run behave as if SIGTERM arrived after `steps` training steps."""
    captured = {}

    def new_state():
        captured["state"] = original_new_state()
        return captured["state"]

    class StopAfter(engine.StopFlag):
        signal = property(lambda self: "SIGTERM"
                          if captured["state"]["global_step"] >= steps else None,
                          lambda self, value: None)

        def install(self):
            pass

    original_new_state = engine.new_state
    monkeypatch.setattr(engine, "new_state", new_state)
    monkeypatch.setattr(engine, "StopFlag", StopAfter)


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "-0.1"], "--lr must be a positive"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--crop-size", "64"], "larger than every training image"),
    (["--momentum", "1.5"], "--momentum"),
])
def test_invalid_flags_are_rejected_before_work(tiny_data, tmp_path, flags, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=message):
        train.main(run_args(tiny_data, out, *flags))
    assert not (out / "last.pt").exists()


def test_missing_data_folder_is_an_error_not_a_demo(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder"):
        train.main(run_args(tmp_path / "nope", tmp_path / "run"))
    assert not (tmp_path / "nope").exists()


def test_existing_run_is_never_overwritten(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("precious\n")
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(run_args(tiny_data, out))
    assert (out / "metrics.csv").read_text() == "precious\n"


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_data, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out, "--epochs", "1", "--optimizer", "sgd")) == 0
    good = torch.load(out / "last.pt", weights_only=True)["model"]
    with pytest.raises(SystemExit, match="--optimizer sgd, not adamw"):
        train.main(run_args(tiny_data, out, "--epochs", "3", "--resume", str(out)))
    build_criterion = losses.build_criterion

    def exploding(args, info, device, **kwargs):
        criterion, weights = build_criterion(args, info, device, **kwargs)
        return (lambda logits, masks: criterion(logits, masks) * float("nan")), weights

    monkeypatch.setattr(losses, "build_criterion", exploding)
    args = run_args(tiny_data, out, "--epochs", "3", "--resume", str(out), "--optimizer", "sgd")
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train.main(args)
    kept = torch.load(out / "last.pt", weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.equal(good[key], kept["model"][key]) for key in good)


def test_dry_run_and_overfit_batch(tiny_data, tmp_path):
    assert train.main(run_args(tiny_data, tmp_path / "dry", "--dry-run")) == 0
    rows = read_csv(tmp_path / "dry" / "metrics.csv")
    assert len(rows) == 1
    overfit = run_args(tiny_data, tmp_path / "overfit", "--overfit-batch", "--epochs", "15",
                       "--no-augment", "--crop-size", "0", "--lr", "3e-3",
                       "--eval-every", "15", "--scheduler", "none")
    assert train.main(overfit) == 0
    rows = read_csv(tmp_path / "overfit" / "metrics.csv")
    # Memorising one batch: the loss falls several-fold (eval-mode metrics lag behind here,
    # BatchNorm's running statistics need more than 15 steps).
    assert float(rows[-1]["train_loss"]) < 0.25 * float(rows[0]["train_loss"])
    assert rows[-1]["miou"] != ""


def test_help_shows_defaults():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--crop-size" in result.stdout and "(default:" in result.stdout


class _RandomValue(torch.utils.data.Dataset):
    """A 'sample' that is one draw of torch's RNG, as augmentation is."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(1)


@pytest.mark.parametrize("workers", [0, 1])
def test_augmentation_changes_with_the_epoch_and_not_with_workers(workers):
    """Persistent workers keep their dataset copy: the epoch must travel with each index."""
    dataset = loaders.EpochSeeded(_RandomValue(), seed=3)
    sampler = loaders.EpochSampler(len(dataset), seed=3, shuffle=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler,
                                         num_workers=workers, persistent_workers=workers > 0)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append(torch.cat(list(loader)).flatten())
    assert not torch.equal(epochs[0], epochs[1])
    reference = loaders.EpochSeeded(_RandomValue(), seed=3)
    assert torch.equal(epochs[1], torch.cat([reference[(1, i)] for i in range(4)]).flatten())
    before = torch.get_rng_state()
    reference[(0, 0)]
    assert torch.equal(torch.get_rng_state(), before)  # dropout's RNG stream is left alone


def test_plateau_cuts_stay_in_force():
    args = Plan(scheduler="plateau", warmup_steps=0, lr=1.0, gamma=0.1, steps=100)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    warm, plateau = engine.build_scheduler(args, optimizer, steps_per_epoch=2)
    for miou in (0.5, 0.4, 0.4, 0.4):  # patience 2: the fourth validation without gain cuts
        plateau.step(miou)
    optimizer.step()
    warm.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    restored = engine.build_scheduler(args, torch.optim.SGD(
        [torch.zeros(1, requires_grad=True)], lr=1.0), steps_per_epoch=2)[1]
    restored.load_state_dict(plateau.state_dict())
    assert restored.scale == pytest.approx(0.1)


def test_a_planned_compile_falls_back_to_eager_and_a_flag_on_resume_wins(tiny_data, tmp_path,
                                                                         monkeypatch):
    """wrap_model compiles when the plan says so; a planned (not asked-for) compile lets
    torch fall back to eager if compiling fails. --compile / --no-compile on --resume choose
    again: compiling never changes the training."""
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)
    model, runtime = SegNet(in_channels=1, num_classes=2), Runtime(Plan(device="cpu"))
    assert engine.wrap_model(model, Plan(compile=False), runtime, 1) is model
    asked = engine.wrap_model(model, Plan(compile=True, sources={"compile": "flag"}), runtime, 1)
    assert asked._orig_mod is model and not torch._dynamo.config.suppress_errors
    engine.wrap_model(model, Plan(compile=True, sources={"compile": "auto"}), runtime, 1)
    assert torch._dynamo.config.suppress_errors
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out, "--epochs", "1")) == 0
    saved = torch.load(out / "last.pt", weights_only=True)["plan"]
    assert saved["compile"] is False and saved["sources"]["compile"] == "auto"
    args = run_args(tiny_data, out, "--resume", str(out), "--compile")
    assert args.compile is True and run_args(tiny_data, out, "--no-compile").compile is False
    plan = resumed_plan(saved, args, scan_dataset(tiny_data), 1)
    assert plan.compile and plan.sources["compile"] == "flag"
