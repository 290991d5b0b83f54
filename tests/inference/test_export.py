"""export.py and deploy.py: the ONNX round trip at odd sizes (1 and 3 channels, 2 and 5 classes),
the metadata, predict.py --onnx against the checkpoint path (tiled and untiled), and the error
each bad input gives. Needs requirements-export.txt; without it only the import test runs."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import export
import predict
from helpers import data_info, save_test_checkpoint, write_image
from segnet import utils
from segnet.data.pixels.images import normalize
from segnet.inference import deploy, inference

ROOT = Path(__file__).resolve().parents[2]
needs_export = pytest.mark.skipif(bool(deploy.missing_packages()),
                                  reason="requirements-export.txt is not installed")
CONFIGS = [(1, 2), (1, 5), (3, 2), (3, 5)]  # (in_channels, num_classes)


def run_export(*argv):
    return export.main(export.get_args_parser().parse_args([str(a) for a in argv]))


def run_predict(*argv):
    return predict.main(predict.get_args_parser().parse_args([str(a) for a in argv]))


def error_of(call, *argv):
    """The one-line message a script's main exits with."""
    with pytest.raises(SystemExit) as raised:
        call(*argv)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_the_library_imports_without_the_export_packages():
    """Training and checkpoint inference do not need onnx: the imports hide in functions."""
    blocked = "; ".join(f"sys.modules['{name}'] = None" for name in deploy.EXPORT_PACKAGES)
    code = (f"import sys; {blocked}; import segnet, segnet.inference.deploy, predict, export, "
            f"bench, train")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(in_channels, num_classes) -> (checkpoint, .onnx path), each exported once."""
    cache = {}

    def make(in_channels, num_classes):
        if (in_channels, num_classes) not in cache:
            folder = tmp_path_factory.mktemp(f"export_{in_channels}x{num_classes}")
            info = data_info(num_classes, in_channels)
            info["normalization"] = {"mean": [0.4 + 0.1 * c for c in range(in_channels)],
                                     "std": [0.2 + 0.05 * c for c in range(in_channels)]}
            checkpoint = save_test_checkpoint(folder / "best.pt", num_classes, in_channels,
                                              info=info, seed=num_classes)
            assert run_export("--checkpoint", checkpoint) == 0  # writes best.onnx beside it
            cache[in_channels, num_classes] = checkpoint, checkpoint.with_suffix(".onnx")
        return cache[in_channels, num_classes]
    return make


# ---------------------------------------------------------------- the graph

@needs_export
@pytest.mark.parametrize("in_channels, num_classes", CONFIGS)
def test_onnx_runtime_reproduces_pytorch_at_odd_sizes(exported, in_channels, num_classes):
    """Within 1e-4 of the same network in PyTorch fp32 (BatchNorm folded, as exported), labels
    equal. Against the unfolded SegNet, folding's rounding may move an arg-max pooling where two
    activations tie to ~1e-6 (a pixel here and there): labels still agree on >= 99.9%."""
    checkpoint_path, onnx_path = exported(in_channels, num_classes)
    checkpoint = utils.load_checkpoint(checkpoint_path)
    deployed = deploy.deployable_model(checkpoint)
    unfolded = utils.build_model(checkpoint).eval()
    session = deploy.new_session(onnx_path)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probs", "labels"]
    batch, channels, height, width = session.get_inputs()[0].shape
    assert channels == in_channels and all(isinstance(d, str) for d in (batch, height, width))
    for size in ((37, 53), (97, 130)):
        pixels = np.random.default_rng(size[0]).random((2, in_channels, *size), np.float32)
        probs, labels = session.run(None, {"images": pixels})
        assert probs.dtype == np.float32 and probs.shape == (2, num_classes, *size)
        assert labels.dtype == np.int64 and labels.shape == (2, *size)
        with torch.inference_mode():
            expected = deployed(torch.from_numpy(pixels))[0].numpy()
            normalised = normalize(torch.from_numpy(pixels), checkpoint["data"]["normalization"])
            plain = unfolded(normalised).softmax(1).numpy()
        moved = np.abs(probs - expected).max(1) > 1e-4  # max-pooling ties (deploy.MAX_MOVED)
        assert moved.mean() <= deploy.MAX_MOVED and np.abs(probs - expected)[~moved[:, None].repeat(
            num_classes, 1)].max() <= 1e-4
        assert (labels == expected.argmax(1)).mean() >= 0.999
        assert (labels == plain.argmax(1)).mean() >= 0.999
        assert np.abs(probs - plain).mean() < 1e-5


@needs_export
def test_the_runtime_adapter_gives_inference_py_the_graphs_probabilities(exported):
    """OnnxRuntimeModel takes normalised images and returns log-probabilities: through
    forward_probs (softmax, edge padding below 8 px, flips) it gives the graph's probabilities."""
    checkpoint_path, onnx_path = exported(3, 5)
    onnx_model, info = deploy.load_onnx(onnx_path)
    assert info == utils.checkpoint_info(utils.load_checkpoint(checkpoint_path))
    deployed = deploy.deployable_model(utils.load_checkpoint(checkpoint_path))
    pixels = torch.from_numpy(np.random.default_rng(1).random((2, 3, 21, 30), np.float32))
    normalised = normalize(pixels, info["normalization"])
    probs, _ = inference.forward_probs(onnx_model, normalised, tta=True)
    with torch.inference_mode():
        flips = [deployed(pixels.flip(dims))[0].flip(dims) for dims in inference.FLIPS]
    torch.testing.assert_close(probs, sum(flips) / 4, atol=1e-5, rtol=0)
    tiny, _ = inference.forward_probs(onnx_model, normalised[:, :, :5, :6])  # padded to 8x8
    assert tiny.shape == (2, 5, 5, 6)
    onnx_model.mc_dropout = True
    with pytest.raises(ValueError, match="deterministic"):
        onnx_model(normalised)


