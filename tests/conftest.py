"""Make the repository root importable (model.py, dataset.py, ...) and keep tests small."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
torch.set_num_threads(2)
