# chatbridge container image.
#   docker build -t chatbridge .
#   docker run -v "$PWD/config.yaml:/config/config.yaml:ro" -e CHATBRIDGE_MODEL__API_KEY -p 127.0.0.1:8080:8080 chatbridge
# The configuration is mounted at /config/config.yaml; secrets come from the environment
# (CHATBRIDGE_MODEL__API_KEY, CHATBRIDGE_ADAPTERS__TELEGRAM__TOKEN, ...). SQLite data lives in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 chatbridge \
    && useradd --system --uid 10001 --gid chatbridge --home-dir /data --no-create-home --shell /usr/sbin/nologin chatbridge \
    && mkdir -p /config /data \
    && chown chatbridge:chatbridge /data

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY bots ./bots
COPY adapters ./adapters
COPY chatbridge ./chatbridge
RUN pip install --no-cache-dir . \
    && rm -rf /src

VOLUME ["/data"]
# The mounted configuration is the default one (config.yaml in the working folder), so that
# `docker run ... chatbridge check` and `docker compose run --rm chatbridge check` read it too.
WORKDIR /config

# Listen on every interface inside the container; the port is read by the HEALTHCHECK below too.
ENV CHATBRIDGE_SERVER__HOST=0.0.0.0 \
    CHATBRIDGE_SERVER__PORT=8080 \
    CHATBRIDGE_STORE__SQLITE_PATH=/data/chatbridge.db
# A cache folder, not a secret (the linter only sees "TOKEN" in the name): tiktoken keeps its vocabulary here.
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/data/tiktoken

# Numeric, so that "runAsNonRoot"-style checks can verify it is not root.
USER 10001:10001
EXPOSE 8080

# python:3.11-slim has no curl; urlopen raises (exit status 1) on a refused connection or an error status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHATBRIDGE_SERVER__PORT', '8080'), timeout=4)"]

# SIGTERM stops chatbridge cleanly: replies in flight get 30 s, so give `docker stop` more (-t 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["chatbridge"]
CMD ["run", "--config", "/config/config.yaml"]
