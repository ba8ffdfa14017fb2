"""Mora's tasks as MCP tools (Model Context Protocol): `mora mcp` (stdio) and `/mcp` on `mora serve`.

- `mora.mcp.tools`: the tools as data (names, schemas from the job model, argument checks); no SDK.
- `mora.mcp.server`: the official `mcp` SDK's low-level server over a job store.
- `mora.mcp.transports`: `run_stdio` (`mora mcp`) and `http_app` (the service's `/mcp`).
- `mora.mcp.cli`: the `mora mcp` parser (argparse only: `mora --help` imports no SDK, no torch).

Nothing is imported here, so `import mora.mcp` stays cheap; the SDK is the `mcp` extra
(`pip install -e ".[mcp]"`), imported when a server starts.
"""
