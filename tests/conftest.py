"""Make the repository root importable (model.py, dataset.py, segnet/, ...) and tests/helpers.py
importable from the test folders, keep tests small, and keep the scan cache
(segnet/data/check/scancache.py) of the tests' datasets out of the user's ~/.cache."""
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
torch.set_num_threads(2)
os.environ["SEGNET_CACHE"] = tempfile.mkdtemp(prefix="segnet-test-cache-")


@pytest.fixture(autouse=True)
def restore_determinism():
    """train.main(["--deterministic", ...]) switches deterministic algorithms on for its
    process, as a script may; a test that runs it in-process must not leave it on for the rest."""
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)
