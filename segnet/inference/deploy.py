"""Deployment: a checkpoint exported to ONNX (images in [0, 1] -> class probabilities and labels,
the training normalisation inside the graph, the metadata a deployer needs), checked against
PyTorch, and run with ONNX Runtime through inference.py's tiling and batching (predict.py --onnx).
A fold ensemble (a cross-validation run folder) goes into ONE file with the averaging inside the
graph: a deployer runs one graph and gets the ensemble's probabilities, with no manifest of member
files and weights to keep in sync. onnx, onnxscript and onnxruntime are optional
(requirements-export.txt): only the functions that use them import them."""
import contextlib
import importlib
import importlib.util
import json
import logging
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from model import MIN_SIZE, context_radius, inference_model
from segnet import utils
from segnet.inference import ensemble

OPSET = 18          # the first opset of torch's dynamo exporter; ONNX Runtime >= 1.14 runs it
CHECK_SIZE = (97, 130)  # odd sizes: the poolings floor and the unpoolings restore them
CHECK_BATCH = 2
ATOL = 1e-4         # largest probability difference between ONNX Runtime and PyTorch (fp32)
MAX_MOVED = 0.05     # ... at all but this share of the pixels (max-pooling ties: see below)
INPUT_NAME, OUTPUT_NAMES = "images", ("probs", "labels")
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install -r requirements-export.txt"
HERE = Path(__file__).resolve().parent
# metadata_props values are strings: these are plain text, every other value is JSON.
TEXT_KEYS = ("input", "outputs", "project_version", "torch_version")
# What predict.py needs, as utils.checkpoint_info gives it for a checkpoint.
INFO_KEYS = (*utils.DATA_KEYS, "train_image_size", "dropout")
# ... and what files exported before them lack: the training scale, the flips (--tta) and the
# train images held out for validation where the data has no val/ (evaluate.py --split val).
OPTIONAL_INFO = {"train_scale": 1.0, "flips": ["h", "v"], "holdout": None, "layout": None}


def missing_packages(names=EXPORT_PACKAGES):
    """The optional export packages that are not installed (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def _require(names):
    missing = missing_packages(names)
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed: ONNX export and ONNX Runtime "
                          f"need {INSTALL_HINT}")


# ---------------------------------------------------------------- the exported network

class DeployedSegNet(nn.Module):
    """The network as exported: images float32 [N, C, H, W] in [0, 1] (dataset.load_image's
    scaling) -> (probs float32 [N, K, H, W], the softmax; labels int64 [N, H, W], its arg-max).
    The training normalisation is the graph's first operation, so a deployer only scales pixels.
    """

    def __init__(self, model, normalization):
        super().__init__()
        self.model = model
        channels = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(normalization["mean"]).view(channels))
        self.register_buffer("std", torch.tensor(normalization["std"]).view(channels))

    def forward(self, images):
        probs = self.model((images - self.mean) / self.std).softmax(1)  # as dataset.normalize
        return probs, probs.argmax(1)


def deployable_model(checkpoint, path="checkpoint"):
    """DeployedSegNet of a loaded checkpoint: BatchNorm folded, fp32, NCHW (an NHWC model would
    export its layout permutes), eval mode, so dropout is the identity."""
    model = utils.build_model(checkpoint, path)
    folded = inference_model(model, dtype=None, channels_last=False)
    return DeployedSegNet(folded, checkpoint["data"]["normalization"]).eval()


def deployable_members(members):
    """DeployedSegNet of [(path, checkpoint)] (ensemble.load_members): deployable_model's for
    one; for several, their folded fp32 NCHW models in an ensemble.EnsembleSegNet, which
    re-normalises the input for each member and averages their softmax, behind member 0's
    normalisation (so the graph still takes [0, 1] images)."""
    if len(members) == 1:
        return deployable_model(members[0][1], members[0][0])
    folded = [inference_model(utils.build_model(checkpoint, path), dtype=None,
                              channels_last=False) for path, checkpoint in members]
    model = ensemble.EnsembleSegNet(folded, [checkpoint["data"]["normalization"]
                                             for _, checkpoint in members])
    return DeployedSegNet(model, members[0][1]["data"]["normalization"]).eval()


# ---------------------------------------------------------------- metadata

def project_version():
    """`git describe --always --dirty` of this code, or 'unknown' outside a git checkout."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return result.stdout.strip() if result.returncode == 0 else "unknown (not a git checkout)"


