"""Masks for new images from a checkpoint:
`python predict.py --checkpoint best.pt --input IMG|DIR|GLOB --output out/`. Large images are
predicted in overlapping tiles, blended so that the result equals whole-image prediction when the
overlap covers SegNet's receptive field."""
import argparse
import glob
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import dataset as data
import utils
from model import ENCODER_WIDTHS, inference_model

TILE = 512     # a 512x512 tile needs ~0.4 GB of activations on a CPU (fp32)
OVERLAP = 128  # >= 2 * context_radius() = 86: tiled == untiled, plus a 42-pixel blending ramp
# Each 2x2 pooling halves the grid: tiles start on multiples of 8 so their pooling windows are
# the whole image's, which is what makes tiled prediction exact away from tile edges.
POOL_GRID = 2 ** len(ENCODER_WIDTHS)
FLIPS = ((), (-1,), (-2,), (-2, -1))  # test-time augmentation: identity, h, v, h+v


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=utils.HelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="IMG|DIR|GLOB",
                        help="image files, folders (their images) or glob patterns ('**' recurses)")
    parser.add_argument("--output", type=Path, default=Path("predictions"),
                        help="folder for <stem>.png masks (created if missing)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png: the image with a translucent mask")
    parser.add_argument("--probs", action="store_true",
                        help="also write <stem>_probs.npy: float16 class probabilities [K, H, W]")
    parser.add_argument("--tile", type=int, default=TILE,
                        help="images larger than this (pixels, either side) are predicted in "
                             f"tiles of this size; a multiple of {POOL_GRID}")
    parser.add_argument("--overlap", type=int, default=OVERLAP,
                        help=f"pixels shared by neighbouring tiles, a multiple of {POOL_GRID}; "
                             f">= {2 * context_radius()} makes tiling exact")
    add_inference_args(
        parser, batch_note=" (images up to --tile)",
        mc_output="write <stem>_entropy.png (16-bit), <stem>_entropy_color.png and "
                  "<stem>_variance.npy",
        seed_note="; each image is sampled under it, so its maps do not depend on the other "
                  "inputs",
        size_note="masks always come out at the input's size")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable input instead of skipping it")
    return parser


def add_inference_args(parser, batch_note, mc_output, seed_note, size_note):
    """The model-side flags predict.py and evaluate.py share (common_problems checks them)."""
    add = parser.add_argument
    add("--checkpoint", type=Path, required=True,
        help="checkpoint written by train.py (best.pt or last.pt)")
    add("--batch-size", type=int, default=4,
        help="images of one size predicted together" + batch_note)
    add("--tta", action="store_true",
        help="average the softmax over horizontal and vertical flips (4x slower)")
    add("--mc-samples", type=int, default=0, metavar="N",
        help="Bayesian SegNet: average the softmax over N passes with dropout on (N times "
             f"slower; images go one at a time, the passes are batched) and {mc_output}; "
             "0 = off. Needs a checkpoint trained with --dropout > 0")
    add("--seed", type=int, default=0,
        help="seed of the dropout masks of --mc-samples" + seed_note)
    add("--image-size", type=int, default=None,
        help="resize images to this square size for the model (default: training's "
             f"--image-size, if it had one; 0 = native size); {size_note}")
    add("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
        help="auto = cuda, then mps, then cpu")
    add("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
        help="mixed precision; auto = bf16 where the hardware has it natively")


# ---------------------------------------------------------------- tiling

def context_radius(encoder_widths=ENCODER_WIDTHS):
    """Input pixels on each side of an output pixel that can change it (a bound; 43 here).

    Each 3x3 conv at a grid step of j pixels reaches j further; a 2x2 pooling adds its second
    pixel (j), and an unpooled odd position reads the pooled pixel one step back.
    """
    low, high, step = 0, 0, 1
    for widths in encoder_widths:
        low, high = low - len(widths) * step, high + len(widths) * step + step
        step *= 2
    for widths in reversed(encoder_widths):
        step //= 2
        low, high = low - step - len(widths) * step, high + len(widths) * step
    return max(-low, high)


