# Local stand-ins of Flower's official images (flwr/superlink, flwr/supernode, flwr/superexec),
# built by docker/build-base.sh where the image hub cannot be reached: from a Debian bookworm root
# file system imported into docker, the same layout as the official ones (a venv in /python/venv
# owned by the unprivileged user `app`, WORKDIR /app) and flwr's own entry points.
# The build context holds only this file and the host's CA bundle (see docker/build-base.sh).
ARG DEBIAN_IMAGE=fedattack-debian:bookworm
FROM ${DEBIAN_IMAGE} AS base
ARG FLWR_VERSION=1.42.0
# The package index's certificate chain verifies with the host's bundle, not Debian's, here.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/python/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLWR_DISABLE_UPDATE_CHECK=1
RUN useradd --uid 49999 --home-dir /app --create-home --shell /usr/sbin/nologin app \
    && python3 -m venv /python/venv \
    && /python/venv/bin/python -m pip install --no-cache-dir "flwr==${FLWR_VERSION}" \
    && chown -R app:app /python
WORKDIR /app
USER app
ENV HOME=/app

FROM base AS superlink
ENTRYPOINT ["flower-superlink"]

FROM base AS supernode
ENTRYPOINT ["flower-supernode"]

FROM base AS superexec
ENTRYPOINT ["flower-superexec"]
