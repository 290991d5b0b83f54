"""Masks for new images from a checkpoint:
`python predict.py --checkpoint best.pt --input IMG|DIR|GLOB --output out/`, or from a model
exported by export.py, run with ONNX Runtime: `--onnx model.onnx` instead of --checkpoint; a
cross-validation run folder (or several checkpoints) predicts with the mean of its folds' softmax.
Large images are predicted in overlapping tiles, blended so that the result equals whole-image
prediction when the overlap covers SegNet's receptive field."""
import argparse
import glob
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import MIN_SIZE, context_radius
from segnet import runtime, utils
from segnet.data.files.pairs import IMAGE_EXTENSIONS
from segnet.utils import DataError
from segnet.data.pixels.images import normalize
from segnet.data.files.pairing import data_stem, data_suffix
from segnet.data.pixels.stacks import Page, is_nifti, may_be_stack, pages_of
from segnet.inference import deploy, ensemble, inference, inferoptions, measures, plots
from segnet.inference.stackout import StackOutputs, stack_mask_path
from segnet.report import contents, page, pagedata, pictures


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=utils.HelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="IMG|DIR|GLOB",
                        help="image files, folders (their images) or glob patterns ('**' recurses)")
    parser.add_argument("--output", type=Path, default=Path("predictions"),
                        help="folder for <stem>.png masks (created if missing); a multi-page "
                             "TIFF gives a <stem>.tif mask stack of the same pages, a NIfTI "
                             "volume a <stem>.nii.gz label volume")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png: the image with a translucent mask")
    parser.add_argument("--probs", action="store_true",
                        help="also write <stem>_probs.npy: float16 class probabilities [K, H, W]")
    parser.add_argument("--review", action=argparse.BooleanOptionalAction, default=True,
                        help="write review.csv, to choose the masks to check by hand: one "
                             "row per image read (file, mean_entropy, uncertain_fraction = share "
                             "of pixels whose top probability is below 0.5, share_<class>), most "
                             "uncertain first; from the softmax, or its mean with --mc-samples")
    parser.add_argument("--tile", type=int, default=inference.TILE,
                        help="images larger than this (pixels, either side) are predicted in "
                             f"tiles of this size; a multiple of {MIN_SIZE}")
    parser.add_argument("--overlap", type=int, default=inference.OVERLAP,
                        help="pixels shared by neighbouring tiles, a multiple of "
                             f"{MIN_SIZE}; "
                             f">= {2 * context_radius()} makes tiling exact")
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--onnx", type=Path, default=None,
                        help="instead of --checkpoint: a model exported by export.py, run with "
                             "ONNX Runtime (fp32, CPU; needs requirements-export.txt); class "
                             "colours and channels come from its metadata")
    inferoptions.add_inference_args(
        parser, batch_note=" (images up to --tile)",
        mc_output="write <stem>_entropy.png (16-bit), <stem>_entropy_color.png and "
                  "<stem>_variance.npy",
        seed_note="; each image is sampled under it, so its maps do not depend on the other "
                  "inputs",
        size_note="masks always come out at the input's size", checkpoint_group=models)
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable input instead of skipping it")
    page.add_report_args(parser, False, "every image, most uncertain first (review.csv's "
                                        "order), with its prediction and uncertainty")
    return parser


# ---------------------------------------------------------------- files

def expand_inputs(patterns):
    """Image files from files, folders and glob patterns, in order, without repeats.

    A named file is kept whatever its extension (so that a bad one is reported); folders and
    globs contribute their image files. SystemExit when a pattern matches nothing.
    """
    paths = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            paths += sorted(p for p in path.iterdir() if is_image_file(p))
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                raise SystemExit(f"error: --input {pattern} is not a file or folder and "
                                 f"matches no files")
            paths += [p for p in matches if is_image_file(p)]
    if not paths:
        raise SystemExit(f"error: --input {' '.join(patterns)} holds no images "
                         f"({' '.join(IMAGE_EXTENSIONS)})")
    return list(dict.fromkeys(paths))


