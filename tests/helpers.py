"""Helpers the test files share: tiny datasets, untrained models and checkpoints built the way
the code builds them (utils.build_checkpoint). Test files import this, never each other."""
import numpy as np
import torch
from PIL import Image

import dataset
import train
from model import SegNet
from segnet import utils
from segnet.inference import plots


def write_tiny_dataset(root, counts=(("train", 6), ("val", 2)), size=24, seed=0):
    """Index masks with 3 classes: a bright square (1) and a dark bar (2) on a mid background."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(count):
            mask = np.zeros((size, size), dtype=np.uint8)
            top, left = rng.integers(0, size - 10, 2)
            mask[top:top + 8, left:left + 8] = 1
            mask[rng.integers(0, size - 3):][:3, 2:size - 2] = 2
            image = np.choose(mask, [120, 220, 30]).astype(np.float64)
            image += rng.normal(0, 10, image.shape)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / split / "images" / f"img_{index}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"img_{index}.png")
    return root


def random_model(num_classes=3, in_channels=1, seed=0, dropout=0.0):
    """An untrained SegNet in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = SegNet(in_channels=in_channels, num_classes=num_classes, dropout=dropout).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model


def data_info(num_classes=2, in_channels=1):
    """The checkpoint's "data" entry (utils.data_metadata's keys) for index masks."""
    return {"in_channels": in_channels, "ignore_index": 255, "num_classes": num_classes,
            "class_names": [f"class_{c}" for c in range(num_classes)],
            "class_colors": plots.default_colors(num_classes),
            "mask_decoding": {"kind": "index", "num_classes": num_classes, "void_values": []},
            "normalization": {"mean": [0.5] * in_channels, "std": [0.25] * in_channels}}


def save_test_checkpoint(path, num_classes=2, in_channels=1, favour=None, info=None, seed=0,
                         dropout=0.0):
    """A checkpoint of an untrained model; favour=c makes it predict class c everywhere
    (classifier weights 0, bias 5 for c and 0 for the others)."""
    model = random_model(num_classes, in_channels, seed, dropout)
    if favour is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[favour] = 5.0
    utils.save_checkpoint(path, utils.build_checkpoint(
        model, info or data_info(num_classes, in_channels)))
    return path


def write_image(path, height, width, channels=1, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
    return path


def train_two_steps(root, out, *extra):
    """train.py's main on ROOT for two tiny steps (exit status 0 when it trained)."""
    args = train.get_args_parser().parse_args(
        ["--data", str(root), "--out", str(out), "--steps", "2", "--batch-size", "2",
         "--crop-size", "16", "--workers", "0", *extra])
    return train.main(args)


def check_report(root, capsys, *extra):
    """(exit status, printed report) of `python dataset.py check ROOT --no-baseline`."""
    code = dataset.main(["check", str(root), "--no-baseline", *extra])
    return code, capsys.readouterr().out
