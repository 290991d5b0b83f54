"""Inference from a checkpoint: loading it in its inference form, sliding-window tiling,
flip TTA, Monte Carlo dropout, batched prediction of files and datasets, scoring a split (one
scoring path for training's validation, evaluate.py and the notebook), and the notebook API
`load_model` / `predict`."""
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from model import MIN_SIZE, context_radius
from segnet import utils
from segnet.data.feed.dataset import SegmentationDataset
from segnet.data.pixels.images import load_image, normalize, to_model_array
from segnet.inference import ensemble
from segnet.inference.inferoptions import BATCH_SIZE, resolve_image_size, resolve_scale
from segnet.inference.measures import ConfusionMatrix, entropy_map, image_confusions
from segnet.runtime import (autocast, device_inference_model, resolve_channels_last, resolve_device,
                            resolve_precision, unwrapped)
from segnet.utils import DataError, Progress

TILE = 512     # a 512x512 tile needs ~0.4 GB of activations on a CPU (fp32)
OVERLAP = 128  # >= 2 * context_radius() = 86: tiled == untiled, plus a 42-pixel blending ramp
FLIPS = ((), (-1,), (-2,), (-2, -1))  # test-time augmentation: identity, h, v, h+v


# ---------------------------------------------------------------- loading a checkpoint

def load_for_inference(path, device="auto", amp="auto"):
    """(model in its inference form, info, autocast dtype or None) for a checkpoint file.

    The model is runtime.device_inference_model's: BatchNorm folded into the convs, weights cast
    once to the autocast dtype, channels_last where oneDNN / cuDNN prefer it, on CUDA the
    conv+bias+ReLU layers fused where that measured faster; run it under
    runtime.autocast(device, dtype). info is the checkpoint's "data" entry plus
    train_image_size (training's --image-size, or None) and dropout (the model's).
    ValueError / FileNotFoundError name the file or flag at fault.
    """
    device = resolve_device(device)
    dtype = resolve_precision(device, amp)
    checkpoint = utils.load_checkpoint(path)
    model = utils.build_model(checkpoint, path).to(device)
    model = device_inference_model(model, dtype, resolve_channels_last(device))
    return model, utils.checkpoint_info(checkpoint), dtype


# ---------------------------------------------------------------- tiling

