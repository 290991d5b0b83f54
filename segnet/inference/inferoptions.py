"""What predict.py and evaluate.py share before inference: their model-side flags and the checks
of them, and what the flags mean for a checkpoint (the image size and scale the model sees, the
flips of test-time augmentation, the Monte Carlo passes worth running)."""
from pathlib import Path

from model import MIN_SIZE
from segnet.inference.ensemble import CHECKPOINT_HELP, checkpoint_problems
from segnet.utils import add_hardware_args

MAX_IMAGE_SIZE = 16384  # --image-size: a square this large already needs gigabytes
BATCH_SIZE = 4  # images of one size predicted together (evaluate.py, predict.py, validation)


def add_inference_args(parser, batch_note, mc_output, seed_note, size_note,
                       checkpoint_group=None):
    """The model-side flags predict.py and evaluate.py share (common_problems checks them).
    checkpoint_group: an argparse mutually exclusive group that --checkpoint joins (predict.py's,
    with --onnx) instead of being required."""
    add = parser.add_argument
    (checkpoint_group or parser).add_argument(
        "--checkpoint", type=Path, nargs="+", required=checkpoint_group is None,
        help=CHECKPOINT_HELP)
    add("--batch-size", type=int, default=BATCH_SIZE,
        help="images of one size predicted together" + batch_note)
    add("--tta", action="store_true",
        help="average the softmax over the flips training used (horizontal and/or vertical: "
             "up to 4x slower)")
    add("--mc-samples", type=int, default=0, metavar="N",
        help="Bayesian SegNet: average the softmax over N passes with dropout on (N times "
             f"slower; images go one at a time, the passes are batched) and {mc_output}; "
             "0 = off. Needs a checkpoint trained with --dropout > 0")
    add("--seed", type=int, default=0,
        help="seed of the dropout masks of --mc-samples" + seed_note)
    add("--image-size", type=int, default=None,
        help="resize images to this square size for the model (default: training's "
             f"--image-size, if it had one; 0 = native size); {size_note}")
    add("--train-scale", type=float, default=None, metavar="FACTOR",
        help="resize images by this factor for the model, the results back to full size "
             "(default: the checkpoint's training scale; 1 = native)")
    add_hardware_args(parser)


def image_size_ok(image_size):
    return image_size in (None, 0) or MIN_SIZE <= image_size <= MAX_IMAGE_SIZE


def common_problems(args):
    """Range checks shared by predict.py and evaluate.py."""
    problems = []
    if args.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.mc_samples < 0:
        problems.append(f"--mc-samples must be >= 0 (0 = off), got {args.mc_samples}")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if args.train_scale is not None and not 0.05 <= args.train_scale <= 4:
        problems.append(f"--train-scale must be in [0.05, 4], got {args.train_scale}")
    if not image_size_ok(args.image_size):
        problems.append(f"--image-size must be 0 (native) or {MIN_SIZE}..{MAX_IMAGE_SIZE}, "
                        f"got {args.image_size}")
    return problems + checkpoint_problems(args.checkpoint)


def resolve_image_size(info, image_size=None):
    """The square size the model sees: image_size when given (0 = native size), else the size
    it was trained at (info["train_image_size"]; None = native)."""
    if image_size is None:
        return info.get("train_image_size")
    return image_size or None


def resolve_scale(info, scale=None, image_size=None):
    """The factor images are resized by for the model: scale when given, 1 with --image-size
    0 (native), else the training scale (info["train_scale"]; 1 = native)."""
    if scale is not None:
        return scale
    return 1.0 if image_size == 0 else info.get("train_scale") or 1.0


def mc_samples_to_run(mc_samples, info, checkpoint):
    """(number of Monte Carlo passes worth running, warning or None): 1 for a checkpoint
    trained without dropout, whose passes would all be the same."""
    if mc_samples and not info["dropout"]:
        return 1, (f"{checkpoint} was trained with dropout 0 (plain SegNet), so all "
                   f"{mc_samples} Monte Carlo samples would be identical: running one pass. The "
                   f"entropy is then the plain softmax's, not Bayesian SegNet's model "
                   f"uncertainty (train with --dropout 0.5 for that)")
    return mc_samples, None


def tta_option(tta, info):
    """What --tta means for a checkpoint: the flips its training used (checkpoint_info's
    "flips"), or False without --tta."""
    return tuple(info.get("flips", ("h", "v"))) if tta else False
