"""evaluate.py: hand-checked metrics, native-size scoring, outputs, and masks the checkpoint
cannot read."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train
from helpers import random_model, save_test_checkpoint, write_image, write_tiny_dataset
from segnet import utils
from segnet.data.feed import dataset as data
from segnet.inference import inference, measures

ROOT = Path(__file__).resolve().parents[2]
IGNORE = 255


def labelled_masks():
    """{stem: mask} of the test split: class pixels 0: 146, 1: 148, 2: 28; 35 ignored."""
    a = np.zeros((12, 10), np.uint8)      # class 0: 50, class 1: 40, class 2: 20, ignored: 10
    a[:4], a[4:6], a[6] = 1, 2, IGNORE
    b = np.ones((12, 10), np.uint8)       # class 1: 108, ignored: 12
    b[:, -1] = IGNORE
    c = np.zeros((9, 13), np.uint8)       # class 0: 96, class 2: 8, ignored: 13
    c[0], c[1:, 0] = IGNORE, 2
    return {"a": a, "b": b, "c": c}


def write_split(root, split, masks):
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for seed, (stem, mask) in enumerate(masks.items()):
        write_image(root / split / "images" / f"{stem}.png", *mask.shape, seed=seed)
        Image.fromarray(mask).save(root / split / "masks" / f"{stem}.png")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    """train (3 index classes), test (the masks above) and bad (a mask with a 4th value)."""
    root = tmp_path_factory.mktemp("data")
    train_mask = np.zeros((16, 16), np.uint8)
    train_mask[:5], train_mask[5:8] = 1, 2
    write_split(root, "train", {"t0": train_mask, "t1": train_mask[::-1].copy()})
    write_split(root, "test", labelled_masks())
    bad = np.zeros((12, 10), np.uint8)
    bad[3, 3] = 3
    write_split(root, "bad", {"ok": labelled_masks()["a"], "x": bad})
    return root


@pytest.fixture(scope="module")
def info(dataset_root):
    """The checkpoint's "data" entry exactly as training makes it."""
    return utils.data_metadata(data.scan_dataset(dataset_root, splits=("train",)))


def run_main(*argv):
    return evaluate.main(evaluate.get_args_parser().parse_args([str(a) for a in argv]))


def test_constant_model_gives_hand_computed_metrics(dataset_root, info, tmp_path, capsys):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, favour=0, info=info)
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "eval", "--worst", "5", "--tta") == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    # Every pixel predicted class 0: column 0 holds each class's labelled pixels.
    assert report["confusion_matrix"] == [[146, 0, 0], [148, 0, 0], [28, 0, 0]]
    total = 146 + 148 + 28
    assert report["pixel_acc"] == pytest.approx(146 / total)
    assert report["mean_acc"] == pytest.approx(1 / 3)
    assert report["miou"] == pytest.approx(146 / total / 3)
    assert report["mean_dice"] == pytest.approx(2 * 146 / (146 + total) / 3)
    assert report["per_class"] == [
        {"name": "class_0", "iou": pytest.approx(146 / total),
         "dice": pytest.approx(2 * 146 / (146 + total)), "precision": pytest.approx(146 / total),
         "recall": 1.0, "support": 146},
        {"name": "class_1", "iou": 0.0, "dice": 0.0, "precision": None, "recall": 0.0,
         "support": 148},
        {"name": "class_2", "iou": 0.0, "dice": 0.0, "precision": None, "recall": 0.0,
         "support": 28}]
    # Per image: b has no class 0 (mIoU 0); c has no class 1 (left out of its mean).
    assert [(s["name"], s["miou"]) for s in report["per_image"]] == [
        ("b", 0.0), ("a", pytest.approx(50 / 110 / 3)), ("c", pytest.approx(96 / 104 / 2))]
    assert report["worst_images"] == ["01_b.png", "02_a.png", "03_c.png"]
    for name in ["confusion_matrix.png"] + [f"worst/{n}" for n in report["worst_images"]]:
        with Image.open(tmp_path / "eval" / name) as picture:
            assert picture.size[0] > 100
    printed = capsys.readouterr().out
    assert "class_2" in printed and f"mIoU {146 / total / 3:.4f}" in printed


def test_scores_do_not_depend_on_the_batch_size(dataset_root, info):
    """Images of two sizes: batches hold one size, so no padding changes any prediction."""
    model = random_model(num_classes=3)
    one, per_image = inference.evaluate_split(model, info, dataset_root, "test", batch_size=1)
    three, _ = inference.evaluate_split(model, info, dataset_root, "test", batch_size=3)
    assert torch.equal(one, three)
    assert one.sum() == 146 + 148 + 28
    assert [entry["name"] for entry in per_image] == ["a", "b", "c"]


