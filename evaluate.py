"""Score a checkpoint on a labelled split: `python evaluate.py --checkpoint runs/x/best.pt
--data data --split test --out runs/x/eval`. Prints per-class IoU, Dice, precision and recall and
the SegNet paper's G, C, mIoU and boundary F1 (BF), calibration (ECE) and health warnings;
writes report.json, confusion_matrix.png, reliability.png, the worst images and report.html (every
image worst first, with its layers; docs/report.md). A fold ensemble (a cross-validation run
folder, or several checkpoints) is scored with each fold beside it."""
import argparse
import json
import math
import os
import sys
from pathlib import Path

from PIL import Image

from segnet import runtime, utils
from segnet.data.files.index import split_pairs
from segnet.utils import DataError
from segnet.data.files.layouts import layout_for
from segnet.data.pixels.images import IMAGE_CONVERSIONS, load_image
from segnet.data.pixels.maskadvice import describe_decoding
from segnet.data.pixels.masks import decode_mask
from segnet.inference import ensemble, inference, inferoptions, measures, plots
from segnet.report import contents, page, pagedata, pictures, trainingrun


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=utils.HelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root holding SPLIT/images and SPLIT/masks; default: the "
                             "data/ folder next to this script (train.py's default)")
    parser.add_argument("--split", default="test", help="the split to score")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the report (default: eval-SPLIT next to the checkpoint, "
                             "in a cross-validation run folder, or in the folder several "
                             "checkpoints share)")
    inferoptions.add_inference_args(
        parser, batch_note="",
        mc_output="score their mean, reporting the mean predictive entropy on correct and on "
                  "wrong pixels",
        seed_note=" (reseeded per image)",
        size_note="scores are always taken at each image's native size")
    parser.add_argument("--worst", type=int, default=4, metavar="K",
                        help="draw the K images with the lowest mIoU; 0 = none")
    parser.add_argument("--bf-tolerance", type=float, default=measures.BF_TOLERANCE,
                        metavar="FRACTION",
                        help="boundary F1: a boundary pixel matches when the other boundary "
                             "lies within this fraction of the image diagonal (the default is "
                             "the SegNet paper's)")
    page.add_report_args(parser, True, "the summary, and every image worst first by its mIoU "
                                       "with its ground truth, prediction and errors")
    return parser


# ---------------------------------------------------------------- scoring and reporting


def file_channels(path):
    """Channels of an image file once dataset.load_image has dropped alpha and converted palette
    modes, from its header only; None when the header is unreadable (the full read that follows
    reports that file by name)."""
    try:
        with Image.open(getattr(path, "path", path)) as picture:  # a stack's page: its file
            mode = IMAGE_CONVERSIONS.get(picture.mode, picture.mode)
    except (OSError, SyntaxError, ValueError):
        return None
    return Image.getmodebands(mode)


def converted_images(paths, in_channels):
    """The images that load_image converts as in training: RGB -> luminance for a 1-channel
    checkpoint, grey repeated for a 3-channel one. Other channel counts are a DataError there."""
    return [path for path in paths if {file_channels(path), in_channels} == {1, 3}]


def rank_images(per_image, class_names):
    """[{name, miou, pixel_acc, bf}] sorted worst first; images without labelled pixels last.
    bf: the image's boundary F1, averaged over the classes in its labels."""
    scores = []
    for entry in per_image:
        metrics = measures.metrics_from_confusion(entry["confusion"], class_names)
        scores.append({"name": entry["name"], "miou": metrics["miou"],
                       "pixel_acc": metrics["pixel_acc"], "bf": entry.get("bf", math.nan)})
    return sorted(scores, key=lambda s: (math.isnan(s["miou"]), s["miou"]))


