"""Export a checkpoint to ONNX for ONNX Runtime and other runtimes:
`python export.py --checkpoint runs/x/best.pt --output model.onnx`. The graph takes images
scaled to [0, 1] (any batch, H, W >= 8) and returns class probabilities and labels; the file's
metadata holds the class names and colours, channels and tiling facts. A cross-validation run
folder gives one file whose graph averages its folds' probabilities. Checked with onnx.checker
and one ONNX Runtime run against PyTorch before it is written. Needs requirements-export.txt."""
import argparse
import sys
from pathlib import Path

from model import MIN_SIZE
from segnet import utils
from segnet.inference import deploy

ENSEMBLE_FILE = "ensemble.onnx"  # --output's default in a cross-validation run folder


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=utils.HelpFormatter)
    add = parser.add_argument
    add("--checkpoint", type=Path, required=True,
        help="checkpoint written by train.py (best.pt or last.pt), or a cross-validation run "
             "folder (fold_<k>/ and cv.json): one graph averaging its folds' probabilities")
    add("--output", type=Path, default=None,
        help="the .onnx file to write (default: the checkpoint's name with .onnx, beside it; "
             f"{ENSEMBLE_FILE} in a run folder); its folder must exist")
    add("--opset", type=int, default=deploy.OPSET,
        help="ONNX opset of the graph (18 or newer: torch's dynamo exporter)")
    add("--check-size", type=int, nargs=2, default=list(deploy.CHECK_SIZE), metavar=("H", "W"),
        help=f"size of the {deploy.CHECK_BATCH} noise images ONNX Runtime and PyTorch must agree "
             f"on before the file is written")
    add("--atol", type=float, default=deploy.ATOL,
        help="largest probability difference allowed between ONNX Runtime and PyTorch")
    return parser


def validate_args(args):
    problems = []
    if args.opset < deploy.OPSET:
        problems.append(f"--opset must be >= {deploy.OPSET} (torch's dynamo exporter), got "
                        f"{args.opset}")
    if min(args.check_size) < MIN_SIZE:
        problems.append(f"--check-size must be >= {MIN_SIZE} a side, got {args.check_size}")
    if not 0 < args.atol < 1:
        problems.append(f"--atol must be in (0, 1), got {args.atol}")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def report_lines(args, report):
    """What was written and how it was checked."""
    meta = report["metadata"]
    channels, classes = meta["in_channels"], meta["num_classes"]
    trained = "" if meta["epoch"] is None else (
        f" (epoch {meta['epoch']}, best val mIoU {meta['best_val_miou']:.4f} at epoch "
        f"{meta['best_epoch']})")
    height, width = report["check_size"]
    lines = [f"exported {args.checkpoint}{trained} to {report['output']} "
             f"({report['bytes'] / 2**20:.1f} MiB, opset {report['opset']}, fp32, BatchNorm "
             f"folded)",
             f"input images float32 [N, {channels}, H, W] in [0, 1] (H, W >= {MIN_SIZE}); "
             f"outputs probs float32 [N, {classes}, H, W], labels int64 [N, H, W]",
             f"checked: onnx.checker passed; ONNX Runtime matches PyTorch on "
             f"{deploy.CHECK_BATCH} images of {height}x{width}: probabilities within "
             f"{report['max_prob_diff']:.1e}, labels equal on "
             f"{report['label_agreement']:.3%} of pixels"]
    if meta.get("ensemble"):
        lines.append(f"a fold ensemble of {len(meta['ensemble'])} models ("
                     + ", ".join(member["checkpoint"] for member in meta["ensemble"])
                     + "): the graph re-normalises the images for each and averages their "
                       "probabilities")
    if report["dropout"]:
        lines.append(f"note: the checkpoint was trained with dropout {report['dropout']}; the "
                     f"export is its deterministic (eval) form, without Monte Carlo dropout "
                     f"(predict.py --checkpoint --mc-samples N keeps that)")
    return lines


def main(args):
    validate_args(args)
    output = args.output or (args.checkpoint / ENSEMBLE_FILE if args.checkpoint.is_dir()
                             else args.checkpoint.with_suffix(".onnx"))
    try:
        report = deploy.export_checkpoint(args.checkpoint, output, args.opset,
                                          tuple(args.check_size), args.atol)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None
    print("\n".join(report_lines(args, report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
