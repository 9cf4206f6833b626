# The spendsentry worker image (also runs every other spendsentry command).
#   docker build -t spendsentry .
#   docker run --rm -e SPENDSENTRY_BROKER=kafka:9092 -p 6066:6066 spendsentry
#   docker run --rm spendsentry replay examples/sample-6h.jsonl.gz     # the Quickstart
#   docker run --rm spendsentry worker --group demo     # no broker: the embedded one
# Change the web port with SPENDSENTRY_WEB_PORT (the health check follows it), not
# with --web-port.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Layer 1, the dependencies: pinned by constraints.txt (the versions CI tests),
# installed from pyproject.toml's list alone, so editing src/ does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm -rf /tmp/requirements.txt /root/.cache

# Layer 2, the package itself (no dependency resolution: layer 1 has them).
COPY README.md ./
COPY src ./src
RUN pip install --no-deps -c constraints.txt . && rm -rf /root/.cache

# Topic layout and default policies (the worker reads streams/ from its working
# directory; docker-compose.yml mounts ./streams/policies over these), and the
# bundled sample for the Quickstart's replay.
COPY streams ./streams
COPY examples ./examples

# A fixed non-root user with a writable home: the embedded broker (demo, a worker
# without --broker) materialises its binary under $HOME/.calfkit. The state
# directory (engine snapshots) belongs on a volume.
RUN useradd --system --uid 10001 --create-home --home-dir /home/spendsentry \
        --shell /usr/sbin/nologin spendsentry \
    && mkdir -p /var/lib/spendsentry \
    && chown spendsentry:spendsentry /var/lib/spendsentry
USER spendsentry

ENV HOME=/home/spendsentry \
    SPENDSENTRY_STATE_DIR=/var/lib/spendsentry \
    SPENDSENTRY_WEB_HOST=0.0.0.0 \
    SPENDSENTRY_WEB_PORT=6066
VOLUME ["/var/lib/spendsentry"]
EXPOSE 6066

# Healthy once the web server answers /metrics on the configured port (it starts
# before the consumer joins its group, so this tracks the process, not the group).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SPENDSENTRY_WEB_PORT', '6066'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["spendsentry"]
# The web server binds all interfaces inside the container (SPENDSENTRY_WEB_HOST;
# the port is not published by default; see docker-compose.yml).
# On all interfaces POST /v1/traces (OTLP/HTTP) needs SPENDSENTRY_OTLP_TOKEN; it is
# off unless a run sets SPENDSENTRY_OTLP_HTTP=on with the token (docs/integrations.md).
ENV SPENDSENTRY_OTLP_HTTP=off
CMD ["worker"]
