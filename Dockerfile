# syntax=docker/dockerfile:1
# Service image: the API + in-process ingestion workers (`memalpha serve`), or workers alone
# (`memalpha worker`). Only the runtime dependencies, pinned by constraints.txt; no torch (the trainer
# has its own image, trainer/Dockerfile). Build: docker build -t memalpha:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when the lock changes. Every runtime
# dependency has a wheel for linux/amd64 and arm64, so no compiler is needed.
COPY constraints.txt ./
RUN pip install --no-cache-dir --require-virtualenv -r constraints.txt
# The project itself, without dependencies: everything it needs came from the lock above,
# so a dependency missing from constraints.txt fails `pip check` here instead of floating.
# Migrations ship inside the package (`memalpha migrate` runs them programmatically).
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-cache-dir --require-virtualenv --no-deps . \
    && pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="memalpha" \
      org.opencontainers.image.description="Mem-alpha agent memory service" \
      org.opencontainers.image.licenses="Apache-2.0"
# Fixed numeric ids so Kubernetes' runAsNonRoot/runAsUser and volume ownership line up.
RUN groupadd --system --gid 10001 memalpha \
    && useradd --system --uid 10001 --gid memalpha --home-dir /app --shell /usr/sbin/nologin memalpha
COPY --from=build /opt/venv /opt/venv
# Working directory of the embedded SQLite default, when no database URL is set.
WORKDIR /app
RUN chown memalpha:memalpha /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEMALPHA_HOST=0.0.0.0 \
    MEMALPHA_PORT=8000
USER 10001:10001
EXPOSE 8000
# slim has no curl: probe /healthz with the interpreter that is there anyway. urlopen raises on
# a refused connection or a non-2xx status, which makes the exit status non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MEMALPHA_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["memalpha"]
CMD ["serve", "--host", "0.0.0.0"]
