"""Stacks and volumes: a multi-page TIFF or a NIfTI volume is one sample a page (a slice along
its last axis). A page is read on its own (a seek, or one slice of nibabel's proxy), never the
whole file, and a file read as one image is checked to have one page: nothing is read in part
without a line that says so. NIfTI needs nibabel, an optional dependency."""
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segnet.utils import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_DESCRIPTION = 270  # the TIFF tag where ImageJ says how many images a stack holds
NIBABEL_MISSING = ("NIfTI files need nibabel, an optional dependency: pip install nibabel "
                   "(or convert the volumes to multi-page TIFF)")


@dataclass(frozen=True)
class Page:
    """One page of a stack: what a sample reads in place of a file. Printed as the file and
    the page, so every message about it names both."""

    path: Path
    index: int  # 0-based
    count: int  # the stack's pages

    def __str__(self):
        return f"{self.path} (page {self.index + 1} of {self.count})"

    @property
    def name(self):
        return self.path.name

    @property
    def suffix(self):
        return self.path.suffix


def as_source(path):
    """A file name as a Path; a Page (or another source, maskfiles.MaskUnion) as it is: what
    the readers take."""
    return Path(path) if isinstance(path, (str, os.PathLike)) else path


def is_nifti(path):
    """Whether a file (or a page's file) is a NIfTI volume."""
    return str(path.path if isinstance(path, Page) else path).lower().endswith(NIFTI_SUFFIXES)


def may_be_stack(path):
    """Whether a file can hold several pages (TIFF, NIfTI): only these are counted."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES or is_nifti(path)


def nibabel():
    """The nibabel module; DataError with the install line when it is missing."""
    if importlib.util.find_spec("nibabel") is None:
        raise DataError(NIBABEL_MISSING)
    import nibabel as module  # optional: imported where a NIfTI file is read
    return module


def _nifti_shape(path):
    """A NIfTI volume's [rows, cols, pages] from its header (no voxel read)."""
    try:
        shape = tuple(nibabel().load(str(path)).shape)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path} cannot be read as NIfTI ({error}): re-export it") from error
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise DataError(f"{path} has shape {list(shape)}: a NIfTI image here is 2-D or 3-D "
                        f"(sliced along its last axis); split 4-D series into one file a time "
                        f"point or channel")
    return shape


def page_count(path):
    """Pages of a TIFF (Pillow's frames) or slices of a NIfTI volume; 1 for other files."""
    path = Path(path)
    if is_nifti(path):
        return _nifti_shape(path)[2]
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return 1
    try:
        with Image.open(path) as pil:
            return _frames(pil, path)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} cannot be read ({error}): the file is corrupt, truncated or "
                        f"not an image; re-export it or remove it and its pair") from error


def pages_of(path, count=None):
    """The samples of a file: [path] for one page, [Page(path, k, n)] for a stack of n."""
    count = page_count(path) if count is None else count
    if count < 1:
        raise DataError(f"{path} has no pages (a volume with an empty last axis)")
    return [Path(path)] if count == 1 else [Page(Path(path), index, count)
                                            for index in range(count)]


def nifti_slice(source):
    """One slice [rows, cols] of a NIfTI file (a Page, or a path read as its only slice), as
    stored: integers or floats, read through nibabel's proxy (one slice, not the volume)."""
    path = source.path if isinstance(source, Page) else Path(source)
    index = source.index if isinstance(source, Page) else 0
    image = nibabel().load(str(path))
    count = _nifti_shape(path)[2]
    if not isinstance(source, Page) and count > 1:
        raise DataError(_whole_file_message(path, count))
    try:
        data = np.asarray(image.dataobj[(slice(None), slice(None), index)
                                        + (0,) * (len(image.shape) - 3)]
                          if len(image.shape) >= 3 else image.dataobj)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{source} cannot be read ({error}): the volume is truncated or "
                        f"corrupt; re-export it") from error
    return data.reshape(data.shape[:2])


def nifti_pil(source):
    """A NIfTI slice as a PIL image by the existing intensity rules: 8- and 16-bit unsigned
    kept (scaled by their range when read), anything else (signed, CT's Hounsfield units,
    floats) as float32, kept as it is."""
    data = nifti_slice(source)
    if data.dtype not in (np.uint8, np.uint16):
        return Image.fromarray(np.ascontiguousarray(data, dtype=np.float32), mode="F")
    return Image.fromarray(np.ascontiguousarray(data))


def _whole_file_message(path, count):
    return (f"{path} has {count} pages but is read as one image here: a stack gives one "
            f"sample a page only where it is listed as one (run the check or start a new run "
            f"so that the data is scanned again)")


def read_page(page):
    """A decoded PIL image of one page of a stack (a Page), or of a NIfTI file's only slice."""
    if is_nifti(page.path if isinstance(page, Page) else page):
        return nifti_pil(page)
    try:
        with Image.open(page.path) as pil:  # seek walks the page directory, reads one page
            pil.seek(page.index)
            pil.load()
            return pil.copy()
    except EOFError as error:
        raise DataError(f"{page.path} has fewer pages than the {page.count} it was scanned "
                        f"with: scan it again (a new run, or the check)") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{page} cannot be read ({error}): the stack is corrupt or "
                        f"truncated; re-export it") from error


def _frames(pil, path):
    """A TIFF's pages; DataError for an ImageJ stack that keeps its images under one page
    (ImageJ's layout past 4 GB): Pillow would see its first image alone."""
    count = getattr(pil, "n_frames", 1)
    match = re.search(r"\bimages=(\d+)", str(pil.tag_v2.get(IMAGE_DESCRIPTION, ""))
                      if hasattr(pil, "tag_v2") else "")
    if match and "ImageJ=" in pil.tag_v2.get(IMAGE_DESCRIPTION, "") and int(match[1]) > count:
        raise DataError(f"{path} is an ImageJ stack of {match[1]} images stored after one TIFF "
                        f"page (ImageJ's layout for stacks over 4 GB), which is not read here: "
                        f"save it from ImageJ/Fiji as an image sequence or as smaller stacks")
    return count


def check_single_page(pil, path):
    """DataError when a file opened as one image holds more pages (read in part otherwise)."""
    if Path(path).suffix.lower() in TIFF_SUFFIXES:
        count = _frames(pil, path)
        if count > 1:
            raise DataError(_whole_file_message(path, count))


def write_tiff_stack(path, pages):
    """Write 2-D uint8 arrays as one multi-page TIFF (each page a greyscale/palette-free
    'L' image: class ids, or 0/255 for binary), atomically enough for an output file."""
    images = [Image.fromarray(np.ascontiguousarray(page, dtype=np.uint8)) for page in pages]
    images[0].save(path, save_all=True, append_images=images[1:], compression="tiff_deflate")


def write_nifti_like(path, source, volume):
    """Write a label volume [rows, cols, pages] (uint8) as NIfTI with the source's affine and
    header (its data type set to uint8), so viewers overlay it on the source."""
    module = nibabel()
    reference = module.load(str(source))
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    module.save(module.Nifti1Image(volume.astype(np.uint8), reference.affine, header), str(path))
