"""predict.py: tiling exactness, output files (size, mode, palette), batching, bad inputs."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

import predict
from helpers import data_info, random_model, save_test_checkpoint, write_image
from model import MIN_SIZE, context_radius
from segnet.inference import inference

ROOT = Path(__file__).resolve().parents[2]
RADIUS = context_radius()


def run_main(*argv):
    return predict.main(predict.get_args_parser().parse_args([str(a) for a in argv]))


# ---------------------------------------------------------------- tiling

def test_context_radius_is_the_exact_reach_of_one_input_pixel():
    """Perturbing one pixel changes outputs up to RADIUS away and no further (the bound is
    tight, so the default overlap wastes nothing). One pixel at each offset on the pooling grid,
    along the rows of a narrow strip (the network is the same along both axes)."""
    model = random_model()
    image = torch.randn(1, 1, 112, 16)
    rows = [48 + offset for offset in range(MIN_SIZE)]
    batch = image.repeat(len(rows) + 1, 1, 1, 1)  # one batch: the same conv algorithm for all
    for index, row in enumerate(rows, start=1):
        batch[index, 0, row, 8] += 10
    with torch.inference_mode():
        logits = model(batch)
    changed = (logits[1:] - logits[:1]).abs().amax(dim=(1, 3)) > 0  # [N, H]
    reach = max((torch.nonzero(changed[index])[:, 0] - row).abs().max().item()
                for index, row in enumerate(rows))
    assert RADIUS == 43 and reach == RADIUS


def test_tiled_equals_untiled_on_the_whole_image_when_overlap_covers_the_receptive_field():
    model = random_model()
    image = torch.randn(1, 157, 171)  # odd sizes: the last tiles end off the pooling grid
    whole = inference.forward_probs(model, image[None])[0][0]
    tiled, _ = inference.tiled_probs(model, image, tile=136, overlap=88)
    assert len(inference.tile_windows(157, 136, 88)) == 2  # really tiled, in both directions
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert torch.equal(tiled.argmax(0), whole.argmax(0))


def exact_positions(length, windows):
    """Positions at least RADIUS from the inner edges of every tile that contains them."""
    exact = np.ones(length, dtype=bool)
    for start, end in windows:
        position = np.arange(start, end)
        near = ((position - start < RADIUS) & (start > 0)) | ((end - 1 - position < RADIUS)
                                                              & (end < length))
        exact[position[near]] = False
    return exact


def test_tiled_equals_untiled_away_from_tile_edges():
    """A small overlap (16 < 2 * RADIUS) blends approximate predictions near tile edges; a pixel
    at least RADIUS from the inner edges of every tile holding it is still exact."""
    model = random_model()
    image = torch.randn(1, 121, 133)
    whole = inference.forward_probs(model, image[None])[0][0]
    tiled, _ = inference.tiled_probs(model, image, tile=64, overlap=16)
    rows = exact_positions(121, inference.tile_windows(121, 64, 16))
    cols = exact_positions(133, inference.tile_windows(133, 64, 16))
    region = torch.from_numpy(rows[:, None] & cols[None, :])
    assert region.sum() > 500
    torch.testing.assert_close(tiled[:, region], whole[:, region], atol=1e-5, rtol=0)
    assert (tiled - whole).abs().amax() > 1e-3  # near the edges tiling does differ


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 700), tile=st.integers(1, 40).map(lambda n: 8 * n),
       overlap=st.integers(0, 39).map(lambda n: 8 * n))
def test_tile_windows_cover_the_axis_on_the_grid_with_weights_summing_to_one(length, tile,
                                                                             overlap):
    if overlap >= tile:
        with pytest.raises(ValueError):
            inference.check_tiling(tile, overlap)
        return
    windows = inference.tile_windows(length, tile, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == length
    assert all(start % MIN_SIZE == 0 for start, _ in windows)
    assert all(end - start == min(tile, length) or end == length for start, end in windows)
    weights = inference.window_weights(length, windows, overlap)
    np.testing.assert_allclose(weights.sum(0), 1, atol=1e-6)
    if overlap >= 2 * RADIUS:  # no weight where a tile lacks context: exact tiling
        for row, (start, end) in zip(weights, windows):
            inexact = ~exact_positions(length, [(start, end)])
            assert not row[inexact].any()


def test_tta_is_flip_equivariant():
    model = random_model()
    image = torch.randn(1, 1, 16, 24)
    with_tta, _ = inference.forward_probs(model, image, tta=True)
    flipped, _ = inference.forward_probs(model, image.flip(-1), tta=True)
    torch.testing.assert_close(flipped.flip(-1), with_tta, atol=1e-5, rtol=0)
    without, _ = inference.forward_probs(model, image.flip(-1))
    assert not torch.allclose(without.flip(-1), inference.forward_probs(model, image)[0], atol=1e-3)


# ---------------------------------------------------------------- inference form

def test_load_for_inference_prepares_the_folded_model_with_the_same_outputs(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3)
    model, info, dtype = inference.load_for_inference(checkpoint, "cpu", "off")
    assert dtype is None and not model.training and info["dropout"] == 0.0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    image = torch.randn(1, 1, 29, 35)
    expected, _ = inference.forward_probs(random_model(3), image)
    actual, _ = inference.forward_probs(model, image)
    assert (actual - expected).abs().mean() < 1e-5
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() > 0.999


# ---------------------------------------------------------------- Monte Carlo dropout

def test_mc_without_dropout_equals_the_deterministic_prediction():
    model = random_model()
    images = torch.randn(2, 1, 16, 21)
    expected, no_variance = inference.forward_probs(model, images)
    probs, variance = inference.forward_probs(model, images, mc_samples=3, max_pixels=2 * 16 * 21)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    assert no_variance is None and variance.shape == (2, 16, 21) and variance.max() < 1e-6


def test_mc_dropout_is_seeded_per_image_and_leaves_batchnorm_alone():
    model = random_model(dropout=0.5)
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    images = torch.randn(2, 1, 16, 24)
    probs, variance = inference.batch_probs(model, images, mc_samples=4, seed=3)
    again, _ = inference.batch_probs(model, images, mc_samples=4, seed=3)
    alone, _ = inference.batch_probs(model, images[1:], mc_samples=4, seed=3)
    other_seed, _ = inference.batch_probs(model, images, mc_samples=4, seed=4)
    assert torch.equal(probs, again) and torch.equal(probs[1:], alone)
    assert not torch.allclose(probs, other_seed, atol=1e-4)
    deterministic, _ = inference.batch_probs(model, images)
    assert not torch.allclose(probs, deterministic, atol=1e-4)
    assert variance.min() >= 0 and variance.max() > 1e-4
    assert inference.entropy_map(probs).min() > 0
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert not model.training and not model.mc_dropout


def test_tiled_mc_dropout_blends_probabilities_and_variance():
    model = random_model(dropout=0.5)
    image = torch.randn(1, 40, 27)
    probs, variance = inference.batch_probs(model, image[None], tile=24, overlap=8, mc_samples=2)
    assert probs.shape == (1, 3, 40, 27) and variance.shape == (1, 40, 27)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 40, 27), atol=1e-5, rtol=0)
    assert variance.min() > 0  # every pixel, tile edges included, got sampled passes
    plain = random_model(dropout=0.0)
    tiled, _ = inference.tiled_probs(plain, image, tile=24, overlap=8, mc_samples=2)
    expected, _ = inference.tiled_probs(plain, image, tile=24, overlap=8)
    torch.testing.assert_close(tiled, expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- output files

@pytest.mark.parametrize("in_channels", [1, 3])
def test_binary_masks_are_0_255_grayscale_at_the_input_size(tmp_path, in_channels):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2, in_channels, favour=1)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"a": (37, 53), "b": (37, 53), "c": (20, 9), "d": (5, 6), "e": (37, 53)}
    for seed, (stem, (height, width)) in enumerate(sizes.items()):
        write_image(inputs / f"{stem}.png", height, width, channels=3 - 2 * (seed % 2), seed=seed)
    assert run_main("--checkpoint", checkpoint, "--input", inputs, "--output", tmp_path / "out",
                    "--batch-size", "2") == 0
    for stem, (height, width) in sizes.items():
        with Image.open(tmp_path / "out" / f"{stem}.png") as mask:
            assert mask.mode == "L" and mask.size == (width, height)
            assert set(np.unique(np.asarray(mask))) == {255}  # class 1 everywhere


def test_multiclass_masks_are_palette_pngs_with_overlay_and_probs(tmp_path):
    info = data_info(3)
    info["class_colors"] = [[10, 20, 30], [200, 0, 0], [0, 0, 250]]
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, favour=2, info=info)
    write_image(tmp_path / "big.png", 70, 93)
    assert run_main("--checkpoint", checkpoint, "--input", tmp_path / "*.png", "--output",
                    tmp_path / "out", "--overlay", "--probs", "--tile", "64",
                    "--overlap", "8") == 0
    with Image.open(tmp_path / "out" / "big.png") as mask:
        assert mask.mode == "P" and mask.size == (93, 70)
        assert mask.getpalette()[:9] == [10, 20, 30, 200, 0, 0, 0, 0, 250]
        assert set(np.unique(np.asarray(mask))) == {2}  # the index is the class id
    with Image.open(tmp_path / "out" / "big_overlay.png") as overlay:
        assert overlay.mode == "RGB" and overlay.size == (93, 70)
    probs = np.load(tmp_path / "out" / "big_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (3, 70, 93)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=2e-3)
    assert (probs.argmax(0) == 2).all()


def test_image_size_defaults_to_training_and_probs_come_back_at_native_size():
    model = random_model(num_classes=2)
    info = dict(data_info(2), train_image_size=32)  # as load_for_inference reads a checkpoint
    image = np.random.default_rng(0).random((1, 45, 61), dtype=np.float32)
    probs = inference.predict_probs(model, info, image)
    assert probs.shape == (2, 45, 61)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(probs, inference.predict_probs(model, info, image, image_size=32))
    native = inference.predict_probs(model, info, image, image_size=0)
    assert native.shape == (2, 45, 61) and not np.allclose(native, probs, atol=1e-3)


def test_mc_samples_write_16_bit_and_colour_entropy_maps_deterministically(tmp_path):
    info = data_info(3)
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=info, dropout=0.5)
    write_image(tmp_path / "a.png", 21, 30)
    for out in ("out1", "out2"):
        assert run_main("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--output",
                        tmp_path / out, "--mc-samples", "3", "--seed", "5", "--amp", "off") == 0
    out = tmp_path / "out1"
    with Image.open(out / "a_entropy.png") as entropy:
        assert entropy.mode == "I;16" and entropy.size == (30, 21)
        values = np.asarray(entropy).astype(np.int64)
    with Image.open(out / "a_entropy_color.png") as colour:
        assert colour.mode == "RGB" and colour.size == (30, 21)
    variance = np.load(out / "a_variance.npy")
    assert variance.dtype == np.float32 and variance.shape == (21, 30) and variance.max() > 0
    for name in ("a_entropy.png", "a_variance.npy"):  # the same seed gives the same maps
        assert (out / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    # The documented scaling: entropy / ln(K) * 65535, from the same MC probabilities.
    model, _, _ = inference.load_for_inference(checkpoint, "cpu", "off")
    image = np.asarray(Image.open(tmp_path / "a.png"), np.float32)[None] / 255
    probs = torch.from_numpy(inference.predict_probs(model, info, image, mc_samples=3, seed=5))
    expected = inference.entropy_map(probs) / np.log(3) * 65535
    assert values.min() > 0
    np.testing.assert_allclose(values, expected.numpy(), atol=1.0)


def test_mc_samples_without_dropout_warn_and_predict_as_usual(tmp_path, capsys):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=data_info(3))
    write_image(tmp_path / "a.png", 19, 26)
    assert run_main("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--output",
                    tmp_path / "mc", "--mc-samples", "8", "--probs") == 0
    assert "dropout 0" in capsys.readouterr().err
    assert run_main("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--output",
                    tmp_path / "plain", "--probs") == 0
    np.testing.assert_allclose(np.load(tmp_path / "mc" / "a_probs.npy").astype(np.float32),
                               np.load(tmp_path / "plain" / "a_probs.npy").astype(np.float32),
                               atol=1e-3)
    assert np.load(tmp_path / "mc" / "a_variance.npy").max() == 0


# ---------------------------------------------------------------- inputs

def test_unreadable_inputs_are_reported_and_the_others_written(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2, favour=0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a_good.png", 16, 16)
    write_image(inputs / "c_good.png", 16, 16)
    (inputs / "b_random.png").write_bytes(np.random.default_rng(0).bytes(300))
    good = (inputs / "a_good.png").read_bytes()
    (inputs / "d_truncated.png").write_bytes(good[:len(good) // 2])
    (inputs / "e_empty.jpg").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "predict.py", "--checkpoint", str(checkpoint), "--input", str(inputs),
         "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for name in ("b_random.png", "d_truncated.png", "e_empty.jpg"):
        assert name in result.stderr
    assert "predict: 5/5 images" in result.stderr  # plain progress lines, not a tty
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good.png", "c_good.png",
                                                                   "review.csv"]

    with pytest.raises(SystemExit, match="b_random.png"):  # stops there, a_good written
        run_main("--checkpoint", checkpoint, "--input", inputs, "--output", tmp_path / "strict",
                 "--strict")
    assert sorted(p.name for p in (tmp_path / "strict").iterdir()) == ["a_good.png",
                                                                      "review.csv"]


def test_bad_input_arguments_stop_before_any_work(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2)
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "same.png", 8, 8)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="matches no files"):
        run_main("--checkpoint", checkpoint, "--input", tmp_path / "nothing*.png", "--output", out)
    with pytest.raises(SystemExit, match="same.png"):
        run_main("--checkpoint", checkpoint, "--input", tmp_path / "x", tmp_path / "y",
                 "--output", out)
    with pytest.raises(SystemExit, match="overwrite an input"):
        run_main("--checkpoint", checkpoint, "--input", tmp_path / "x", "--output", tmp_path / "x")
    with pytest.raises(SystemExit, match="multiples of 8"):
        run_main("--checkpoint", checkpoint, "--input", tmp_path / "x", "--output", out,
                 "--tile", "100")
    with pytest.raises(SystemExit, match="missing.pt"):
        run_main("--checkpoint", tmp_path / "missing.pt", "--input", tmp_path / "x",
                 "--output", out)
    assert not out.exists()
    for flags, message in ((["--seed", "-1"], "--seed"), (["--seed", str(2**64)], "--seed"),
                           (["--image-size", "100000"], "--image-size"),
                           (["--batch-size", "0"], "--batch-size"),
                           (["--mc-samples", "-2"], "--mc-samples")):
        with pytest.raises(SystemExit, match=message):
            run_main("--checkpoint", checkpoint, "--input", tmp_path / "x", "--output", out,
                     *flags)
    assert not out.exists()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match="is a file"):
        run_main("--checkpoint", checkpoint, "--input", tmp_path / "x", "--output",
                 tmp_path / "a_file")


@pytest.mark.parametrize("num_classes, size", [(2, (37, 53)), (3, (600, 70))])
def test_the_notebook_api_gives_predict_py_labels(tmp_path, num_classes, size):
    """inference.load_model + inference.predict run predict.py's path (folded model, its
    precision, tiling above 512 px): the same labels for the same image."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", num_classes=num_classes)
    (tmp_path / "in").mkdir()
    image = write_image(tmp_path / "in" / "a.png", *size, seed=3)
    assert run_main("--checkpoint", checkpoint, "--input", image, "--output",
                    tmp_path / "out") == 0
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    model, info = inference.load_model(checkpoint)
    labels = inference.predict(model, info, Image.open(image))
    expected = written // 255 if num_classes == 2 else written
    assert labels.shape == size and np.array_equal(labels, expected)