def check_tiling(tile, overlap):
    """ValueError unless tiles stay on the pooling grid and advance."""
    if tile < POOL_GRID or tile % POOL_GRID or overlap % POOL_GRID:
        raise ValueError(f"--tile and --overlap must be multiples of {POOL_GRID} (the pooling "
                         f"grid), got tile {tile}, overlap {overlap}")
    if not 0 <= overlap < tile:
        raise ValueError(f"--overlap must be in [0, tile), got {overlap} with tile {tile}")


def tile_windows(length, tile, overlap):
    """(start, end) of the tiles along one axis of `length` pixels.

    Tiles advance by tile - overlap; the last one is moved back to end at the image edge (its
    start kept on the pooling grid), so it may overlap its neighbour by more.
    """
    if length <= tile:
        return [(0, length)]
    last = (length - tile) // POOL_GRID * POOL_GRID
    starts = [start for start in range(0, length - tile, tile - overlap) if start < last]
    return [(start, start + tile) for start in starts] + [(last, length)]


def window_weights(length, windows, overlap):
    """Blending weights float32 [len(windows), length] that sum to 1 at every pixel.

    Pixels closer than `margin` to a tile edge inside the image lack part of their receptive
    field: weight 0. The weight then ramps linearly to 1 over the rest of the overlap. With
    overlap >= 2 * context_radius() the margin is the whole radius (exact tiling); with less,
    it is a quarter of the overlap, so that half of it still blends smoothly.
    """
    radius = context_radius()
    margin = radius if overlap >= 2 * radius else overlap // 4
    ramp = max(overlap - 2 * margin, 1)
    positions = np.arange(length, dtype=np.float64)
    weights = np.zeros((len(windows), length), dtype=np.float64)
    for row, (start, end) in zip(weights, windows):
        inside = positions[start:end]
        from_start = inside - start if start > 0 else np.inf
        from_end = end - 1 - inside if end < length else np.inf
        row[start:end] = np.clip((np.minimum(from_start, from_end) - margin + 0.5) / ramp, 0, 1)
    total = weights.sum(0)
    assert (total > 0).all(), "tile windows leave a pixel without weight"
    return (weights / total).astype(np.float32)


# ---------------------------------------------------------------- prediction