def check_tiling(tile, overlap):
    """ValueError unless tiles stay on the pooling grid and advance."""
    if tile < MIN_SIZE or tile % MIN_SIZE or overlap % MIN_SIZE:
        raise ValueError(f"--tile and --overlap must be multiples of {MIN_SIZE} (the pooling "
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
    last = (length - tile) // MIN_SIZE * MIN_SIZE
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

def model_device(model):
    """The device a model's inputs go to: its weights', or the `device` an ONNX Runtime model
    (deploy.OnnxRuntimeModel, which has no torch weights) states."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def tta_flips(tta):
    """The flips test-time augmentation averages over: all of FLIPS for True, none (the
    identity alone) for False or (), and for the names of a training's flips ("h", "v":
    checkpoint_info's "flips") the identity, those, and both together when both were used."""
    if tta is True:
        return FLIPS
    names = set(tta or ())
    return tuple(dims for dims, needs in zip(FLIPS, (set(), {"h"}, {"v"}, {"h", "v"}))
                 if needs <= names)


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
    pad_right, pad_bottom = max(MIN_SIZE - width, 0), max(MIN_SIZE - height, 0)
    if pad_right or pad_bottom:
        images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
    flips = tta_flips(tta)
    probs = variance = 0
    for dims in flips:
        flipped = images.flip(dims)
        with autocast(images.device, dtype):
            if mc_samples:
                chunk = max(1, max_pixels // flipped[:, 0].numel())
                mean, _, spread = mc_dropout_probs(model, flipped, mc_samples, chunk)
                variance = variance + spread.flip(dims)
            else:
                mean = model(flipped).float().softmax(1)
        probs = probs + mean.flip(dims)
    probs = probs[..., :height, :width] / len(flips)
    if not mc_samples:
        return probs, None
    return probs, variance[..., :height, :width] / len(flips)


@torch.inference_mode()
def mc_dropout_probs(model, images, samples, chunk=8):
    """Bayesian SegNet (Kendall et al. 2015): softmax averaged over `samples` stochastic passes.

    Dropout stays active while BatchNorm keeps its running statistics (eval mode); passes run
    `chunk` at a time as one batch. Returns (mean probs [N, K, H, W], predictive entropy
    [N, H, W], variance of the class probabilities averaged over classes [N, H, W]).
    With dropout 0 every pass is the deterministic one.
    """
    model.eval()
    model.mc_dropout = True
    total = squares = 0
    try:
        for start in range(0, samples, chunk):
            passes = min(chunk, samples - start)
            logits = model(images.repeat(passes, 1, 1, 1))
            probs = logits.float().softmax(1).unflatten(0, (passes, images.shape[0]))
            total = total + probs.sum(0)
            squares = squares + probs.square().sum(0)
    finally:
        model.mc_dropout = False
    mean = total / samples
    variance = (squares / samples - mean.square()).clamp(min=0).mean(1)
    entropy = -(mean * mean.clamp(min=1e-12).log()).sum(1)
    return mean, entropy, variance


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
    device = model_device(model)
    probs = torch.zeros(unwrapped(model).num_classes, height, width)
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
                image_size=None, mc_samples=0, seed=0, progress=False, scale=1.0,
                on_device=False):
    """(probs float32 [N, K, H, W], variance float32 [N, H, W] or None) on the CPU of normalised
    images [N, C, H, W]; with on_device, where the model ran (tiled images excepted: their
    results are put together on the CPU), so that the arg-max and the scores run there and only
    what a caller writes crosses to the host.

    Images up to `tile` a side go through the model together; larger ones tile by tile.
    image_size: the model sees images resized to that square; scale: resized by that factor
    (the training scale); either way the results come back at the images' size. tta: see
    tta_flips.
    mc_samples > 0: each image alone, under torch's RNG seeded with `seed` for it (in a fork of
    the RNG state, which is left as it was), so that its dropout masks, and its maps, depend
    only on the image and the seed.
    """
    if not mc_samples:
        return resized_probs(model, images, tile, overlap, tta, dtype, model_size(
            images.shape[-2:], image_size, scale), 0, progress, on_device)
    device = model_device(model)
    results = []
    for image in images:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            results.append(resized_probs(model, image[None], tile, overlap, tta, dtype,
                                         model_size(images.shape[-2:], image_size, scale),
                                         mc_samples, progress, on_device))
    return (torch.cat([probs for probs, _ in results]),
            torch.cat([variance for _, variance in results]))


def model_size(size, image_size=None, scale=1.0):
    """(height, width) the model sees an image of `size` at: image_size x image_size, or the
    size times `scale` (at least MIN_SIZE a side), or None for the image's own size."""
    if image_size:
        return (image_size, image_size)
    if scale and scale != 1:
        return tuple(max(MIN_SIZE, round(side * scale)) for side in size)
    return None


def resized_probs(model, images, tile, overlap, tta, dtype, size, mc_samples, progress,
                  on_device=False):
    """batch_probs without the per-image seeding: one batch, or tiles for large images; size:
    (height, width) to resize the images to first (model_size), the results resized back."""
    height, width = images.shape[-2:]
    image_size = size if size and tuple(size) != (height, width) else None
    if image_size:
        images = F.interpolate(images, size=image_size, mode="bilinear",
                               align_corners=False, antialias=True)  # as dataset.resize_pair
    if max(images.shape[-2:]) <= tile:
        device = model_device(model)
        probs, variance = forward_probs(model, images.to(device), tta, dtype, mc_samples,
                                        tile * tile)
        if not on_device:
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


def predict_probs(model, info, image, tile=TILE, overlap=OVERLAP, tta=False, dtype=None,
                  image_size=None, mc_samples=0, seed=0, scale=None):
    """Notebook API: probabilities float32 numpy [K, H, W] for an image float32 [C, H, W] in
    [0, 1] (dataset.load_image), normalised as in training; argmax(0) gives the labels.
    image_size: see resolve_image_size; scale: resolve_scale; mc_samples, seed: see
    batch_probs."""
    normalised = torch.from_numpy(np.asarray(normalize(image, info["normalization"])))
    probs, _ = batch_probs(model, normalised[None], tile, overlap, tta, dtype,
                           resolve_image_size(info, image_size), mc_samples, seed,
                           scale=resolve_scale(info, scale, image_size))
    return probs[0].numpy()


# ----------------------------------------------------------- batches of files and datasets; scoring

def read_images(paths, info, failures, strict, bar):
    """(path, image float32 [C, H, W] in [0, 1]) for each readable input.

    An unreadable one is reported and recorded in `failures`; with `strict` reading stops there.
    """
    for path in paths:
        try:
            yield path, load_image(path, info["in_channels"])
        except DataError as error:
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


def samples(dataset, indices):
    """((index, mask int64 [H, W]), image float32 [C, H, W] normalised) for each index."""
    for index in indices:
        image, mask = dataset[index]
        yield (index, mask), image


@dataclass
class Scores:
    """What scoring a split found: the confusion matrix, one entry per image ({index,
    confusion} and, with Monte Carlo sampling, entropy_correct / entropy_wrong) and, when a
    loss was given, its sum over the images (each image's loss on its own)."""

    confusion: ConfusionMatrix
    per_image: list = field(default_factory=list)
    loss_sum: float = 0.0
    images: int = 0


@torch.inference_mode()
def score_dataset(model, dataset, num_classes, ignore_index=255, indices=None,
                  batch_size=BATCH_SIZE, tta=False, dtype=None, image_size=None, mc_samples=0,
                  seed=0, criterion=None, max_batches=None, progress=None, on_image=None,
                  scale=1.0):
    """Predict and score the samples of `dataset` ((normalised image, mask) pairs) at `indices`
    (default: all): the one scoring path of training's validation, evaluate.py and the
    notebook. The model is in its inference form (load_for_inference, model.inference_model).

    Every image is predicted at its native size through batch_probs (tiles for large images;
    image_size as there): a batch holds images of one size only, so no padding ever reaches
    the model and the scores do not depend on the batch size. criterion(logits, masks): a loss
    to sum, fed log-probabilities (whose softmax is the probabilities). progress: a Progress.
    on_image(index, probs float32 [K, H, W], preds [H, W], mask [H, W]), all on the CPU: called
    per image, for measures gathered while scoring; a dict it returns joins the image's entry.

    The arg-max, the confusion counts and the loss are computed where the model runs; the
    probabilities cross to the host only for on_image and Monte Carlo entropy.
    """
    scores = Scores(ConfusionMatrix(num_classes, ignore_index))
    indices = range(len(dataset)) if indices is None else indices
    for number, batch in enumerate(batches(samples(dataset, indices), batch_size, TILE)):
        if max_batches is not None and number == max_batches:
            break
        keys, images = zip(*batch)
        probs, _ = batch_probs(model, torch.stack(images), tta=tta, dtype=dtype,
                               image_size=image_size, mc_samples=mc_samples, seed=seed,
                               scale=scale, on_device=True)
        masks = torch.stack([mask for _, mask in keys]).to(probs.device, non_blocking=True)
        preds = probs.argmax(1)
        if criterion is not None:  # image by image: a Dice term must not see the batching
            log_probs = probs.clamp(min=1e-12).log()
            scores.loss_sum += float(torch.stack([
                criterion(log_probs[i:i + 1], masks[i:i + 1]) for i in range(len(batch))
            ]).double().sum())
        scores.images += len(batch)
        counts = image_confusions(preds, masks, num_classes, ignore_index).cpu()
        scores.confusion.matrix += counts.sum(0).to(scores.confusion.matrix.device)
        if mc_samples or on_image is not None:
            probs, preds = probs.cpu(), preds.cpu()
        for number, (index, mask) in enumerate(keys):
            entry = {"index": index, "confusion": counts[number]}
            if mc_samples:
                entry.update(entropy_sums(probs[number], preds[number], mask, num_classes,
                                          ignore_index))
            if on_image is not None:
                entry.update(on_image(index, probs[number], preds[number], mask) or {})
            scores.per_image.append(entry)
        if progress is not None:
            progress.update(len(batch))
    return scores


def evaluate_split(model, info, root, split, batch_size=BATCH_SIZE, tta=False, dtype=None,
                   image_size=None, mc_samples=0, seed=0, progress=False, on_image=None,
                   scale=None):
    """(confusion int64 [K, K] over the split, per-image list of {name, image_path, mask_path,
    confusion} and, with mc_samples, entropy_correct / entropy_wrong: sums of the predictive
    entropy in nats over the labelled pixels predicted right / wrong). Rows are true classes,
    columns predictions; ignored pixels are left out. image_size: see resolve_image_size
    (None = as in training); scale: resolve_scale; mc_samples, seed: see batch_probs. Scored
    by score_dataset
    (on_image: see there).

    DataError (naming the file) for pairs the checkpoint's decoding cannot read.
    """
    dataset = SegmentationDataset(root, split, info)
    bar = Progress(len(dataset), f"evaluate {split}", "image", enabled=progress)
    scores = score_dataset(model, dataset, info["num_classes"], info["ignore_index"],
                           batch_size=batch_size, tta=tta, dtype=dtype,
                           image_size=resolve_image_size(info, image_size),
                           mc_samples=mc_samples, seed=seed, progress=bar, on_image=on_image,
                           scale=resolve_scale(info, scale, image_size))
    bar.close()
    for entry in scores.per_image:
        index = entry.pop("index")
        entry.update(name=dataset.names[index], image_path=dataset.image_paths[index],
                     mask_path=dataset.mask_paths[index])
    return scores.confusion.matrix, scores.per_image


def entropy_sums(probs, preds, mask, num_classes, ignore_index):
    """{entropy_correct, entropy_wrong}: predictive entropy (nats) summed over the labelled
    pixels of one image that are predicted right / wrong. probs float32 [K, H, W]."""
    entropy = entropy_map(probs).double()
    labelled = (mask >= 0) & (mask < num_classes) & (mask != ignore_index)
    correct = labelled & (preds == mask)
    return {"entropy_correct": float(entropy[correct].sum()),
            "entropy_wrong": float(entropy[labelled & ~correct].sum())}


def uncertainty_summary(per_image, confusion, mc_samples, info):
    """Mean predictive entropy (nats) on correct and on wrong pixels over the split: Bayesian
    SegNet's check that the model is less sure where it is wrong."""
    right = int(confusion.diag().sum())
    wrong = int(confusion.sum()) - right
    return {"mc_samples": mc_samples, "dropout": info["dropout"],
            "mean_entropy_correct": (sum(e["entropy_correct"] for e in per_image) / right
                                     if right else float("nan")),
            "mean_entropy_incorrect": (sum(e["entropy_wrong"] for e in per_image) / wrong
                                       if wrong else float("nan")),
            "pixels_correct": right, "pixels_incorrect": wrong,
            "max_entropy": math.log(info["num_classes"])}


# ---------------------------------------------------------------- notebook API

def load_model(path, device="cpu"):
    """Notebook API: (model in eval mode on `device`, metadata dict) from a checkpoint file,
    or a fold ensemble from a cross-validation run folder (ensemble.checkpoint_paths).

    The model is the plain SegNet as trained (fine-tune it, or pass it to predict); for a run
    folder, an ensemble.EnsembleSegNet of the folds' SegNets, with member 0's metadata plus
    "ensemble" (the checkpoint paths). The metadata holds class_names, class_colors,
    mask_decoding, normalization, in_channels, ignore_index, num_classes, train_image_size and
    dropout: everything predict() needs.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    members = ensemble.load_members(path)
    model, info = ensemble.combine([utils.build_model(checkpoint, member).to(device)
                                    for member, checkpoint in members], members)
    checkpoint = members[0][1]
    info = dict(info, model_args=checkpoint["model_args"], epoch=checkpoint.get("epoch"),
                best_metric=checkpoint.get("best_metric"))
    return model.eval(), info


def predict(model, info, image, amp="auto"):
    """Notebook API: label map (int64 numpy [H, W]) for a PIL image or numpy array of any size.

    Converts to the checkpoint's channel count, applies the training normalisation, and runs
    predict.py's path: the model in its inference form (BatchNorm folded, weights cast to the
    precision `amp` resolves to on the model's device, as predict.py's --amp), sliding-window
    tiling for large images. Same image, same labels as predict.py.
    """
    device = next(model.parameters()).device
    dtype = resolve_precision(device, amp)
    folded = device_inference_model(model, dtype, resolve_channels_last(device))
    array = to_model_array(image, info["in_channels"])  # float32 [C, H, W] in [0, 1]
    normalised = torch.from_numpy(np.asarray(normalize(array, info["normalization"])))
    probs, _ = batch_probs(folded, normalised[None], dtype=dtype,
                           image_size=resolve_image_size(info, None),
                           scale=resolve_scale(info, None, None), on_device=True)
    return probs[0].argmax(0).cpu().numpy().astype(np.int64)  # the arg-max where the model ran
