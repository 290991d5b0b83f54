"""Small pieces every other module shares (command-line helpers, data errors and their wording,
atomic files, checkpoint I/O, progress): `from utils import load_checkpoint, DataError`. The code
is in segnet/utils.py; this module re-exports it.

Names that moved further keep working for one release with a DeprecationWarning: the notebook
API (`from utils import load_model, predict`; now `from segnet import load_model, predict`),
the scores and image reading."""
import importlib
import warnings

from segnet.utils import *  # noqa: F401,F403  (the design card's shared pieces)

MOVED = {"load_model": "segnet.inference.inference", "predict": "segnet.inference.inference",
         **dict.fromkeys(("confusion_matrix", "ConfusionMatrix", "metrics_from_confusion",
                          "health_warnings", "HEALTH_MIN_IOU", "HEALTH_ONE_CLASS_SHARE"),
                         "segnet.inference.measures"),
         "open_image": "segnet.data.pixels.images"}


def __getattr__(name):
    """`from utils import load_model, predict` (and the other MOVED names) keeps working (PEP
    562 module __getattr__), with a DeprecationWarning naming the new place."""
    if name not in MOVED:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    warnings.warn(f"utils.{name} moved to {MOVED[name]}.{name}; import it from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(MOVED[name]), name)
