# The evc-operator image: the installed package in a virtualenv on a slim Python base.
#
#   docker build -t evc-operator --build-arg SOURCE_URL=https://... .
#
# Runs as a non-root numeric user, writes nothing at run time (a read-only root filesystem
# works) and needs no shell: ENTRYPOINT and CMD are exec form. Liveness is served on 8080
# for a Kubernetes livenessProbe (httpGet /healthz); there is no HEALTHCHECK on purpose.
# tests/unit/test_dockerfile.py checks these rules (and runs hadolint);
# tests/integration/test_image_command.py runs ENTRYPOINT + CMD against a real control plane.
# `make image` builds it here without a Docker engine (buildah); see docs/operations.md.

# Build stage: install the package and its pinned dependencies into /opt/venv.
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv

WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY src/ src/
# Dependencies are held to constraints.txt, the versions the tests ran with. pip compiles
# the bytecode here, so nothing needs to be written when the operator imports it.
RUN /opt/venv/bin/pip install --no-cache-dir --constraint constraints.txt .


# Runtime stage: the same base, only the virtualenv copied over.
FROM python:3.11-slim-bookworm

ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="evc-operator" \
      org.opencontainers.image.description="Kubernetes operator for EphemeralVolumeClaims: PVCs that delete themselves after a period of no use." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

# USER names the numeric user, which has no /etc/passwd entry (nor has any uid a platform
# may assign): Kopf's peering identity calls getpass.getuser(), which fails without either.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USER=evc-operator

COPY --from=build /opt/venv /opt/venv

USER 65532:65532
EXPOSE 8080 9090

ENTRYPOINT ["evc-operator"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
