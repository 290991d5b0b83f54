"""Metrics (measures.py), class weights and Dice (losses.py), checkpoints (utils.py) and
device/precision choices (runtime.py)."""
import math
import os
import pickle

import numpy as np
import pytest
import torch

from model import SegNet
from segnet import runtime, utils
from segnet.inference import inference, measures, plots
from segnet.training import losses


def test_confusion_matrix_and_metrics_by_hand():
    # 3 classes, ignore_index 255. Targets / predictions for 8 pixels (2 ignored).
    targets = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    confusion = measures.confusion_matrix(preds, targets, num_classes=3, ignore_index=255)
    assert confusion.tolist() == [[1, 1, 0],
                                  [0, 2, 0],
                                  [1, 0, 1]]
    metrics = measures.metrics_from_confusion(confusion, ["a", "b", "c"])
    assert metrics["pixel_acc"] == pytest.approx(4 / 6)
    assert metrics["mean_acc"] == pytest.approx((1 / 2 + 2 / 2 + 1 / 2) / 3)
    # IoU: a = 1 / (2 + 2 - 1), b = 2 / (2 + 3 - 2), c = 1 / (2 + 1 - 1)
    ious = [1 / 3, 2 / 3, 1 / 2]
    assert [c["iou"] for c in metrics["per_class"]] == pytest.approx(ious)
    assert metrics["miou"] == pytest.approx(sum(ious) / 3)
    dices = [2 * 1 / 4, 2 * 2 / 5, 2 * 1 / 3]
    assert [c["dice"] for c in metrics["per_class"]] == pytest.approx(dices)
    assert metrics["mean_dice"] == pytest.approx(sum(dices) / 3)
    assert [c["precision"] for c in metrics["per_class"]] == pytest.approx([1 / 2, 2 / 3, 1])
    assert [c["recall"] for c in metrics["per_class"]] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [c["support"] for c in metrics["per_class"]] == [2, 2, 2]


def test_absent_class_is_left_out_of_means():
    targets = torch.tensor([0, 0, 1, 1])
    confusion = measures.confusion_matrix(targets, targets, num_classes=3)
    metrics = measures.metrics_from_confusion(confusion)
    assert math.isnan(metrics["per_class"][2]["iou"])
    assert metrics["miou"] == 1.0


def test_median_frequency_weights_by_hand():
    # class 0: 60 px in images totalling 100 px; class 1: 10 px in 50 px; class 2: 5 px in 50.
    info = {"class_pixels": [60, 10, 5], "class_image_pixels": [100, 50, 50]}
    weights = losses.class_weights(info, "median-freq")
    freq = np.array([0.6, 0.2, 0.1])
    assert weights.tolist() == pytest.approx((0.2 / freq).tolist())
    inverse = losses.class_weights(info, "inverse")
    share = np.array([60, 10, 5]) / 75
    expected = (1 / share) * 3 / (1 / share).sum()
    assert inverse.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert losses.class_weights(info, "none") is None
    # An even number of classes: the median is the mean of the middle two (0.35 here).
    binary = losses.class_weights({"class_pixels": [60, 10], "class_image_pixels": [100, 100]},
                                 "median-freq")
    assert binary.tolist() == pytest.approx([0.35 / 0.6, 0.35 / 0.1])


def test_class_absent_from_training_gets_zero_weight():
    info = {"class_pixels": [60, 0, 5], "class_image_pixels": [100, 0, 50]}
    weights = losses.class_weights(info, "median-freq")
    assert weights[1] == 0 and weights[0] > 0 and weights[2] > 0


def test_dice_loss_is_zero_for_perfect_and_ignores_pixels():
    targets = torch.tensor([[[0, 1], [1, 255]]])
    logits = torch.nn.functional.one_hot(targets.clamp(max=1), 2).permute(0, 3, 1, 2) * 50.0
    assert losses.dice_loss(logits.float(), targets) == pytest.approx(0, abs=1e-4)
    wrong = -logits.float()
    assert losses.dice_loss(wrong, targets) > 0.5


def make_checkpoint(model, **extra):
    data = {"in_channels": model.in_channels, "ignore_index": 255,
            "num_classes": model.num_classes, "class_names": ["background", "foreground"],
            "class_colors": [[0, 0, 0], [255, 255, 255]],
            "mask_decoding": {"kind": "binary", "foreground_values": [255]},
            "normalization": {"mean": [0.5], "std": [0.25]}}
    return utils.build_checkpoint(model, data, training=extra)


