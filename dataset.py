"""The dataset: `from dataset import SegmentationDataset, scan_dataset` in a notebook, and the
command line `python dataset.py check ROOT` (reads every file, reports problems, trains nothing)
and `python dataset.py make-demo ROOT` (writes the generated demo set).

Contract: a sample is (image float32 [C,H,W] normalised with the train split's mean/std,
mask int64 [H,W] with values in 0..num_classes-1 or ignore_index). Every problem with user data
raises DataError naming the file(s), the problem and the fix. The code is in
segnet/data/ (check/scan.py, feed/dataset.py); this module re-exports it, so the names stay first-class here.
"""
import argparse
import sys
from pathlib import Path

from segnet.data.check.checks import problems_line, report_lines
from segnet.data.check.readpool import POOL_FROM
from segnet.data.check.scan import *  # noqa: F401,F403  (the public names of the design card)
from segnet.data.check.scan import inspect_dataset
from segnet.data.feed.baseline import intensity_baseline
from segnet.data.feed.dataset import *  # noqa: F401,F403
from segnet.data.files.index import *  # noqa: F401,F403
from segnet.data.files.pairs import *  # noqa: F401,F403
from segnet.data.pixels.classtable import CLASS_TABLE_NAME
from segnet.data.pixels.images import *  # noqa: F401,F403
from segnet.data.demo import make_demo
from segnet.data.files.layouts import add_layout_args, carves, layout_from_args
from segnet.runtime import tune_cpu_allocator
from segnet.utils import SPLITS, HelpFormatter, channels_flag


def run_check(args):
    """Print the dataset report; 0 when training can start, 1 when there is a problem."""
    root = Path(args.root)
    try:
        layout = layout_from_args(root, args)
        splits = args.splits or [split for split in SPLITS if split != "test" or not carves(
            layout, "test") or layout["test_share"]]
        info, problems = inspect_dataset(root, args.in_channels, args.num_classes,
                                         args.class_table, args.mask_threshold,
                                         args.ignore_index, splits, sys.stderr.isatty(),
                                         layout=layout, workers=args.workers)
    except DataError as error:
        print(f"problem: {error}")
        return 1
    print("\n".join(report_lines(info)))
    if args.baseline and not problems and "val" in info["splits"]:
        scores = intensity_baseline(root, info, workers=args.workers)
        print(f"intensity-only baseline (a class per grey level, fitted on train): mIoU train "
              f"{scores['train']:.3f}, val {scores['val']:.3f}")
    for problem in problems:
        print(f"problem: {problem}")
    print(problems_line(problems))
    return 1 if problems else 0


def _workers_flag(text):
    """--workers: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def get_args_parser():
    """Arguments of `python dataset.py check ROOT` and `python dataset.py make-demo ROOT`."""
    formatter = HelpFormatter  # defaults shown unless the help explains them
    parser = argparse.ArgumentParser(formatter_class=formatter, description="Check a "
                                     "segmentation dataset, or write the generated demo set.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", formatter_class=formatter, help="report on a dataset; "
                                "exit 1 if it has a problem (trains nothing)")
    check.add_argument("root", help="dataset folder, in any layout of data/README.md (found "
                       "from its folder names)")
    add_layout_args(check)
    check.add_argument("--in-channels", type=channels_flag, default="auto",
                       help="1: grey (RGB images converted), 3: RGB; auto: 3 when 10 percent "
                            "of the train images carry colour (as train.py)")
    check.add_argument("--num-classes", type=int, default=None,
                       help="number of classes (None: inferred from the train masks)")
    check.add_argument("--class-table", default=None, help="JSON file naming each class and its "
                       f"colour, void colours -> ignore (None: ROOT/{CLASS_TABLE_NAME} if "
                       "present)")
    check.add_argument("--mask-threshold", type=int, default=None, help="read single-channel "
                       "masks as binary: value >= threshold is foreground")
    check.add_argument("--ignore-index", type=int, default=255,
                       help="mask value of pixels that no loss or metric counts")
    check.add_argument("--splits", nargs="+", default=None,
                       help="splits to check (None: train, val, and test if present)")
    check.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                       help="score an intensity-only classifier (fitted on train) on val")
    check.add_argument("--workers", type=_workers_flag, default=None,
                       help=f"processes reading the files (None: every core; splits under "
                            f"{POOL_FROM} pairs are read in one process); the report is the same")
    demo = commands.add_parser("make-demo", formatter_class=formatter,
                               help="write the generated demo dataset to ROOT")
    demo.add_argument("root", help="a folder without train/, val/, test/ or classes.json")
    demo.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    demo.add_argument("--num-train", type=int, default=300, help="training images")
    demo.add_argument("--num-val", type=int, default=50, help="validation images")
    demo.add_argument("--num-test", type=int, default=50, help="test images")
    return parser


def main(argv=None):
    """Run a command line; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    if args.command == "make-demo":
        make_demo(args.root, args.seed, args.num_train, args.num_val, args.num_test)
        print(f"wrote the demo dataset to {args.root}; check it with: python dataset.py check "
              f"{args.root}")
        return 0
    return run_check(args)


if __name__ == "__main__":
    tune_cpu_allocator()  # as the scripts do: reading every file frees MBs per image (page faults)
    sys.exit(main())
