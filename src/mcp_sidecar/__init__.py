"""mcp-sidecar: a resilient TCP/WebSocket sidecar proxy for MCP traffic, on trio."""

__version__ = "0.1.0"
