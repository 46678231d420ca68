# Diminuendo gateway image: the zipapp built by ./build.sh and the SSM-aware start script, on a
# slim Python of the SAME minor version as the pyz (its compiled wheels are for that CPython
# minor and manylinux/glibc: Debian-based slim is compatible, Alpine/musl is not). One build
# argument picks both:
#
#   ./build.sh && docker build -t diminuendo:$(git rev-parse --short HEAD) .
#   PYTHON=python3.13 ./build.sh && docker build --build-arg PYTHON_VERSION=3.13 -t … .
#
# See docs/PACKAGING.md (read-only root filesystems, grace period, SSM).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG PYTHON_VERSION

# A fixed, non-root uid/gid so volume ownership and Kubernetes `runAsNonRoot` checks are stable.
# SHIV_ROOT (where the pyz extracts itself on first start) and DATA_DIR must be writable by it,
# and SHIV_ROOT must allow executables (compiled extensions are dlopen'ed from there).
RUN groupadd --system --gid 10001 diminuendo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin diminuendo \
    && mkdir -p /app/.shiv /app/data \
    && chown 10001:10001 /app/.shiv /app/data

# Root-owned and read-only for the service user. (No chmod on the pyz: shiv made it 0755 and a
# chmod would copy 34 MiB into another layer; start.sh is tiny, so make sure it is executable.)
COPY dist/diminuendo-py${PYTHON_VERSION}.pyz /app/diminuendo.pyz
COPY scripts/start.sh /app/start.sh
RUN chmod 0755 /app/start.sh

ENV DIMINUENDO_PYZ=/app/diminuendo.pyz \
    SHIV_ROOT=/app/.shiv \
    DATA_DIR=/app/data \
    HOST=0.0.0.0 \
    PORT=8080 \
    PYTHONUNBUFFERED=1

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# /health answers 200 while serving (also when an upstream is degraded) and 503 while draining.
# No curl in slim images: the interpreter that is there anyway does the probe.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]

# start.sh loads SSM_PATH parameters (if set) and execs `python3 /app/diminuendo.pyz serve`, so
# the gateway is PID 1 and gets SIGTERM directly; give it more than GRACEFUL_SHUTDOWN_TIMEOUT
# (15 s) to drain: `docker stop -t 20`, Kubernetes terminationGracePeriodSeconds >= 20.
STOPSIGNAL SIGTERM
CMD ["/app/start.sh"]
