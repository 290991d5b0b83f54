"""measures.py: boundary F1 and ECE against hand-computed values, review rows."""
import math

import numpy as np
import pytest
import torch

from segnet.inference import measures

IGNORE = 255


def square(top, left, size=20, shape=(40, 40)):
    labels = np.zeros(shape, np.int64)
    labels[top:top + size, left:left + size] = 1
    return labels


# ---------------------------------------------------------------- boundary F1

def test_a_square_one_pixel_off_scores_1_within_the_tolerance_and_the_hand_value_outside():
    truth, shifted = square(10, 10), square(10, 11)
    # 40x40: the diagonal is 56.6 px. 2% of it (1.13 px) covers the 1-pixel shift.
    assert measures.image_boundary_f1(shifted, truth, 2, tolerance=0.02).tolist() == [1.0, 1.0]
    # 0.75% is 0.42 px: only exact matches. The square's inner ring (76 px) and the shifted one
    # share their top and bottom rows but the corners at columns 10 and 30: 2 x 19 pixels, so
    # precision = recall = 38 / 76. The background's ring (80 px, no corners) shares 2 x 19 too.
    bf = measures.image_boundary_f1(shifted, truth, 2)
    assert bf[1] == pytest.approx(0.5) and bf[0] == pytest.approx(38 / 80)


def test_a_class_is_averaged_over_the_images_that_hold_it_and_a_missing_class_left_out():
    boundary = measures.BoundaryF1(num_classes=3)
    truth = square(10, 10)
    boundary.update(square(10, 11), truth)             # classes 0, 1: 0.475, 0.5
    boundary.update(truth, truth)                       # both 1
    boundary.update(np.zeros((40, 40), np.int64), np.zeros((40, 40), np.int64))  # class 0: 1
    result = boundary.compute(["background", "square", "absent"])
    assert result["bf"] == [
        {"name": "background", "bf": pytest.approx((0.475 + 1 + 1) / 3), "images": 3},
        {"name": "square", "bf": pytest.approx(0.75), "images": 2},
        {"name": "absent", "bf": pytest.approx(math.nan, nan_ok=True), "images": 0}]
    assert result["mean_bf"] == pytest.approx(((0.475 + 2) / 3 + 0.75) / 2)


def test_ignored_pixels_are_neither_boundary_nor_scored():
    truth = square(10, 10)
    truth[:, 25:] = IGNORE  # the square's right side is not labelled
    noisy = square(10, 10)
    noisy[:, 25:] = np.random.default_rng(0).integers(0, 2, (40, 15))
    assert measures.image_boundary_f1(noisy, truth, 2, IGNORE).tolist() == [1.0, 1.0]
    # The square's labelled part ends at column 24 in both maps: that cut is boundary in both.
    moved = square(10, 9)
    moved[:, 25:] = 0
    bf = measures.image_boundary_f1(moved, truth, 2, IGNORE)
    assert 0 < bf[1] < 1


def test_a_class_predicted_where_it_is_absent_lowers_the_class_it_covers():
    background = np.zeros((40, 40), np.int64)
    bf = measures.image_boundary_f1(square(10, 10), background, 2)
    assert bf[0] == 0.0 and math.isnan(bf[1])  # no true edge, a predicted one; 1 not scored
    assert measures.image_boundary_f1(background, background, 2)[0] == 1.0


# ---------------------------------------------------------------- calibration

def test_ece_by_hand():
    # Four labelled pixels (and an ignored, confidently wrong one that must not count):
    # confidence 0.9 right, 0.65 wrong, 0.45 right, 0.55 right.
    probs = torch.tensor([[0.90, 0.65, 0.45, 0.20, 0.99],
                          [0.05, 0.25, 0.30, 0.55, 0.00],
                          [0.05, 0.10, 0.25, 0.25, 0.01]]).reshape(3, 1, 5)
    mask = torch.tensor([[0, 1, 0, 1, IGNORE]])
    calibration = measures.Calibration(num_classes=3, ignore_index=IGNORE)
    calibration.update(probs, probs.argmax(0), mask)
    result = calibration.compute()
    assert result["ece"] == pytest.approx((0.1 + 0.65 + 0.55 + 0.45) / 4)
    assert result["pixels"] == 4 and len(result["bins"]) == 15
    filled = {index: entry for index, entry in enumerate(result["bins"]) if entry["count"]}
    # bins (i/15, (i+1)/15]: 0.45 -> 6, 0.55 -> 8, 0.65 -> 9, 0.9 -> 13
    assert sorted(filled) == [6, 8, 9, 13]
    assert [filled[i]["accuracy"] for i in (6, 8, 9, 13)] == [1.0, 1.0, 0.0, 1.0]
    assert filled[9]["confidence"] == pytest.approx(0.65)
    assert math.isnan(result["bins"][0]["accuracy"])


def synthetic(confidence, right, rng):
    """Binary probs [2, 1, N] with top class 0 at `confidence`, labels right where `right`."""
    probs = torch.from_numpy(np.stack([confidence, 1 - confidence])[:, None]).float()
    mask = torch.from_numpy(np.where(right, 0, 1)[None])
    return probs, mask


def test_calibrated_probabilities_give_an_ece_near_0_and_overconfident_ones_do_not():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    calibrated = measures.Calibration(num_classes=2)
    probs, mask = synthetic(confidence, rng.random(confidence.size) < confidence, rng)
    calibrated.update(probs, probs.argmax(0), mask)
    assert calibrated.compute()["ece"] < 0.005
    overconfident = measures.Calibration(num_classes=2)
    probs, mask = synthetic(np.full(100_000, 0.99), rng.random(100_000) < 0.7, rng)
    overconfident.update(probs, probs.argmax(0), mask)
    assert overconfident.compute()["ece"] == pytest.approx(0.29, abs=0.01)


# ---------------------------------------------------------------- review list

def test_review_row_by_hand_and_in_chunks(monkeypatch):
    probs = torch.tensor([[1.0, 0.4, 0.5, 0.0], [0.0, 0.6, 0.5, 1.0]]).reshape(2, 4, 1)
    row = measures.review_row("a.png", probs, ["bg", "fg"])
    entropy = (-(0.4 * math.log(0.4) + 0.6 * math.log(0.6)) + math.log(2)) / 4
    # The 0.5 / 0.5 pixel's argmax is class 0 (the first of a tie).
    assert row == {"file": "a.png", "mean_entropy": pytest.approx(entropy),
                   "uncertain_fraction": 0.0, "share_bg": 0.5, "share_fg": 0.5}
    probs = torch.softmax(torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0)), 0)
    whole = measures.review_row("b.png", probs, ["x", "y", "z"])
    monkeypatch.setattr(measures, "REVIEW_ROWS", 2)
    assert measures.review_row("b.png", probs, ["x", "y", "z"]) == pytest.approx(whole)
    assert whole["uncertain_fraction"] > 0


def test_review_rows_sort_most_uncertain_first():
    rows = [{"file": name, "mean_entropy": entropy, "uncertain_fraction": fraction}
            for name, entropy, fraction in (("a", 0.1, 0.0), ("b", 0.5, 0.2), ("c", 0.1, 0.3))]
    assert [row["file"] for row in measures.sort_for_review(rows)] == ["b", "c", "a"]