def measure(model, info, args, options, folder=None):
    """(confusion, per-image entries with their BF, BF over the split, calibrations): one
    scoring pass gathers BF and calibration image by image. calibrations: {"softmax": ...} and,
    with Monte Carlo dropout, {"mc_dropout": ...} too, the softmax's from a plain second pass.
    folder: the report page's pictures.PageFolder, which gets each image's layers as it is
    scored (its page number is the entry's "page_number"), or None."""
    boundary = measures.BoundaryF1(info["num_classes"], info["ignore_index"], args.bf_tolerance)
    calibration = measures.Calibration(info["num_classes"], info["ignore_index"])

    def on_image(index, probs, preds, mask):
        calibration.update(probs, preds, mask)
        scores = boundary.update(preds, mask)
        if folder is not None:
            folder.add_layers(index, preds.numpy(), mask.numpy(), pictures.scaled_entropy(
                measures.entropy_map(probs), info["num_classes"]).numpy()
                if options["mc_samples"] else None)
        return {"bf": measures.nanmean(scores), "bf_classes": scores.tolist(),
                "page_number": index}

    confusion, per_image = inference.evaluate_split(model, info, args.data, args.split,
                                                    args.batch_size, progress=True,
                                                    on_image=on_image, **options)
    calibrations = {"softmax": calibration.compute()}
    if options["mc_samples"]:
        calibrations["mc_dropout"] = dict(calibrations["softmax"],
                                          mc_samples=options["mc_samples"])
        if info["dropout"]:  # without dropout the one pass run was the plain softmax already
            calibrations["softmax"] = softmax_calibration(model, info, args, options)
    return confusion, per_image, boundary.compute(info["class_names"]), calibrations


def softmax_calibration(model, info, args, options):
    """Calibration of the plain softmax (no dropout sampling), from a pass of its own."""
    calibration = measures.Calibration(info["num_classes"], info["ignore_index"])
    inference.evaluate_split(model, info, args.data, args.split, args.batch_size, progress=True,
                             on_image=lambda index, probs, preds, mask: calibration.update(
                                 probs, preds, mask), **dict(options, mc_samples=0))
    return calibration.compute()


def score_folds(model, info, args, options):
    """[{checkpoint, miou, pixel_acc, iou}]: each member of a fold ensemble scored alone on the
    same split with the same options, through its own normalisation; iou: per class."""
    folds = []
    for path, member, normalization in zip(info["ensemble"], model.members,
                                           model.normalizations):
        confusion, _ = inference.evaluate_split(member, dict(info, normalization=normalization),
                                                args.data, args.split, args.batch_size,
                                                progress=True, **options)
        metrics = measures.metrics_from_confusion(confusion, info["class_names"])
        folds.append({"checkpoint": path, "miou": metrics["miou"],
                      "pixel_acc": metrics["pixel_acc"],
                      "iou": [entry["iou"] for entry in metrics["per_class"]]})
    return folds


# ---------------------------------------------------------------- outputs

def number(value, width=0):
    """A score to 4 decimals, right-aligned in `width`; `-` when it is undefined (NaN), such as
    the precision of a class that is never predicted."""
    text = "-" if value is None or math.isnan(value) else f"{value:.4f}"
    return f"{text:>{width}}"


def format_table(metrics, boundary=None, health=()):
    """The per-class table and the summary lines, as printed. boundary: BoundaryF1.compute's
    dict (adds a BF column); health: measures.health_warnings' sentences, whose classes get `!`."""
    names = [entry["name"] for entry in metrics["per_class"]]
    width = max(len("class"), *(len(name) for name in names))
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}  {'precision':>9}  "
             f"{'recall/acc':>10}  {'support (px)':>13}" + (f"  {'BF':>6}" if boundary else "")]
    for index, entry in enumerate(metrics["per_class"]):
        flagged = any(f"class '{entry['name']}'" in sentence for sentence in health)
        lines.append(f"{entry['name']:<{width}}  {number(entry['iou'], 6)}  "
                     f"{number(entry['dice'], 6)}  {number(entry['precision'], 9)}  "
                     f"{number(entry['recall'], 10)}  {entry['support']:>13,}"
                     + (f"  {number(boundary['bf'][index]['bf'], 6)}" if boundary
                        else "") + ("  !" if flagged else ""))
    lines.append(f"global pixel accuracy (G) {metrics['pixel_acc']:.4f} | class-average accuracy "
                 f"(C) {metrics['mean_acc']:.4f} | mIoU {metrics['miou']:.4f} | mean Dice "
                 f"{metrics['mean_dice']:.4f}"
                 + (f" | mean BF {number(boundary['mean_bf'])}" if boundary else ""))
    lines += [f"! health: {sentence}" for sentence in health]
    return "\n".join(lines)


