import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The cores shared among pytest-xdist's workers: two workers at two threads each on two cores oversubscribe
# them (OpenMP threads spin while they wait; test_synthetic measured one CNN test 5x slower that way).
_THREADS = str(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
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
