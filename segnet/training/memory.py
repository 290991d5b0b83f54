"""A CUDA out-of-memory during training: free what the failed step held, find a batch or crop
that fits now (a real forward and backward pass at each candidate, with the optimiser's state
and everything else the run holds still allocated), and say so in one line."""
import gc

import torch

from segnet.plan.sizes import MIN_BATCH, crop_ladder

# torch.OutOfMemoryError since torch 2.5; torch.cuda.OutOfMemoryError before (the same class).
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def release(model, optimizer):
    """Drop the failed step's gradients and cached blocks, so that the checkpoint can be
    written and the candidates tried."""
    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    free_cached()


def free_cached():
    """Collect garbage and return PyTorch's cached device blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def candidates(batch, crop):
    """(batch, crop) to try, best first: half the batch, a quarter, ... down to MIN_BATCH at
    the run's crop, then the smaller crops of the crop ladder at MIN_BATCH."""
    sizes = []
    while batch > MIN_BATCH:
        batch = max(MIN_BATCH, batch // 2)
        sizes.append((batch, crop))
    return sizes + [(batch, smaller) for smaller in crop_ladder(crop)[1:]]


def step_fits(model, runtime, batch, crop, in_channels):
    """Whether one training forward and backward pass at (batch, crop) fits in memory now.
    BatchNorm's running statistics are put back: the probe must not train the model."""
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    try:
        images = torch.zeros(batch, in_channels, crop, crop, device=runtime.device)
        with runtime.autocast():
            logits = model(images)
        logits.float().mean().backward()
        return True
    except OUT_OF_MEMORY:
        return False
    finally:
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
        model.zero_grad(set_to_none=True)
        free_cached()


def next_size(batch, crop):
    """The first (batch, crop) to try after an out-of-memory, or None: nothing is smaller.
    Whole images (crop 0) have no crop to shrink: half the batch."""
    if not crop:
        return (max(MIN_BATCH, batch // 2), 0) if batch > MIN_BATCH else None
    sizes = candidates(batch, crop)
    return sizes[0] if sizes else None


def size_flags(size, crop):
    """The flags that set `size` (batch, crop) on --resume of a run at `crop`."""
    new_batch, new_crop = size
    return (f"--batch-size {new_batch}" if new_crop == crop
            else f"--batch-size {new_batch} --crop-size {new_crop}")


def fitting_size(model, runtime, batch, crop, in_channels):
    """The first candidate (batch, crop) whose step fits, or None. Whole images (crop 0)
    have no one size to probe: half the batch is named unprobed (next_size)."""
    if not crop:
        return next_size(batch, crop)
    for size in candidates(batch, crop):
        if step_fits(model, runtime, *size, in_channels):
            return size
    return None


def advice_line(step, batch, crop, fitting, run_dir):
    """The one line train.py prints after an out-of-memory (last.pt already written)."""
    where = f"out of memory at step {step} (crop {crop} px, batch {batch})"
    resume = f"python train.py --resume {run_dir}"
    if fitting is None:
        return (f"{where}; saved {run_dir}/last.pt; no smaller batch or crop fit either: free "
                f"the GPU (another process may hold it) and continue with: {resume}")
    flag = size_flags(fitting, crop)
    return f"{where}; saved {run_dir}/last.pt; {flag} fits: continue with: {resume} {flag}"


def distributed_line(rank, step, plan):
    """The line a torchrun rank prints after its out-of-memory: the job stops, and --resume
    continues from the run's last last.pt (this step's where rank 0 ran out too, else a
    validation's or a planned save's) with the next smaller size (no probe can run while the
    other ranks wait)."""
    size = next_size(plan.batch_size, plan.crop_size)
    flag = f" {size_flags(size, plan.crop_size)}" if size else ""
    where = (f"rank {rank} ran out of memory at step {step} (crop {plan.crop_size} px, batch "
             f"{plan.batch_size} per process); the job stops; ")
    if size is None:
        where += "no smaller batch or crop to try: free the GPU (another process may hold it), "
    return (f"{where}rerun the same torchrun command with --resume <the run folder>{flag}: it "
            f"continues from the run's last last.pt")
