"""Put this checkout's `src/` first on sys.path, so a stage runs the library next to it.

`make` installs finesyn in editable mode, pointing at the checkout that created the venv; a copy of
the project (a queued `dvc exp run`'s temporary workspace, a clone sharing the venv) would otherwise
run that checkout's code while DVC hashes its own. Stages import this before `finesyn`.
"""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
