"""Fold ensembles (ensemble.py): the mean of the members' softmax across normalisations, one
checkpoint as load_for_inference, a CV run folder's checkpoints and errors, evaluate.py's folds
beside the ensemble, predict.py and the notebook API on a run folder, TTA, Monte Carlo dropout and
tiling on the ensemble, and the ONNX export of a 2-fold run against the PyTorch ensemble."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import export
import predict
from helpers import data_info, random_model, save_test_checkpoint, write_image, write_tiny_dataset
from model import SegNet
from segnet import utils
from segnet.data.pixels.images import normalize
from segnet.inference import deploy, ensemble, inference, measures

needs_export = pytest.mark.skipif(bool(deploy.missing_packages()),
                                  reason="requirements-export.txt is not installed")
# Each fold's train split has its own statistics: three normalisations, member 0's first.
NORMALIZATIONS = ({"mean": [0.5], "std": [0.25]}, {"mean": [0.4], "std": [0.3]},
                  {"mean": [0.6], "std": [0.2]})


def fold_info(fold, num_classes=3):
    return dict(data_info(num_classes), normalization=NORMALIZATIONS[fold])


def write_cv_run(run, folds=2, num_classes=3, dropout=0.0, name="last.pt"):
    """RUN/fold_<k>/NAME (untrained models, each with its fold's normalisation) and cv.json as
    segnet.training.folds writes it (per-fold entries, the count, the checkpoint's name)."""
    for fold in range(folds):
        (run / f"fold_{fold}").mkdir(parents=True)
        save_test_checkpoint(run / f"fold_{fold}" / name, num_classes, seed=fold,
                             info=fold_info(fold, num_classes), dropout=dropout)
    (run / "cv.json").write_text(json.dumps({
        "folds": [{"fold": fold, "miou": 0.5, "images": 2} for fold in range(folds)],
        "folds_count": folds, "checkpoint": name}))
    return run


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A 2-fold run folder of 3-class models, last.pt each."""
    return write_cv_run(tmp_path_factory.mktemp("cv") / "run")


@torch.inference_mode()
def members_mean(models, normalizations, pixels):
    """float32 [N, K, H, W]: each model's softmax on pixels in [0, 1] normalised its own way,
    averaged."""
    return sum(model(normalize(pixels, norm)).softmax(1)
               for model, norm in zip(models, normalizations)) / len(models)


def run_script(script, *argv):
    return script.main(script.get_args_parser().parse_args([str(a) for a in argv]))


def error_of(script, *argv):
    """The one-line message a script's main exits with."""
    with pytest.raises(SystemExit) as raised:
        run_script(script, *argv)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


# ---------------------------------------------------------------- the model

def test_the_ensemble_softmax_is_the_mean_of_the_members_softmax():
    """Members with three normalisations: the ensemble takes images in member 0's and
    re-normalises them for each member; its softmax is their mean probability, through
    forward_probs too; a one-member ensemble is the member."""
    models = [random_model(3, seed=seed) for seed in range(3)]
    model = ensemble.EnsembleSegNet(models, NORMALIZATIONS).eval()
    pixels = torch.rand(2, 1, 24, 20, generator=torch.Generator().manual_seed(0))
    expected = members_mean(models, NORMALIZATIONS, pixels)
    normalised = normalize(pixels, NORMALIZATIONS[0])
    with torch.inference_mode():
        probs = model(normalised).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-6, rtol=0)
    through, _ = inference.forward_probs(model, normalised)
    assert torch.allclose(through, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, members_mean(models[:1], NORMALIZATIONS, pixels),
                              atol=1e-3)  # the other members do count
    alone = ensemble.EnsembleSegNet(models[:1], NORMALIZATIONS[:1]).eval()
    torch.testing.assert_close(inference.forward_probs(alone, normalised)[0],
                               members_mean(models[:1], NORMALIZATIONS, pixels),
                               atol=1e-6, rtol=0)
    assert (model.in_channels, model.num_classes) == (1, 3)


def test_one_checkpoint_loads_as_load_for_inference(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=fold_info(1))
    expected_model, expected_info, expected_dtype = inference.load_for_inference(
        checkpoint, "cpu", "off")
    images = normalize(torch.rand(2, 1, 24, 20), NORMALIZATIONS[1])
    expected, _ = inference.batch_probs(expected_model, images)
    for given in (checkpoint, str(checkpoint), [checkpoint]):
        model, info, dtype = ensemble.load_ensemble_for_inference(given, "cpu", "off")
        assert type(model) is SegNet and info == expected_info and dtype is expected_dtype
        assert torch.equal(inference.batch_probs(model, images)[0], expected)


def test_a_run_folder_gives_its_fold_checkpoints_in_fold_order(tmp_path):
    run = write_cv_run(tmp_path / "run", folds=3, name="best.pt")
    for fold in range(3):  # the file cv.json does not name is not taken
        save_test_checkpoint(run / f"fold_{fold}" / "last.pt", 3, info=fold_info(fold))
    assert ensemble.checkpoint_paths(run) == [run / f"fold_{k}" / "best.pt" for k in range(3)]
    assert ensemble.checkpoint_paths([run]) == ensemble.checkpoint_paths(str(run))
    (run / "cv.json").unlink()  # without cv.json: every fold_<k>/, last.pt each
    assert ensemble.checkpoint_paths(run) == [run / f"fold_{k}" / "last.pt" for k in range(3)]
    files = [run / "fold_2" / "last.pt", run / "fold_0" / "last.pt"]
    assert ensemble.checkpoint_paths(files) == files
    assert ensemble.checkpoint_paths(files[0]) == files[:1]
    model, info = inference.load_model(run)
    assert isinstance(model, ensemble.EnsembleSegNet) and not model.training
    assert info["ensemble"] == [str(run / f"fold_{k}" / "last.pt") for k in range(3)]
    assert info["normalization"] == NORMALIZATIONS[0] and info["model_args"]["num_classes"] == 3


def test_a_missing_fold_checkpoint_is_a_clear_error(tmp_path):
    run = write_cv_run(tmp_path / "run")
    (run / "fold_1" / "last.pt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{run / 'fold_1' / 'last.pt'} does "
                                                          f"not exist")):
        ensemble.checkpoint_paths(run)
    message = error_of(evaluate, "--checkpoint", run, "--data", tmp_path)
    assert str(run / "fold_1" / "last.pt") in message and "not finished" in message
    (run / "cv.json").write_text(json.dumps({"folds": 3}))
    with pytest.raises(FileNotFoundError, match="has 3 folds but no fold_2 folder"):
        ensemble.checkpoint_paths(run)
    (run / "cv.json").write_text("{not json")
    with pytest.raises(ValueError, match="cv.json is not valid JSON"):
        ensemble.checkpoint_paths(run)
    with pytest.raises(ValueError, match="give it alone"):
        ensemble.checkpoint_paths([run, run / "fold_0" / "last.pt"])
    (tmp_path / "plain").mkdir()
    assert "name the checkpoint file in it" in error_of(
        evaluate, "--checkpoint", tmp_path / "plain", "--data", tmp_path)


