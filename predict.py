"""Masks for new images from a checkpoint: `python predict.py --checkpoint best.pt --input IMG|DIR|GLOB
--output out/`. Large images are predicted in overlapping tiles, blended so that the result equals
whole-image prediction when the overlap covers SegNet's receptive field."""
import argparse
import glob
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import dataset as data
import utils
from model import ENCODER_WIDTHS

TILE = 512     # a 512x512 tile needs ~0.4 GB of activations on a CPU (fp32)
OVERLAP = 128  # >= 2 * context_radius() = 86: tiled == untiled, plus a 42-pixel blending ramp
# Each 2x2 pooling halves the grid: tiles start on multiples of 8 so their pooling windows are
# the whole image's, which is what makes tiled prediction exact away from tile edges.
POOL_GRID = 2 ** len(ENCODER_WIDTHS)
FLIPS = ((), (-1,), (-2,), (-2, -1))  # test-time augmentation: identity, h, v, h+v


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="checkpoint written by train.py (best.pt or last.pt)")
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
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images of one size predicted together (images up to --tile)")
    parser.add_argument("--tta", action="store_true",
                        help="average the softmax over horizontal and vertical flips (4x slower)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images to this square size for the model (default: "
                             "training's --image-size, if it had one; 0 = native size); masks "
                             "always come out at the input's size")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="auto = cuda, then mps, then cpu")
    parser.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                        help="mixed precision; auto = bf16 where the hardware has it natively")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable input instead of skipping it")
    return parser


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
def forward_probs(model, images, tta=False, dtype=None):
    """Softmax float32 [N, K, H, W] of normalised images [N, C, H, W] on the model's device.

    Images under 8 pixels a side are edge-padded for the poolings and the padding cropped off.
    """
    height, width = images.shape[-2:]
    pad_right, pad_bottom = max(POOL_GRID - width, 0), max(POOL_GRID - height, 0)
    if pad_right or pad_bottom:
        images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
    probs = 0
    for dims in FLIPS if tta else FLIPS[:1]:
        with utils.autocast(images.device, dtype):
            logits = model(images.flip(dims))
        probs = probs + logits.float().softmax(1).flip(dims)
    probs = probs / (len(FLIPS) if tta else 1)
    return probs[..., :height, :width]