@needs_export
def test_metadata_round_trips_and_a_dropout_model_exports_its_eval_form(tmp_path, capsys):
    info = data_info(3)
    info.update(class_names=["background", "cell", "noyau ë"],
                class_colors=[[0, 0, 0], [255, 0, 0], [12, 34, 56]],
                mask_decoding={"kind": "palette", "colors": [[0, 0, 0], [255, 0, 0]]})
    checkpoint = utils.load_checkpoint(save_test_checkpoint(tmp_path / "c.pt", 3, info=info,
                                                            dropout=0.5))
    checkpoint.update(epoch=7, best_epoch=5, best_metric=0.625, args={"image_size": 64})
    utils.save_checkpoint(tmp_path / "c.pt", checkpoint)
    assert run_export("--checkpoint", tmp_path / "c.pt", "--output", tmp_path / "m.onnx") == 0
    out = capsys.readouterr().out
    assert "epoch 7, best val mIoU 0.6250" in out and "deterministic (eval) form" in out

    metadata = deploy.read_metadata(tmp_path / "m.onnx")
    assert {key: metadata[key] for key in utils.DATA_KEYS} == info
    assert metadata["train_image_size"] == 64 and metadata["dropout"] == 0.5
    assert (metadata["epoch"], metadata["best_epoch"], metadata["best_val_miou"]) == (7, 5, 0.625)
    assert metadata["context_radius"] == 43 and metadata["min_size"] == 8
    assert metadata["opset"] == 18 and metadata["checkpoint_format_version"] == 1
    assert metadata["project_version"] and metadata["torch_version"] == torch.__version__
    assert "[0, 1]" in metadata["input"] and "int64" in metadata["outputs"]
    onnx_model, loaded = deploy.load_onnx(tmp_path / "m.onnx")
    assert loaded == utils.checkpoint_info(checkpoint)

    pixels = np.random.default_rng(0).random((2, 1, 29, 40), np.float32)
    first, second = (onnx_model.session.run(["probs"], {"images": pixels})[0] for _ in range(2))
    np.testing.assert_array_equal(first, second)  # no dropout in the graph
    with torch.inference_mode():
        expected = deploy.deployable_model(checkpoint)(torch.from_numpy(pixels))[0].numpy()
    np.testing.assert_allclose(first, expected, atol=1e-5, rtol=0)


def test_a_mismatch_between_runtime_and_pytorch_is_named():
    rng = np.random.default_rng(0)
    expected = rng.dirichlet(np.ones(3), size=(2, 9, 11)).transpose(0, 3, 1, 2)
    expected = expected.astype(np.float32)
    labels = expected.argmax(1)
    assert deploy.output_mismatch(expected, expected + 5e-5, labels) is None
    assert "differ from PyTorch's by up to 2.00e-04" in deploy.output_mismatch(
        expected, expected + 2e-4, labels)
    assert "differ" in deploy.output_mismatch(expected, expected * np.nan, labels)
    wrong = labels.copy()
    wrong[0, 0, 0] = (wrong[0, 0, 0] + 1) % 3
    assert "labels differ" in deploy.output_mismatch(expected, expected, wrong)
    tied = expected.copy()
    tied[0, :, 0, 0] = [0.5, 0.5 - 1e-5, 1e-5]  # a near tie may break either way
    tied_labels = tied.argmax(1)
    tied_labels[0, 0, 0] = 1
    assert deploy.output_mismatch(tied, tied, tied_labels) is None
    assert "output shapes" in deploy.output_mismatch(expected, expected[:, :2], labels)
    assert "output shapes" in deploy.output_mismatch(expected, expected,
                                                     labels.astype(np.int32))


# ---------------------------------------------------------------- predict.py --onnx

def read_mask(path):
    with Image.open(path) as mask:
        return mask.mode, mask.size, mask.getpalette(), np.asarray(mask)


