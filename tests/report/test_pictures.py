"""pictures.py: an image's files in the page folder; its layers decode back to the labels."""
import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from segnet.report import pictures

COLORS = [[0, 0, 0], [230, 25, 75], [60, 180, 75]]


def decode_layers(path):
    """{name: uint8 array} of a layers/N.js file, and the number it calls REPORT_LAYERS with."""
    text = path.read_text(encoding="ascii")
    match = re.fullmatch(r"REPORT_LAYERS\((\d+), (\{.*\})\);\n", text, re.S)
    layers = {name: np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
              for name, url in json.loads(match.group(2)).items()}
    return int(match.group(1)), layers


def test_label_layer_marks_ignored_and_out_of_range_pixels_unlabelled():
    labels = np.array([[0, 1, 2], [255, 3, -1]])
    assert pictures.label_layer(labels, 3, 255).tolist() == [[0, 1, 2], [255, 255, 255]]
    assert pictures.label_layer(np.array([[15, 1]]), 3, 15).tolist() == [[255, 1]]


@pytest.mark.parametrize("size, side, expected", [((360, 480), 2048, (360, 480)),
                                                  ((3000, 1000), 1500, (1500, 500)),
                                                  ((7, 5), 160, (7, 5))])
def test_fitted_size_scales_down_only(size, side, expected):
    assert pictures.fitted_size(*size, side) == expected


def test_layers_decode_to_the_labels_odd_size_and_with_uncertainty(tmp_path):
    folder = pictures.PageFolder(tmp_path, COLORS)
    rng = np.random.default_rng(0)
    preds, truth = rng.integers(0, 3, (13, 21)), rng.integers(0, 3, (13, 21))
    truth[0, :4] = 255
    uncertainty = rng.random((13, 21))
    folder.add_layers(7, preds, truth, uncertainty)
    number, layers = decode_layers(tmp_path / folder.paths(7)["layers"])
    assert number == 7 and set(layers) == {"pred", "truth", "uncertainty"}
    assert (layers["pred"] == preds).all() and (layers["truth"] == truth).all()
    assert np.abs(layers["uncertainty"] / 255 - uncertainty).max() <= 0.5 / 255 + 1e-6
    files = folder.add_image(7, rng.random((1, 13, 21), dtype=np.float32))
    assert (files["width"], files["height"], files["number"]) == (21, 13, 7)
    assert Image.open(tmp_path / files["image"]).size == (21, 13)


def test_large_images_are_capped_and_labels_stay_labels(tmp_path):
    folder = pictures.PageFolder(tmp_path, COLORS, max_side=200, thumb_side=50)
    preds = np.zeros((300, 500), np.int64)
    preds[:, 250:] = 2
    folder.add_layers(0, preds)
    _, layers = decode_layers(tmp_path / folder.paths(0)["layers"])
    assert layers["pred"].shape == (120, 200) and set(np.unique(layers["pred"])) == {0, 2}
    files = folder.add_image(0, np.zeros((3, 300, 500), np.float32))
    assert Image.open(tmp_path / files["image"]).size == (200, 120)
    assert Image.open(tmp_path / files["thumb"]).size == (50, 30)
    assert (files["full_width"], files["full_height"]) == (500, 300)


def test_the_thumbnail_tints_the_mistakes(tmp_path):
    folder = pictures.PageFolder(tmp_path, COLORS)
    truth = np.zeros((40, 40), np.int64)
    preds = truth.copy()
    preds[:, 20:] = 1  # the right half is wrong
    folder.add_layers(0, preds, truth)
    files = folder.add_image(0, np.full((1, 40, 40), 0.5, np.float32))
    thumb = np.asarray(Image.open(tmp_path / files["thumb"])).astype(int)
    assert thumb[20, 30, 0] > thumb[20, 30, 1] + 80  # red on the wrong side
    assert abs(thumb[20, 5, 0] - thumb[20, 5, 1]) < 10  # grey where right


def test_a_rerun_leaves_no_file_of_the_earlier_page(tmp_path):
    folder = pictures.PageFolder(tmp_path, COLORS)
    for number in range(3):
        folder.add_layers(number, np.zeros((8, 8), np.int64))
        folder.add_image(number, np.zeros((1, 8, 8), np.float32))
    pictures.PageFolder(tmp_path, COLORS)
    assert not any((tmp_path / pictures.FILES).rglob("*.*"))


def test_too_many_classes_for_a_layer_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="at most 255 classes"):
        pictures.PageFolder(tmp_path, [[0, 0, 0]] * 256)
