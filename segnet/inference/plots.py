"""Pictures: label maps in colour, overlays, validation samples, training curves, the
confusion matrix and the reliability diagram. Figures are drawn with matplotlib's Figure
directly (no pyplot, no backend chosen), so a notebook keeps its own."""
import numpy as np

from segnet import utils


def default_colors(num_classes):
    """Distinct RGB colours; class 0 (background) is black."""
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
            (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
            (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
            (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128)]
    generator = np.random.default_rng(0)
    extra = [tuple(int(v) for v in generator.integers(0, 256, 3))
             for _ in range(max(0, num_classes - len(base)))]
    return [list(color) for color in (base + extra)[:num_classes]]


def class_colors(info):
    """The checkpoint's class colours, or distinct defaults."""
    return info.get("class_colors") or default_colors(info["num_classes"])


def colorize(labels, colors, ignore_index=255):
    """uint8 [H, W, 3] picture of a label map; ignored pixels are white."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(colors)] = np.asarray(colors, dtype=np.uint8)
    palette[ignore_index % 256] = 255
    return palette[np.asarray(labels).astype(np.int64) % 256]


def to_display(image):
    """uint8 [H, W, 3] from a [C, H, W] float image in any range (min-max stretched)."""
    image = np.asarray(image, dtype=np.float32)
    image = image[:3].transpose(1, 2, 0) if image.ndim == 3 else image[..., None]
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    image = (image * 255).round().astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def overlay(image_rgb, labels, colors, alpha=0.45):
    """Image with a translucent colour mask; background (class 0) left clear."""
    colored = colorize(labels, colors).astype(np.float32)
    mixed = image_rgb.astype(np.float32)
    foreground = (np.asarray(labels) > 0)[..., None]
    mixed = np.where(foreground, (1 - alpha) * mixed + alpha * colored, mixed)
    return mixed.round().astype(np.uint8)


def save_samples_figure(path, samples, colors, class_names=None):
    """Rows of image | ground truth | prediction | overlay. samples: (image, mask, pred)."""
    fig = new_figure(figsize=(12, 3 * len(samples)))
    axes = fig.subplots(len(samples), 4, squeeze=False)
    for row, (image, mask, pred) in zip(axes, samples):
        picture = to_display(image)
        panels = (picture, colorize(mask, colors), colorize(pred, colors),
                  overlay(picture, pred, colors))
        for axis, panel, title in zip(row, panels, ("image", "ground truth", "prediction",
                                                    "overlay")):
            axis.imshow(panel, interpolation="nearest")
            axis.set_title(title)
            axis.axis("off")
    save_figure(fig, path)


def plot_curves(path, rows):
    """Loss and mIoU / mean Dice per epoch from metrics.csv rows (dicts)."""
    epochs = [float(row["epoch"]) for row in rows]
    fig = new_figure(figsize=(11, 4))
    loss_axis, score_axis = fig.subplots(1, 2)
    for key in ("train_loss", "val_loss"):
        loss_axis.plot(epochs, [_float(row[key]) for row in rows], marker="o", label=key)
    for key in ("miou", "mean_dice"):
        score_axis.plot(epochs, [_float(row[key]) for row in rows], marker="o", label=key)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    score_axis.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0, 1))
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(fig, path)


def _float(value):
    return float(value) if value not in ("", None) else float("nan")


def save_confusion_figure(path, confusion, class_names):
    """Row-normalised confusion matrix (each true class sums to 1), class names on the axes."""
    counts = confusion.double()
    rates = (counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
    size = len(class_names)
    fig = new_figure(figsize=(2.5 + 0.7 * size, 2 + 0.6 * size))
    axis = fig.subplots()
    picture = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(size), class_names, rotation=45, ha="right")
    axis.set_yticks(range(size), class_names)
    axis.set(xlabel="predicted class", ylabel="true class", title="confusion (rows sum to 1)")
    if size <= 20:
        for row, col in np.ndindex(size, size):
            axis.text(col, row, f"{rates[row, col]:.2f}", ha="center", va="center",
                      color="white" if rates[row, col] > 0.5 else "black", fontsize=8)
    fig.colorbar(picture, ax=axis, fraction=0.046)
    save_figure(fig, path)


def save_reliability_figure(path, curves):
    """Reliability diagram: accuracy against mean confidence per bin (on the diagonal = well
    calibrated) above the pixels in each bin (log scale), for each (label, calibration) in
    `curves` (measures.Calibration.compute's dicts, with the same bins)."""
    fig = new_figure(figsize=(6, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.4)})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    width = 1 / len(curves[0][1]["bins"]) / len(curves)
    for number, (label, calibration) in enumerate(curves):
        bins = [entry for entry in calibration["bins"] if entry["count"]]
        top.plot([entry["confidence"] for entry in bins], [entry["accuracy"] for entry in bins],
                 marker="o", label=f"{label}: ECE {calibration['ece']:.4f}")
        offset = (number + 0.5) * width - len(curves) * width / 2
        bottom.bar([(entry["lower"] + entry["upper"]) / 2 + offset for entry in bins],
                   [entry["count"] for entry in bins], width=width, label=label,
                   edgecolor="white", linewidth=0.5)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
            title="reliability: labelled pixels binned by confidence")
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence (top class probability)", ylabel="pixels")
    if any(entry["count"] for _, calibration in curves for entry in calibration["bins"]):
        bottom.set_yscale("log")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    save_figure(fig, path)


def new_figure(**options):
    """A matplotlib Figure, made without pyplot. matplotlib is imported here, on first use: it
    takes a third of a second, which every training, predict or evaluate process would pay."""
    from matplotlib.figure import Figure
    return Figure(**options)


def save_figure(fig, path):
    """Save through a temp file so a reader never sees a half-written PNG. A Figure made
    directly (not through pyplot) needs no backend and is freed with its last reference."""
    fig.tight_layout()
    with utils.atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=80)