@torch.inference_mode()
def forward_probs(model, images, tta=False, dtype=None, mc_samples=0, max_pixels=TILE * TILE):
    """(probs float32 [N, K, H, W], variance float32 [N, H, W] or None) of normalised images
    [N, C, H, W] on the model's device.

    mc_samples > 0 (Bayesian SegNet): probs are the softmax averaged over that many passes with
    dropout on and BatchNorm in eval mode, run in batches of up to max_pixels pixels (about one
    tile's activations); variance is the class probabilities' variance over the passes,
    averaged over classes (and over flips with tta). Without sampling, variance is None.
    Images under 8 pixels a side are edge-padded for the poolings and the padding cropped off.
    """
    height, width = images.shape[-2:]
    pad_right, pad_bottom = max(POOL_GRID - width, 0), max(POOL_GRID - height, 0)
    if pad_right or pad_bottom:
        images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
    flips = FLIPS if tta else FLIPS[:1]
    probs = variance = 0
    for dims in flips:
        flipped = images.flip(dims)
        with utils.autocast(images.device, dtype):
            if mc_samples:
                chunk = max(1, max_pixels // flipped[:, 0].numel())
                mean, _, spread = utils.mc_dropout_probs(model, flipped, mc_samples, chunk)
                variance = variance + spread.flip(dims)
            else:
                mean = model(flipped).float().softmax(1)
        probs = probs + mean.flip(dims)
    probs = probs[..., :height, :width] / len(flips)
    if not mc_samples:
        return probs, None
    return probs, variance[..., :height, :width] / len(flips)


@torch.inference_mode()
def tiled_probs(model, image, tile=TILE, overlap=OVERLAP, tta=False, dtype=None, mc_samples=0,
                progress=False):
    """(probs float32 [K, H, W], variance float32 [H, W] or None) on the CPU of a normalised
    image [C, H, W], tile by tile (see forward_probs for tta and mc_samples).

    Only one tile's activations exist at a time; the image and the result stay on the CPU.
    """
    check_tiling(tile, overlap)
    height, width = image.shape[-2:]
    rows, cols = tile_windows(height, tile, overlap), tile_windows(width, tile, overlap)
    # Separable weights: sum_i row_i(y) * sum_j col_j(x) = 1, so no weight map is accumulated.
    row_weights = torch.from_numpy(window_weights(height, rows, overlap))
    col_weights = torch.from_numpy(window_weights(width, cols, overlap))
    device = next(model.parameters()).device
    probs = torch.zeros(utils.unwrapped(model).num_classes, height, width)
    variance = torch.zeros(height, width) if mc_samples else None
    tiles = list(itertools.product(enumerate(rows), enumerate(cols)))
    bar = Progress(len(tiles), "tiles", "tile", enabled=progress, leave=False)
    for (i, (top, bottom)), (j, (left, right)) in tiles:
        crop = image[None, :, top:bottom, left:right].to(device)
        tile_probs, tile_variance = forward_probs(model, crop, tta, dtype, mc_samples,
                                                  tile * tile)
        weight = row_weights[i, top:bottom, None] * col_weights[j, None, left:right]
        probs[:, top:bottom, left:right] += tile_probs[0].cpu() * weight
        if mc_samples:
            variance[top:bottom, left:right] += tile_variance[0].cpu() * weight
        bar.update(1)
    bar.close()
    return probs, variance


@torch.inference_mode()
def batch_probs(model, images, tile=TILE, overlap=OVERLAP, tta=False, dtype=None,
                image_size=None, mc_samples=0, seed=0, progress=False):
    """(probs float32 [N, K, H, W], variance float32 [N, H, W] or None) on the CPU of normalised
    images [N, C, H, W].

    Images up to `tile` a side go through the model together; larger ones tile by tile.
    image_size: the model sees images resized to that square; the results come back resized.
    mc_samples > 0: each image alone, torch's RNG reseeded with `seed` before it, so that its
    dropout masks, and its maps, depend only on the image and the seed.
    """
    if not mc_samples:
        return resized_probs(model, images, tile, overlap, tta, dtype, image_size, 0, progress)
    results = []
    for image in images:
        torch.manual_seed(seed)
        results.append(resized_probs(model, image[None], tile, overlap, tta, dtype, image_size,
                                     mc_samples, progress))
    return (torch.cat([probs for probs, _ in results]),
            torch.cat([variance for _, variance in results]))


def resized_probs(model, images, tile, overlap, tta, dtype, image_size, mc_samples, progress):
    """batch_probs without the per-image seeding: one batch, or tiles for large images."""
    height, width = images.shape[-2:]
    if image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True)  # as dataset.resize_pair
    if max(images.shape[-2:]) <= tile:
        device = next(model.parameters()).device
        probs, variance = forward_probs(model, images.to(device), tta, dtype, mc_samples,
                                        tile * tile)
        probs, variance = probs.cpu(), variance.cpu() if mc_samples else None
    else:
        results = [tiled_probs(model, image, tile, overlap, tta, dtype, mc_samples, progress)
                   for image in images]
        probs = torch.stack([image_probs for image_probs, _ in results])
        variance = torch.stack([spread for _, spread in results]) if mc_samples else None
    if image_size:
        probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        if mc_samples:
            variance = F.interpolate(variance[:, None], size=(height, width), mode="bilinear",
                                     align_corners=False)[:, 0]
    return probs, variance


def entropy_map(probs):
    """Predictive entropy in nats [..., H, W] of probabilities [..., K, H, W]: 0 when one class
    has all the mass, log(K) when all are equal."""
    return -(probs * probs.clamp(min=1e-12).log()).sum(-3)


