"""sections.py and contents.py: the static fragments escape the data, the heat map carries
its counts, the folds sit beside the ensemble, a page's slots are all filled."""
import re

import torch

from segnet.report import contents, page, sections

COLORS = [[0, 0, 0], [230, 25, 75]]


def test_names_from_the_data_are_escaped():
    html = sections.facts([("class", "<script>alert(1)</script>"), ("skipped", None)])
    assert "<script>" not in html and "&lt;script&gt;" in html and "skipped" not in html
    table = sections.predict_classes([{"classes": {"share": [0.5, None]}}], ["a&b", "<i>"],
                                     COLORS)
    assert "a&amp;b" in table and "&lt;i&gt;" in table


def test_the_heat_map_shades_by_row_share_and_hovers_the_count():
    confusion = torch.tensor([[90, 10], [0, 0]])
    html = sections.confusion_heat_map(confusion, ["road", "pole"], COLORS)
    cells = re.findall(r'<td style="([^"]*)" title="([^"]*)">([^<]*)</td>', html)
    assert [text for _, _, text in cells] == ["0.90", "0.10", "0.00", "0.00"]
    assert cells[0][1] == "true road, predicted road: 90 pixels (90.0% of road)"
    assert "color: #fff" in cells[0][0] and "color: #000" in cells[1][0]


def test_folds_sit_beside_the_ensemble():
    folds = [{"checkpoint": "f0/last.pt", "miou": 0.5, "pixel_acc": 0.9, "iou": [0.8, 0.2]},
             {"checkpoint": "f1/last.pt", "miou": 0.6, "pixel_acc": 0.91}]  # an older report
    metrics = {"miou": 0.7, "pixel_acc": 0.95, "per_class": [{"iou": 0.9}, {"iou": 0.5}]}
    html = sections.folds_beside_ensemble(folds, metrics, ["road", "pole"])
    header = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert header == ["model", "f0/last.pt", "f1/last.pt", "ensemble of 2"]
    rows = re.findall(r"<tr>(.*?)</tr>", html)[1:]
    assert re.findall(r">([\d.-]+)</td>", rows[0]) == ["0.5000", "0.6000", "0.7000"]
    assert re.findall(r">([\d.-]+)</td>", rows[3]) == ["0.2000", "-", "0.5000"]


def report_dict(**extra):
    per_class = [{"name": "road", "iou": 0.9, "dice": 0.95, "precision": 0.9, "recall": 1.0,
                  "support": 100}, {"name": "pole", "iou": float("nan"), "dice": float("nan"),
                                    "precision": float("nan"), "recall": 0.0, "support": 5}]
    return {"split": "test", "images": 2, "data": "d", "checkpoint": "c.pt",
            "pixel_acc": 0.9, "mean_acc": 0.5, "miou": 0.9, "mean_dice": 0.95, "mean_bf": 0.7,
            "bf_tolerance": 0.0075, "bf": [{"bf": 0.7}, {"bf": float("nan")}],
            "calibration": {"ece": 0.01, "pixels": 105}, "tta_flips": [],
            "health": ["class 'pole' (4.8% of the labelled pixels) is never predicted"],
            "per_class": per_class, "confusion_matrix": [[100, 0], [5, 0]], **extra}


def test_evaluate_values_fill_every_slot_and_mark_the_unhealthy_class(tmp_path):
    values = contents.evaluate_values(report_dict(), COLORS, tmp_path, [])
    html = page.fill((page.PAGE / "report.html").read_text(), values)
    assert "{{" not in html and "<!-- if" not in html
    assert 'id="folds"' not in html and 'id="training"' not in html  # neither was given
    pole_row = re.search(r"<tr><td>.*?pole.*?</tr>", html).group(0)
    assert "health-mark" in pole_row and "health-mark" not in html.split("pole")[0]
    assert "is never predicted" in html and "0.0075" not in html and "0.75%" in html


def test_predict_values_leave_out_the_labelled_sections():
    rows = [{"classes": {"share": [1.0, 0.0]}}, {"classes": {"share": [0.5, 0.5]}}]
    values = contents.predict_values("m.pt", rows, {"class_names": ["road", "pole"]}, COLORS,
                                     failures=1, mc_samples=0)
    html = page.fill((page.PAGE / "report.html").read_text(), values)
    for section in ("confusion", "calibration", "folds", "training"):
        assert f'id="{section}"' not in html
    assert "could not be read" in html and re.search(r"pole</td><td[^>]*>0.2500</td>"
                                                     r"<td[^>]*>1</td>", html)