def is_image_file(path):
    return path.is_file() and data_suffix(path) in IMAGE_EXTENSIONS


def expand_pages(paths):
    """The inputs as sources: a file, or the pages of a stack (a multi-page TIFF, a NIfTI
    volume), whose masks make one stack of the same pages (stackout.py). SystemExit naming a
    stack whose pages cannot be counted."""
    sources = []
    for path in paths:
        try:
            pages = pages_of(path) if may_be_stack(path) else [path]
        except DataError as error:
            raise SystemExit(f"error: {error}") from None
        sources += pages
    return sources


def is_stacked(source):
    """Whether a source's mask goes into a mask stack (a stack's page, or any NIfTI input)."""
    return isinstance(source, Page) or is_nifti(source)


def output_paths(source, output):
    """{kind: path} written for one input: mask, overlay, probs and the uncertainty maps. A
    stack's pages write one mask stack, and their other outputs a file a page (<stem>_p0003)."""
    path = getattr(source, "path", source)
    stem = data_stem(path) + (f"_p{source.index + 1:04d}" if isinstance(source, Page) else "")
    return {"mask": stack_mask_path(source, output) if is_stacked(source)
            else output / f"{stem}.png", "overlay": output / f"{stem}_overlay.png",
            "probs": output / f"{stem}_probs.npy",
            "entropy": output / f"{stem}_entropy.png",
            "entropy_color": output / f"{stem}_entropy_color.png",
            "variance": output / f"{stem}_variance.npy"}


def check_outputs(sources, output):
    """SystemExit before any work when two inputs share a stem or an output is an input."""
    seen = {}
    for source in sources:
        path, mask = getattr(source, "path", source), output_paths(source, output)["mask"]
        if mask in seen and seen[mask] != path:
            raise SystemExit(f"error: {seen[mask]} and {path} would both write {mask}; rename "
                             f"one or predict them into different --output folders")
        seen[mask] = path
    inputs = {getattr(source, "path", source).resolve() for source in sources}
    clashes = [p for source in sources for p in output_paths(source, output).values()
               if p.resolve() in inputs]
    if clashes:
        raise SystemExit(f"error: writing {clashes[0]} would overwrite an input image; choose "
                         f"another --output folder")


def save_mask(path, labels, info):
    """Binary: 'L' PNG with 0/255. Multi-class: palette PNG, index = class id, palette = colours.

    labels: uint8 [H, W] class ids.
    """
    if info["num_classes"] == 2:
        Image.fromarray(labels * np.uint8(255)).save(path)
        return
    picture = Image.fromarray(labels)
    palette = np.asarray(plots.class_colors(info), dtype=np.uint8).ravel().tolist()
    picture.putpalette(palette)  # mode -> "P"
    picture.save(path)


def save_uncertainty(paths, probs, variance):
    """Predictive entropy as a 16-bit PNG (entropy / log(K) * 65535, so 0 = certain and 65535 =
    all K classes equally likely) and as a colour-mapped PNG on the same fixed scale (magma:
    black = certain, pale yellow = most uncertain); variance float32 [H, W] as .npy."""
    import matplotlib  # the colormap only, and only here: it takes a third of a second
    scaled = (measures.entropy_map(probs) / math.log(probs.shape[0])).clamp(0, 1).numpy()
    Image.fromarray(np.round(scaled * 65535).astype(np.uint16)).save(paths["entropy"])  # I;16
    colors = matplotlib.colormaps["magma"](scaled, bytes=True)[..., :3]
    Image.fromarray(colors).save(paths["entropy_color"])
    np.save(paths["variance"], variance.numpy().astype(np.float32))


