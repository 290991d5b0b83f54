"""The crop and the batch: as large as the images allow, capped for the device, shrunk to fit
the device memory the plan measured (CUDA), and the smaller crops a tight budget or memory falls
back to."""
import math

from model import MIN_SIZE, context_radius

# Crop: square, a multiple of the pooling grid, no larger than the typical image, and at most
# this large (about 3x SegNet's 87-pixel receptive field on a CPU, where every pixel costs).
CROP_CAP = {"cuda": 512, "cpu": 256, "mps": 256}
# Images per (global) step when the budget allows: on a CPU, where a larger batch buys no
# parallelism, more and smaller steps learn more from the same compute.
TARGET_BATCH = {"cuda": 8, "cpu": 4, "mps": 4}
MIN_BATCH = 2        # BatchNorm needs two samples
MAX_BATCH = 64
MIN_STEP_PIXELS = 64 * 64 * 8  # tiny crops get a larger batch, so a step sees enough pixels


def floor_to_grid(value):
    return max(MIN_SIZE, int(value) // MIN_SIZE * MIN_SIZE)


def plan_crop(fp, device_type):
    """Square crops as large as the typical image allows, capped for the device."""
    return floor_to_grid(min(fp.short_side, CROP_CAP.get(device_type, 256)))


def target_batch(fp, crop, world_size=1, device="cpu"):
    """TARGET_BATCH images a step (more for tiny crops), per process, and never more than a
    process's share of the train images."""
    images = max(TARGET_BATCH.get(device, 4), math.ceil(MIN_STEP_PIXELS / (crop * crop)))
    per_process = math.ceil(images / world_size)
    most = max(MIN_BATCH, fp.train_images // world_size)
    return int(min(max(per_process, MIN_BATCH), MAX_BATCH, most))


def crop_ladder(crop):
    """The planned crop, then smaller ones down to about twice the receptive field."""
    floor = min(crop, floor_to_grid(4 * context_radius()))
    ladder = [crop]
    while ladder[-1] > floor:
        ladder.append(max(floor, floor_to_grid(ladder[-1] * 3 // 4)))
    return ladder


def fit_memory(fp, flags, speed, crop, batch, notes):
    """The largest batch, then crop, whose training step fits in the device memory the plan
    measured (Speed.fits; CUDA only): the batch halves first, down to MIN_BATCH, then the crop
    shrinks. Explicit flags stay, fitting or not (an out-of-memory then names what fits)."""
    crops = [crop] if flags.get("crop_size") is not None else crop_ladder(crop)
    batches = [batch] if flags.get("batch_size") else sorted(
        {max(MIN_BATCH, batch >> shift) for shift in range(8)}, reverse=True)
    for trial_crop in crops:
        for trial_batch in batches:
            if speed is None or speed.fits(trial_crop or fp.short_side, trial_batch):
                if (trial_crop, trial_batch) != (crop, batch):
                    need = speed.step_bytes(crop or fp.short_side, batch) / 2**30
                    notes.append(f"crop {trial_crop}, batch {trial_batch}: crop {crop}, batch "
                                 f"{batch} would need {need:.1f} GiB of the "
                                 f"{speed.free_bytes / 2**30:.1f} GiB free")
                return trial_crop, trial_batch
    return crop, batch
