"""Honest DVC deps: every file of code a stage runs is a `deps` entry of that stage in dvc.yaml.

DVC reruns a stage only when a listed dependency changes, so a library file a stage imports but
does not list is a reproducibility hole: editing it leaves stale outputs that `dvc status` calls
up to date. The imports are followed with `ast` (function-level imports included: a lazy import
still runs), transitively, with the packages whose `__init__` each import executes.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES = ROOT / "stages"


def module_file(name: str) -> Path | None:
    """The file a dotted name of this checkout is, or None (an attribute, or not ours)."""
    for base in (SRC, STAGES):
        stem = base.joinpath(*name.split("."))
        for path in (stem.with_suffix(".py"), stem / "__init__.py"):
            if path.is_file():
                return path
    return None


def imported_names(path: Path) -> set[str]:
    """Dotted names `path` imports (anywhere in the file), with each name's parent packages."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1]) if path.is_relative_to(SRC) else ""
    if path.name == "__init__.py" and path.is_relative_to(SRC):
        package = ".".join(path.relative_to(SRC).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parent, base] if p)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {".".join(n.split(".")[: i + 1]) for n in names for i in range(n.count(".") + 1)}


def code_files(script: Path) -> set[Path]:
    """`script` and every file of this checkout it imports, transitively."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in map(module_file, imported_names(path)) if f is not None)
    return seen


def stage_definitions() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def uncovered(stage: dict) -> list[str]:
    """Code files the stage's command runs that none of its deps (a file or a folder above it) lists."""
    deps = [ROOT / d for d in stage.get("deps", []) if "${" not in d]
    scripts = re.findall(r"python (stages/\w+\.py)", stage["cmd"])
    assert scripts, f"no `python stages/<name>.py` in the command {stage['cmd']!r}"
    files = set().union(*(code_files(ROOT / s) for s in scripts))
    return sorted(str(f.relative_to(ROOT)) for f in files if not any(f == d or d in f.parents for d in deps))


def stale(stage: dict) -> list[str]:
    """Code the stage lists but never runs (a file, or a folder none of whose files it imports): each makes an
    unrelated edit rerun the stage."""
    scripts = re.findall(r"python (stages/\w+\.py)", stage["cmd"])
    files = set().union(*(code_files(ROOT / s) for s in scripts))
    code = [d for d in stage.get("deps", []) if d.startswith(("src/", "stages/"))]
    unused_dir = lambda d: (ROOT / d).is_dir() and not any((ROOT / d) in f.parents for f in files)  # noqa: E731
    return [d for d in code if (d.endswith(".py") and (ROOT / d) not in files) or unused_dir(d)]


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_every_file_a_stage_runs_is_one_of_its_dvc_deps(name):
    missing = uncovered(stage_definitions()[name])
    assert not missing, f"dvc.yaml stage {name!r} runs these files but does not list them under deps: {missing}"
    assert not stale(stage_definitions()[name]), (
        f"dvc.yaml stage {name!r} lists code files it never imports: {stale(stage_definitions()[name])}"
    )


def test_the_scan_follows_lazy_relative_and_from_imports(tmp_path, monkeypatch):
    """The scan itself: a function-level import, `from . import x` and `from pkg import module` are all found."""
    pkg = tmp_path / "src" / "finesyn"
    (pkg / "sub").mkdir(parents=True)
    for rel, text in {
        "__init__.py": "",
        "sub/__init__.py": "from . import leaf\n",
        "sub/leaf.py": "def f():\n    from finesyn import lazy\n",
        "lazy.py": "",
        "unused.py": "",
    }.items():
        (pkg / rel).write_text(text)
    (tmp_path / "stages").mkdir()
    script = tmp_path / "stages" / "s.py"
    script.write_text("import os\nfrom finesyn.sub import leaf\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    monkeypatch.setattr(sys.modules[__name__], "STAGES", tmp_path / "stages")
    got = {str(p.relative_to(tmp_path)) for p in code_files(script)}
    assert got == {
        "stages/s.py",
        "src/finesyn/__init__.py",
        "src/finesyn/sub/__init__.py",
        "src/finesyn/sub/leaf.py",
        "src/finesyn/lazy.py",
    }


def test_dvc_lock_records_exactly_the_stages_of_the_graph():
    """DVC never drops a lock entry whose stage left the grid (a removed experiment keeps its stale
    hashes, which `dvc status` and readers of dvc.lock then take for part of the run); and a stage
    of the graph missing from the lock means the committed results were not produced by a full repro."""
    from finesyn.graph import dvc_stages

    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    graph = {st.name for st in dvc_stages(ROOT)}
    assert not locked - graph, f"dvc.lock keeps stages no longer in dvc.yaml + params.yaml: {sorted(locked - graph)}"
    assert not graph - locked, f"stages of the graph missing from dvc.lock (run dvc repro): {sorted(graph - locked)}"
