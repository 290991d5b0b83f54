"""Make the repository root importable (model.py, dataset.py, ...), keep tests small, and keep
the scan cache (scancache.py) of the tests' datasets out of the user's ~/.cache."""
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
torch.set_num_threads(2)
os.environ["SEGNET_CACHE"] = tempfile.mkdtemp(prefix="segnet-test-cache-")
