"""The data the page's script reads (report_files/data.js, `window.REPORT_DATA = {...}`): the
classes and their colours, the layers drawn, the measures an image can be sorted and filtered by,
and one row per image. Built once here from evaluate's or predict's results."""
import json
import math

import torch

from segnet import utils

DECIMALS = 4  # scores to 4 decimals, as evaluate prints them: a 10,000-image page stays small

# Each measure: its key in a row's values (or classes), a label, a short one for the viewer's
# table, and whether higher is better (which end "worst first" starts from).
EVALUATE_MEASURES = [{"key": "miou", "label": "mIoU", "short": "mIoU", "better": "high"},
                     {"key": "pixel_acc", "label": "pixel accuracy", "short": "pixel acc.",
                      "better": "high"},
                     {"key": "bf", "label": "boundary F1", "short": "BF", "better": "high"}]
EVALUATE_CLASS_MEASURES = [{"key": "iou", "label": "IoU", "short": "IoU", "better": "high"},
                           {"key": "recall", "label": "recall (share found)", "short": "recall",
                            "better": "high"},
                           {"key": "bf", "label": "boundary F1", "short": "BF",
                            "better": "high"},
                           {"key": "support", "label": "labelled pixels", "short": "pixels",
                            "better": "high"}]
PREDICT_MEASURES = [{"key": "mean_entropy", "label": "mean entropy", "short": "entropy",
                     "better": "low"},
                    {"key": "uncertain_fraction", "label": "uncertain share",
                     "short": "uncertain", "better": "low"}]
PREDICT_CLASS_MEASURES = [{"key": "share", "label": "predicted share", "short": "share",
                           "better": "high"}]

def rounded(value):
    """A float to DECIMALS places; None for NaN or None (undefined: sorted last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), DECIMALS)


def class_scores(confusion):
    """{iou, recall, support} per class of one image's confusion [K, K] (rows true). IoU is
    None where the class is in neither labels nor prediction, recall where it is not in the
    labels: such an image says nothing about the class and is left out of its filter."""
    confusion = torch.as_tensor(confusion).double()
    hits, support, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
    union = support + predicted - hits
    return {"iou": [rounded(h / u) if u > 0 else None for h, u in zip(hits.tolist(),
                                                                   union.tolist())],
            "recall": [rounded(h / s) if s > 0 else None for h, s in zip(hits.tolist(),
                                                                      support.tolist())],
            "support": [int(s) for s in support.tolist()]}


def classes(info, colors):
    """[{name, color}] in class order."""
    return [{"name": name, "color": list(color)} for name, color in zip(info["class_names"],
                                                                       colors)]


def evaluate_rows(per_image, ranking, files):
    """One row per scored image, in the split's order: {name, image, thumb, layers, width,
    height, values: {miou, pixel_acc, bf}, classes: {iou, recall, bf, support}}. per_image:
    evaluate_split's entries (with "bf_classes"); ranking: evaluate.rank_images'; files: the
    {image, thumb, layers, width, height} of each, in the same order."""
    scores = {score["name"]: score for score in ranking}
    rows = []
    for entry, paths in zip(per_image, files):
        score = scores[entry["name"]]
        per_class = class_scores(entry["confusion"])
        per_class["bf"] = [rounded(value) for value in entry.get("bf_classes", [])]
        rows.append({"name": entry["name"], **paths,
                     "values": {key: rounded(score[key]) for key in ("miou", "pixel_acc", "bf")},
                     "classes": per_class})
    return rows


def predict_rows(reviews, files, class_names):
    """One row per predicted image: values {mean_entropy, uncertain_fraction}, classes
    {share}. reviews: measures.review_row's dicts; files as in evaluate_rows."""
    return [{"name": review["file"], **paths,
             "values": {"mean_entropy": rounded(review["mean_entropy"]),
                        "uncertain_fraction": rounded(review["uncertain_fraction"])},
             "classes": {"share": [rounded(review[f"share_{name}"]) for name in class_names]}}
            for review, paths in zip(reviews, files)]


def page_data(kind, title, info, colors, rows, layers, sort):
    """The page's whole data. kind: "evaluate" or "predict"; layers: the layer names drawn
    (truth, pred, errors, uncertainty); sort: {key, order} it opens with."""
    evaluate = kind == "evaluate"
    return {"kind": kind, "title": title, "classes": classes(info, colors),
            "layers": layers, "sort": sort,
            "measures": EVALUATE_MEASURES if evaluate else PREDICT_MEASURES,
            "class_measures": EVALUATE_CLASS_MEASURES if evaluate else PREDICT_CLASS_MEASURES,
            "images": rows}


def data_script(data):
    """data.js's text: loaded by a script tag, which works from file:// where fetch() of a
    JSON file does not. `</` is escaped so that no name can close a script element."""
    text = json.dumps(utils.json_safe(data), separators=(",", ":"), allow_nan=False)
    return "window.REPORT_DATA = " + text.replace("</", "<\\/") + ";\n"