def format_calibration(calibrations, tolerance):
    """The BF tolerance and the ECE line, as printed."""
    softmax = calibrations["softmax"]
    line = f"calibration: ECE softmax {number(softmax['ece'])}"
    if "mc_dropout" in calibrations:
        sampled = calibrations["mc_dropout"]
        line += (f", MC-dropout mean of {sampled['mc_samples']} sample(s) "
                 f"{number(sampled['ece'])}")
    return (f"boundary F1 (BF): tolerance {tolerance:.2%} of each image's diagonal\n{line} "
            f"({len(softmax['bins'])} bins, {softmax['pixels']:,} labelled pixels)")


def format_folds(folds, metrics):
    """Each fold's model alone beside the ensemble of them, as printed."""
    rows = [(fold["checkpoint"], fold["miou"], fold["pixel_acc"]) for fold in folds]
    rows.append((f"ensemble of {len(folds)} (mean softmax)", metrics["miou"],
                 metrics["pixel_acc"]))
    width = max(len(name) for name, _, _ in rows)
    return "\n".join([f"{'model':<{width}}  {'mIoU':>6}  {'G':>6}"] + [
        f"{name:<{width}}  {number(miou, 6)}  {number(pixel_acc, 6)}"
        for name, miou, pixel_acc in rows])


def format_uncertainty(summary):
    return (f"uncertainty ({summary['mc_samples']} MC dropout sample(s), dropout "
            f"{summary['dropout']}): mean predictive entropy {summary['mean_entropy_correct']:.4f} "
            f"nats on correct pixels, {summary['mean_entropy_incorrect']:.4f} on wrong ones "
            f"(at most ln(classes) = {summary['max_entropy']:.4f})")


def save_worst(folder, model, info, per_image, ranking, count, options):
    """image | ground truth | prediction | overlay of the `count` worst images, one file each
    (worst/01_<name>.png, ...). Returns the names of the files written."""
    by_name = {entry["name"]: entry for entry in per_image}
    worst = [score for score in ranking if not math.isnan(score["miou"])][:count]
    if worst:
        folder.mkdir(parents=True, exist_ok=True)
    files = []
    for rank, score in enumerate(worst, start=1):
        entry = by_name[score["name"]]
        image = load_image(entry["image_path"], info["in_channels"])
        mask = decode_mask(entry["mask_path"], info["mask_decoding"], info["ignore_index"])
        preds = inference.predict_probs(model, info, image, **options).argmax(0)
        path = folder / f"{rank:02d}_{score['name'].replace('/', '_')}.png"  # benign/a: a file
        plots.save_samples_figure(path, [(image, mask, preds)], plots.class_colors(info))
        files.append(path.name)
    return files