def predict_probs(model, info, image, tile=TILE, overlap=OVERLAP, tta=False, dtype=None,
                  image_size=None, mc_samples=0, seed=0):
    """Notebook API: probabilities float32 numpy [K, H, W] for an image float32 [C, H, W] in
    [0, 1] (dataset.load_image), normalised as in training; argmax(0) gives the labels.
    image_size: see resolve_image_size; mc_samples, seed: see batch_probs."""
    normalised = torch.from_numpy(np.asarray(data.normalize(image, info["normalization"])))
    probs, _ = batch_probs(model, normalised[None], tile, overlap, tta, dtype,
                           resolve_image_size(info, image_size), mc_samples, seed)
    return probs[0].numpy()


def load_for_inference(path, device="auto", amp="auto"):
    """(model in its inference form, info, autocast dtype or None) for a checkpoint file.

    The model is model.inference_model's: BatchNorm folded into the convs, weights cast once to
    the autocast dtype, channels_last where oneDNN / cuDNN prefer it; run it under
    utils.autocast(device, dtype). info is the checkpoint's "data" entry plus
    train_image_size (training's --image-size, or None) and dropout (the model's).
    ValueError / FileNotFoundError name the file or flag at fault.
    """
    device = utils.resolve_device(device)
    dtype = utils.resolve_precision(device, amp)
    if device.type == "cpu":
        utils.tune_cpu_allocator()  # x1.46 inference img/s here (bench.py), as in training
    checkpoint = utils.load_checkpoint(path)
    model = utils.build_model(checkpoint, path).to(device)
    model = inference_model(model, dtype, channels_last=utils.resolve_channels_last(device))
    return model, utils.checkpoint_info(checkpoint), dtype


def mc_samples_to_run(mc_samples, info, checkpoint):
    """The number of Monte Carlo passes worth running: 1 (with a warning) for a checkpoint
    trained without dropout, whose passes would all be the same."""
    if mc_samples and not info["dropout"]:
        print(f"warning: {checkpoint} was trained with dropout 0 (plain SegNet), so all "
              f"{mc_samples} Monte Carlo samples would be identical: running one pass. The "
              f"entropy is then the plain softmax's, not Bayesian SegNet's model uncertainty "
              f"(train with --dropout 0.5 for that)", file=sys.stderr)
        return 1
    return mc_samples


MAX_IMAGE_SIZE = 16384  # --image-size: a square this large already needs gigabytes


def image_size_ok(image_size):
    return image_size is None or image_size == 0 or POOL_GRID <= image_size <= MAX_IMAGE_SIZE


def common_problems(args):
    """Range checks shared by predict.py and evaluate.py."""
    problems = []
    if args.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.mc_samples < 0:
        problems.append(f"--mc-samples must be >= 0 (0 = off), got {args.mc_samples}")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if not image_size_ok(args.image_size):
        problems.append(f"--image-size must be 0 (native) or {POOL_GRID}..{MAX_IMAGE_SIZE}, got "
                        f"{args.image_size}")
    if not args.checkpoint.is_file():
        problems.append(f"--checkpoint {args.checkpoint} is not a file")
    return problems


def resolve_image_size(info, image_size=None):
    """The square size the model sees: image_size when given (0 = native size), else the size
    it was trained at (info["train_image_size"]; None = native)."""
    if image_size is None:
        return info.get("train_image_size")
    return image_size or None


# ---------------------------------------------------------------- progress

class Progress:
    """A tqdm bar on a terminal; in a log file or a pipe, a plain line at most every `interval`
    seconds (and, with `leave`, one at the end) instead of tqdm's carriage returns.
    enabled=False: silent."""

    def __init__(self, total, desc, unit, enabled=True, leave=True, interval=10.0):
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.interactive = enabled and sys.stderr.isatty()
        self.plain = enabled and not self.interactive
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave,
                        disable=not self.interactive)
        self.done, self.interval = 0, interval
        self.start = self.last = time.monotonic()

    def update(self, count=1):
        self.bar.update(count)
        self.done += count
        now = time.monotonic()
        finished = self.done >= self.total and self.leave
        if self.plain and (finished or now - self.last >= self.interval):
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {now - self.start:.1f} s",
                  file=sys.stderr, flush=True)
            self.last = now

    def write(self, message):
        """A line of its own, above the bar."""
        if self.interactive:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self):
        self.bar.close()


