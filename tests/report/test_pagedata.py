"""pagedata.py: per-image class scores from a hand-computed confusion, the rows, data.js."""
import json
import math

import torch

from segnet.report import pagedata


def test_class_scores_by_hand():
    # rows true, columns predicted: class 0: 6 right, 2 as 1; class 1: 3 right, 1 as 0;
    # class 2: absent from labels, predicted nowhere; so IoU and recall undefined.
    confusion = torch.tensor([[6, 2, 0], [1, 3, 0], [0, 0, 0]])
    scores = pagedata.class_scores(confusion)
    assert scores["iou"] == [round(6 / 9, 4), round(3 / 6, 4), None]
    assert scores["recall"] == [round(6 / 8, 4), 0.75, None]
    assert scores["support"] == [8, 4, 0]
    predicted_only = pagedata.class_scores(torch.tensor([[1, 1], [0, 0]]))
    assert predicted_only["iou"] == [0.5, 0.0] and predicted_only["recall"] == [0.5, None]


def test_rows_join_scores_files_and_classes_in_the_splits_order():
    per_image = [{"name": "b", "confusion": torch.eye(2, dtype=torch.int64) * 5,
                  "bf_classes": [1.0, math.nan]},
                 {"name": "a", "confusion": torch.tensor([[0, 4], [0, 4]]),
                  "bf_classes": [0.0, 0.5]}]
    ranking = [{"name": "a", "miou": 0.25, "pixel_acc": 0.5, "bf": 0.25},
               {"name": "b", "miou": 1.0, "pixel_acc": 1.0, "bf": 1.0}]
    files = [{"number": 0, "image": "i0"}, {"number": 1, "image": "i1"}]
    rows = pagedata.evaluate_rows(per_image, ranking, files)
    assert [row["name"] for row in rows] == ["b", "a"] and rows[1]["number"] == 1
    assert rows[1]["values"] == {"miou": 0.25, "pixel_acc": 0.5, "bf": 0.25}
    assert rows[0]["classes"]["bf"] == [1.0, None] and rows[1]["classes"]["iou"] == [0.0, 0.5]


def test_predict_rows_read_the_review_rows():
    review = {"file": "x/a.png", "mean_entropy": 0.123456, "uncertain_fraction": 0.5,
              "share_bg": 0.75, "share_fg": 0.25}
    row = pagedata.predict_rows([review], [{"number": 0}], ["bg", "fg"])[0]
    assert row["values"] == {"mean_entropy": 0.1235, "uncertain_fraction": 0.5}
    assert row["classes"] == {"share": [0.75, 0.25]} and row["name"] == "x/a.png"


def test_the_data_script_is_json_with_no_nan_and_no_closing_script_tag():
    data = {"images": [{"name": "</script><b>", "values": {"miou": math.nan}}]}
    text = pagedata.data_script(data)
    assert text.startswith("window.REPORT_DATA = ") and "</script>" not in text
    parsed = json.loads(text[len("window.REPORT_DATA = "):-2].replace("<\\/", "</"))
    assert parsed["images"][0] == {"name": "</script><b>", "values": {"miou": None}}
