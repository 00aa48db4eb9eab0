"""The stage graph as DVC resolves it (matrix expanded, ${} interpolated), for the Snakefile.

dvc.yaml + params.yaml stay the one source of truth: Snakemake gets one rule per resolved DVC
stage with the same command, inputs and outputs, and adds only scheduling (threads, resources).
"""

from __future__ import annotations

import json
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
            specs.append(StageSpec(st.name, st.name.split("@")[0], cmd, tuple(deps), tuple(str(o.def_path) for o in st.outs), params))
    return specs


def is_directory_output(path: str) -> bool:
    """Convention of dvc.yaml here: an output without a file extension is a directory."""
    return not Path(path).suffix


def snakemake_inputs(stage: StageSpec, stages: list[StageSpec]) -> list[str]:
    """Map DVC dependencies onto Snakemake inputs where their path rules differ.

    DVC lets a stage depend on a directory holding other stages' outputs (report <- metrics/) and
    on a file inside another stage's output directory (extract <- models/.../encoder.pt).
    Snakemake needs the producing outputs named, so the first is expanded to those outputs and
    the second is replaced by the directory that contains it.
    """
    produced = [o for s in stages for o in s.outs]
    inputs: list[str] = []
    for dep in stage.deps:
        if dep in produced:
            mapped = [dep]
        else:
            inside = [o for o in produced if Path(dep) in Path(o).parents]
            parent = [o for o in produced if is_directory_output(o) and Path(o) in Path(dep).parents]
            mapped = inside or parent or [dep]
        inputs.extend(m for m in mapped if m not in inputs)
    return inputs