def test_a_mask_value_the_checkpoint_does_not_know_is_a_clear_error(dataset_root, info,
                                                                    tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--checkpoint", str(checkpoint), "--data",
         str(dataset_root), "--split", "bad", "--out", str(tmp_path / "eval")], cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(dataset_root / "bad" / "masks" / "x.png") in result.stderr
    assert "{3}" in result.stderr and "class ids 0..2" in result.stderr


def test_a_missing_split_is_named(dataset_root, info, tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    with pytest.raises(SystemExit, match="val"):
        run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "val")


def test_bad_arguments_stop_before_any_work(dataset_root, info, tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    (tmp_path / "a_file").write_text("")
    for flags, message in ((["--out", tmp_path / "a_file"], "is a file"),
                           (["--seed", "-1"], "--seed"), (["--worst", "-1"], "--worst"),
                           (["--image-size", "100000"], "--image-size"),
                           (["--checkpoint", tmp_path / "missing.pt"], "missing.pt")):
        with pytest.raises(SystemExit, match=message):
            run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                     *flags)


def test_mc_samples_report_entropy_on_correct_and_wrong_pixels(dataset_root, info, tmp_path,
                                                               capsys):
    """The constant model's softmax is softmax(5, 0, 0) at every pixel, with or without dropout
    (its classifier weights are 0): every pixel's entropy is known."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, favour=0, info=info, dropout=0.5)
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "eval", "--worst", "1", "--mc-samples", "2") == 0
    probs = np.exp([5.0, 0.0, 0.0]) / np.exp([5.0, 0.0, 0.0]).sum()
    entropy = float(-(probs * np.log(probs)).sum())
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["uncertainty"] == {
        "mc_samples": 2, "dropout": 0.5, "mean_entropy_correct": pytest.approx(entropy),
        "mean_entropy_incorrect": pytest.approx(entropy), "pixels_correct": 146,
        "pixels_incorrect": 148 + 28, "max_entropy": pytest.approx(np.log(3))}
    assert report["confusion_matrix"] == [[146, 0, 0], [148, 0, 0], [28, 0, 0]]
    printed = capsys.readouterr().out
    assert f"mean predictive entropy {entropy:.4f} nats on correct pixels" in printed


def test_mc_samples_without_dropout_warn_and_score_one_pass(dataset_root, info, tmp_path,
                                                            capsys):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "mc", "--worst", "0", "--mc-samples", "4") == 0
    assert "identical" in capsys.readouterr().err
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "plain", "--worst", "0") == 0
    mc = json.loads((tmp_path / "mc" / "report.json").read_text())
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert mc["uncertainty"]["mc_samples"] == 1 and mc["uncertainty"]["dropout"] == 0.0
    assert mc["confusion_matrix"] == plain["confusion_matrix"] and "uncertainty" not in plain


def test_rgb_images_for_a_grey_checkpoint_are_converted_as_in_training_with_a_warning(
        dataset_root, info, tmp_path, capsys):
    root = tmp_path / "rgb"
    write_split(root, "test", {"a": labelled_masks()["a"]})
    grey = np.asarray(Image.open(dataset_root / "test" / "images" / "a.png"))
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(root / "test/images/a.png")
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    assert run_main("--checkpoint", checkpoint, "--data", root, "--split", "test", "--out",
                    tmp_path / "eval", "--worst", "0") == 0
    assert f"converted RGB -> grey as in training (e.g. {root / 'test/images/a.png'})" in \
        capsys.readouterr().err


def test_training_validation_and_evaluate_report_the_same_scores(tmp_path):
    """One scoring path: the val mIoU and pixel accuracy train.py logs for its best epoch are
    what evaluate.py reports for best.pt on the same split (default precision and layout)."""
    root = write_tiny_dataset(tmp_path / "data", counts=(("train", 4), ("val", 3)), size=20)
    out = tmp_path / "run"
    args = train.get_args_parser().parse_args(
        ["--data", str(root), "--out", str(out), "--epochs", "2", "--batch-size", "2",
         "--crop-size", "16", "--workers", "0"])
    assert train.main(args) == 0
    best_epoch = torch.load(out / "best.pt", weights_only=True)["best_epoch"]
    logged = next(row for row in csv.DictReader(open(out / "metrics.csv"))
                  if int(row["epoch"]) == best_epoch)
    assert evaluate.main(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(out / "best.pt"), "--data", str(root), "--split", "val",
         "--out", str(tmp_path / "eval"), "--worst", "0"])) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert float(logged["miou"]) == round(report["miou"], 6)
    assert float(logged["pixel_acc"]) == round(report["pixel_acc"], 6)


def test_table_flags_unhealthy_classes_prints_a_dash_for_undefined_precision_and_reports_bf(
        dataset_root, info, tmp_path, capsys):
    """The constant model (class 0 everywhere) never predicts classes 1 and 2. BF by hand, with
    the 0.75% tolerance under a pixel (exact matches), ignored rows cutting both label maps:
    a: class 0's true boundary is its row next to the ignored row (10 px); predicted, class 0
       also ends at the row above it: precision 10/20, recall 1, F1 2/3.
    c: true class 0 boundary: its row under the ignored one (12 px) and its column next to
       class 2 (8 px, one shared): 19 px; predicted: that whole row, 13 px, 12 of them true:
       F1 = 2 (12/13)(12/19) / (12/13 + 12/19) = 0.75. Classes 1 and 2: nothing predicted, 0."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, favour=0, info=info)
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "eval", "--worst", "0") == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line for line in printed.splitlines() if line.startswith("class_")}
    assert rows["class_1"].split()[3] == "-" and rows["class_1"].endswith("!")
    assert rows["class_2"].endswith("!") and not rows["class_0"].endswith("!")
    assert "nan" not in printed
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["health"] == measures.health_warnings(torch.tensor(report["confusion_matrix"]),
                                                     info["class_names"])
    assert len(report["health"]) == 3 and "never predicted" in report["health"][0]
    assert all(f"! health: {sentence}" in printed for sentence in report["health"])
    assert report["per_class"][1]["precision"] is None  # unchanged: null in the report
    assert report["bf"] == [{"name": "class_0", "bf": pytest.approx((2 / 3 + 0.75) / 2),
                             "images": 2},
                            {"name": "class_1", "bf": 0.0, "images": 2},
                            {"name": "class_2", "bf": 0.0, "images": 2}]
    assert report["mean_bf"] == pytest.approx((2 / 3 + 0.75) / 6)
    assert f"mean BF {(2 / 3 + 0.75) / 6:.4f}" in printed
    assert {s["name"]: s["bf"] for s in report["per_image"]} == {
        "a": pytest.approx(2 / 3 / 3), "b": 0.0, "c": pytest.approx(0.75 / 2)}
    # Every pixel has confidence softmax(5, 0, 0)[0] (the last bin) and 146 of 322 are right.
    confidence = math.exp(5) / (math.exp(5) + 2)
    calibration = report["calibration"]
    assert calibration["ece"] == pytest.approx(confidence - 146 / 322)
    assert calibration["pixels"] == 322 and calibration["bins"][14]["count"] == 322
    assert calibration["bins"][0]["accuracy"] is None and "mc_dropout" not in calibration
    with Image.open(tmp_path / "eval" / "reliability.png") as picture:
        assert picture.size[0] > 100