def trained(checkpoint):
    """{epoch, best_epoch, best_val_miou} of a checkpoint (None where it has none)."""
    return {"epoch": checkpoint.get("epoch"), "best_epoch": checkpoint.get("best_epoch"),
            "best_val_miou": checkpoint.get("best_metric")}


def onnx_metadata(checkpoint, opset=OPSET, members=()):
    """{key: str} for the model's metadata_props: what a deployer needs besides the graph.

    Plain text for TEXT_KEYS, JSON for the rest (numbers, lists, dicts, null). The checkpoint's
    data entry (class names and colours, in_channels, normalisation, mask decoding...), the
    preprocessing (train_image_size: the square the model was trained at, null = native;
    train_scale: the factor images were resized by, 1 = native; flips: those training used), its
    epoch and best validation mIoU, the receptive-field radius and pooling grid for tiling, and
    the versions it came from. members: a fold ensemble's [(path, checkpoint)], `checkpoint`
    being the first: "ensemble" lists each one's {checkpoint, epoch, best_epoch, best_val_miou},
    and the top-level epoch entries, which no single model has, are null.
    """
    info = utils.checkpoint_info(checkpoint)
    channels = info["in_channels"]
    values = {key: info[key] for key in (*INFO_KEYS, *OPTIONAL_INFO)}
    values.update(
        trained(checkpoint) if len(members) < 2 else dict.fromkeys(trained(checkpoint)),
        context_radius=context_radius(), min_size=MIN_SIZE, opset=opset,
        checkpoint_format_version=checkpoint["format_version"])
    if len(members) > 1:
        values["ensemble"] = [dict(checkpoint=str(path), **trained(member))
                              for path, member in members]
    text = {
        "input": f"{INPUT_NAME}: float32 [N, {channels}, H, W], H, W >= {MIN_SIZE}, pixels "
                 f"scaled to [0, 1] (8-bit / 255, 16-bit / 65535); the normalisation is applied "
                 f"inside the graph",
        "outputs": f"{OUTPUT_NAMES[0]}: float32 [N, {info['num_classes']}, H, W] class "
                   f"probabilities (softmax); {OUTPUT_NAMES[1]}: int64 [N, H, W] class ids "
                   f"(arg-max)",
        "project_version": project_version(), "torch_version": torch.__version__}
    return {**{key: json.dumps(value) for key, value in values.items()}, **text}


def decode_metadata(props):
    """metadata_props {key: str} -> values (JSON decoded, TEXT_KEYS kept as text)."""
    decoded = {}
    for key, value in props.items():
        try:
            decoded[key] = value if key in TEXT_KEYS else json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"metadata '{key}' is not JSON ({value[:80]!r}): the file was not "
                             f"written by export.py or was modified") from None
    return decoded


def read_metadata(path):
    """The decoded metadata_props of an ONNX file (onnx.load, weights not needed)."""
    _require(("onnx",))
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return decode_metadata({prop.key: prop.value for prop in model.metadata_props})


def inference_info(metadata, path):
    """What predict.py needs (INFO_KEYS, as utils.checkpoint_info gives for a checkpoint)."""
    missing = [key for key in INFO_KEYS if key not in metadata]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} in its metadata: it was not "
                         f"exported by export.py; export the checkpoint with "
                         f"`python export.py --checkpoint best.pt`")
    return {**{key: metadata[key] for key in INFO_KEYS},
            **{key: metadata.get(key, default) for key, default in OPTIONAL_INFO.items()}}


# ---------------------------------------------------------------- export and its checks

