"""`python dataset.py check` on the mistakes real datasets hold (issue 15): duplicates, EXIF
orientation, void labels, problem counts, binary wording, colour, unused folders, mixed sizes,
labels in alpha, instance labels. Each test builds its tiny dataset in tmp_path."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from segnet.data.check.scan import inspect_dataset
from segnet.data.feed.dataset import SegmentationDataset
from segnet.data.pixels.images import load_image, to_model_array

ROTATED = 6  # EXIF orientation: viewers rotate the stored pixels 90 degrees clockwise


def save(path, array, **options):
    """An array (or PIL image) as an image file, creating the folder; options go to save()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(path, **options)
    return path


def grey(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def stripes(height, width, values=(0, 1, 2)):
    """Vertical stripes of the values, so every value is present."""
    row = np.array(values)[np.arange(width) * len(values) // width]
    return np.broadcast_to(row, (height, width)).astype(np.uint8)


def pair(root, split, stem, image, mask, image_ext=".png", **options):
    save(root / split / "images" / f"{stem}{image_ext}", image, **options)
    save(root / split / "masks" / f"{stem}.png", mask)


def small_dataset(root, values=(0, 1, 2), size=(16, 16)):
    """train a, b and val c: distinct random images, striped masks."""
    for split, stem, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        pair(root, split, stem, grey(*size, seed), stripes(*size, values))
    return root


def rotated_exif():
    exif = Image.Exif()
    exif[0x0112] = ROTATED
    return exif


def check_output(root, capsys, *flags):
    """(exit status, printed report) of `python dataset.py check ROOT --no-baseline FLAGS`."""
    status = dataset.main(["check", str(root), "--no-baseline", *flags])
    return status, capsys.readouterr().out


# --------------------------------------------------------------------------- 1 duplicates


def test_same_image_with_different_masks_is_named_with_the_pixels_that_differ(tmp_path, capsys):
    small_dataset(tmp_path)
    other = stripes(16, 16).copy()
    other[:2] = 0  # 2 rows of 16: pixels of classes 1 and 2 become 0
    pair(tmp_path, "train", "copy", grey(16, 16, 0), other)
    info, problems = inspect_dataset(tmp_path)
    assert not problems and info["duplicates"]["different_masks"] == 1
    [warning] = [w for w in info["warnings"] if "different masks" in w]
    assert "train: " in warning and "copy.png = " in warning and "a.png" in warning
    expected = int((other != stripes(16, 16)).sum())
    assert f"differ in {expected} of 256 pixels" in warning
    status, report = check_output(tmp_path, capsys)
    assert status == 0 and "1 within a split with different masks" in report


def test_an_image_in_two_splits_makes_the_later_split_optimistic(tmp_path):
    small_dataset(tmp_path)
    pair(tmp_path, "val", "leak", grey(16, 16, 1), stripes(16, 16))  # train/b's image
    info, _ = inspect_dataset(tmp_path)
    assert info["duplicates"]["across_splits"] == {"train/val": 1}
    [warning] = [w for w in info["warnings"] if "also in train" in w]
    assert "leak.png" in warning and "b.png" in warning and "val scores are optimistic" in warning


def test_copies_with_the_same_mask_are_counted_and_noted(tmp_path):
    small_dataset(tmp_path)
    pair(tmp_path, "train", "copy", grey(16, 16, 0), stripes(16, 16))
    info, _ = inspect_dataset(tmp_path)
    assert info["duplicates"] == {"same_mask": 1, "different_masks": 0, "across_splits": {}}
    assert not any("twice" in warning for warning in info["warnings"])
    assert any("copy.png" in note and "counts twice" in note for note in info["notes"])


def test_no_duplicates_reported_as_none(tmp_path, capsys):
    small_dataset(tmp_path)
    assert "duplicate images (identical pixels): none" in check_output(tmp_path, capsys)[1]


# --------------------------------------------------------------------------- 2 EXIF orientation


def test_images_are_read_as_viewers_show_them(tmp_path, capsys):
    """A JPEG stored 40x48 with orientation 6 is shown (and read) as 48x40: its 48x40 mask
    fits, in the scan, the dataset, load_image and to_model_array alike."""
    stored = np.zeros((40, 48), np.uint8)
    stored[:, :8] = 255  # a bright band on the stored left side: shown at the top
    small_dataset(tmp_path)
    pair(tmp_path, "train", "photo", stored, stripes(48, 40, (0, 1)), ".jpg", exif=rotated_exif(),
         quality=100)
    path = tmp_path / "train" / "images" / "photo.jpg"
    image = load_image(path, 1)
    assert image.shape == (1, 48, 40)
    assert image[0, :8].mean() > 0.9 and image[0, 10:].mean() < 0.1
    assert np.array_equal(to_model_array(Image.open(path), 1), image)
    info, problems = inspect_dataset(tmp_path)
    assert not problems and info["exif_oriented"] == 1
    samples = SegmentationDataset(tmp_path, "train", info)
    assert samples[samples.names.index("photo")][0].shape == (1, 48, 40)
    report = check_output(tmp_path, capsys)[1]
    assert "1 image(s) carry an EXIF orientation tag" in report and "photo.jpg" in report


def test_a_mask_drawn_on_the_stored_pixels_is_explained(tmp_path):
    small_dataset(tmp_path)
    pair(tmp_path, "train", "photo", grey(40, 48), stripes(40, 48), ".jpg", exif=rotated_exif())
    _, problems = inspect_dataset(tmp_path)
    [problem] = problems
    assert "photo.jpg is 48x40 as viewers show it" in problem
    assert "stored 40x48" in problem and "rotated 90° clockwise" in problem
    assert "photo.png is 40x48, the stored size" in problem and "Orientation" in problem


def test_a_mask_with_an_orientation_tag_is_read_as_stored_and_warned_about(tmp_path):
    small_dataset(tmp_path)
    save(tmp_path / "train" / "masks" / "a.png", stripes(16, 16), exif=rotated_exif())
    info, problems = inspect_dataset(tmp_path)
    assert not problems
    assert any("1 mask(s) carry an EXIF orientation tag" in w and "a.png" in w
               for w in info["warnings"])
    samples = SegmentationDataset(tmp_path, "train", info)
    assert torch.equal(samples[0][1], torch.from_numpy(stripes(16, 16).astype(np.int64)))


def test_many_size_mismatches_are_one_problem_with_their_count(tmp_path, capsys):
    small_dataset(tmp_path)
    for stem in "ab":
        save(tmp_path / "train" / "masks" / f"{stem}.png", stripes(16, 12))
    _, problems = inspect_dataset(tmp_path)
    [problem] = problems
    assert problem.startswith("size mismatch: image") and "the same in 1 more pair(s)" in problem
    assert problem.files == 4
    assert "1 problem(s), covering 4 file(s)" in check_output(tmp_path, capsys)[1]


# --------------------------------------------------------------------------- 3 void labels


def void_dataset(root):
    """Index masks 0..11 where 11 (unlabelled) is in every mask."""
    for split, stem, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        pair(root, split, stem, grey(12, 24, seed), stripes(12, 24, tuple(range(12))))
    return root


def test_an_extra_value_in_most_masks_offers_the_ignore_index(tmp_path):
    void_dataset(tmp_path)
    _, problems = inspect_dataset(tmp_path, num_classes=11)
    assert len(problems) == 2  # train (2 masks) and val
    assert "--num-classes 12" in problems[0] and "pass --ignore-index 11 instead" in problems[0]
    info, problems = inspect_dataset(tmp_path, num_classes=11, ignore_index=11)
    assert not problems and info["num_classes"] == 11 and info["ignore_pixels"] == 2 * 12 * 2


def test_a_plain_check_hints_at_void_for_the_highest_id(tmp_path):
    void_dataset(tmp_path)
    info, problems = inspect_dataset(tmp_path)
    assert not problems and info["num_classes"] == 12
    assert any("highest id, 11, is in 100% of the train masks" in note
               and "--ignore-index 11" in note for note in info["notes"])


def test_a_class_table_naming_void_is_warned_about(tmp_path):
    void_dataset(tmp_path)
    names = [{"name": f"class {index}"} for index in range(11)] + [{"name": "Unlabelled"}]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": names}))
    info, problems = inspect_dataset(tmp_path)
    assert not problems
    assert any("class 11 is named 'Unlabelled'" in w and '"void": true' in w
               for w in info["warnings"])


# --------------------------------------------------------------------------- 4 problem counts


def test_a_problem_says_how_many_masks_it_covers(tmp_path, capsys):
    for index in range(7):
        pair(tmp_path, "train", f"t{index}", grey(10, 12, index), stripes(10, 12))
    for index in range(5):
        pair(tmp_path, "val", f"v{index}", grey(10, 12, 20 + index), stripes(10, 12, (0, 1, 7)))
    _, problems = inspect_dataset(tmp_path)
    [problem] = problems
    assert problem.files == 5 and "v0.png has values {0, 1, 7} ({7} fit no class)" in problem
    assert "the same in 4 more mask(s)" in problem and "v4.png" in problem
    status, report = check_output(tmp_path, capsys)
    assert status == 1 and "1 problem(s), covering 5 file(s)" in report


# --------------------------------------------------------------------------- 5 binary wording


def test_binary_0_255_report_says_255_is_the_foreground(tmp_path, capsys):
    small_dataset(tmp_path, values=(0, 255))
    report = check_output(tmp_path, capsys)[1]
    assert "255 is the foreground, not the ignore index, so no pixel is ignored" in report
    assert "ignore index 255: 0 train pixels" not in report


# --------------------------------------------------------------------------- 6 colour


def test_real_colour_and_grey_stored_as_rgb_are_told_apart(tmp_path):
    small_dataset(tmp_path, values=(0, 1))
    colour = np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save(tmp_path / "train" / "images" / "a.png", colour)
    save(tmp_path / "train" / "images" / "b.png", np.repeat(grey(16, 16, 1)[..., None], 3, 2))
    info, _ = inspect_dataset(tmp_path)
    assert info["rgb_converted"] == 2
    [warning] = [w for w in info["warnings"] if "RGB -> grey" in w]
    assert warning.startswith("1 image(s) in colour") and "a.png" in warning
    assert "colour is discarded" in warning and "--in-channels 3" in warning
    spread = (colour.max(2) - colour.min(2)).mean() / 255
    assert f"differ by {spread:.1%} of the range" in warning
    assert any("1 image(s) are grey stored as RGB" in note and "b.png" in note
               and "nothing is lost" in note for note in info["notes"])


# --------------------------------------------------------------------------- 7 unused folders


def test_folders_the_check_does_not_read_are_listed(tmp_path, capsys):
    small_dataset(tmp_path)
    for folder in ("fov", "test_unlabeled", "train/fov", "val/images/extra", ".git"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "README.md").write_text("about the data")
    (tmp_path / "train.txt").write_text("a\nb\n")
    info, problems = inspect_dataset(tmp_path)
    assert not problems
    # val/images/extra/ is read: subfolders of a data folder pair by relative path
    assert info["unused"] == ["fov/", "test_unlabeled/", "train.txt", "train/fov/"]
    assert "not read by the check or by training: fov/, test_unlabeled/" in \
        check_output(tmp_path, capsys)[1]


# --------------------------------------------------------------------------- 8 mixed sizes


def test_a_few_distinct_sizes_are_listed_with_their_counts(tmp_path, capsys):
    small_dataset(tmp_path)
    pair(tmp_path, "train", "tall", grey(20, 16, 7), stripes(20, 16))
    pair(tmp_path, "train", "wide", grey(16, 24, 8), stripes(16, 24))
    info, _ = inspect_dataset(tmp_path)
    sizes = info["image_sizes"]["train"]
    assert sizes["distinct"] == 3 and sizes["min"] == [16, 16] and sizes["max"] == [20, 24]
    assert sizes["counts"][0] == [16, 16, 2] and sorted(sizes["counts"][1:]) == [
        [16, 24, 1], [20, 16, 1]]
    report = check_output(tmp_path, capsys)[1]
    assert "train sizes: 16x16 (2), " in report and "20x16 (1)" in report


def test_many_sizes_keep_the_range(tmp_path, capsys):
    for index in range(6):
        pair(tmp_path, "train", f"t{index}", grey(10 + index, 12, index), stripes(10 + index, 12))
    pair(tmp_path, "val", "v", grey(10, 12, 9), stripes(10, 12))
    report = check_output(tmp_path, capsys)[1]
    assert "10..15 x 12..12 (6 sizes)" in report and "train sizes:" not in report
    info, _ = inspect_dataset(tmp_path)
    assert sorted(info["image_sizes"]["train"]["counts"]) == [[10 + index, 12, 1]
                                                              for index in range(6)]


# --------------------------------------------------------------------------- 9 labels in alpha


def test_labels_in_the_alpha_channel_are_explained(tmp_path):
    small_dataset(tmp_path)
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        rgba = np.zeros((16, 16, 4), np.uint8)
        rgba[..., 3] = stripes(16, 16, (0, 255))
        save(tmp_path / split / "masks" / f"{stem}.png", rgba)
    _, problems = inspect_dataset(tmp_path)
    [problem] = problems
    assert "labels appear to be in the alpha channel (2 of 2 masks" in problem
    assert "alpha {0, 255}" in problem and 'getchannel("A")' in problem
    assert "only one class" not in problem


# --------------------------------------------------------------------------- 10 instance labels


def instance_masks(root, ids_of):
    """16-bit masks with one id per 4x4 object: ids_of(index) gives a mask's object ids."""
    for index, (split, stem) in enumerate((("train", "a"), ("train", "b"), ("val", "c"))):
        mask = np.zeros((16, 16), np.uint16)
        for number, object_id in enumerate(ids_of(index)):
            top, left = 5 * (number // 3), 5 * (number % 3)
            mask[top:top + 4, left:left + 4] = object_id
        pair(root, split, stem, grey(16, 16, index), mask)


def test_instance_labels_are_recognised(tmp_path):
    instance_masks(tmp_path, lambda index: [100 * index + 37 * k + 1 for k in range(6)])
    _, problems = inspect_dataset(tmp_path)
    [problem] = problems
    assert "look like instance labels (one id per object" in problem
    assert "--mask-threshold 1 (every non-zero id becomes foreground)" in problem
    assert "grey levels chosen for display" not in problem
    info, problems = inspect_dataset(tmp_path, mask_threshold=1)
    assert not problems and info["class_pixels"][1] == 2 * 6 * 16


def test_consecutive_instance_ids_are_read_but_warned_about(tmp_path):
    instance_masks(tmp_path, lambda index: range(1, 7 - index))
    info, problems = inspect_dataset(tmp_path)
    assert not problems and info["num_classes"] == 7
    assert any(w.startswith("read as 7 classes, but the masks look like instance labels")
               for w in info["warnings"])


def test_a_clean_dataset_has_no_warnings_and_no_problems(tmp_path):
    small_dataset(tmp_path, values=(0, 1))
    info, problems = inspect_dataset(tmp_path)
    assert not problems and not info["warnings"]
    assert info["duplicates"] == {"same_mask": 0, "different_masks": 0, "across_splits": {}}
    assert info["unused"] == [] and info["exif_oriented"] == 0
    json.dumps(info)


@pytest.mark.parametrize("orientation,expected", [
    (3, lambda stored: stored[::-1, ::-1]), (8, lambda stored: np.rot90(stored))])
def test_orientations_match_what_pillow_shows(tmp_path, orientation, expected):
    stored = grey(10, 14, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "a.png", stored, exif=exif)
    assert np.array_equal(load_image(path, 1)[0], expected(stored) / np.float32(255))
