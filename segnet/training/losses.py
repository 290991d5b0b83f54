"""The training loss: cross-entropy (optionally class-weighted, as the SegNet paper's
median-frequency balancing), soft Dice over the batch (the global batch under torchrun), or
their sum. `config` is a plan.Plan."""
import torch
import torch.nn.functional as F

from segnet.runtime import all_reduce_sum_with_grad


def class_weights(data_info, mode):
    """Per-class loss weights from the training split's pixel counts, or None.

    median-freq (SegNet paper, after Eigen & Fergus): f_c = pixels of class c / pixels of the
    images in which c appears; w_c = median(f) / f_c. inverse: w_c proportional to 1 / (share of
    class c), sqrt-inverse to its square root, scaled so the weights average 1. A class with no
    training pixels gets weight 0.
    """
    if mode == "none":
        return None
    pixels = torch.tensor(data_info["class_pixels"], dtype=torch.float64)
    present = pixels > 0
    if mode == "median-freq":
        image_pixels = torch.tensor(data_info["class_image_pixels"], dtype=torch.float64)
        freq = pixels / image_pixels.clamp(min=1)
        median = freq[present].quantile(0.5)  # the mean of the middle two for an even count
        weights = torch.where(present, median / freq.clamp(min=1e-12), 0.0)
    elif mode in ("inverse", "sqrt-inverse"):
        share = pixels / pixels.sum()
        weights = torch.where(present, 1 / share.clamp(min=1e-12), 0.0)
        if mode == "sqrt-inverse":  # milder: rare classes up, common ones kept (docs/plan.md)
            weights = weights.sqrt()
        weights = weights * present.sum() / weights.sum()
    else:
        raise ValueError(f"unknown class weighting {mode!r}")
    return weights.float()


def dice_loss(logits, targets, ignore_index=255, eps=1.0, global_batch=False):
    """1 - mean soft Dice over classes, over the whole batch; ignored pixels count for nothing.
    global_batch: under DDP, all-reduce the sums (with their gradient), so that every rank's
    loss is the Dice of the global batch, as in one process (nnU-Net does the same); every rank
    must then call it the same number of times, as training steps do."""
    num_classes = logits.shape[1]
    valid = (targets != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    one_hot = F.one_hot(targets.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot * valid
    dims = (0, 2, 3)
    sums = torch.stack([(probs * one_hot).sum(dims), probs.sum(dims) + one_hot.sum(dims)])
    if global_batch:
        sums = all_reduce_sum_with_grad(sums)
    intersection, cardinality = sums
    return 1 - ((2 * intersection + eps) / (cardinality + eps)).mean()


def build_criterion(config, info, device, global_batch=False):
    """criterion(logits, masks) for config.loss; global_batch: see dice_loss (training under
    DDP; validation scores each rank's own images and must not)."""
    weights = class_weights(info, config.class_weights)
    weights = weights.to(device) if weights is not None else None

    def criterion(logits, masks):
        logits = logits.float()
        loss = 0.0
        if config.loss in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, masks, weight=weights,
                                          ignore_index=config.ignore_index)
        if config.loss in ("dice", "ce+dice"):
            loss = loss + dice_loss(logits, masks, config.ignore_index, global_batch=global_batch)
        return loss
    return criterion, weights
