"""Deprecated path, kept for one release: `from inference import load_model, predict` works with
a DeprecationWarning. Use `from segnet import load_model, predict` (the code is in
segnet/inference/inference.py)."""
import warnings

from segnet.inference import inference as _moved


def __getattr__(name):
    """Every name of the old inference.py, fetched from its new module with a warning."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = getattr(_moved, name)  # AttributeError for a name the module never had
    warnings.warn(f"inference.{name} moved to segnet.inference.inference.{name}; use `from "
                  f"segnet import {name}`" if name in ("load_model", "predict") else
                  f"inference.{name} moved to segnet.inference.inference.{name}; import it "
                  f"from there", DeprecationWarning, stacklevel=2)
    return value