# ---------------------------------------------------------------- files

def expand_inputs(patterns):
    """Image files from files, folders and glob patterns, in order, without repeats.

    A named file is kept whatever its extension (so that a bad one is reported); folders and
    globs contribute their image files. SystemExit when a pattern matches nothing.
    """
    paths = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            paths += sorted(p for p in path.iterdir() if is_image_file(p))
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                raise SystemExit(f"error: --input {pattern} is not a file or folder and "
                                 f"matches no files")
            paths += [p for p in matches if is_image_file(p)]
    if not paths:
        raise SystemExit(f"error: --input {' '.join(patterns)} holds no images "
                         f"({' '.join(data.IMAGE_EXTENSIONS)})")
    return list(dict.fromkeys(paths))


def is_image_file(path):
    return path.is_file() and path.suffix.lower() in data.IMAGE_EXTENSIONS


def output_paths(path, output):
    """{kind: path} written for one input: mask, overlay, probs and the uncertainty maps."""
    return {"mask": output / f"{path.stem}.png", "overlay": output / f"{path.stem}_overlay.png",
            "probs": output / f"{path.stem}_probs.npy",
            "entropy": output / f"{path.stem}_entropy.png",
            "entropy_color": output / f"{path.stem}_entropy_color.png",
            "variance": output / f"{path.stem}_variance.npy"}


def check_outputs(paths, output):
    """SystemExit before any work when two inputs share a stem or an output is an input."""
    seen = {}
    for path in paths:
        if path.stem in seen:
            raise SystemExit(f"error: {seen[path.stem]} and {path} would both write "
                             f"{output_paths(path, output)['mask']}; rename one or predict "
                             f"them into different --output folders")
        seen[path.stem] = path
    inputs = {path.resolve() for path in paths}
    clashes = [p for path in paths for p in output_paths(path, output).values()
               if p.resolve() in inputs]
    if clashes:
        raise SystemExit(f"error: writing {clashes[0]} would overwrite an input image; choose "
                         f"another --output folder")


def save_mask(path, labels, info):
    """Binary: 'L' PNG with 0/255. Multi-class: palette PNG, index = class id, palette = colours.

    labels: uint8 [H, W] class ids.
    """
    if info["num_classes"] == 2:
        Image.fromarray(labels * np.uint8(255)).save(path)
        return
    picture = Image.fromarray(labels)
    picture.putpalette(np.asarray(class_colors(info), dtype=np.uint8).ravel().tolist())  # -> "P"
    picture.save(path)


def class_colors(info):
    return info.get("class_colors") or utils.default_colors(info["num_classes"])


def save_uncertainty(paths, probs, variance):
    """Predictive entropy as a 16-bit PNG (entropy / log(K) * 65535, so 0 = certain and 65535 =
    all K classes equally likely) and as a colour-mapped PNG on the same fixed scale (magma:
    black = certain, pale yellow = most uncertain); variance float32 [H, W] as .npy."""
    import matplotlib  # the colormap only: no pyplot, no window
    scaled = (entropy_map(probs) / math.log(probs.shape[0])).clamp(0, 1).numpy()
    Image.fromarray(np.round(scaled * 65535).astype(np.uint16)).save(paths["entropy"])  # I;16
    colors = matplotlib.colormaps["magma"](scaled, bytes=True)[..., :3]
    Image.fromarray(colors).save(paths["entropy_color"])
    np.save(paths["variance"], variance.numpy().astype(np.float32))


