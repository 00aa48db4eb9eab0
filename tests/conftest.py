import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP overhead on a shared machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
