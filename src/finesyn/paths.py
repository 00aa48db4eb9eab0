"""Where one grid cell's artifacts live: the layout dvc.yaml's stage commands spell out.

`RunPaths(dataset, experiment, seed)` is the one place the library names it (the report reads
every cell through it; an artifact's rebuild hint parses it back); tests/test_paths.py checks that
dvc.yaml's resolved stages (which the Snakefile runs too) use exactly these paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROBE, RETRIEVAL = "probe.json", "retrieval.json"  # a cell's metrics files (numbers only: `dvc metrics show`)
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
        """probe.json and retrieval.json (the numbers DVC compares) with their .meta.json records."""
        return self._cell(root)

    def probe(self, root: Path = Path("metrics")) -> Path:
        """probe's metrics file: top-1/top-5 only."""
        return self._cell(root) / PROBE

    def retrieval(self, root: Path = Path("metrics")) -> Path:
        """retrieve's metrics file: Rank-k, mAP, kNN only."""
        return self._cell(root) / RETRIEVAL

    @staticmethod
    def meta_of(metrics_file: Path) -> Path:
        """The record next to a metrics file (protocol, hashes, versions, timings, per-class numbers):
        probe.json -> probe.meta.json. An output, not a metric: `dvc metrics diff` compares numbers only."""
        metrics_file = Path(metrics_file)
        return metrics_file.with_name(f"{metrics_file.stem}.meta.json")

    @classmethod
    def of(cls, path: str | Path) -> tuple[str, RunPaths] | None:
        """(artifact kind, its cell) of a path in this layout, or None."""
        m = _CELL.search(Path(path).as_posix())
        return None if m is None else (m.group(1), cls(m.group(2), m.group(3), int(m.group(4))))