def write_outputs(path, image, probs, variance, info, args):
    """The mask (and, if asked, overlay, probabilities and uncertainty maps) of one input.

    image: float32 [C, H, W] in [0, 1]; probs: float32 tensor [K, H, W]; variance: float32
    tensor [H, W] with --mc-samples, else None.
    """
    outputs = output_paths(path, args.output)
    labels = probs.argmax(0).to(torch.uint8).numpy()
    save_mask(outputs["mask"], labels, info)
    if args.overlay:
        picture = utils.overlay(utils.to_display(image), labels, class_colors(info))
        Image.fromarray(picture).save(outputs["overlay"])
    if args.probs:
        np.save(outputs["probs"], probs.to(torch.float16).numpy())
    if variance is not None:
        save_uncertainty(outputs, probs, variance)


# ---------------------------------------------------------------- main loop

def read_images(paths, info, failures, strict, bar):
    """(path, image float32 [C, H, W] in [0, 1]) for each readable input.

    An unreadable one is reported and recorded in `failures`; with `strict` reading stops there.
    """
    for path in paths:
        try:
            yield path, data.load_image(path, info["in_channels"])
        except data.DataError as error:
            failures.append((path, str(error)))
            bar.write(f"skipped: {error}")
            bar.update(1)
            if strict:
                return


def batches(items, batch_size, tile):
    """Lists of consecutive (path, image) of one size, up to batch_size; large images alone."""
    batch = []
    for path, image in items:
        if batch and (image.shape != batch[0][1].shape or len(batch) == batch_size
                      or max(image.shape[-2:]) > tile):
            yield batch
            batch = []
        batch.append((path, image))
    if batch:
        yield batch


def predict_files(model, info, paths, args, dtype, mc_samples=0):
    """Predict and write every input; returns [(path, message)] of those that could not be read."""
    failures = []
    image_size = resolve_image_size(info, args.image_size)
    bar = Progress(len(paths), "predict", "image")
    for batch in batches(read_images(paths, info, failures, args.strict, bar), args.batch_size,
                         args.tile):
        images = np.stack([image for _, image in batch])  # 4096x4096: 64 MB, freed below
        normalised = torch.from_numpy(data.normalize(images, info["normalization"]))
        del images
        probs, variance = batch_probs(model, normalised, args.tile, args.overlap, args.tta, dtype,
                                      image_size, mc_samples, args.seed, progress=True)
        for index, (path, image) in enumerate(batch):
            write_outputs(path, image, probs[index],
                          None if variance is None else variance[index], info, args)
        bar.update(len(batch))
    bar.close()
    return failures


def validate_args(args):
    problems = []
    try:
        check_tiling(args.tile, args.overlap)
    except ValueError as error:
        problems.append(str(error))
    problems += common_problems(args)
    if args.output.exists() and not args.output.is_dir():
        problems.append(f"--output {args.output} is a file, not a folder")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def main(args):
    validate_args(args)
    paths = expand_inputs(args.input)
    check_outputs(paths, args.output)
    try:
        model, info, dtype = load_for_inference(args.checkpoint, args.device, args.amp)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    if info["num_classes"] > 256:
        raise SystemExit(f"error: {args.checkpoint} has {info['num_classes']} classes; a PNG "
                         f"mask holds at most 256")
    mc_samples = mc_samples_to_run(args.mc_samples, info, args.checkpoint)
    args.output.mkdir(parents=True, exist_ok=True)
    failures = predict_files(model, info, paths, args, dtype, mc_samples)
    if failures and args.strict:
        raise SystemExit(f"error: {failures[0][1]}\n(--strict: stopped there; the inputs before "
                         f"it were written to {args.output})")
    written = len(paths) - len(failures)
    print(f"wrote {written} mask(s) to {args.output}"
          + (f" and uncertainty maps ({mc_samples} Monte Carlo pass(es) each)" if mc_samples
             else ""))
    if failures:
        print(f"{len(failures)} of {len(paths)} input(s) could not be read:\n"
              + "\n".join(f"- {path}" for path, _ in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