def write_outputs(path, image, labels, probs, variance, info, args):
    """The mask (and, if asked, overlay, probabilities and uncertainty maps) of one input.

    image: float32 [C, H, W] in [0, 1]; labels: uint8 [H, W]; probs: float32 tensor [K, H, W]
    on the CPU, only when --probs or --mc-samples asks for them (else None); variance: float32
    tensor [H, W] with --mc-samples, else None.
    """
    outputs = output_paths(path, args.output)
    if is_stacked(path):
        args.stacks.add(path, labels)
    else:
        save_mask(outputs["mask"], labels, info)
    if args.overlay:
        picture = plots.overlay(plots.to_display(image), labels, plots.class_colors(info))
        Image.fromarray(picture).save(outputs["overlay"])
    if args.probs:
        np.save(outputs["probs"], probs.to(torch.float16).numpy())
    if variance is not None:
        save_uncertainty(outputs, probs, variance)


# ---------------------------------------------------------------- main loop


def predict_files(model, info, paths, args, dtype, mc_samples=0, folder=None):
    """Predict and write every input (and, with --review, review.csv for those read); returns
    ([(path, message)] of those that could not be read, the review rows of those read and,
    with a report page's pictures.PageFolder, their files in it, in order)."""
    failures, reviews, files = [], [], []
    args.stacks = StackOutputs(args.output, binary=info["num_classes"] == 2)
    image_size = inferoptions.resolve_image_size(info, args.image_size)
    scale = inferoptions.resolve_scale(info, args.train_scale, args.image_size)
    bar = utils.Progress(len(paths), "predict", "image")
    images = inference.read_images(paths, info, failures, args.strict, bar)
    for batch in inference.batches(images, args.batch_size, args.tile):
        pixels = np.stack([image for _, image in batch])  # 4096x4096: 64 MB, freed below
        normalised = torch.from_numpy(normalize(pixels, info["normalization"]))
        del pixels
        probs, variance = inference.batch_probs(model, normalised, args.tile, args.overlap,
                                                inferoptions.tta_option(args.tta, info), dtype,
                                                image_size, mc_samples, args.seed,
                                                progress=True, scale=scale, on_device=True)
        # The arg-max and the review's statistics run where the model ran: only uint8 labels
        # cross to the host, and the probabilities only when an output is made of them.
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
        if args.review or folder is not None:
            reviews += [measures.review_row(path, probs[index], info["class_names"])
                        for index, (path, _) in enumerate(batch)]
        if folder is not None:
            files += page_pictures(folder, batch, labels, probs, len(files))
        host = probs.cpu() if args.probs or variance is not None else None
        for index, (path, image) in enumerate(batch):
            write_outputs(path, image, labels[index], None if host is None else host[index],
                          None if variance is None else variance[index].cpu(), info, args)
        bar.update(len(batch))
    bar.close()
    failures += [(path, f"{path}: a page could not be read, so no mask stack was written")
                 for path in args.stacks.abandon()]
    if args.review:
        measures.write_review(args.output / "review.csv", reviews, info["class_names"])
    return failures, reviews, files


def page_pictures(folder, batch, labels, probs, first):
    """Each image of a batch in the report page's folder, numbered from `first`: its picture,
    its prediction and its uncertainty (the predictive entropy, from the probabilities where
    the model ran). Returns their files (pictures.PageFolder.add_image)."""
    files = []
    for index, (_, image) in enumerate(batch):
        entropy = pictures.scaled_entropy(measures.entropy_map(probs[index]), probs.shape[1])
        folder.add_layers(first + index, labels[index], uncertainty=entropy.cpu().numpy())
        files.append(folder.add_image(first + index, image))
    return files


def page_folder(args, info):
    """The report page's pictures.PageFolder in --output, or None without --report."""
    if not args.report:
        return None
    try:
        return pictures.PageFolder(args.output, plots.class_colors(info),
                                   info.get("ignore_index", 255), args.report_max_side)
    except ValueError as error:
        raise SystemExit(f"error: {error} (leave out --report)") from None


