"""SegNet segmentation: the library behind train.py, evaluate.py, predict.py, export.py and
bench.py. A notebook needs one import:

    from segnet import SegNet, SegmentationDataset, load_model, predict

Everything else is reached by its full path (`from segnet.data import masks`). One folder per
job, in the order the data flows; imports go down this list only (tests/test_layout.py):

    runtime.py, utils.py   device and precision; checkpoints, errors, CLI helpers (model.py below)
    data/                  files -> samples: pairs, images, masks, scan, checks, transforms, loaders
    plan/                  the recipe from the data and the machine: crop, batch, length, saves
    inference/             a checkpoint -> labels and scores: tiling, TTA, measures, ONNX, pictures
    training/              one training run: the loop, the engine, losses, run files, timing
    report/                report.html: every scored or predicted image, its layers and scores
    bench/                 bench.py's report, loader line and GPU check
"""
from model import SegNet
from segnet.data.feed.dataset import SegmentationDataset
from segnet.inference.inference import load_model, predict

__all__ = ["SegNet", "SegmentationDataset", "load_model", "predict"]
