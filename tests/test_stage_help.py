"""Every stage's --help starts with what the stage does (its module docstring's first sentence)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("stage", STAGES)
def test_help_begins_with_the_stage_description(stage):
    path = ROOT / "stages" / f"{stage}.py"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and doc.startswith(f"{stage}:"), f"{path}: the docstring should start with '{stage}: what it does'"
    r = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    text = " ".join(r.stdout.split())  # rich wraps and boxes the help
    first_words = " ".join(doc.split()[:8])
    assert first_words in text and text.index(first_words) < text.index("Options"), text[:500]
