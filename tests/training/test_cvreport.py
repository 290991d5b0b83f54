"""The CV report (training/cvreport.py): the pooled scores equal a hand computation, each fold's
length and times are kept, and the lines say the time against the budget."""
import numpy as np
import pytest
import torch

from segnet.inference import measures
from segnet.training import cvreport


def fold_score(fold, matrix, steps=211):
    return {"fold": fold, "steps": steps, "class_names": ["a", "b"], "seconds": 9.5,
            "train_seconds": 100.0, "confusion": matrix,
            "images": [{"name": f"i{fold}", "miou": 0.5}], "images_count": 1}


def test_cv_report_pools_every_held_out_image_as_by_hand():
    scores = [fold_score(0, [[3, 1], [0, 4]]), fold_score(1, [[2, 0], [2, 2]])]
    report = cvreport.cv_report(scores, {"hash": "h", "folds": 2}, [],
                                {"budget_seconds": 600.0, "seconds": 590.0})
    pooled = np.array([[5, 1], [2, 6]])  # the sum: IoU a = 5 / (5 + 1 + 2), b = 6 / (6 + 1 + 2)
    assert report["pooled"]["miou"] == pytest.approx((5 / 8 + 6 / 9) / 2)
    first, second = (3 / 4 + 4 / 5) / 2, (2 / 4 + 2 / 4) / 2
    assert [entry["miou"] for entry in report["folds"]] == pytest.approx([first, second])
    assert report["fold_mean"] == pytest.approx((first + second) / 2)
    assert report["fold_std"] == pytest.approx(abs(first - second) / 2)
    assert report["confusion"] == pooled.tolist()
    assert report["pooled"] == measures.metrics_from_confusion(torch.tensor(pooled), ["a", "b"])
    assert report["images"] == [{"name": "i0", "miou": 0.5, "fold": 0},
                                {"name": "i1", "miou": 0.5, "fold": 1}]
    assert report["folds"][1] == dict(report["folds"][1], steps=211, train_seconds=100.0,
                                      score_seconds=9.5, images=1)
    lines = cvreport.report_lines(report)
    assert "  steps: 211, 211" in lines
    assert "  time: 9.83 min of the 10.00 min budget (from the command's start to this report)" \
        in lines
