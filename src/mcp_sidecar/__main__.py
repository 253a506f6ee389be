"""``python -m mcp_sidecar``: the same as ``proxyctl``."""

from .cli.main import main

main()
