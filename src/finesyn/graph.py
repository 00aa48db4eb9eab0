"""The stage graph as DVC resolves it (matrix expanded, ${} interpolated), for the Snakefile.

dvc.yaml + params.yaml stay the one source of truth: Snakemake gets one rule per resolved DVC
stage with the same command, inputs and outputs, and adds only scheduling (threads, resources).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StageSpec:
    name: str  # DVC address, e.g. "pretrain@synthetic-mocov2-0"
    group: str  # the dvc.yaml stage it expands from, e.g. "pretrain"
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: dict = field(default_factory=dict)  # resolved values of the params the stage reads
    always_changed: bool = False  # DVC runs it on every repro (it reads state no dep can name)

    @property
    def rule_name(self) -> str:
        return re.sub(r"\W", "_", self.name.replace("@", "__"))

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)


def dvc_stages(root: str | Path = ".") -> list[StageSpec]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    specs = []
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            params, deps = {}, []
            for d in st.deps:
                if isinstance(d, ParamsDependency):
                    params.update(d.read_params())
                else:
                    deps.append(str(d.def_path))
            cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
            outs = tuple(str(o.def_path) for o in st.outs)
            specs.append(StageSpec(st.name, st.name.split("@")[0], cmd, tuple(deps), outs, params, bool(st.always_changed)))
    return specs


PARAMS_STAMPS = Path(".snakemake-params")  # one file per stage instance: its resolved params


def params_stamp(stage: StageSpec, root: str | Path = ".") -> str:
    """A file holding the stage's resolved params, as a Snakemake input, so that a params change reruns the
    stage by modification time even where Snakemake has no metadata (outputs DVC made). Rewritten only when the
    values change. Made for the first time, it is dated 1970 where dvc.lock records these very values for
    the stage (DVC's outputs are up to date with them), and now otherwise (they are not)."""
    path = Path(root) / PARAMS_STAMPS / f"{stage.rule_name}.json"
    text = stage.params_json + "\n"
    if path.is_file() and path.read_text() == text:
        return str(PARAMS_STAMPS / path.name)
    first = not path.exists()
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    if first and _locked_params(Path(root), stage.name) == json.loads(stage.params_json):
        os.utime(path, (0, 0))
    return str(PARAMS_STAMPS / path.name)


def _locked_params(root: Path, name: str) -> dict | None:
    """The params dvc.lock recorded for stage `name` (None: no lock or no such stage)."""
    from ruamel.yaml import YAML  # DVC's YAML 1.2 reader: PyYAML reads dvc.lock's 1e-06 as a string

    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stage = (YAML(typ="safe").load(lock.read_text()) or {}).get("stages", {}).get(name)
    if stage is None:
        return None
    recorded = {k: v for values in (stage.get("params") or {}).values() for k, v in values.items()}
    return json.loads(json.dumps(recorded, sort_keys=True, default=str))


def is_directory_output(path: str) -> bool:
    """Convention of dvc.yaml here: an output without a file extension is a directory."""
    return not Path(path).suffix


def snakemake_inputs(stage: StageSpec, stages: list[StageSpec], root: str | Path = ".") -> list[str]:
    """Map DVC dependencies onto Snakemake inputs where their path rules differ.

    DVC lets a stage depend on a directory holding other stages' outputs (report <- metrics/) and
    on a file inside another stage's output directory (extract <- models/.../encoder.pt).
    Snakemake needs the producing outputs named, so the first is expanded to those outputs and
    the second is replaced by the directory that contains it. A directory of source files
    (src/finesyn/methods) is expanded to its files: DVC hashes their contents, while Snakemake would
    judge the directory by its own date, which an edit inside it does not change.
    """
    produced = [o for s in stages for o in s.outs]
    inputs: list[str] = []
    for dep in stage.deps:
        if dep in produced:
            mapped = [dep]
        else:
            inside = [o for o in produced if Path(dep) in Path(o).parents]
            parent = [o for o in produced if is_directory_output(o) and Path(o) in Path(dep).parents]
            mapped = inside or parent or _files_of(Path(root), dep) or [dep]
        inputs.extend(m for m in mapped if m not in inputs)
    return inputs


def _files_of(root: Path, dep: str) -> list[str]:
    """The files under a directory dependency (bytecode caches left out), root-relative; [] if it is no directory."""
    if not (root / dep).is_dir():
        return []
    files = (p for p in (root / dep).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(p.relative_to(root).as_posix() for p in files)