def write_report(path, metrics, confusion, ranking, worst_files, args, info, uncertainty=None,
                 extra=None):
    """report.json, and its dict; extra: further keys (bf, mean_bf, bf_tolerance, calibration,
    health)."""
    report = {**metrics, **(extra or {}),
              **({"uncertainty": uncertainty} if uncertainty else {}),
              "confusion_matrix": confusion.tolist(),
              "checkpoint": checkpoint_text(args.checkpoint), "data": str(args.data),
              "split": args.split,
              "images": len(ranking), "tta": args.tta,
              "image_size": inferoptions.resolve_image_size(info, args.image_size),
              "train_scale": inferoptions.resolve_scale(info, args.train_scale, args.image_size),
              "tta_flips": list(inferoptions.tta_option(args.tta, info) or ()),
              "mask_decoding": info["mask_decoding"],
              "per_image": ranking, "worst_images": worst_files}
    with utils.atomic_write(path, encoding="utf-8") as handle:
        handle.write(json.dumps(utils.json_safe(report), indent=2) + "\n")
    return report


def page_pictures(folder, per_image, in_channels):
    """Each scored image's picture and thumbnail in the page's folder (its layers were written
    while it was scored); their {number, image, thumb, layers, width, height}, in order."""
    bar = utils.Progress(len(per_image), "report page", "image")
    files = []
    for entry in per_image:
        image = load_image(entry["image_path"], in_channels)
        files.append(folder.add_image(entry["page_number"], image))
        bar.update(1)
    bar.close()
    return files


def write_page(out, report_dict, info, per_image, ranking, folder, args):
    """report.html in --out: the summary of report.json, every image worst first, the training
    behind the checkpoint (its run folder's or each fold's metrics.csv and plan)."""
    files = page_pictures(folder, per_image, info["in_channels"])
    colors = plots.class_colors(info)
    rows = pagedata.evaluate_rows(per_image, ranking, files)
    folders = trainingrun.run_folders(args.checkpoint, info.get("ensemble"))
    return page.write_page(out, contents.evaluate_values(report_dict, colors, out, folders),
                           contents.evaluate_data(report_dict, info, colors, rows))


# ---------------------------------------------------------------- main

def validate_args(args):
    problems = inferoptions.common_problems(args)
    if args.worst < 0:
        problems.append(f"--worst must be >= 0, got {args.worst}")
    if not 0 <= args.bf_tolerance <= 1:
        problems.append(f"--bf-tolerance must be in [0, 1] (a fraction of the image diagonal), "
                        f"got {args.bf_tolerance}")
    problems += page.report_problems(args)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} is a file, not a folder")
    if not args.data.is_dir():
        problems.append(f"--data {args.data} is not a folder")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def main(args):
    args.data = args.data or utils.DEFAULT_DATA
    args.checkpoint = ensemble.checkpoint_argument(args.checkpoint)
    validate_args(args)
    try:
        model, info, dtype = ensemble.load_ensemble_for_inference(args.checkpoint,
                                                                  args.device, args.amp)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    try:  # without ROOT/val, the val split is the hold-out training validated on
        info["layout"] = layout_for(args.data, info.get("layout"))
        pairs = split_pairs(args.data, args.split, info.get("holdout"), info["layout"])
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    if next(model.parameters()).device.type == "cpu":
        runtime.tune_cpu_allocator()
    warn_converted(converted_images([image for _, image, _ in pairs], info["in_channels"]),
                   info["in_channels"])
    names = ensemble.checkpoint_names(args.checkpoint)
    mc_samples, note = inferoptions.mc_samples_to_run(args.mc_samples, info, names)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    options = {"tta": inferoptions.tta_option(args.tta, info), "dtype": dtype,
               "image_size": args.image_size, "scale": args.train_scale,
               "mc_samples": mc_samples, "seed": args.seed}
    folder = page_folder(args, info)
    try:
        confusion, per_image, boundary, calibrations = measure(model, info, args, options,
                                                               folder)
        folds = score_folds(model, info, args, options) if "ensemble" in info else None
    except DataError as error:
        raise SystemExit(f"error: {error}\n(the checkpoint {names} reads masks as "
                         f"{describe_decoding(info['mask_decoding'])})") from None
    uncertainty = (inference.uncertainty_summary(per_image, confusion, mc_samples, info)
                   if mc_samples else None)
    report(args, model, info, options, (confusion, per_image, boundary, calibrations),
           uncertainty, folds, folder)
    return 0


