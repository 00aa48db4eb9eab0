import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture
def repo_root() -> Path:
    return ROOT
