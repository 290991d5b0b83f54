"""The generated demo dataset (`python dataset.py make-demo ROOT`, or `python train.py` with no
--data): grey cells with nuclei among look-alike background distractors, 3 classes that
intensity alone cannot separate."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from segnet.data.pixels.classtable import CLASS_TABLE_NAME
from segnet.utils import SPLITS, name_list

DEMO_CLASSES = [{"name": "background", "color": [0, 0, 0]},
                {"name": "cell", "color": [80, 200, 120]},
                {"name": "nucleus", "color": [230, 60, 160]}]


# Mean grey levels before illumination: dark spots in the background share the nuclei's level,
# smooth bright patches the cells' level, so only texture, edges and context tell them apart.
DEMO_LEVELS = {"background": 0.40, "cell": 0.58, "nucleus": 0.22}


def _gaussian_blur(image, sigma):
    """Separable gaussian blur of a 2-D float array, borders reflected."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    height, width = image.shape
    padded = np.pad(image, radius, mode="reflect")
    rows = sum(tap * padded[k:k + height] for k, tap in enumerate(taps))
    return sum(tap * rows[:, k:k + width] for k, tap in enumerate(taps))


def _smooth_noise(rng, shape, sigma):
    """Gaussian-blurred white noise with unit standard deviation."""
    noise = _gaussian_blur(rng.standard_normal(shape), sigma)
    return noise / noise.std()


def _blob_distance(rng, grid, center, radius, elongation=0.25, wobble=0.08):
    """Distance to center relative to a wobbly ellipse's radius at each angle (<= 1: inside);
    computed near the blob only (inf elsewhere)."""
    phases = rng.uniform(0, 2 * np.pi, 3)
    amplitudes = rng.uniform(-1, 1, 2) * wobble
    stretch = elongation * rng.uniform()
    reach = 2 * radius + 2  # the outline stays within 1.41 radii, soft edges end at 1.2x that
    top, left = (max(0, int(c - reach)) for c in center)
    bottom, right = (max(0, int(c + reach) + 1) for c in center)
    window = grid[:, top:bottom, left:right]
    offset_y, offset_x = window[0] - center[0], window[1] - center[1]
    angle = np.arctan2(offset_y, offset_x)
    outline = (1 + stretch * np.cos(2 * (angle - phases[0]))
               + amplitudes[0] * np.cos(3 * angle + phases[1])
               + amplitudes[1] * np.cos(5 * angle + phases[2]))
    distance = np.full(grid.shape[1:], np.inf)
    distance[top:bottom, left:right] = np.hypot(offset_y, offset_x) / (radius * outline)
    return distance


def _draw_distractors(rng, grid, image):
    """Background look-alikes: smooth bright patches (cell level) and dark spots (nucleus level)."""
    height, width = image.shape
    for _ in range(rng.integers(2, 4)):
        center = rng.uniform(0, height), rng.uniform(0, width)
        distance = _blob_distance(rng, grid, center, rng.uniform(10, 18))
        alpha = np.clip((1.2 - distance) / 0.4, 0, 1)  # soft edge
        image += alpha * (DEMO_LEVELS["cell"] - image)
    for _ in range(rng.integers(3, 7)):
        center = rng.uniform(0, height), rng.uniform(0, width)
        distance = _blob_distance(rng, grid, center, rng.uniform(4, 9), elongation=0.15)
        alpha = np.clip((1.1 - distance) / 0.3, 0, 1)
        image += alpha * (DEMO_LEVELS["nucleus"] - image)


def _draw_cells(rng, grid, image, mask):
    """Granular cells with a dark rim, each holding a darker smooth nucleus; later cells may
    overlap earlier ones."""
    height, width = image.shape
    texture = _smooth_noise(rng, (height, width), 1.0)  # granules about 2 px across
    for _ in range(max(2, round(height * width / 3200 * rng.uniform(0.8, 1.2)))):
        radius = rng.uniform(14, 24)
        center = np.array([rng.uniform(0, height), rng.uniform(0, width)])
        distance = _blob_distance(rng, grid, center, radius)
        inside = distance <= 1
        image[inside] = DEMO_LEVELS["cell"] + 0.10 * texture[inside]
        image[inside & (distance > 1 - 2 / radius)] -= 0.08
        mask[inside] = 1
        nucleus_radius = rng.uniform(5, 9)
        direction = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0, 0.5) * (radius - nucleus_radius)
        nucleus_center = center + shift * np.array([np.sin(direction), np.cos(direction)])
        nucleus = (_blob_distance(rng, grid, nucleus_center, nucleus_radius, 0.15, 0.05) <= 1)
        nucleus &= distance <= 1 - 2 / radius
        image[nucleus] = DEMO_LEVELS["nucleus"] + 0.03 * texture[nucleus]
        mask[nucleus] = 2


def _illumination(rng, grid):
    """Multiplicative uneven illumination: a tilted plane plus a broad bright or dark bump."""
    height, width = grid.shape[1:]
    slope_y, slope_x = rng.uniform(-0.45, 0.45, 2)
    field = 1 + slope_y * (grid[0] / height - 0.5) + slope_x * (grid[1] / width - 0.5)
    center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
    spread = 2 * (0.5 * max(height, width)) ** 2
    bump = np.exp(-((grid[0] - center_y) ** 2 + (grid[1] - center_x) ** 2) / spread)
    return field + rng.uniform(-0.15, 0.15) * bump


def demo_sample(rng, height, width):
    """One demo image (uint8 [H,W]) and its index mask (uint8: 0 background, 1 cell, 2 nucleus)."""
    grid = np.mgrid[0:height, 0:width].astype(np.float64)
    mask = np.zeros((height, width), dtype=np.uint8)
    image = DEMO_LEVELS["background"] + 0.03 * _smooth_noise(rng, (height, width), 6.0)
    _draw_distractors(rng, grid, image)
    _draw_cells(rng, grid, image, mask)
    image = _gaussian_blur(image, 0.8) * _illumination(rng, grid)
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), mask


def make_demo(root, seed=0, num_train=300, num_val=50, num_test=50, size_range=(96, 128)):
    """Write the demo dataset: ROOT/{train,val,test}/{images,masks}/<split>_<i>.png (grey 8-bit
    images, index masks 0..2) and ROOT/classes.json. Deterministic: each image comes from
    (seed, split, index), so a smaller set is a prefix of a larger one. ROOT may hold other
    files (a README), but no dataset: old and new files would mix."""
    root = Path(root)
    existing = [root / name for name in (*SPLITS, CLASS_TABLE_NAME) if (root / name).exists()]
    if existing:
        raise FileExistsError(f"{root} already holds a dataset ({name_list(existing)}): "
                              f"make-demo writes a fresh one; delete those or choose another "
                              f"folder")
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        if not count:
            continue
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, SPLITS.index(split), index])
            height, width = (int(n) for n in rng.integers(size_range[0], size_range[1] + 1, 2))
            image, mask = demo_sample(rng, height, width)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{index:04d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{index:04d}.png")
    (root / CLASS_TABLE_NAME).write_text(json.dumps({"classes": DEMO_CLASSES}, indent=2) + "\n")
