"""Mask stacks out of predict.py: the pages of a multi-page TIFF input go, as they are predicted,
into one multi-page TIFF of the same pages (a page at a time, through a temporary file that
replaces the output only when its last page is in); a NIfTI input gives a NIfTI label volume
with the input's affine and header (built in memory: nibabel writes whole volumes)."""
import os
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin

from segnet.data.pixels.stacks import Page, is_nifti, write_nifti_like


def stack_mask_path(source, output):
    """Where a stack's mask stack goes: <stem>.tif, or <stem>.nii.gz for NIfTI."""
    path = source.path if isinstance(source, Page) else Path(source)
    if is_nifti(path):
        return output / (path.name[:-len(".nii.gz")] + ".nii.gz" if path.name.lower().endswith(
            ".nii.gz") else path.stem + ".nii.gz")
    return output / f"{path.stem}.tif"


class StackOutputs:
    """The mask stacks being written: add(page, labels) in page order; a stack is complete (and
    in place) after its last page. abandon() drops those left unfinished (an unreadable page)
    and returns their paths."""

    def __init__(self, output, binary):
        self.output, self.binary, self.open = output, binary, {}

    def add(self, page, labels):
        """Add one page's uint8 [H, W] labels; finishes the stack after its last page."""
        key = page.path if isinstance(page, Page) else Path(page)
        index, count = (page.index, page.count) if isinstance(page, Page) else (0, 1)
        if key not in self.open:
            self.open[key] = self._start(stack_mask_path(page, self.output), count,
                                         labels.shape)
        entry = self.open[key]
        if index != entry["next"]:  # a page before it could not be read: the stack is broken
            return
        values = np.ascontiguousarray(labels * np.uint8(255) if self.binary else labels,
                                      dtype=np.uint8)
        if entry["writer"] is None:
            entry["volume"][..., index] = values
        else:
            Image.fromarray(values).save(entry["writer"], format="TIFF",
                                         compression="tiff_deflate")
            entry["writer"].newFrame()
        entry["next"] += 1
        if entry["next"] == count:
            self._finish(key)

    def _start(self, target, count, shape):
        if is_nifti(target):
            return {"target": target, "writer": None, "next": 0,
                    "volume": np.zeros((*shape, count), dtype=np.uint8)}
        temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        return {"target": target, "temp": temp, "next": 0,
                "writer": TiffImagePlugin.AppendingTiffWriter(str(temp), new=True)}

    def _finish(self, key):
        entry = self.open.pop(key)
        if entry["writer"] is not None:
            entry["writer"].close()
            os.replace(entry["temp"], entry["target"])
        else:
            write_nifti_like(entry["target"], key, entry["volume"])

    def abandon(self):
        """Drop the stacks not finished (their temporary files removed); returns their inputs."""
        left = list(self.open)
        for entry in self.open.values():
            if entry["writer"] is not None:
                entry["writer"].close()
                Path(entry["temp"]).unlink(missing_ok=True)
        self.open.clear()
        return left
