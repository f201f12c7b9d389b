# syntax=docker/dockerfile:1
# visionops/train: the `visionops` CLI with everything it trains, tunes, evaluates and exports
# with, and Ray with its dashboard; the image of the Ray cluster's head and workers, of RayJobs
# and of the Airflow pod tasks. Build from the repository root (.dockerignore keeps the context
# to the package's sources):
#
#   docker build -f deploy/docker/train.Dockerfile -t visionops/train:0.1.0 .
#   docker run --rm visionops/train:0.1.0 train --recipe debug
#
# CPU by default. For CUDA, a CUDA base and the PyTorch index of the same CUDA major (the torch
# wheels bring their own CUDA libraries; the base adds NVIDIA's runtime settings):
#
#   docker build -f deploy/docker/train.Dockerfile \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 \
#     -t visionops/train:0.1.0-cuda .

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- base: the base image with a Python that can make virtualenvs ------------------------------
FROM ${BASE_IMAGE} AS base
# CUDA bases carry no Python: install their distribution's (python:* bases already have one).
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# --- build: the virtualenv, from the checkout --------------------------------------------------
FROM base AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# The tested torch/torchvision pair (constraints.txt) from PyTorch's own index first, without
# its requirements (that index holds few of their versions): PyPI's Linux wheels are the CUDA
# builds, gigabytes that a CPU image never loads. Every other version is requirements.lock's,
# its hashes stripped into lock-pins.txt (pip takes no hash in a -c file); a CUDA build's
# nvidia-* and triton come from PyPI at the versions of constraints-cuda.txt.
COPY constraints.txt constraints-cuda.txt requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" \
        -r constraints.txt \
    && sed -e '/--hash=/d' -e 's/ *\\$//' requirements.lock > lock-pins.txt
COPY pyproject.toml README.md ./
COPY src ./src
# The constraints keep that torch in place. ray[default] adds the dashboard and the job server,
# which the KubeRay head, its autoscaler and RayJob submission need (pyproject has ray[tune]);
# the packages only that extra brings are the ones requirements.lock does not pin.
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c constraints-cuda.txt \
        -c lock-pins.txt . "ray[default]"

# --- runtime -----------------------------------------------------------------------------------
FROM base
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="visionops/train" \
      org.opencontainers.image.description="visionops training, tuning and export CLI with Ray" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# wget: KubeRay's default liveness and readiness probes run it inside Ray containers. The
# version is the base release's (the base tag pins the release; its point updates move it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 visionops \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash visionops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
USER 10001:10001
WORKDIR /home/visionops
# A batch image has no port to probe: healthy means its interpreter imports the package.
HEALTHCHECK --interval=5m --timeout=30s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import visionops"]
ENTRYPOINT ["visionops"]
CMD ["--help"]
