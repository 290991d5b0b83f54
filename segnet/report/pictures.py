"""An image's files in the report folder: the picture (JPEG, full size up to a cap), a small
thumbnail with its mistakes (or its prediction) tinted, and a script holding its layers (ground
truth, prediction, uncertainty) as PNG data the page paints in the class colours."""
import base64
import io
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from segnet.inference import plots

FILES = "report_files"  # beside report.html, as browsers name a saved page's folder
MAX_SIDE = 2048         # layers and pictures larger than this a side are scaled down
THUMB_SIDE = 160        # the gallery's thumbnails fit in this square
UNLABELLED = 255        # a layer's value for ignored pixels (class ids are 0..254)
ERROR_TINT = (255, 0, 64)


def fitted_size(height, width, side):
    """(height, width) scaled to fit in side x side, never enlarged."""
    factor = min(1.0, side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_labels(labels, size):
    """uint8 [H, W] -> uint8 at size (height, width), nearest neighbour: labels are never
    interpolated."""
    if labels.shape == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize(size[::-1], Image.NEAREST))


def label_layer(labels, num_classes, ignore_index):
    """uint8 [H, W] of class ids 0..K-1, UNLABELLED where a pixel is ignored (or out of range)."""
    labels = np.asarray(labels)
    known = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    return np.where(known, labels, UNLABELLED).astype(np.uint8)


def png_data_url(pixels):
    """A data: URL of a grey PNG: the page draws it on a canvas and reads the values back (an
    image from a data: URL leaves the canvas readable, a file's does not under file://)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class PageFolder:
    """report_files/ beside report.html: images/, thumbs/ and layers/, a file each per image,
    named by the image's number. Files are written directly, not through utils.atomic_write:
    a page's thousands of small files would pay an fsync each, and a rerun rewrites them."""

    def __init__(self, out, class_colors, ignore_index=255, max_side=MAX_SIDE,
                 thumb_side=THUMB_SIDE):
        if len(class_colors) > UNLABELLED:
            raise ValueError(f"the report page draws at most {UNLABELLED} classes, the model "
                             f"has {len(class_colors)}")
        self.out, self.files = Path(out), Path(out) / FILES
        self.colors, self.ignore_index = class_colors, ignore_index
        self.max_side, self.thumb_side = max_side, thumb_side
        self.marks = {}  # number -> ("errors", bool [h, w]) or ("preds", uint8 [h, w]) at
        #                 thumbnail size, kept from add_layers until add_image draws them
        for folder in ("images", "thumbs", "layers"):  # an earlier page's files go
            shutil.rmtree(self.files / folder, ignore_errors=True)
            (self.files / folder).mkdir(parents=True)

    def paths(self, number):
        """{image, thumb, layers}: an image's files, relative to report.html."""
        stem = f"{number:05d}"
        return {"image": f"{FILES}/images/{stem}.jpg", "thumb": f"{FILES}/thumbs/{stem}.jpg",
                "layers": f"{FILES}/layers/{stem}.js"}

    def add_layers(self, number, preds, truth=None, uncertainty=None):
        """layers/N.js for one image. preds, truth: label maps [H, W] (truth int64 with the
        ignore index); uncertainty: float [H, W] in [0, 1] (entropy / ln K), or None."""
        preds = label_layer(preds, len(self.colors), self.ignore_index)
        size = fitted_size(*preds.shape, self.max_side)
        layers = {"pred": png_data_url(resize_labels(preds, size))}
        thumb = fitted_size(*preds.shape, self.thumb_side)
        self.marks[number] = ("preds", resize_labels(preds, thumb))
        if truth is not None:
            truth = label_layer(truth, len(self.colors), self.ignore_index)
            layers["truth"] = png_data_url(resize_labels(truth, size))
            small_truth = resize_labels(truth, thumb)
            self.marks[number] = ("errors", (small_truth != UNLABELLED)
                                  & (self.marks[number][1] != small_truth))
        if uncertainty is not None:
            scaled = np.clip(np.asarray(uncertainty, dtype=np.float32), 0, 1) * 255
            picture = Image.fromarray(scaled.round().astype(np.uint8))
            layers["uncertainty"] = png_data_url(np.asarray(picture.resize(size[::-1],
                                                                           Image.BILINEAR)))
        text = f"REPORT_LAYERS({number}, {{" + ", ".join(
            f'"{name}": "{url}"' for name, url in layers.items()) + "});\n"
        (self.out / self.paths(number)["layers"]).write_text(text, encoding="ascii")

    def add_image(self, number, image):
        """images/N.jpg and thumbs/N.jpg; image: float [C, H, W] (any range: stretched as
        plots.to_display does). Call after add_layers: the thumbnail shows its mistakes
        (red), or without ground truth its prediction in the class colours. Returns the
        image's {number, image, thumb, layers, width, height (as shown), full_width,
        full_height}."""
        picture = Image.fromarray(plots.to_display(image))
        height, width = picture.height, picture.width
        size = fitted_size(height, width, self.max_side)
        full = picture if size == (height, width) else picture.resize(size[::-1],
                                                                      Image.LANCZOS)
        paths = self.paths(number)
        full.save(self.out / paths["image"], quality=88)
        thumb = np.asarray(picture.resize(fitted_size(height, width, self.thumb_side)[::-1],
                                          Image.BILINEAR))
        Image.fromarray(self.tinted(number, thumb)).save(self.out / paths["thumb"], quality=85)
        return {"number": number, **paths, "width": size[1], "height": size[0],
                "full_width": width, "full_height": height}

    def tinted(self, number, thumb):
        """The thumbnail uint8 [h, w, 3] with the image's mistakes tinted, or its prediction
        overlaid; as it is when neither was given."""
        kind, marks = self.marks.pop(number, (None, None))
        if marks is None or marks.shape != thumb.shape[:2]:
            return thumb
        if kind == "errors":
            return np.where(marks[..., None], 0.35 * thumb + 0.65 * np.array(ERROR_TINT),
                            thumb).round().astype(np.uint8)
        return plots.overlay(thumb, marks, self.colors)


def scaled_entropy(entropy, num_classes):
    """Entropy in nats -> [0, 1], a share of its maximum ln K (0 for a single class)."""
    return entropy / math.log(num_classes) if num_classes > 1 else entropy * 0
