# syntax=docker/dockerfile:1
# The a2c image: controller, trainer, player and the helm test hook all run it.
#
#   CPU (default):  docker build -t a2c:0.1.0 .
#     Pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU-only wheel index> for a much smaller image;
#     without it pip takes torch from the default index (CUDA-enabled wheels on x86_64).
#   CUDA:           docker build -t a2c:0.1.0-cuda \
#                     --build-arg BASE_IMAGE=pytorch/pytorch:<version>-cuda<x.y>-cudnn9-runtime \
#                     --build-arg TORCH_VERSION= .
#     (the base image brings Python and a CUDA build of torch; TORCH_VERSION= keeps that torch).
#   Extras:         docker build -t a2c:0.1.0-mujoco --build-arg EXTRAS=mujoco .
#     EXTRAS names extras of pyproject.toml, comma-separated (box2d, mujoco, atari): the image installs
#     `.[EXTRAS]`; empty installs the base package (classic control only). docs/images.md says which
#     image each example needs (LunarLander: box2d, HalfCheetah: mujoco).
#
# BASE_IMAGE must provide python3 (>= 3.10) with the venv module. Both stages use it, so the
# virtual environment built in the first one runs unchanged in the second.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# The torch release pinned into the image; empty keeps the torch the base image already has.
ARG TORCH_VERSION="2.13.0"
ARG TORCH_INDEX_URL=""
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# --system-site-packages: a CUDA base image's own torch stays visible inside the venv. The package itself goes
# to /opt/a2c (below), which a .pth file puts on the venv's path.
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/python3 -c 'import sysconfig; open(sysconfig.get_path("purelib") + "/a2c.pth", "w").write("/opt/a2c\n")'
ENV PATH=/opt/venv/bin:$PATH
# Box2D (the box2d extra) has binary wheels for x86_64 only (CPython 3.10-3.13); elsewhere pip builds it
# from source, which needs swig and a C++ compiler. They go into this stage only: the runtime stage copies
# nothing but the virtual environment. (Versions come from the base image's distribution.)
# hadolint ignore=DL3008
RUN case ",${EXTRAS}," in \
      *,box2d,*) if [ "$(uname -m)" != x86_64 ]; then \
                   apt-get update \
                   && apt-get install -y --no-install-recommends g++ swig \
                   && rm -rf /var/lib/apt/lists/*; \
                 fi ;; \
    esac
# torch first (its own index, its own pin), so `pip install .` finds the requirement satisfied.
RUN if [ -n "$TORCH_VERSION" ]; then \
        if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi; \
        pip install "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
# The dependencies get a layer of their own, made from pyproject.toml alone (an empty package and README
# stand in for the source, and go again), so a change to the source or the README reuses it.
# /src, or /src[box2d,mujoco] with EXTRAS=box2d,mujoco.
COPY pyproject.toml ./
RUN mkdir a2c && touch a2c/__init__.py README.md \
    && pip install "/src${EXTRAS:+[${EXTRAS}]}" && pip uninstall -y a2c && rm -rf /src/*
COPY . .
# The package alone, beside the venv: /opt/venv stays as the layer above left it, so the runtime stage copies
# it from cache and only this small directory anew (a source change rebuilds in seconds).
RUN pip install --no-deps --target /opt/a2c /src && rm -rf /src

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="a2c" \
      org.opencontainers.image.description="Distributed Advantage Actor-Critic, Kubernetes-native" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/a2c /opt/a2c
# HOME and caches under /tmp: the pods run with a read-only root filesystem and an emptyDir on /tmp.
ENV PATH=/opt/a2c/bin:/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /tmp
# A numeric non-root user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 50051 29500 9090
ENTRYPOINT ["a2c"]
CMD ["--help"]
