#!/usr/bin/env bash
# The CUDA paths on a GPU machine: tests/test_cuda.py (a float64 step of every method against the
# CPU's, AMP + channels_last + the module + the monitor, extraction, retrieval, the SGD probe).
# For a machine whose python has torch but not this project's pins (the device machine of
# docs/scale-out.md): wheels in .whl/ (pydantic, faiss-cpu, ...) are installed to /tmp/site first;
# with the project's venv active nothing is installed. Writes $OUT (default benchmarks/cuda_check/):
# machine.txt, junit.xml, log.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/cuda_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    # installed once per machine (gpu_study.sh installs them before it starts this beside the study)
    [ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())'
    # the device tool copies the working tree with the .git of the session's start: the caller names the commit
    echo "code ${FINESYN_CODE_VERSION:-$(git describe --always --dirty 2>/dev/null || echo unknown)}"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
python3 -m pytest tests/test_cuda.py -v -p no:cacheprovider -o addopts= --junitxml "$out/junit.xml" 2>&1 | tee "$out/log.txt"