@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's log lines (torchvision ops skipped: torchvision is not a dependency;
    a failed opset conversion, which export_graph reports itself) and torch's internal
    deprecation warnings; the loggers' levels are restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_graph(deployed, in_channels, opset=OPSET):
    """ModelProto of `deployed` with dynamic batch, height and width (H, W >= MIN_SIZE).

    torch's dynamo exporter (torch.export, then onnxscript): the default since torch 2.9 and the
    one kept going forward; the TorchScript exporter is deprecated and slated for removal.
    """
    _require(("onnx", "onnxscript"))
    sample = torch.from_numpy(check_input(in_channels, (8 * MIN_SIZE, 12 * MIN_SIZE)))
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=MIN_SIZE),
            3: torch.export.Dim("width", min=MIN_SIZE)}
    with _quiet_exporter():
        program = torch.onnx.export(deployed, (sample,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes={"images": dims}, external_data=False,
                                    verbose=False)
    proto = program.model_proto
    # The exporter keeps its own opset when converting to the one asked for fails (a warning).
    actual = graph_opset(proto)
    if actual != opset:
        raise ValueError(f"the exporter could not write opset {opset} (the graph came out at "
                         f"opset {actual}); choose an opset onnx {_version('onnx')} converts to, "
                         f"e.g. {OPSET}")
    return proto


def graph_opset(proto):
    """The default-domain (ai.onnx) opset a ModelProto imports."""
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def _version(package):
    return importlib.import_module(package).__version__


def check_input(in_channels, size=CHECK_SIZE, batch=CHECK_BATCH, seed=0):
    """Uniform noise float32 [batch, C, H, W] in [0, 1] from its own generator."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, in_channels, *size), dtype=np.float32)


def output_mismatch(expected_probs, probs, labels, atol=ATOL):
    """Why ONNX Runtime's outputs disagree with PyTorch's probabilities, or None.

    probs must be within atol of PyTorch's at all but MAX_MOVED of the pixels: where two
    activations of a 2x2 max-pooling window tie to float rounding, the two runtimes may keep
    different positions, which moves the pixels downstream of it (seen on AVX2 CPUs: 0.13% of
    the pixels of two 97x130 images, 5% of two 32x32 ones, by up to 2e-3, while the median pixel
    agreed to 6e-8); a wrong graph moves nearly all. Labels must be the arg-max of PyTorch's
    probabilities at the other pixels wherever its two largest differ by more than 2 * atol
    (closer ones may break either way). NaN anywhere fails.
    """
    if probs.shape != expected_probs.shape or labels.shape != (
            expected_probs.shape[:1] + expected_probs.shape[2:]) or labels.dtype != np.int64:
        return (f"output shapes {probs.shape} and {labels.shape} {labels.dtype}, expected "
                f"{expected_probs.shape} and int64 labels")
    per_pixel = np.abs(probs - expected_probs).max(axis=1)
    moved = ~(per_pixel <= atol)  # NaN counts as moved
    if np.isnan(probs).any() or moved.mean() > MAX_MOVED:
        return (f"probabilities differ from PyTorch's by up to {np.nanmax(per_pixel):.2e} "
                f"(> {atol:g}) at {moved.mean():.2%} of the pixels")
    top2 = np.sort(expected_probs, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0] > 2 * atol) & ~moved
    wrong = int((decided & (labels != expected_probs.argmax(1))).sum())
    if wrong:
        return f"labels differ from PyTorch's arg-max at {wrong} clearly decided pixels"
    return None


def check_export(proto, deployed, images, atol=ATOL):
    """onnx.checker, then one ONNX Runtime run on `images` against PyTorch (fp32, CPU).

    Returns {max_prob_diff, label_agreement}; ValueError on any mismatch (output_mismatch).
    """
    _require(("onnx", "onnxruntime"))
    import onnx
    onnx.checker.check_model(proto, full_check=True)
    session = new_session(proto.SerializeToString())
    probs, labels = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    with torch.inference_mode():
        expected, expected_labels = (t.numpy() for t in deployed(torch.from_numpy(images)))
    problem = output_mismatch(expected, probs, labels, atol)
    if problem:
        raise ValueError(f"the exported graph does not reproduce PyTorch on {images.shape[0]} "
                         f"images of {images.shape[2]}x{images.shape[3]}: {problem}")
    return {"max_prob_diff": float(np.abs(probs - expected).max()),
            "label_agreement": float((labels == expected_labels).mean())}


def check_output_path(output, checkpoint):
    """ValueError / FileNotFoundError before any work, for an output the export cannot write."""
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: name the .onnx file to write, e.g. "
                         f"{output / 'model.onnx'}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"--output {output}: the folder {output.parent} does not exist; "
                                f"create it first")
    if output.resolve() == Path(checkpoint).resolve():
        raise ValueError(f"--output {output} is the checkpoint itself; choose another name")


def export_checkpoint(checkpoint_path, output, opset=OPSET, check_size=CHECK_SIZE, atol=ATOL):
    """Export a checkpoint, or the fold ensemble of a cross-validation run folder
    (ensemble.checkpoint_paths; one graph, deployable_members), to `output` (ONNX, metadata
    included) after checking it; returns a report {output, bytes, opset, metadata, dropout,
    max_prob_diff, label_agreement, check_size}.

    The file is written (atomically) only when onnx.checker and the ONNX Runtime run agree with
    PyTorch (for an ensemble, the PyTorch ensemble). ValueError / FileNotFoundError name the
    file at fault; ImportError says what to install.
    """
    _require(EXPORT_PACKAGES)
    check_output_path(output, checkpoint_path)
    members = ensemble.load_members(checkpoint_path)
    checkpoint = members[0][1]
    deployed = deployable_members(members)
    in_channels = checkpoint["data"]["in_channels"]
    proto = export_graph(deployed, in_channels, opset)
    metadata = onnx_metadata(checkpoint, opset, members)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"SegNet segmentation exported from {Path(checkpoint_path).name}" + (
        f" (a fold ensemble of {len(members)} models)" if len(members) > 1 else "")
    report = check_export(proto, deployed, check_input(in_channels, check_size), atol)
    data = proto.SerializeToString()
    with utils.atomic_write(output, "wb") as handle:
        handle.write(data)
    return dict(report, output=Path(output), bytes=len(data), opset=opset,
                metadata=decode_metadata(metadata), check_size=tuple(check_size),
                dropout=utils.checkpoint_info(checkpoint)["dropout"])


# ---------------------------------------------------------------- ONNX Runtime

def session_options(threads=None):
    """ONNX Runtime's CPU settings: every graph optimisation (ORT's default level, kept
    explicit: with the lower ones, which leave out the NCHWc conv layout, inference measured
    about 12% slower) and `threads` intra-op threads (None: as many as PyTorch computes with,
    torch.get_num_threads(): the machine's cores unless OMP_NUM_THREADS or
    torch.set_num_threads says otherwise)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return options