def test_members_that_disagree_on_the_classes_are_a_clear_error(tmp_path):
    run = write_cv_run(tmp_path / "run")
    save_test_checkpoint(run / "fold_1" / "last.pt", 2, info=fold_info(1, num_classes=2))
    with pytest.raises(ValueError, match="disagree on num_classes") as raised:
        ensemble.load_ensemble_for_inference(run, "cpu", "off")
    assert str(run / "fold_1" / "last.pt") in str(raised.value)
    assert str(run / "fold_0" / "last.pt") in str(raised.value)
    write_image(tmp_path / "a.png", 16, 16)
    assert "num_classes" in error_of(predict, "--checkpoint", run / "fold_0" / "last.pt",
                                     run / "fold_1" / "last.pt", "--input", tmp_path / "a.png",
                                     "--output", tmp_path / "out")


# ---------------------------------------------------------------- evaluate.py and predict.py

def test_evaluate_scores_each_fold_beside_the_ensemble(cv_run, tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "data", counts=(("test", 3),), size=24)
    assert run_script(evaluate, "--checkpoint", cv_run, "--data", data, "--amp", "off",
                      "--device", "cpu", "--worst", "1") == 0
    report = json.loads((cv_run / "eval-test" / "report.json").read_text())
    folds = [cv_run / f"fold_{k}" / "last.pt" for k in range(2)]
    assert report["checkpoint"] == str(cv_run)
    assert [fold["checkpoint"] for fold in report["folds"]] == [str(path) for path in folds]
    for path, fold in zip(folds, report["folds"]):
        model, info, dtype = inference.load_for_inference(path, "cpu", "off")
        confusion, _ = inference.evaluate_split(model, info, data, "test", dtype=dtype)
        alone = measures.metrics_from_confusion(confusion, info["class_names"])
        assert fold["miou"] == pytest.approx(alone["miou"])
        assert fold["pixel_acc"] == pytest.approx(alone["pixel_acc"])
    model, info, dtype = ensemble.load_ensemble_for_inference(cv_run, "cpu", "off")
    confusion, _ = inference.evaluate_split(model, info, data, "test", dtype=dtype)
    assert report["confusion_matrix"] == confusion.tolist()
    assert 0 <= report["miou"] <= 1 and len(report["worst_images"]) == 1
    assert "ensemble of 2 (mean softmax)" in capsys.readouterr().out
    assert run_script(evaluate, "--checkpoint", *folds, "--data", data, "--amp", "off",
                      "--device", "cpu", "--worst", "0", "--out", tmp_path / "files") == 0
    by_files = json.loads((tmp_path / "files" / "report.json").read_text())
    assert by_files["checkpoint"] == [str(path) for path in folds]
    assert by_files["confusion_matrix"] == report["confusion_matrix"]


