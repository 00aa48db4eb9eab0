"""Print the pinned requirements of pyproject.toml for the container's dependency layer.

Reads only pyproject.toml (the Dockerfile copies it, with requirements.lock, before the source,
so the installed dependencies are cached until one of the two changes). Output: one requirement
per line, [project] dependencies plus the named optional extras; `--variant cuda` swaps faiss-cpu
for faiss-gpu of the same version (the PyPI faiss-gpu wheel, CUDA 12 runtime from PyPI wheels).

    python docker/requirements.py [--variant cpu|cuda] [--extras test,cluster] [--pyproject PATH]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

GPU_SWAP = {"faiss-cpu": "faiss-gpu"}


def requirements(pyproject: dict, variant: str = "cpu", extras: list[str] | tuple[str, ...] = ()) -> list[str]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}: pyproject.toml has {sorted(optional)}")
        reqs += optional[extra]
    if variant == "cuda":
        out = []
        for req in reqs:
            name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
            out.append(GPU_SWAP[name] + req[len(name):] if name in GPU_SWAP else req)
        reqs = out
    return reqs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--extras", default="", help="comma-separated optional extras, e.g. test")
    ap.add_argument("--pyproject", default="pyproject.toml")
    args = ap.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        pyproject = tomllib.load(f)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    sys.stdout.write("".join(r + "\n" for r in requirements(pyproject, args.variant, extras)))


if __name__ == "__main__":
    main()