def new_session(model, threads=None):
    """An ONNX Runtime CPU session of an ONNX file path or serialized model bytes."""
    _require(("onnxruntime",))
    import onnxruntime
    source = str(model) if isinstance(model, (str, Path)) else model
    return onnxruntime.InferenceSession(source, session_options(threads),
                                        providers=["CPUExecutionProvider"])


class OnnxRuntimeModel:
    """An exported model in ONNX Runtime, used by inference.py (forward_probs, tiled_probs,
    batch_probs) as they use a SegNet: same tiling, batching, flips and resizing.

    Those functions pass images normalised as in training and take the softmax of what the
    model returns, while the graph takes [0, 1] images and returns probabilities. So this
    adapter un-normalises its input (images * std + mean) and returns log-probabilities, whose
    softmax is the probabilities again (within float rounding). Everything batch_probs does
    before the model (edge padding, flips, antialiased bilinear resizing) commutes with that
    per-channel affine map, so the graph sees what it would see from [0, 1] pixels, and the
    shared code keeps one normalisation: the one in the metadata, as for a checkpoint.
    The graph is the deterministic (eval) network: no Monte Carlo dropout.
    """

    device = torch.device("cpu")  # inference.model_device: where the inputs go
    mc_dropout = False

    def __init__(self, session, info):
        self.session, self.num_classes = session, info["num_classes"]
        channels = (1, -1, 1, 1)
        self.mean = torch.tensor(info["normalization"]["mean"]).view(channels)
        self.std = torch.tensor(info["normalization"]["std"]).view(channels)

    def eval(self):
        return self

    def __call__(self, images):
        """log-probabilities float32 [N, K, H, W] of normalised images [N, C, H, W]."""
        if self.mc_dropout:
            raise ValueError("an ONNX model is the deterministic (eval) network: Monte Carlo "
                             "dropout needs the checkpoint (predict.py --checkpoint "
                             "--mc-samples)")
        pixels = (images.float().cpu() * self.std + self.mean).numpy()
        (probs,) = self.session.run([OUTPUT_NAMES[0]], {INPUT_NAME: pixels})
        return torch.from_numpy(probs).log()


def load_onnx(path, threads=None):
    """(OnnxRuntimeModel, info) for an ONNX file written by export.py; info is what
    utils.checkpoint_info gives for a checkpoint (class colours, channels, normalisation...),
    read from the file's metadata. ValueError / FileNotFoundError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} " + (
            "is a folder: name the .onnx file in it" if path.is_dir() else "does not exist"))
    _require(("onnxruntime",))
    try:
        session = new_session(path, threads)
    except Exception as error:  # onnxruntime raises its own InvalidProtobuf, Fail, ...
        reason = (str(error).splitlines() or ["no message"])[0][:200]
        raise ValueError(f"{path} could not be loaded by ONNX Runtime: it is not an ONNX model, "
                         f"or it is truncated ({type(error).__name__}: {reason})") from None
    metadata = decode_metadata(session.get_modelmeta().custom_metadata_map)
    info = inference_info(metadata, path)
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].shape[1] != info["in_channels"]:
        raise ValueError(f"{path}: inputs {[(i.name, i.shape) for i in inputs]} do not match "
                         f"its metadata ({INPUT_NAME} with {info['in_channels']} channels)")
    return OnnxRuntimeModel(session, info), info