def write_page(args, info, predicted, mc_samples):
    """report.html in --output, from predict_files' (failures, reviews, files)."""
    failures, reviews, files = predicted
    colors = plots.class_colors(info)
    rows = pagedata.predict_rows(reviews, files, info["class_names"])
    source = ensemble.checkpoint_names(args.checkpoint) or str(args.onnx)
    return page.write_page(args.output, contents.predict_values(
        source, rows, info, colors, len(failures), mc_samples),
        contents.predict_data(info, colors, rows))


def validate_args(args):
    problems = []
    try:
        inference.check_tiling(args.tile, args.overlap)
    except ValueError as error:
        problems.append(str(error))
    problems += (inferoptions.common_problems(args) + onnx_problems(args)
                 + page.report_problems(args))
    if args.output.exists() and not args.output.is_dir():
        problems.append(f"--output {args.output} is a file, not a folder")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def onnx_problems(args):
    """What --onnx cannot do: its graph is the fp32, deterministic network on the CPU."""
    if args.onnx is None:
        return []
    problems = [] if args.onnx.is_file() else [f"--onnx {args.onnx} is not a file"]
    if args.mc_samples:
        problems.append("--mc-samples needs --checkpoint: an --onnx model is the deterministic "
                        "(eval) network, without dropout")
    if args.amp not in ("auto", "off"):
        problems.append(f"--amp {args.amp} needs --checkpoint: an --onnx model runs in fp32")
    if args.device not in ("auto", "cpu"):
        problems.append(f"--device {args.device} needs --checkpoint: an --onnx model runs on "
                        f"ONNX Runtime's CPU provider")
    return problems


def load_predictor(args):
    """(model, info, autocast dtype or None): the checkpoint (or fold ensemble: ensemble.
    load_ensemble_for_inference) in its inference form, or the --onnx model in ONNX Runtime
    (deploy.OnnxRuntimeModel, which inference.py runs alike)."""
    if args.onnx is not None:
        model, info = deploy.load_onnx(args.onnx)
        return model, info, None
    return ensemble.load_ensemble_for_inference(args.checkpoint, args.device, args.amp)


def main(args):
    args.checkpoint = ensemble.checkpoint_argument(args.checkpoint)
    validate_args(args)
    paths = expand_pages(expand_inputs(args.input))
    check_outputs(paths, args.output)
    try:
        model, info, dtype = load_predictor(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None
    if inference.model_device(model).type == "cpu":
        runtime.tune_cpu_allocator()  # x1.46 inference img/s here (bench.py), as in training
    names = ensemble.checkpoint_names(args.checkpoint)
    if info["num_classes"] > 256:
        raise SystemExit(f"error: {names or args.onnx} has {info['num_classes']} classes; a "
                         f"PNG mask holds at most 256")
    mc_samples, note = inferoptions.mc_samples_to_run(args.mc_samples, info, names)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    folder = page_folder(args, info)
    predicted = predict_files(model, info, paths, args, dtype, mc_samples, folder)
    failures = predicted[0]
    if failures and args.strict:
        raise SystemExit(f"error: {failures[0][1]}\n(--strict: stopped there; the inputs before "
                         f"it were written to {args.output})")
    failed = {getattr(path, "path", path) for path, _ in failures}
    stacks = {getattr(source, "path", source) for source in paths if is_stacked(source)}
    written = sum(not is_stacked(source) and source not in failed for source in paths)
    print(f"wrote {written} mask(s) to {args.output}"
          + (f", and {len(stacks - failed)} mask stack(s) of the stacks' pages" if stacks
             else "")
          + (f" and uncertainty maps ({mc_samples} Monte Carlo pass(es) each)" if mc_samples
             else ""))
    if args.review:
        print(f"review list, most uncertain first: {args.output / 'review.csv'}")
    if folder is not None:
        path = write_page(args, info, predicted, mc_samples)
        print(f"report page, most uncertain first: {path} (open it in a browser)")
    if failures:
        print(f"{len(failures)} of {len(paths)} input(s) could not be read:\n"
              + "\n".join(f"- {path}" for path, _ in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
