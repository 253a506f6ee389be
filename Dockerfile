# The mcp-sidecar container: run it beside the MCP Inspector (same network
# namespace: a Kubernetes pod, or `docker run --network container:inspector`).
# It listens on the pod's non-loopback addresses and forwards to localhost.
# The admin endpoint (health, metrics, API, dashboard) listens on 6279 on every
# interface so that probes and Prometheus reach it from outside; reads are open,
# state changes and the tap need MCP_SIDECAR_ADMIN_TOKEN (docs/deployment.md).
# Checked by hadolint in the test suite (tests/test_deploy.py).
FROM python:3.12.8-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mcp-sidecar" \
      org.opencontainers.image.description="A resilient TCP/WebSocket sidecar proxy for MCP traffic" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.documentation="docs/deployment.md in the source tree"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY src ./src
# Exact dependency versions from constraints.txt (the ones the test suite ran with).
RUN pip install --no-cache-dir -c constraints.txt . \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar

USER 10001
WORKDIR /
# 6274/6277: the inspector-v1 profile's routes (6275, 6278 as well for inspector-v2); 6279: admin.
EXPOSE 6274 6275 6277 6278 6279
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6279/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains open connections for drain_timeout (25 s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["proxyctl"]
CMD ["run", "--admin", "0.0.0.0:6279", "--log-format", "json"]
