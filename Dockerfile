# syntax=docker/dockerfile:1
# The Postwire image: one image, every service (`postwire serve <name>`) and `postwire migrate`.
#
# The base is pinned by tag; pass BASE_DIGEST (sha256:…) to pin it by digest as well, so a rebuild
# weeks later cannot pick up a different base (README "Container image" says how to look it up).
ARG BASE_DIGEST=""

# Builder: the wheel (protobuf code generated at wheel-build time, migrations as package data)
# and binary wheels of every runtime dependency, so the final stage installs without a network.
FROM python:3.11-slim-bookworm${BASE_DIGEST:+@}${BASE_DIGEST} AS builder
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in ./
COPY protos ./protos
COPY libs ./libs
COPY services ./services
# Every dependency comes as a manylinux wheel; one without would fail here (the slim base has
# no compiler), never in the final stage.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: the wheel and its dependencies on the same slim base; no compilers, no build tools,
# no source tree.
FROM python:3.11-slim-bookworm${BASE_DIGEST:+@}${BASE_DIGEST}
# The uid/gid every manifest's securityContext names (runAsUser/runAsGroup: 10001).
RUN groupadd --system --gid 10001 postwire \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin postwire
# No .pyc writes (the root filesystem is read-only in the manifests); logs leave unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels postwire==0.1.0
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051
ENTRYPOINT ["postwire"]
CMD ["--help"]