def test_mc_samples_report_the_softmax_and_the_mc_dropout_ece(dataset_root, info, tmp_path,
                                                             capsys):
    """The constant model's classifier weights are 0, so dropout changes nothing: the softmax
    (its own pass) and the MC-dropout mean have the same, known ECE."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, favour=0, info=info, dropout=0.5)
    assert run_main("--checkpoint", checkpoint, "--data", dataset_root, "--split", "test",
                    "--out", tmp_path / "eval", "--worst", "0", "--mc-samples", "2",
                    "--bf-tolerance", "0.5") == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    ece = math.exp(5) / (math.exp(5) + 2) - 146 / 322
    assert report["calibration"]["ece"] == pytest.approx(ece)
    assert report["calibration"]["mc_dropout"]["ece"] == pytest.approx(ece)
    assert report["calibration"]["mc_dropout"]["mc_samples"] == 2
    assert report["bf_tolerance"] == 0.5
    assert f"ECE softmax {ece:.4f}, MC-dropout mean of 2 sample(s) {ece:.4f}" in \
        capsys.readouterr().out


def test_bf_tolerance_outside_0_1_stops_before_any_work(dataset_root, info, tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info)
    with pytest.raises(SystemExit, match="--bf-tolerance"):
        run_main("--checkpoint", checkpoint, "--data", dataset_root, "--bf-tolerance", "-0.1")
