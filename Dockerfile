# chinwag: the server, its runtime dependencies from uv.lock, nothing else. Data (files, the instance id, the
# embedded database and generated secret when those are not configured) lives in /data.
#
#   docker build -t chinwag .
#   docker run -p 8000:8000 -v chinwag-data:/data -e OPENAI_API_KEY=... chinwag

FROM python:3.11-slim-bookworm AS build
# The same uv as `make install` uses; the lock file decides every other version.
RUN pip install --no-cache-dir uv==0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (a layer that survives code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY chinwag ./chinwag
RUN uv sync --frozen --no-default-groups --no-editable

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 chinwag \
    && useradd --system --uid 10001 --gid chinwag --home-dir /data --no-create-home chinwag \
    && mkdir /data \
    && chown chinwag:chinwag /data \
    && chmod 0700 /data
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHINWAG_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# Ready: the database answers (503 while it does not, and while the server drains on SIGTERM).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status != 200)"]
# SIGTERM drains runs for CHINWAG_SHUTDOWN_GRACE_S (30 s): give `docker stop` more than that (compose sets it).
STOPSIGNAL SIGTERM
CMD ["chinwag", "serve", "--host", "0.0.0.0", "--port", "8000"]
