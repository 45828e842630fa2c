# syntax=docker/dockerfile:1
# kuploy-reconciler as a container image: `docker run IMAGE plan /catalog`, `... listen --host 0.0.0.0`.
# Two stages: the first builds the wheel and installs it with its dependencies into a virtualenv
# (binary wheels only: no compiler anywhere); the second is a clean slim Python with that virtualenv,
# run as an unprivileged user. tests/test_packaging.py builds and runs the same wheel in a clean
# virtualenv as a non-root user; the release workflow builds this file for amd64 and arm64.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler/ reconciler/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/kuploy-reconciler \
    && /opt/kuploy-reconciler/bin/pip install --only-binary=:all: /wheels/*.whl \
    && /opt/kuploy-reconciler/bin/pip uninstall --yes pip

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="kuploy-reconciler" \
      org.opencontainers.image.description="Declarative reconciler for the kuploy-cloud billing plan catalog: cloud_plans + Stripe" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 kuploy \
    && useradd --system --uid 10001 --gid kuploy --home-dir /home/kuploy --create-home \
       --shell /usr/sbin/nologin kuploy
COPY --from=build /opt/kuploy-reconciler /opt/kuploy-reconciler
ENV PATH=/opt/kuploy-reconciler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KUPLOY_HEALTHCHECK_PORT=8080
WORKDIR /home/kuploy
# Numeric, so that Kubernetes' runAsNonRoot can verify it (the examples run as 10001 too).
USER 10001:10001
EXPOSE 8080
# For `listen` (GET /healthz: the process is up). Set KUPLOY_HEALTHCHECK_PORT when it listens on
# another --port. Kubernetes ignores this; its probes are in examples/kubernetes/deployment-listen.yaml.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['KUPLOY_HEALTHCHECK_PORT'], timeout=2)"]
ENTRYPOINT ["kuploy-reconciler"]
CMD ["--help"]