def page_folder(args, info):
    """The report page's pictures.PageFolder in --out, or None with --no-report."""
    if not args.report:
        return None
    args.out = args.out or default_out(args.checkpoint, args.split)
    try:
        return pictures.PageFolder(args.out, plots.class_colors(info), info["ignore_index"],
                                   args.report_max_side)
    except ValueError as error:
        raise SystemExit(f"error: {error} (--no-report skips it)") from None


def checkpoint_text(checkpoint):
    """--checkpoint as report.json states it: the path, or the list of paths given."""
    return [str(path) for path in checkpoint] if isinstance(checkpoint, list) else str(checkpoint)


def default_out(checkpoint, split):
    """eval-SPLIT beside the checkpoint, inside a cross-validation run folder, or in the folder
    several checkpoints share."""
    if isinstance(checkpoint, list):
        folder = Path(os.path.commonpath([path.absolute().parent for path in checkpoint]))
    else:
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / f"eval-{split}"


def report(args, model, info, options, measured, uncertainty, folds=None, folder=None):
    """Print the results and write report.json and the pictures to --out. folds: each fold's
    model alone (score_folds), beside a fold ensemble's results; folder: the report page's
    (page_folder), which then gets report.html, named in the last line."""
    confusion, per_image, boundary, calibrations = measured
    metrics = measures.metrics_from_confusion(confusion, info["class_names"])
    ranking = rank_images(per_image, info["class_names"])
    health = measures.health_warnings(confusion, info["class_names"])
    out = args.out or default_out(args.checkpoint, args.split)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{ensemble.checkpoint_names(args.checkpoint)} on {args.data / args.split}: "
          f"{len(per_image)} images" + (" (flip TTA)" if args.tta else "")
          + (f", a fold ensemble of {len(folds)} models" if folds else ""))
    print(format_table(metrics, boundary, health))
    if folds:
        print(format_folds(folds, metrics))
    print(format_calibration(calibrations, args.bf_tolerance))
    if uncertainty:
        print(format_uncertainty(uncertainty))
    plots.save_confusion_figure(out / "confusion_matrix.png", confusion, info["class_names"])
    plots.save_reliability_figure(out / "reliability.png", [
        (("MC-dropout mean" if name == "mc_dropout" else name), calibration)
        for name, calibration in calibrations.items()])
    worst_files = save_worst(out / "worst", model, info, per_image, ranking, args.worst, options)
    if worst_files:
        print("worst images (mIoU): " + ", ".join(
            f"{score['name']} {score['miou']:.4f}" for score in ranking[:len(worst_files)]))
    calibration = dict(calibrations["softmax"], **({"mc_dropout": calibrations["mc_dropout"]}
                                                   if "mc_dropout" in calibrations else {}))
    written = write_report(out / "report.json", metrics, confusion, ranking, worst_files, args,
                           info, uncertainty, {**boundary, "bf_tolerance": args.bf_tolerance,
                               "calibration": calibration, "health": health,
                               **({"folds": folds} if folds else {})})
    print(f"wrote {out / 'report.json'}, {out / 'confusion_matrix.png'}, "
          f"{out / 'reliability.png'}"
          + (f" and {len(worst_files)} picture(s) in {out / 'worst'}" if worst_files else ""))
    if folder is not None:
        path = write_page(out, written, info, per_image, ranking, folder, args)
        print(f"report page: {path} ({len(per_image)} images; open it in a browser)")


def warn_converted(paths, in_channels):
    if paths:
        change = "RGB -> grey" if in_channels == 1 else "grey -> RGB"
        print(f"warning: {len(paths)} image(s) do not have the checkpoint's {in_channels} "
              f"channel(s) and are converted {change} as in training (e.g. {paths[0]})",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