@needs_export
@pytest.mark.parametrize("in_channels, num_classes", [(1, 5), (3, 2)])
def test_predict_onnx_writes_the_checkpoint_paths_masks(exported, tmp_path, in_channels,
                                                       num_classes):
    """Same files, modes, sizes and palettes; labels equal on >= 99.9% of the pixels (the
    issue's bar: an arg-max pooling can pick another position where two activations tie to
    float rounding) and probabilities within float16 rounding on average."""
    checkpoint, onnx_path = exported(in_channels, num_classes)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"a": (37, 53), "b": (37, 53), "c": (97, 130), "d": (5, 6), "e": (150, 171)}
    for seed, (stem, size) in enumerate(sizes.items()):
        write_image(inputs / f"{stem}.png", *size, channels=in_channels, seed=seed)
    for tiling in ([], ["--tile", "64", "--overlap", "16"]):
        outputs = {}
        for model in (["--onnx", onnx_path], ["--checkpoint", checkpoint, "--amp", "off"]):
            out = tmp_path / f"{model[0][2:]}{len(tiling)}"
            assert run_predict(*model, "--input", inputs, "--output", out, "--probs",
                               "--batch-size", "2", *tiling) == 0
            outputs[model[0]] = out
        same = total = 0
        for stem, (height, width) in sizes.items():
            onnx_mask, torch_mask = (read_mask(outputs[flag] / f"{stem}.png")
                                     for flag in ("--onnx", "--checkpoint"))
            assert onnx_mask[:3] == torch_mask[:3]  # mode, size, palette
            assert onnx_mask[1] == (width, height)
            same += int((onnx_mask[3] == torch_mask[3]).sum())
            total += height * width
            onnx_probs, torch_probs = (np.load(outputs[flag] / f"{stem}_probs.npy")
                                       .astype(np.float32) for flag in ("--onnx", "--checkpoint"))
            assert np.abs(onnx_probs - torch_probs).mean() < 1e-3
        assert same / total >= 0.999, (tiling, total - same)


# ---------------------------------------------------------------- bad inputs

@needs_export
def test_bad_export_inputs_give_one_line_errors(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    for argv, message in (
            ([tmp_path / "missing.pt"], "does not exist"),
            ([tmp_path / "garbage.pt", "--output", tmp_path / "g.onnx"], "could not be loaded"),
            ([checkpoint, "--output", tmp_path / "no" / "m.onnx"], "does not exist; create it"),
            ([checkpoint, "--output", tmp_path], "is a folder"),
            ([checkpoint, "--output", checkpoint], "the checkpoint itself"),
            ([checkpoint, "--opset", "17"], "--opset must be >= 18"),
            ([checkpoint, "--check-size", "7", "20"], "--check-size must be >= 8"),
            ([checkpoint, "--opset", "99"], "could not write opset 99")):
        assert message in error_of(run_export, "--checkpoint", *argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "garbage.pt"]


def test_missing_export_packages_are_named_with_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "missing_packages", lambda names=None: ["onnxruntime"])
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2)
    write_image(tmp_path / "a.png", 16, 16)
    (tmp_path / "m.onnx").write_bytes(b"")
    for message in (error_of(run_export, "--checkpoint", checkpoint),
                    error_of(run_predict, "--onnx", tmp_path / "m.onnx", "--input",
                             tmp_path / "a.png", "--output", tmp_path / "out")):
        assert "onnxruntime not installed" in message
        assert "pip install -r requirements-export.txt" in message


@needs_export
def test_bad_predict_onnx_inputs_give_one_line_errors(tmp_path, exported):
    import onnx  # a valid ONNX file without export.py's metadata
    _, onnx_path = exported(1, 2)
    write_image(tmp_path / "a.png", 16, 16)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00 not onnx")
    node = onnx.helper.make_node("Identity", ["images"], ["probs"])
    value = onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 1, 8, 8])
    graph = onnx.helper.make_graph([node], "bare", [value], [
        onnx.helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, [1, 1, 8, 8])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "bare.onnx")
    common = ["--input", tmp_path / "a.png", "--output", tmp_path / "out"]
    for argv, message in (
            (["--onnx", tmp_path / "missing.onnx"], "is not a file"),
            (["--onnx", tmp_path / "garbage.onnx"], "could not be loaded by ONNX Runtime"),
            (["--onnx", tmp_path / "bare.onnx"], "not exported by export.py"),
            (["--onnx", onnx_path, "--mc-samples", "4"], "--mc-samples needs --checkpoint"),
            (["--onnx", onnx_path, "--amp", "bf16"], "--amp bf16 needs --checkpoint"),
            (["--onnx", onnx_path, "--device", "cuda"], "--device cuda needs --checkpoint")):
        assert message in error_of(run_predict, *argv, *common)
    assert not (tmp_path / "out").exists()
    for models in ([], ["--onnx", onnx_path, "--checkpoint", tmp_path / "x.pt"]):
        with pytest.raises(SystemExit) as raised:  # argparse: exactly one of the two
            run_predict(*models, *common)
        assert raised.value.code == 2
