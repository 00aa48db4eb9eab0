# syntax=docker/dockerfile:1
# finesyn in a container: the pinned environment of pyproject.toml + requirements.lock (what
# `make setup` installs), then the code. Two variants, chosen with a build argument:
#   docker build -t finesyn:cpu .                              # CPU wheels of torch (+cpu), faiss-cpu
#   docker build --build-arg VARIANT=cuda -t finesyn:cuda .    # PyPI torch (CUDA 13 wheels), faiss-gpu
# Run (entrypoint: docker/entrypoint.sh; no arguments = `dvc repro`):
#   docker run --rm -v "$PWD/data:/work/data" finesyn:cpu stage validate --out /tmp/params.json
#   docker run --rm --gpus all -v "$PWD:/work" --user "$(id -u):$(id -g)" finesyn:cuda
# See docs/scale-out.md.
ARG VARIANT=cpu

# ---- Python 3.11 + git (code version in every result) + a virtualenv, per variant -----------
FROM python:3.11.7-slim-bookworm AS base-cpu
# Distribution packages follow the base image's release (security updates); the Python
# dependencies, which determine the results, are the pinned ones.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv
# torch==2.14.1 resolves to 2.14.1+cpu from this index (no CUDA libraries in the image)
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM nvidia/cuda:13.0.1-base-ubuntu22.04 AS base-cuda
# The PyPI torch 2.14.1 wheels bring their own CUDA 13 libraries (cuDNN, cuBLAS, NCCL) and
# faiss-gpu its CUDA 12 runtime wheels, so the small `base` image is enough; the host needs an
# NVIDIA driver for CUDA 13 and the NVIDIA container toolkit (`docker run --gpus all`).
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV TORCH_INDEX=""

# ---- dependencies: a cached layer that only pyproject.toml / requirements.lock invalidate ----
# base-cpu / base-cuda are the stages above (DL3006 cannot see through the build argument)
# hadolint ignore=DL3006
FROM base-${VARIANT} AS deps
ARG VARIANT
# Optional extras installed with the project; `test` as `make setup` does (`.[test]`).
ARG EXTRAS=test
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
WORKDIR /work
COPY pyproject.toml requirements.lock ./
COPY docker/requirements.py docker/requirements.py
RUN python docker/requirements.py --variant "$VARIANT" --extras "$EXTRAS" > /tmp/requirements.txt \
    && pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# ---- the project: source last, installed without touching the dependencies ----------------
FROM deps AS final
RUN useradd --create-home --uid 1000 --shell /bin/bash finesyn \
    && chown finesyn:finesyn /work
COPY --chown=finesyn:finesyn . .
# --no-deps: the dependencies are the layer above (for cuda, faiss-gpu stands in for faiss-cpu)
RUN pip install --no-deps -e . \
    && install -m 0755 docker/entrypoint.sh /usr/local/bin/finesyn-entrypoint
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/finesyn-entrypoint"]
CMD []
