"""A dataset's fingerprint: what the training plan needs to know of it (sizes, class shares,
colour, the classes' images, widths and layout), taken from dataset.scan_dataset's info; the
plan (plan.py) is a pure function of it, the flags and the machine's speed."""
import dataclasses
from dataclasses import dataclass

SMALL_IMAGES = 0.10  # the crop fits the short side of all but the smallest 10% of images


@dataclass(frozen=True)
class Fingerprint:
    """What the plan needs to know of a dataset (from dataset.scan_dataset's info)."""

    train_images: int
    val_images: int
    sizes: tuple  # ((height, width, count), ...) of the train images as the model sees them
    val_pixels: int
    val_size: tuple  # (height, width) of the most common val image
    class_shares: tuple  # of each class among the labelled train pixels
    void_share: float  # of the train pixels with the ignore value
    colour_share: float = 0.0  # of the train images with real colour (images.COLOUR_SPREAD)
    class_images: tuple = ()  # train images holding each class
    class_widths: tuple = ()  # each class's structure width in pixels (None: absent)
    layout_rows: tuple = ()  # per class (mean, standard error, images) of its top/bottom
    layout_cols: tuple = ()  # ... and left/right asymmetry (labelstats.label_statistics)
    holdout: int = 0  # val images held out of train (no val/ split)

    @property
    def train_pixels(self):
        return sum(height * width * count for height, width, count in self.sizes)

    @property
    def short_side(self):
        """The short side that all but the smallest SMALL_IMAGES of the images reach."""
        sides = sorted((min(height, width), count) for height, width, count in self.sizes)
        skip, seen = SMALL_IMAGES * self.train_images, 0
        for side, count in sides:
            seen += count
            if seen > skip:
                return side
        return sides[-1][0]

    @property
    def thinnest(self):
        """The structure width (pixels) of the thinnest class, None when none is known."""
        widths = [width for width in self.class_widths if width]
        return min(widths) if widths else None

    def scaled(self, factor):
        """The fingerprint of the same data with every image resized by `factor`."""
        if factor == 1:
            return self
        side = lambda length: max(1, round(length * factor))  # noqa: E731
        return dataclasses.replace(
            self, sizes=tuple((side(h), side(w), count) for h, w, count in self.sizes),
            val_pixels=round(self.val_pixels * factor * factor),
            val_size=tuple(side(length) for length in self.val_size),
            class_widths=tuple(width * factor if width else width
                               for width in self.class_widths))


def size_counts(sizes, images):
    """((height, width, count), ...) of a split from scan_dataset's image_sizes entry: its
    per-size counts when the scan lists them; else a stand-in, the most common size for all
    images but one each at the smallest and the largest size."""
    listed = sizes.get("counts")
    if listed:
        return tuple((int(height), int(width), int(count)) for height, width, count in listed)
    most_common = tuple(sizes["most_common"])
    others = sorted({tuple(sizes["min"]), tuple(sizes["max"])} - {most_common})
    return ((*most_common, max(images - len(others), 1)), *((h, w, 1) for h, w in others))


def fingerprint(info, image_size=None):
    """The Fingerprint of a scanned dataset; with image_size, every image is that square."""
    splits, image_sizes = info["splits"], info["image_sizes"]
    train_images, val_images = splits["train"], splits.get("val", 0)
    sizes = size_counts(image_sizes["train"], train_images)
    val_sizes = size_counts(image_sizes["val"], val_images) if image_sizes.get("val") else ()
    val_pixels = sum(h * w * count for h, w, count in val_sizes)
    val_size = tuple(image_sizes["val"]["most_common"]) if val_sizes else sizes[0][:2]
    widths = tuple(info.get("class_widths") or ())
    if image_size:
        ratio = image_size / max(min(h, w) for h, w, _ in sizes)
        sizes = ((image_size, image_size, train_images),)
        val_pixels, val_size = val_images * image_size * image_size, (image_size, image_size)
        widths = tuple(width * ratio if width else width for width in widths)
    labelled = sum(info["class_pixels"])
    ignored = info.get("ignore_pixels", 0)
    layout = info.get("class_layout") or {}
    return Fingerprint(train_images=train_images, val_images=val_images, sizes=sizes,
                       val_pixels=val_pixels, val_size=val_size,
                       class_shares=tuple(p / max(labelled, 1) for p in info["class_pixels"]),
                       void_share=ignored / max(labelled + ignored, 1),
                       colour_share=info.get("colour_share", 0.0),
                       class_images=tuple(info.get("class_images") or ()), class_widths=widths,
                       layout_rows=tuple(map(tuple, layout.get("rows", ()))),
                       layout_cols=tuple(map(tuple, layout.get("cols", ()))),
                       holdout=len(info.get("holdout") or ()))
