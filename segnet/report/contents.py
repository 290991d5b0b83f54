"""What each page shows: the slot values of report.html and the page data, for evaluate.py
(from its report.json dict) and for predict.py (from its review rows)."""
from pathlib import Path

from segnet.inference import plots
from segnet.report import pagedata, sections, trainingrun
from segnet.report.pictures import FILES


def number(value):
    return sections.number(value)


def evaluate_facts(report):
    """(label, value) rows of the summary: what was scored and the split's measures."""
    calibration = report["calibration"]
    ece = number(calibration["ece"]) + (
        f" (MC-dropout mean of {calibration['mc_dropout']['mc_samples']}: "
        f"{number(calibration['mc_dropout']['ece'])})" if "mc_dropout" in calibration else "")
    uncertainty = report.get("uncertainty")
    checkpoint = report["checkpoint"]
    return [("checkpoint", ", ".join(checkpoint) if isinstance(checkpoint, list) else checkpoint),
            ("data", report["data"]), ("split", report["split"]),
            ("images", f"{report['images']:,}"),
            ("global pixel accuracy (G)", number(report["pixel_acc"])),
            ("class-average accuracy (C)", number(report["mean_acc"])),
            ("mIoU", number(report["miou"])), ("mean Dice", number(report["mean_dice"])),
            ("mean boundary F1 (BF)", f"{number(report['mean_bf'])} (tolerance "
                                      f"{report['bf_tolerance']:.2%} of the diagonal)"),
            ("calibration (ECE)", ece),
            ("test-time flips", ", ".join(report["tta_flips"]) or "none"),
            ("uncertainty", None if not uncertainty else
             f"mean predictive entropy {number(uncertainty['mean_entropy_correct'])} nats on "
             f"correct pixels, {number(uncertainty['mean_entropy_incorrect'])} on wrong ones "
             f"({uncertainty['mc_samples']} MC dropout samples)")]


def training_values(out, folders):
    """{curves, plan, training}: each run folder's validation curves (drawn from its
    metrics.csv into report_files/) and the plan table of the first that has one."""
    drawn = []
    for index, folder in enumerate(folders):
        rows = trainingrun.metrics_rows(folder)
        if rows:
            name = f"curves_{index}.png"
            plots.plot_curves(Path(out) / FILES / name, rows)
            drawn.append((f"{FILES}/{name}", f"{folder}: metrics.csv"))
    plans = [lines for lines in map(trainingrun.plan_lines, folders) if lines]
    plan = sections.preformatted(plans[0]) if plans else ""
    return {"curves": sections.figures(drawn), "plan": plan, "training": bool(drawn or plan)}


def evaluate_values(report, colors, out, folders):
    """report.html's slots for evaluate.py: report is the report.json dict."""
    names = [entry["name"] for entry in report["per_class"]]
    calibration = report["calibration"]
    return {"title": f"{report['split']} split: mIoU {number(report['miou'])}",
            "subtitle": f"evaluate.py: {report['images']:,} images of {report['data']}",
            "facts": sections.facts(evaluate_facts(report)),
            "health": sections.health_notes(report["health"]),
            "classes": sections.evaluate_classes(report, report, report["health"], colors),
            "classes_note": ("! marks a class a health note names. " if report["health"]
                             else "") + "BF: boundary F1, the mean over the images whose "
                                        "labels hold the class.",
            "confusion": sections.confusion_heat_map(report["confusion_matrix"], names, colors),
            "calibration": f"Expected calibration error {number(calibration['ece'])} over "
                           f"{calibration['pixels']:,} labelled pixels; on the diagonal is "
                           f"perfect calibration.",
            "folds": sections.folds_beside_ensemble(report["folds"], report, names)
            if report.get("folds") else "",
            **training_values(out, folders)}


def evaluate_data(report, info, colors, rows):
    layers = ["truth", "pred", "errors"] + (["uncertainty"] if report.get("uncertainty") else [])
    return pagedata.page_data("evaluate", f"{report['split']} split", info, colors, rows,
                              layers, {"key": "v:miou", "order": "worst"})


def predict_values(source, rows, info, colors, failures, mc_samples):
    """report.html's slots for predict.py. source: the checkpoint(s) or ONNX file."""
    facts = [("model", source), ("images", f"{len(rows):,}"),
             ("could not be read", f"{failures:,}" if failures else None),
             ("uncertainty", f"the mean of {mc_samples} MC dropout passes" if mc_samples
              else "the softmax's predictive entropy"),
             ("sorted by", "mean predictive entropy, most uncertain first (review.csv's order)")]
    return {"title": f"predictions: {len(rows):,} images",
            "subtitle": f"predict.py with {source}",
            "facts": sections.facts(facts), "health": "",
            "classes": sections.predict_classes(rows, info["class_names"], colors),
            "classes_note": "No labels: the shares are the model's, to check by eye.",
            "confusion": "", "calibration": "", "folds": "",
            "curves": "", "plan": "", "training": False}


def predict_data(info, colors, rows):
    return pagedata.page_data("predict", "predictions", info, colors, rows,
                              ["pred", "uncertainty"], {"key": "v:mean_entropy",
                                                        "order": "worst"})
