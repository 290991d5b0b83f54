"""The machine's measured speed, as the plan prices a step and a validation with it
(training/timing.py measures it), and whether compiling the step pays (plan_compile)."""
import importlib.util
from dataclasses import dataclass

CHECK_OVERHEAD = 2.0  # seconds a check spends beyond scoring (samples figure, curves, saves)
# BatchNorm statistics are re-estimated before each validation from whole, unaugmented train
# images, up to this many pixels (four 512x512 images; on the membrane set, four images gave
# the statistics of all 22 to within 0.002 mIoU).
CALIBRATION_PIXELS = 4 * 512 * 512
CALIBRATION_IMAGES = 16  # and at most this many images (each a forward pass of its own)
# A step may use this share of the device memory free when the plan measured it: the rest
# is for validation, the loader's pinned batches and the allocator's fragmentation.
MEMORY_SHARE = 0.85
# torch.compile of a training step on CUDA, measured on one H200 at 480 px, batch 16 (issue 28):
# x1.33 a step after 12.7 s of compiling. Planned where the expected saving is twice that.
COMPILE_SPEEDUP = 1.33
COMPILE_SECONDS = 12.7
COMPILE_MARGIN = 2


@dataclass(frozen=True)
class Speed:
    """Measured seconds per training step at a few (crop, batch) pairs, inference pixels per
    second and seconds to read a sample; step_seconds() interpolates linearly in the pixels
    of a step."""

    device: str  # "cpu", "cuda" or "mps"
    steps: tuple = ()  # ((crop, batch, seconds per step), ...)
    infer_pixels_per_second: float = 0.0
    load_seconds: float = 0.0  # reading one train sample (decoding, transform)
    load_workers: int = 0  # loader processes: 0 = samples are read between steps
    memory: tuple = ()  # ((crop, batch, peak bytes of a training step), ...): CUDA only
    free_bytes: float = 0.0  # device memory the run may use (free + its own cache), CUDA only

    def step_seconds(self, crop, batch):
        """A training step's seconds: its compute, plus the reading of its samples where no
        loader worker reads them meanwhile (or the part the workers cannot hide)."""
        compute = self.compute_seconds(crop, batch)
        reading = batch * self.load_seconds / max(self.load_workers, 1)
        return compute + reading if not self.load_workers else max(compute, reading)

    def compute_seconds(self, crop, batch):
        return along_pixels(self.steps, crop, batch)

    def step_bytes(self, crop, batch):
        """Peak device memory of a training step (weights, optimiser state and activations),
        interpolated linearly in the pixels of a step like its time; 0 where unmeasured."""
        return along_pixels(self.memory, crop, batch) if self.memory else 0.0

    def fits(self, crop, batch):
        """Whether a step at (crop, batch) fits in MEMORY_SHARE of the free device memory."""
        return not (self.memory and self.free_bytes) or (
            self.step_bytes(crop, batch) <= MEMORY_SHARE * self.free_bytes)

    def validation_seconds(self, pixels):
        return pixels / self.infer_pixels_per_second if self.infer_pixels_per_second else 0.0

    def check_seconds(self, fp):
        """A validation: scoring the val split, re-estimating BatchNorm on train images (a
        train-mode pass, about twice inference's cost a pixel) and CHECK_OVERHEAD."""
        largest = max(h * w for h, w, _ in fp.sizes)
        calibration = min(fp.train_pixels, CALIBRATION_PIXELS, CALIBRATION_IMAGES * largest)
        return (self.validation_seconds(fp.val_pixels) + 2 * self.validation_seconds(calibration)
                + CHECK_OVERHEAD)


def along_pixels(measured, crop, batch):
    """A cost at (crop, batch) from measurements ((crop, batch, cost), ...): a line through
    the smallest and largest in the pixels of a step (its intercept the fixed cost),
    proportional with one measurement or where noise gives the line no slope."""
    pixels = batch * crop * crop
    points = sorted((b * c * c, cost) for c, b, cost in measured)
    if len(points) == 1:
        return points[0][1] * pixels / points[0][0]
    (low_pixels, low), (high_pixels, high) = points[0], points[-1]
    per_pixel = max((high - low) / max(high_pixels - low_pixels, 1), 0.0)
    overhead = max(low - per_pixel * low_pixels, 0.0)
    if per_pixel == 0:  # noise: fall back to proportional
        return high * pixels / high_pixels
    return overhead + per_pixel * pixels


def plan_compile(flags, plan, device, crop, train_seconds):
    """--compile / --no-compile, else torch.compile on CUDA where the training the plan
    expects (train_seconds of eager steps) saves COMPILE_MARGIN times the compile time, at a
    fixed crop (whole images of many sizes would compile again and again) and with triton
    (inductor's GPU code generator) installed. Off on the CPU, where it measured x1.01."""
    if flags.get("compile") is not None:
        return flags["compile"]
    saving = train_seconds * (1 - 1 / COMPILE_SPEEDUP)
    if (device != "cuda" or not crop or saving < COMPILE_MARGIN * COMPILE_SECONDS
            or importlib.util.find_spec("triton") is None):
        return False
    plan.notes.append(f"torch.compile: about {saving:.0f} s of the {train_seconds:.0f} s of "
                      f"training saved for about {COMPILE_SECONDS:g} s of compiling "
                      f"(--no-compile: eager)")
    return True