def test_predict_on_a_run_folder_writes_the_notebook_apis_ensemble_labels(cv_run, tmp_path):
    image = write_image(tmp_path / "a.png", 24, 20, seed=1)
    assert run_script(predict, "--checkpoint", cv_run, "--input", image, "--output",
                      tmp_path / "out", "--amp", "off", "--probs") == 0
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    model, info = inference.load_model(cv_run)
    labels = inference.predict(model, info, Image.open(image), amp="off")
    assert written.shape == (24, 20) and np.array_equal(labels, written)
    folds = [cv_run / f"fold_{k}" / "last.pt" for k in range(2)]
    assert run_script(predict, "--checkpoint", *folds, "--input", image, "--output",
                      tmp_path / "files", "--amp", "off", "--probs") == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "files" / "a.png")), written)
    pixels = torch.from_numpy(np.asarray(Image.open(image), np.float32)[None, None] / 255)
    expected = members_mean([utils.build_model(utils.load_checkpoint(path)).eval()
                             for path in folds], NORMALIZATIONS, pixels)[0].numpy()
    probs = np.load(tmp_path / "out" / "a_probs.npy").astype(np.float32)
    assert np.abs(probs - expected).max() < 2e-3  # float16 on disk


# ---------------------------------------------------------------- TTA, Monte Carlo, tiling

def test_tta_and_mc_dropout_run_on_the_ensemble(tmp_path):
    run = write_cv_run(tmp_path / "run", dropout=0.5)
    model, info, dtype = ensemble.load_ensemble_for_inference(run, "cpu", "off")
    images = normalize(torch.rand(1, 1, 24, 20), info["normalization"])
    plain, _ = inference.forward_probs(model, images)
    with_tta, _ = inference.forward_probs(model, images, tta=True)
    flips = [inference.forward_probs(model, images.flip(dims))[0].flip(dims)
             for dims in inference.FLIPS]
    torch.testing.assert_close(with_tta, sum(flips) / 4, atol=1e-6, rtol=0)
    sampled, variance = inference.batch_probs(model, images, tta=True, mc_samples=4, seed=3)
    again, _ = inference.batch_probs(model, images, tta=True, mc_samples=4, seed=3)
    assert torch.equal(sampled, again) and variance.shape == (1, 24, 20)
    assert variance.max() > 1e-4 and not torch.allclose(sampled, with_tta, atol=1e-3)
    torch.testing.assert_close(sampled.sum(1), torch.ones(1, 24, 20))
    assert not model.mc_dropout and not any(member.mc_dropout for member in model.members)
    model.mc_dropout = True
    assert all(member.mc_dropout for member in model.members)
    model.mc_dropout = False
    torch.testing.assert_close(inference.forward_probs(model, images)[0], plain,
                               atol=0, rtol=0)


def test_tiling_the_ensemble_equals_the_whole_image(cv_run):
    model, info, _ = ensemble.load_ensemble_for_inference(cv_run, "cpu", "off")
    images = normalize(torch.rand(1, 1, 150, 44), info["normalization"])
    assert len(inference.tile_windows(150, 128, 96)) == 2  # really tiled
    tiled, _ = inference.batch_probs(model, images, tile=128, overlap=96)
    whole, _ = inference.batch_probs(model, images, tile=256)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- ONNX export

@needs_export
def test_the_onnx_export_of_a_run_folder_is_the_pytorch_ensemble(cv_run, capsys):
    assert run_script(export, "--checkpoint", cv_run) == 0
    onnx_path = cv_run / export.ENSEMBLE_FILE
    assert "a fold ensemble of 2 models" in capsys.readouterr().out
    metadata = deploy.read_metadata(onnx_path)
    assert [member["checkpoint"] for member in metadata["ensemble"]] == [
        str(cv_run / f"fold_{k}" / "last.pt") for k in range(2)]
    assert metadata["normalization"] == NORMALIZATIONS[0] and metadata["epoch"] is None
    folds = [utils.build_model(utils.load_checkpoint(cv_run / f"fold_{k}" / "last.pt")).eval()
             for k in range(2)]
    pixels = np.random.default_rng(2).random((2, 1, 37, 53), np.float32)
    probs, labels = deploy.new_session(onnx_path).run(None, {"images": pixels})
    expected = members_mean(folds, NORMALIZATIONS, torch.from_numpy(pixels)).numpy()
    moved = np.abs(probs - expected).max(1) > 1e-4  # max-pooling ties (deploy.MAX_MOVED)
    assert moved.mean() <= deploy.MAX_MOVED and np.abs(probs - expected).mean() < 1e-5
    assert (labels == expected.argmax(1)).mean() >= 0.999
