"""Does the synthetic generator's output depend on numpy's SIMD path? Renders the same small dataset twice, in
subprocesses, with numpy's full dispatch and with its AVX-512 group (X86_V4) disabled, and counts the pixels
that differ (a CPU without AVX-512 takes the second path: the default dataset then differs between machines).

    python -m studies.generator_simd
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RENDER = """
import sys, numpy as np
from finesyn.data.synthetic import GeneratorSettings, generate_synthetic
np.save(sys.argv[1], generate_synthetic(GeneratorSettings(num_classes=10, train_per_class=20, test_per_class=20)).images)
"""


def render(out: Path, disabled: str = "") -> np.ndarray:
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled}
    subprocess.run([sys.executable, "-c", RENDER, str(out)], env=env, check=True)
    return np.load(out)


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        full, v3 = render(Path(d) / "full.npy"), render(Path(d) / "v3.npy", "X86_V4 AVX512_ICL AVX512_SPR")
    diff = np.abs(full.astype(int) - v3.astype(int))
    print(json.dumps({
        "pixels_differing": int((diff > 0).sum()), "pixels": int(diff.size), "max_difference": int(diff.max()),
        "images_differing": int((diff.reshape(len(diff), -1).max(1) > 0).sum()), "images": len(diff),
        "numpy": np.__version__,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
