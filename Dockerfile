# The mcp-sidecar container: run it beside the MCP Inspector (same network
# namespace: a Kubernetes pod, or `docker run --network container:inspector`).
# It listens on the pod's non-loopback addresses and forwards to localhost.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home sidecar

USER 10001
WORKDIR /
EXPOSE 6274 6277
# SIGTERM drains open connections for drain_timeout (25 s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["proxyctl"]
CMD ["run", "--log-format", "json"]