@torch.inference_mode()
def tiled_probs(model, image, tile=TILE, overlap=OVERLAP, tta=False, dtype=None, progress=False):
    """Probabilities float32 [K, H, W] on the CPU of a normalised image [C, H, W], tile by tile.

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
    tiles = list(itertools.product(enumerate(rows), enumerate(cols)))
    for (i, (top, bottom)), (j, (left, right)) in tqdm(tiles, desc="tiles", leave=False,
                                                       disable=not progress):
        crop = image[None, :, top:bottom, left:right].to(device)
        tile_probs = forward_probs(model, crop, tta, dtype)[0].cpu()
        weight = row_weights[i, top:bottom, None] * col_weights[j, None, left:right]
        probs[:, top:bottom, left:right] += tile_probs * weight
    return probs


@torch.inference_mode()
def batch_probs(model, images, tile=TILE, overlap=OVERLAP, tta=False, dtype=None,
                image_size=None, progress=False):
    """Probabilities float32 [N, K, H, W] on the CPU of normalised images [N, C, H, W].

    Images up to `tile` a side go through the model together; larger ones tile by tile.
    image_size: the model sees images resized to that square; probabilities come back resized.
    """
    height, width = images.shape[-2:]
    if image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False)
    if max(images.shape[-2:]) <= tile:
        device = next(model.parameters()).device
        probs = forward_probs(model, images.to(device), tta, dtype).cpu()
    else:
        probs = torch.stack([tiled_probs(model, image, tile, overlap, tta, dtype, progress)
                             for image in images])
    if image_size:
        probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return probs


def predict_probs(model, info, image, tile=TILE, overlap=OVERLAP, tta=False, dtype=None,
                  image_size=None):
    """Notebook API: probabilities float32 numpy [K, H, W] for an image float32 [C, H, W] in
    [0, 1] (dataset.load_image), normalised as in training; argmax(0) gives the labels.
    image_size: see resolve_image_size."""
    normalised = torch.from_numpy(np.asarray(data.normalize(image, info["normalization"])))
    return batch_probs(model, normalised[None], tile, overlap, tta, dtype,
                       resolve_image_size(info, image_size))[0].numpy()


def load_for_inference(path, device="auto", amp="auto"):
    """(model in eval mode, info, autocast dtype or None) for a checkpoint file.

    info is the checkpoint's "data" entry plus train_image_size (training's --image-size, or
    None). ValueError / FileNotFoundError name the file or flag at fault.
    """
    device = utils.resolve_device(device)
    dtype = utils.resolve_precision(device, amp)
    checkpoint = utils.load_checkpoint(path)
    model = utils.build_model(checkpoint, path).to(device).eval()
    if utils.resolve_channels_last(device):
        model = model.to(memory_format=torch.channels_last)  # oneDNN's layout: ~30% faster
    train_image_size = (checkpoint.get("args") or {}).get("image_size")
    return model, dict(checkpoint["data"], train_image_size=train_image_size), dtype


def image_size_ok(image_size):
    return image_size is None or image_size == 0 or image_size >= POOL_GRID


def resolve_image_size(info, image_size=None):
    """The square size the model sees: image_size when given (0 = native size), else the size
    it was trained at (info["train_image_size"]; None = native)."""
    if image_size is None:
        return info.get("train_image_size")
    return image_size or None


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
    """{kind: path} written for one input: mask, overlay, probs."""
    return {"mask": output / f"{path.stem}.png", "overlay": output / f"{path.stem}_overlay.png",
            "probs": output / f"{path.stem}_probs.npy"}


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


def write_outputs(path, image, probs, info, args):
    """The mask (and, if asked, overlay and probabilities) of one input image.

    image: float32 [C, H, W] in [0, 1]; probs: float32 tensor [K, H, W].
    """
    outputs = output_paths(path, args.output)
    labels = probs.argmax(0).to(torch.uint8).numpy()
    save_mask(outputs["mask"], labels, info)
    if args.overlay:
        picture = utils.overlay(utils.to_display(image), labels, class_colors(info))
        Image.fromarray(picture).save(outputs["overlay"])
    if args.probs:
        np.save(outputs["probs"], probs.to(torch.float16).numpy())


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
            bar.write(f"skipped: {error}", file=sys.stderr)
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


def predict_files(model, info, paths, args, dtype):
    """Predict and write every input; returns [(path, message)] of those that could not be read."""
    failures = []
    image_size = resolve_image_size(info, args.image_size)
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(paths), desc="predict", unit="image", disable=not interactive)
    for batch in batches(read_images(paths, info, failures, args.strict, bar), args.batch_size,
                         args.tile):
        images = np.stack([image for _, image in batch])  # 4096x4096: 64 MB, freed below
        normalised = torch.from_numpy(data.normalize(images, info["normalization"]))
        del images
        probs = batch_probs(model, normalised, args.tile, args.overlap, args.tta, dtype,
                            image_size, progress=interactive)
        for (path, image), image_probs in zip(batch, probs):
            write_outputs(path, image, image_probs, info, args)
        bar.update(len(batch))
    bar.close()
    return failures


def validate_args(args):
    problems = []
    try:
        check_tiling(args.tile, args.overlap)
    except ValueError as error:
        problems.append(str(error))
    if args.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {args.batch_size}")
    if not image_size_ok(args.image_size):
        problems.append(f"--image-size must be 0 (native) or >= {POOL_GRID}, got "
                        f"{args.image_size}")
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
    args.output.mkdir(parents=True, exist_ok=True)
    failures = predict_files(model, info, paths, args, dtype)
    if failures and args.strict:
        raise SystemExit(f"error: {failures[0][1]}\n(--strict: stopped there; the inputs before "
                         f"it were written to {args.output})")
    written = len(paths) - len(failures)
    print(f"wrote {written} mask(s) to {args.output}")
    if failures:
        print(f"{len(failures)} of {len(paths)} input(s) could not be read:\n"
              + "\n".join(f"- {path}" for path, _ in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