# ---------------------------------------------------------------- review list

def read_review(path):
    import csv
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_review_csv_has_one_row_per_image_read_most_uncertain_first(tmp_path):
    """An untrained model is unsure to different degrees on different images; a 100x90 image
    is tiled (--tile 64), an unreadable one is skipped, and the rows are the probabilities'."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=data_info(3))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed, (name, size) in enumerate((("a", (24, 24)), ("c", (100, 90)), ("d", (24, 24)),
                                         ("e", (17, 31)))):
        write_image(inputs / f"{name}.png", *size, seed=seed)
    (inputs / "b_corrupt.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert run_main("--checkpoint", checkpoint, "--input", inputs, "--output", out, "--review",
                    "--probs", "--tile", 64, "--overlap", 16, "--amp", "off") == 1
    rows = read_review(out / "review.csv")
    assert list(rows[0]) == ["file", "mean_entropy", "uncertain_fraction", "share_class_0",
                             "share_class_1", "share_class_2"]
    assert sorted(row["file"] for row in rows) == [str(inputs / f"{n}.png") for n in "acde"]
    entropies = [float(row["mean_entropy"]) for row in rows]
    assert entropies == sorted(entropies, reverse=True) and len(set(entropies)) == 4
    for row in rows:
        probs = torch.from_numpy(np.load(out / f"{Path(row['file']).stem}_probs.npy")).float()
        entropy = float(-(probs * probs.clamp(min=1e-12).log()).sum(0).mean())
        assert float(row["mean_entropy"]) == pytest.approx(entropy, abs=2e-3)
        labels = np.asarray(Image.open(out / f"{Path(row['file']).stem}.png"))
        shares = [float(row[f"share_class_{c}"]) for c in range(3)]
        assert shares == pytest.approx([(labels == c).mean() for c in range(3)], abs=1e-6)
        top = probs.amax(0)
        assert float(row["uncertain_fraction"]) == pytest.approx(
            float((top < 0.5).float().mean()), abs=0.02)  # float16 probs near 0.5 may flip


def test_review_csv_uses_the_mc_dropout_mean_and_is_written_with_strict(tmp_path):
    """With --mc-samples the rows are the sampled mean's: its mean entropy is the mean of the
    16-bit entropy map. --strict stops at the unreadable input; the images before it are listed."""
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 2, dropout=0.5)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a.png", 20, 28, seed=1)
    (inputs / "b.png").write_bytes(b"")
    write_image(inputs / "c.png", 20, 28, seed=2)
    out = tmp_path / "out"
    assert run_main("--checkpoint", checkpoint, "--input", inputs, "--output", out, "--review",
                    "--mc-samples", "3") == 1
    rows = {row["file"]: row for row in read_review(out / "review.csv")}
    assert sorted(rows) == [str(inputs / "a.png"), str(inputs / "c.png")]
    for name in ("a", "c"):
        scaled = np.asarray(Image.open(out / f"{name}_entropy.png"), dtype=np.float64) / 65535
        assert float(rows[str(inputs / f"{name}.png")]["mean_entropy"]) == pytest.approx(
            scaled.mean() * np.log(2), abs=1e-4)
    with pytest.raises(SystemExit, match="b.png"):
        run_main("--checkpoint", checkpoint, "--input", inputs, "--output", tmp_path / "strict",
                 "--review", "--strict")
    assert [row["file"] for row in read_review(tmp_path / "strict" / "review.csv")] == [
        str(inputs / "a.png")]