def test_checkpoint_round_trip_and_load_model(tmp_path):
    model = SegNet().eval()
    path = tmp_path / "ck.pt"
    utils.save_checkpoint(path, make_checkpoint(model, epoch=3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    loaded, info = inference.load_model(path)
    assert not loaded.training and info["epoch"] == 3 and info["class_names"][1] == "foreground"
    images = torch.randn(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    utils.save_checkpoint(path, {"value": 1})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left.*previous checkpoint"):
        utils.save_checkpoint(path, {"value": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format_version": 1, "payload": RunsCode()}, handle)
    with pytest.raises(ValueError, match="could not be loaded safely"):
        utils.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_wrong_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        utils.load_checkpoint(tmp_path / "missing.pt")
    bare = tmp_path / "bare.pt"
    torch.save(SegNet().state_dict(), bare)
    with pytest.raises(ValueError, match="not a checkpoint of this project"):
        utils.load_checkpoint(bare)
    truncated = tmp_path / "truncated.pt"
    utils.save_checkpoint(truncated, make_checkpoint(SegNet()))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        utils.load_checkpoint(truncated)
    mismatched = make_checkpoint(SegNet(num_classes=3))
    mismatched["model_args"]["num_classes"] = 2
    path = tmp_path / "mismatched.pt"
    utils.save_checkpoint(path, mismatched)
    with pytest.raises(ValueError, match="do not fit SegNet"):
        inference.load_model(path)


def test_rng_states_round_trip_through_weights_only(tmp_path):
    runtime.seed_everything(5)
    states = runtime.rng_states()
    path = tmp_path / "rng.pt"
    torch.save(states, path)
    expected = (np.random.rand(), torch.rand(1).item())
    runtime.seed_everything(99)
    runtime.set_rng_states(torch.load(path, weights_only=True))
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_precision_choice():
    cpu = torch.device("cpu")
    assert runtime.resolve_precision(cpu, "off") is None
    assert runtime.resolve_precision(cpu, "bf16") is torch.bfloat16
    expected = torch.bfloat16 if runtime.cpu_has_fast_bf16() else None
    assert runtime.resolve_precision(cpu, "auto") is expected
    with pytest.raises(ValueError, match="fp16"):
        runtime.resolve_precision(cpu, "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            runtime.resolve_device("cuda")


def test_colorize_and_overlay():
    labels = np.array([[0, 1], [2, 255]])
    colors = plots.default_colors(3)
    picture = plots.colorize(labels, colors)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert picture[0, 1].tolist() == colors[1] and picture[1, 1].tolist() == [255, 255, 255]
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mixed = plots.overlay(image, labels, colors)
    assert mixed[0, 0].tolist() == [100, 100, 100]  # background untouched
    assert mixed[0, 1].tolist() != [100, 100, 100]


def test_mc_dropout_without_dropout_equals_deterministic_output():
    model = SegNet(num_classes=3).eval()
    images = torch.randn(2, 1, 16, 20)
    mean, entropy, variance = inference.mc_dropout_probs(model, images, samples=3, chunk=2)
    with torch.no_grad():
        expected = model(images).softmax(1)
    assert torch.allclose(mean, expected, atol=1e-6)
    assert variance.abs().max() < 1e-6
    assert entropy.shape == (2, 16, 20)


def test_mc_dropout_is_stochastic_seeded_and_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = SegNet(num_classes=3, dropout=0.5)
    model(torch.randn(4, 1, 16, 16))  # give BatchNorm non-trivial running statistics
    model.eval()
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    images = torch.randn(1, 1, 16, 16)
    torch.manual_seed(7)
    mean, entropy, variance = inference.mc_dropout_probs(model, images, samples=6, chunk=4)
    torch.manual_seed(7)
    again = inference.mc_dropout_probs(model, images, samples=6, chunk=4)
    assert torch.equal(mean, again[0]) and torch.equal(entropy, again[1])
    assert variance.max() > 0 and entropy.max() > 0
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert not model.training and not model.mc_dropout
    with torch.no_grad():  # outside MC sampling, dropout is off again in eval mode
        assert torch.equal(model(images), model(images))


def test_health_warnings_name_unlearned_classes_and_one_class_models():
    warnings = measures.health_warnings(torch.tensor([[0, 220], [0, 780]]), ["mem", "cell"])
    assert len(warnings) == 2
    assert "'mem' (22.0% of the labelled pixels) is never predicted" in warnings[0]
    assert "predicts 'cell' for 100.0% of the pixels (it is 78.0%" in warnings[1]
    weak = torch.tensor([[2, 8, 90], [0, 500, 0], [0, 0, 400]])
    assert measures.health_warnings(weak) == [
        "class 'class_0' (10.0% of the labelled pixels) has IoU 0.020, below 0.05"]
    assert measures.health_warnings(torch.tensor([[200, 20], [30, 750]])) == []
    # A class that is 99% of the labels may take 99% of the predictions.
    assert measures.health_warnings(torch.tensor([[985, 5], [3, 7]])) == []
