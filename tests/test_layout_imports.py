"""The layering of the repository's top-level code: benchmarks/ is `make bench` alone and tests/ test the library,
stages and benchmarks; neither may import a research study (studies/), which may import them. Static (ast), cheap."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports_of(path: Path) -> set[str]:
    """Top-level package names that `path` imports (anywhere in the file, absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _importers_of_studies(folder: str) -> list[str]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return [str(p.relative_to(ROOT)) for p in files if "studies" in _imports_of(p)]


def test_no_test_imports_a_study():
    assert not _importers_of_studies("tests"), "a test imports studies/: move what it needs into the library or tests/"


def test_no_benchmark_imports_a_study():
    assert not _importers_of_studies("benchmarks"), "a benchmark imports studies/: move the shared part to benchmarks/common.py"


def test_the_scan_sees_a_study_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from studies.learning import VARIANTS\n    import studies.module_study as m\n")
    assert "studies" in _imports_of(f)
