"""`mora mcp`: its parser (argparse only, no heavy imports) and how it runs.

`mora.cli_parsers.build_parser` calls `add_mcp_parser`; `mora.cli.main` calls `run_mcp`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from mora.errors import InputError

# A host starts `mora mcp` in a folder of its choosing (often / or its own install folder), so the
# default is not relative to the working directory.
DEFAULT_OUT_DIR = "$MORA_OUTPUTS/mcp, else ~/mora-outputs/mcp"


def default_out_dir() -> Path:
    """`$MORA_OUTPUTS/mcp`, else `~/mora-outputs/mcp`."""
    return Path(os.environ.get("MORA_OUTPUTS", "~/mora-outputs")).expanduser() / "mcp"


def add_mcp_parser(sub: Any) -> None:
    """The `mora mcp` subcommand: the preset and output folder, and the host options every job uses."""
    from mora.cli_flags import add_job_options, add_option, output_flags
    from mora.workflows.jobspec import OPTIONS

    p = sub.add_parser("mcp", help="Serve Mora's tasks as MCP tools over stdio (for desktop agent hosts).",
                       description="Serve Mora's tasks as Model Context Protocol tools over stdin/stdout: one tool "
                       "per task (text_to_video, image_to_video, extend_video, ...) plus get_job, cancel_job, "
                       "list_presets and score_video. Add it to a host as {\"mcpServers\": {\"mora\": {\"command\": "
                       "\"mora\", \"args\": [\"mcp\", \"--preset\", \"tiny\"]}}}. Needs the mcp extra: "
                       "pip install -e \".[mcp]\".")
    p.add_argument("--out-dir", help=f"where jobs go (<out-dir>/<job id>/) and the job "
                   f"store (<out-dir>/mcp.db) (default {DEFAULT_OUT_DIR})")
    add_option(p, OPTIONS["preset"])  # the tools' default; a call may pass another
    add_job_options(p, None, scopes=("host",), skip=("out", "overwrite"), title="for every job of the server")
    output_flags(p, "verbose", "debug")


def run_mcp(args: argparse.Namespace) -> int:
    """Check the options, then serve over stdio until the client closes stdin."""
    if importlib.util.find_spec("mcp") is None or importlib.util.find_spec("mcp.server") is None:
        raise InputError("mcp: the MCP SDK is not installed; install the mcp extra: pip install -e \".[mcp]\"")
    from mora.workflows.jobspec import OPTIONS

    host = {k: getattr(args, k) for k, o in OPTIONS.items() if o.scope == "host" and getattr(args, k, None)
            is not None}
    from mora.workflows.prepare import check_shared_options

    check_shared_options({**host, **({"preset": args.preset} if args.preset is not None else {})},
                         what="the server's options")
    from mora.mcp.transports import run_stdio

    run_stdio(out_dir=args.out_dir or default_out_dir(), preset=args.preset, host=host)
    return 0
