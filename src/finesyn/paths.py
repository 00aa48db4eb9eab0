"""Where one grid cell's artifacts live: the layout dvc.yaml's stage commands spell out.

`RunPaths(dataset, experiment, seed)` is the one place the library names it (the report reads
every cell through it; an artifact's rebuild hint parses it back); tests/test_paths.py checks that
dvc.yaml's resolved stages (which the Snakefile runs too) use exactly these paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_CELL = re.compile(r"(?:^|/)(models|features|metrics|checkpoints)/([^/]+)/([^/]+)/seed(\d+)(?:\.npz$|/|$)")


@dataclass(frozen=True)
class RunPaths:
    dataset: str
    experiment: str
    seed: int

    def _cell(self, root: Path) -> Path:
        return Path(root) / self.dataset / self.experiment / f"seed{self.seed}"

    def model_dir(self, root: Path = Path("models")) -> Path:
        """pretrain's output: encoder.pt, train.json, live/, pairs.png."""
        return self._cell(root)

    def checkpoints(self, root: Path = Path("checkpoints")) -> Path:
        return self._cell(root)

    def features(self, root: Path = Path("features")) -> Path:
        """extract's output."""
        return self._cell(root).with_suffix(".npz")

    def metrics_dir(self, root: Path = Path("metrics")) -> Path:
        """probe.json and retrieval.json."""
        return self._cell(root)

    @classmethod
    def of(cls, path: str | Path) -> tuple[str, RunPaths] | None:
        """(artifact kind, its cell) of a path in this layout, or None."""
        m = _CELL.search(Path(path).as_posix())
        return None if m is None else (m.group(1), cls(m.group(2), m.group(3), int(m.group(4))))
