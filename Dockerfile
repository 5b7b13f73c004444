# The evc-operator image: the installed package in a virtualenv on a slim Python base.
#
#   docker build -t evc-operator:0.1.0 --build-arg SOURCE_URL=https://... .
#
# Runs as a non-root numeric user, writes nothing at run time (a read-only root filesystem
# works) and needs no shell: ENTRYPOINT and CMD are exec form. Liveness is served on 8080
# for a Kubernetes livenessProbe (httpGet /healthz); there is no HEALTHCHECK on purpose.
# tests/unit/test_dockerfile.py checks these rules (and runs hadolint);
# tests/integration/test_image_command.py runs ENTRYPOINT + CMD against a real control plane.
# `make image` builds it here without a Docker engine (buildah); see docs/operations.md.

# The base is pulled by digest: the tag python:3.11-slim-bookworm as it was when pinned,
# the same bytes on every build. To move to a newer one, resolve the tag's digest (e.g.
# `docker buildx imagetools inspect python:3.11-slim-bookworm`) and replace it below.
# Both stages start from PYTHON_BASE; `make image`, where the base cannot be pulled, passes
# the plain tag of a base it made from Debian packages (docs/operations.md#image).
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# Build stage: install the package and its pinned dependencies into /opt/venv.
FROM ${PYTHON_BASE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv

WORKDIR /src
# Every file pip downloads is checked against its hash (requirements/*.txt, written by
# `make hashes` from constraints.txt, the versions the tests ran with): first the pinned
# pip, setuptools and wheel, then the operator's dependencies.
COPY requirements/build.txt requirements/image.txt requirements/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/image.txt
COPY pyproject.toml README.md ./
COPY src/ src/
# The package itself, built with the setuptools just installed and fetching nothing. pip
# compiles the bytecode here, so nothing needs to be written when the operator imports it.
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-build-isolation .


# Runtime stage: the same base, only the virtualenv copied over.
FROM ${PYTHON_BASE}

ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="evc-operator" \
      org.opencontainers.image.description="Kubernetes operator for EphemeralVolumeClaims: PVCs that delete themselves after a period of no use." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

# USER names the numeric user, which has no /etc/passwd entry (nor has any uid a platform
# may assign): Kopf's peering identity calls getpass.getuser(), which fails without either.
# METRICS_ADDRESS: /metrics and /readyz on all interfaces, for the kubelet and Prometheus.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USER=evc-operator \
    METRICS_ADDRESS=0.0.0.0

COPY --from=build /opt/venv /opt/venv

USER 65532:65532
EXPOSE 8080 9090

ENTRYPOINT ["evc-operator"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
