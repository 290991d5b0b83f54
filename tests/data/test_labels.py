"""The plan reads the labels and the images: rare-class sampling, colour, flips from the classes'
layout, jitter relative to the value range, the hold-out when there is no val/ split, the scan
cache, the training scale, a hopeless budget, the encoder's ImageNet weights and the advice."""
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train
from helpers import write_tiny_dataset
from model import SegNet
from segnet import utils
from segnet.data.feed import sampling, transforms
from segnet.data.check import scancache
from segnet.data.check.scan import scan_dataset
from segnet.data.feed.dataset import SegmentationDataset
from segnet.inference import inference
from segnet.plan import dataplan, plan as planning
from segnet.plan.plan import Fingerprint, Speed, make_plan


def write_pairs(root, split, images, masks):
    """Save image arrays (uint8/uint16, [H,W] or [H,W,3]) and index masks as PNG pairs."""
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(root / split / "images" / f"p{index:02d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / split / "masks" / f"p{index:02d}.png")
    return root


def stacked_masks(count, size=32, seed=0):
    """Class 0 in the top third, 1 in the middle, 2 at the bottom (a scene's layout), with a
    random boundary height per image."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        mask = np.zeros((size, size), np.uint8)
        first, second = rng.integers(8, 14), rng.integers(19, 25)
        mask[first:second], mask[second:] = 1, 2
        masks.append(mask)
    return masks


def grey_images(masks, seed=0):
    rng = np.random.default_rng(seed)
    return [(np.choose(mask, [60, 130, 200]) + rng.normal(0, 8, mask.shape)).clip(0, 255)
            .astype(np.uint8) for mask in masks]


# ---------------------------------------------------------------- rare-class sampling

def test_sampling_puts_a_one_percent_class_in_far_more_crops():
    mask = torch.zeros(100, 100, dtype=torch.int64)
    mask[70:80, 20:30] = 1  # 1% of the pixels
    image = torch.rand(1, 100, 100)
    transform = transforms.TrainTransform(crop_size=16, scale=None, rotate=0, jitter=0, noise=0)
    positions = sampling.class_positions(mask, 2)
    assert set(positions) == {0, 1} and len(positions[1]) == 100

    def crops_with_the_class(share):
        torch.manual_seed(0)
        found = 0
        for _ in range(200):
            focus = sampling.pick_focus(positions, share, 100)
            found += int((transform(image, mask, focus=focus)[1] == 1).any())
        return found

    off, on = crops_with_the_class(0.0), crops_with_the_class(0.5)
    assert on > 3 * off and on >= 40


def test_with_sampling_off_the_crops_are_todays():
    mask = torch.randint(0, 3, (40, 50))
    image = torch.rand(1, 40, 50)
    transform = transforms.TrainTransform(crop_size=16)
    torch.manual_seed(3)
    plain = transform(image, mask)
    torch.manual_seed(3)
    assert sampling.pick_focus(sampling.class_positions(mask, 3), 0.0, 50) is None
    again = transform(image, mask, focus=None)
    assert torch.equal(plain[0], again[0]) and torch.equal(plain[1], again[1])


def test_a_focused_crop_holds_its_pixel_and_positions_are_bounded():
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[60, 3] = 1
    transform = transforms.TrainTransform(crop_size=16, scale=None, rotate=0, hflip=False,
                                          vflip=False, jitter=0, noise=0)
    _, crop = transform(torch.rand(1, 64, 64), mask, focus=(60, 3))
    assert (crop == 1).sum() == 1  # kept inside the image: the window moved, the pixel stays
    many = sampling.class_positions(torch.zeros(100, 100, dtype=torch.int64), 2, limit=50)
    assert len(many[0]) == 50 and many[0].dtype == np.int32


def test_the_dataset_centres_crops_on_drawn_classes(tmp_path):
    root = write_tiny_dataset(tmp_path, size=32)
    info = scan_dataset(root)
    # the crop's centre is the drawn pixel: the square (1) or the bar (2), which cover about
    # 15% of the pixels, are drawn 2 times in 3
    counts = {share: crops_showing(root, info, share, 120, lambda mask: (mask[3:5, 3:5] > 0).any())
              for share in (0.0, 1.0)}
    assert counts[1.0] > 2 * counts[0.0] and counts[1.0] >= 70


def crops_showing(root, info, share, samples, shows):
    """How many of `samples` 8-pixel train crops (class_sampling `share`, torch seeded 0)
    have a mask for which shows(mask) holds."""
    transform = transforms.TrainTransform(crop_size=8, scale=None, rotate=0, jitter=0, noise=0)
    dataset = SegmentationDataset(root, "train", info, transform=transform,
                                  class_sampling=share)
    torch.manual_seed(0)
    return sum(int(shows(dataset[index % len(dataset)][1])) for index in range(samples))


def test_a_class_in_one_image_of_ten_is_drawn_as_often_as_the_background(tmp_path):
    """The class is drawn among the train set's classes, then an image holding it: a class in
    one image of ten is centred in about half of the sampled crops (2 classes), not in about
    one in twenty as when the class is drawn among those of each sample's own image."""
    for split, count in (("train", 10), ("val", 1)):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for index in range(count):
            mask = np.zeros((32, 32), dtype=np.uint8)
            if index == 0:
                mask[4:8, 20:24] = 1
            pixels = mask * 200 + 20 + index + 40 * (split == "val")
            Image.fromarray(pixels.astype(np.uint8)).save(
                tmp_path / split / "images" / f"i{index}.png")
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"i{index}.png")
    info = scan_dataset(tmp_path, num_classes=2)
    assert info["image_classes"]["i0"] == [0, 1] and info["image_classes"]["i5"] == [0]
    shown = {share: crops_showing(tmp_path, info, share, 200, lambda mask: (mask == 1).any())
             for share in (0.0, 1.0)}
    assert shown[0.0] <= 15 and 70 <= shown[1.0] <= 130


