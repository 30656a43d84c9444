# syntax=docker/dockerfile:1.7
# The traffic-lanes image: `lanes` (controller, sidecar, inject, check, render) and nothing else.
#   docker build -t ghcr.io/traffic-lanes/traffic-lanes:<version in pyproject.toml> .
# Runs as a non-root user with a read-only root filesystem: no .pyc is written at run time
# (pip compiled them at install), and `lanes` writes only where a volume is mounted.
# tests/k8s/test_k8s_image.py runs these RUN steps in a clean venv as a non-root user.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Stage 1: the project's wheel and every runtime dependency's, built once.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lanes_sdk/ lanes_sdk/
COPY lane_router/ lane_router/
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[controller]"

# Stage 2: a venv installed offline from those wheels; no compiler, no pip cache, no sources.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/traffic-lanes/traffic-lanes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/lanes/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/lanes && /opt/lanes/bin/python -m pip install --no-cache-dir --no-index --find-links /wheels "traffic-lanes[controller]"
USER 65532:65532
# The sidecar's proxy and admin ports, the controller's metrics port.
EXPOSE 15001 15000 9090
ENTRYPOINT ["lanes"]
CMD ["--help"]
