"""The machine's measured speed, as the plan prices a step and a validation with it
(training/timing.py measures it)."""
from dataclasses import dataclass

CHECK_OVERHEAD = 2.0  # seconds a check spends beyond scoring (samples figure, curves, saves)
# BatchNorm statistics are re-estimated before each validation from whole, unaugmented train
# images, up to this many pixels (four 512x512 images; on the membrane set, four images gave
# the statistics of all 22 to within 0.002 mIoU).
CALIBRATION_PIXELS = 4 * 512 * 512
CALIBRATION_IMAGES = 16  # and at most this many images (each a forward pass of its own)


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

    def step_seconds(self, crop, batch):
        """A training step's seconds: its compute, plus the reading of its samples where no
        loader worker reads them meanwhile (or the part the workers cannot hide)."""
        compute = self.compute_seconds(crop, batch)
        reading = batch * self.load_seconds / max(self.load_workers, 1)
        return compute + reading if not self.load_workers else max(compute, reading)

    def compute_seconds(self, crop, batch):
        pixels = batch * crop * crop
        points = sorted((b * c * c, seconds) for c, b, seconds in self.steps)
        if len(points) == 1:
            return points[0][1] * pixels / points[0][0]
        (low_pixels, low), (high_pixels, high) = points[0], points[-1]
        per_pixel = max((high - low) / max(high_pixels - low_pixels, 1), 0.0)
        overhead = max(low - per_pixel * low_pixels, 0.0)
        if per_pixel == 0:  # noise: fall back to proportional
            return high * pixels / high_pixels
        return overhead + per_pixel * pixels

    def validation_seconds(self, pixels):
        return pixels / self.infer_pixels_per_second if self.infer_pixels_per_second else 0.0

    def check_seconds(self, fp):
        """A validation: scoring the val split, re-estimating BatchNorm on train images (a
        train-mode pass, about twice inference's cost a pixel) and CHECK_OVERHEAD."""
        largest = max(h * w for h, w, _ in fp.sizes)
        calibration = min(fp.train_pixels, CALIBRATION_PIXELS, CALIBRATION_IMAGES * largest)
        return (self.validation_seconds(fp.val_pixels) + 2 * self.validation_seconds(calibration)
                + CHECK_OVERHEAD)