# ---------------------------------------------------------------- colour

def test_grey_stored_as_rgb_gives_one_channel_and_real_colour_three(tmp_path):
    masks = stacked_masks(4)
    grey = grey_images(masks)
    write_pairs(tmp_path / "grey", "train", [np.stack([g] * 3, -1) for g in grey], masks)
    coloured = [np.stack([g, 255 - g, (g // 2) + 60], -1).astype(np.uint8) for g in grey]
    write_pairs(tmp_path / "colour", "train", coloured, masks)
    splits = ("train",)
    grey_info = scan_dataset(tmp_path / "grey", in_channels="auto", splits=splits)
    colour_info = scan_dataset(tmp_path / "colour", in_channels="auto", splits=splits)
    assert grey_info["in_channels"] == 1 and len(grey_info["normalization"]["mean"]) == 1
    assert colour_info["in_channels"] == 3 and colour_info["colour_share"] == 1.0
    assert len(set(colour_info["normalization"]["mean"])) == 3  # per channel
    flagged = scan_dataset(tmp_path / "colour", in_channels=1, splits=splits)
    assert flagged["in_channels"] == 1 and flagged["colour_share"] == 1.0
    fp = planning.fingerprint(colour_info)
    assert make_plan(fp, {}, "cpu").in_channels == 3
    assert make_plan(fp, {"in_channels": 1}, "cpu").sources["in_channels"] == "flag"


# ---------------------------------------------------------------- flips and layout

def test_classes_stacked_top_to_bottom_plan_no_vertical_flip(tmp_path):
    masks = stacked_masks(8)
    write_pairs(tmp_path, "train", grey_images(masks), masks)
    plan = make_plan(planning.fingerprint(scan_dataset(tmp_path, splits=("train",))), {}, "cpu")
    assert plan.hflip and not plan.vflip and plan.rotate == 0
    assert plan.sources["vflip"] == "auto"
    assert make_plan(planning.fingerprint(scan_dataset(tmp_path, splits=("train",))),
                     {"vflip": True}, "cpu").vflip


def test_a_symmetric_layout_keeps_both_flips_and_rotation(tmp_path):
    root = write_tiny_dataset(tmp_path, counts=(("train", 12), ("val", 2)), size=32)
    plan = make_plan(planning.fingerprint(scan_dataset(root)), {}, "cpu")
    assert plan.hflip and plan.vflip and plan.rotate == dataplan.ROTATE


def test_no_flip_turns_both_off(tmp_path):
    root = write_tiny_dataset(tmp_path, counts=(("train", 12), ("val", 2)), size=32)
    base = planning.Plan(flip=False)
    plan = make_plan(planning.fingerprint(scan_dataset(root)), {}, "cpu", base=base)
    assert not plan.hflip and not plan.vflip and plan.rotate == 0


# ---------------------------------------------------------------- jitter relative to the range

def test_jitter_is_relative_to_the_value_range_of_12_bit_data():
    twelve_bit = torch.rand(1, 32, 32) * (4095 / 65535)
    mask = torch.zeros(32, 32, dtype=torch.int64)
    transform = transforms.TrainTransform(scale=None, rotate=0, hflip=False, vflip=False,
                                          jitter=0.5, noise=0.05, value_range=(0, 4095 / 65535))
    torch.manual_seed(0)
    jittered, _ = transform(twelve_bit, mask)
    assert jittered.max() <= 4095 / 65535 * 1.2 and jittered.std() > 0.2 * twelve_bit.std()
    absolute = transforms.TrainTransform(scale=None, rotate=0, hflip=False, vflip=False,
                                         jitter=0.5, noise=0)
    torch.manual_seed(0)
    washed = absolute(twelve_bit, mask)[0]  # what an absolute step did: washed out or black
    assert washed.max() > 0.2 or washed.std() < 0.2 * twelve_bit.std()


def test_the_scan_measures_the_value_range(tmp_path):
    masks = stacked_masks(3)
    images = [(mask.astype(np.uint16) * 1000 + 100) for mask in masks]  # 12-bit in 16
    write_pairs(tmp_path, "train", images, masks)
    low, high = scan_dataset(tmp_path, splits=("train",))["intensity_range"]
    assert low == pytest.approx(100 / 65535, abs=1e-6)
    assert high == pytest.approx(2100 / 65535, abs=1e-6)


# ---------------------------------------------------------------- hold-out

def test_without_val_a_hold_out_is_carved_deterministically(tmp_path):
    root = write_tiny_dataset(tmp_path, counts=(("train", 20),), size=24)
    first, second = scan_dataset(root), scan_dataset(root)
    held = first["holdout"]
    assert held == second["holdout"] and len(held) == 3  # ~15% of 20
    train_names = SegmentationDataset(root, "train", first).names
    val_names = SegmentationDataset(root, "val", first).names
    assert sorted(val_names) == held and not set(held) & set(train_names)
    assert len(train_names) == 17 and first["splits"] == {"train": 17, "val": 3}


def test_a_single_image_cannot_be_held_out(tmp_path):
    root = write_tiny_dataset(tmp_path, counts=(("train", 1),), size=24)
    with pytest.raises(ValueError, match="hold-out for validation needs at least 2"):
        scan_dataset(root)


@pytest.fixture(scope="module")
def no_val(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("noval"), counts=(("train", 12),),
                              size=24)


def run_args(data, out, *extra):
    return train.get_args_parser().parse_args(
        ["--data", str(data), "--out", str(out), "--workers", "0", "--log-every", "1", *extra])


def test_a_run_without_val_records_its_hold_out_and_keeps_it_on_resume(no_val, tmp_path):
    out = tmp_path / "run"
    assert train.main(run_args(no_val, out, "--steps", "2", "--batch-size", "2")) == 0
    config = json.loads((out / "config.json").read_text())
    held = config["holdout"]
    assert len(held) == 2 and "validating on 2 of 12 train images held out" in (
        out / "train.log").read_text()
    # A file added to train would move a fresh carve; the resumed run keeps its own.
    image = Image.open(no_val / "train" / "images" / "img_0.png")
    image.save(no_val / "train" / "images" / "zz_added.png")
    Image.open(no_val / "train" / "masks" / "img_0.png").save(
        no_val / "train" / "masks" / "zz_added.png")
    assert train.main(run_args(no_val, out, "--resume", str(out), "--steps", "3")) == 0
    assert torch.load(out / "last.pt", weights_only=True)["data"]["holdout"] == held


# ---------------------------------------------------------------- scan cache

def test_an_unchanged_dataset_is_scanned_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNET_CACHE", str(tmp_path / "cache"))
    root = write_tiny_dataset(tmp_path / "data", size=24)
    first, reused_first = scancache.cached_scan(root, in_channels="auto")
    second, reused_second = scancache.cached_scan(root, in_channels="auto")
    assert (reused_first, reused_second) == (False, True) and first == second
    assert not scancache.cached_scan(root, in_channels=1)[1]  # another argument
    mask = root / "train" / "masks" / "img_0.png"
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(mask)
    os.utime(mask, ns=(1, 1))  # even with an old time: the size or the time differs
    changed, reused = scancache.cached_scan(root, in_channels="auto")
    assert not reused and changed["class_pixels"] != first["class_pixels"]


# ---------------------------------------------------------------- the plan stays pure

def label_fingerprint(**changes):
    fp = Fingerprint(train_images=500, val_images=50, sizes=((240, 320, 500),),
                     val_pixels=50 * 240 * 320, val_size=(240, 320),
                     class_shares=(0.5, 0.3, 0.19, 0.01), void_share=0.0, colour_share=1.0,
                     class_images=(500, 400, 300, 20), class_widths=(60.0, 40.0, 20.0, 10.0),
                     layout_rows=((0.9, 0.01, 500), (-0.8, 0.01, 400), (0.0, 0.1, 300),
                                  (0.0, 0.2, 20)),
                     layout_cols=((0.0, 0.01, 500),) * 4)
    return dataclasses.replace(fp, **changes)


def slow_cpu():
    return Speed(device="cpu", steps=((208, 2, 2.0), (64, 2, 0.2)),
                 infer_pixels_per_second=150_000, load_seconds=0.005)


def test_make_plan_is_a_pure_function_of_fingerprint_flags_and_speed():
    fp = label_fingerprint()
    first = make_plan(fp, {}, "cpu", slow_cpu(), default_budget=600)
    again = make_plan(fp, {}, "cpu", slow_cpu(), default_budget=600)
    assert first == again
    assert (first.in_channels, first.hflip, first.vflip, first.class_sampling,
            first.class_weights) == (3, True, False, dataplan.CLASS_SAMPLING,
                                     dataplan.RARE_WEIGHTS)
    assert first.train_scale < 1 and first.augmentation == "light"
    assert make_plan(fp, {}, "cpu").train_scale == 1  # no budget: native size
    assert make_plan(fp, {"train_scale": 0.5}, "cpu").sources["train_scale"] == "flag"
    thin = make_plan(label_fingerprint(class_widths=(60.0, 40.0, 20.0, 4.5)), {}, "cpu",
                     slow_cpu(), default_budget=600)
    assert thin.train_scale == 1  # a 4.5-pixel class cannot shrink
    balanced = make_plan(label_fingerprint(class_shares=(0.3, 0.3, 0.2, 0.2)), {}, "cpu")
    assert balanced.class_sampling == 0 and balanced.class_weights == "none"


def test_the_step_time_adds_the_loader():
    quick = Speed(device="cpu", steps=((64, 2, 0.2),), load_seconds=0.05)
    assert quick.step_seconds(64, 2) == pytest.approx(0.3)
    workers = dataclasses.replace(quick, load_workers=4)
    assert workers.step_seconds(64, 2) == pytest.approx(0.2)  # hidden behind compute


def test_a_hopeless_budget_stops_with_exit_code_2_and_no_run_folder(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "data", size=24)
    out = tmp_path / "run"
    assert train.main(run_args(root, out, "--time-budget", "0.01")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: the time budget left")
    assert "--time-budget" in error[0] and "a useful run needs 100, a good one 300" in error[0]
    assert not out.exists()


# ---------------------------------------------------------------- the training scale

def test_a_scaled_model_predicts_at_full_size():
    model = SegNet(in_channels=1, num_classes=3).eval()
    images = torch.rand(2, 1, 60, 90)
    probs, _ = inference.batch_probs(model, images, scale=0.5)
    assert probs.shape == (2, 3, 60, 90)
    assert inference.model_size((60, 90), None, 0.5) == (30, 45)
    assert inference.model_size((10, 12), None, 0.3) == (8, 8)  # the pooling grid's minimum
    info = {"train_scale": 0.3, "train_image_size": None}
    assert inference.resolve_scale(info) == 0.3 and inference.resolve_scale(info, 1.0) == 1.0
    assert inference.resolve_scale(info, image_size=0) == 1.0


def test_tta_uses_the_flips_training_used():
    assert inference.tta_flips(("h",)) == ((), (-1,))
    assert inference.tta_flips(("h", "v")) == inference.FLIPS
    assert inference.tta_flips(True) == inference.FLIPS and inference.tta_flips(False) == ((),)


def test_tta_leaves_out_flips_a_run_without_augmentation_never_saw():
    planned = {"hflip": True, "vflip": False, "flip": True, "augment": True}
    assert utils.training_flips(planned) == ("h",)
    assert utils.training_flips(dict(planned, augment=False)) == ()  # --no-augment
    assert utils.training_flips(dict(planned, overfit_batch=True)) == ()
    assert utils.training_flips({}) == ("h", "v")  # a checkpoint from before plans


# ---------------------------------------------------------------- ImageNet encoder weights

def vgg16_bn_file(folder):
    """A VGG16-BN state dict in torchvision's format (random values), named as torch.hub
    wants it: vgg16_bn-<first 8 hex digits of its SHA-256>.pth."""
    state, channels = {}, [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                           (256, 256)]
    for (inputs, outputs), index in zip(channels, (0, 3, 7, 10, 14, 17, 20)):
        state[f"features.{index}.weight"] = torch.randn(outputs, inputs, 3, 3) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(outputs)
        for name, value in (("weight", torch.ones(outputs)), ("bias", torch.zeros(outputs)),
                            ("running_mean", torch.zeros(outputs)),
                            ("running_var", torch.ones(outputs))):
            state[f"features.{index + 1}.{name}"] = value
    temp = folder / "weights.pth"
    torch.save(state, temp)
    digest = hashlib.sha256(temp.read_bytes()).hexdigest()[:8]
    return temp.rename(folder / f"vgg16_bn-{digest}.pth"), state


def test_imagenet_weights_download_once_with_their_hash_checked(tmp_path, monkeypatch):
    import model
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, state = vgg16_bn_file(tmp_path)
    monkeypatch.setattr(model, "IMAGENET_VGG16_BN", path.as_uri())
    assert not model.imagenet_weights_file().exists()
    loaded = model.load_imagenet_weights(progress=False)
    assert model.imagenet_weights_file().is_file()  # cached
    assert torch.equal(loaded["features.0.weight"], state["features.0.weight"])
    segnet = model.load_vgg16_bn_encoder(SegNet(in_channels=3, num_classes=2), loaded)
    assert torch.equal(segnet.encoders[0].convs[0][0].weight, state["features.0.weight"])
    wrong = tmp_path / "vgg16_bn-00000000.pth"
    wrong.write_bytes(path.read_bytes())
    monkeypatch.setattr(model, "IMAGENET_VGG16_BN", wrong.as_uri())
    with pytest.raises(ValueError, match="could not get the ImageNet VGG16-BN weights"):
        model.load_imagenet_weights(progress=False)


def test_the_plan_uses_cached_imagenet_weights_for_colour_only():
    fp = label_fingerprint()
    assert make_plan(fp, {}, "cpu", imagenet_cached=True).encoder_weights == "imagenet"
    uncached = make_plan(fp, {}, "cpu")
    assert uncached.encoder_weights is None
    assert any("--encoder-weights imagenet" in note for note in uncached.notes)
    grey = label_fingerprint(colour_share=0.0)
    assert make_plan(grey, {}, "cpu", imagenet_cached=True).encoder_weights is None
