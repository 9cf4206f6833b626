# The spendsentry worker image (also runs every other spendsentry command).
#   docker build -t spendsentry .
#   docker run --rm -e SPENDSENTRY_BROKER=kafka:9092 -p 6066:6066 spendsentry
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and the package first, so editing policies does not reinstall.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /root/.cache

# Topic layout and policies: the worker reads streams/ from its working directory.
COPY streams ./streams

# A fixed non-root user; the state directory (engine snapshots) is the only
# place it writes, and belongs on a volume.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin spendsentry \
    && mkdir -p /var/lib/spendsentry \
    && chown spendsentry:spendsentry /var/lib/spendsentry
USER spendsentry

ENV SPENDSENTRY_STATE_DIR=/var/lib/spendsentry
VOLUME ["/var/lib/spendsentry"]
EXPOSE 6066

# Healthy once the web server answers /metrics (it starts before the consumer
# joins its group, so this tracks the process, not the group).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6066/metrics', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["spendsentry"]
# The web server binds all interfaces inside the container (the port is not
# published by default; see docker-compose.yml).
# On all interfaces POST /v1/traces (OTLP/HTTP) needs SPENDSENTRY_OTLP_TOKEN; it is
# off unless a run sets SPENDSENTRY_OTLP_HTTP=on with the token (docs/integrations.md).
ENV SPENDSENTRY_OTLP_HTTP=off
CMD ["worker", "--web-host", "0.0.0.0", "--web-port", "6066"]
