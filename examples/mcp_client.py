"""Drive Mora through MCP from Python, with the official `mcp` SDK's client.

Starts `mora mcp` over stdio (as a desktop host would), lists the tools, makes a video with
progress per agent step, then continues it with `extend_video` (the first job's video as
`job:<id>`) and prints where the videos are and their score cards.

    pip install -e ".[mcp]"
    python examples/mcp_client.py "a red fox running through snow" --preset tiny

For `/mcp` on `mora serve` instead, connect with
`Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=...))` (see docs/mcp.md).
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import unquote, urlparse

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def on_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  {progress:5.1f}% {message}", file=sys.stderr)


async def main(args: argparse.Namespace) -> int:
    server = StdioServerParameters(command=sys.executable, args=["-m", "mora.cli", "mcp", "--preset", args.preset,
                                                                 "--out-dir", args.out_dir])
    small = {"num_frames": args.num_frames, "steps": args.steps} if args.preset.startswith("tiny") else {}
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools))
        print(f"text_to_video: {args.prompt!r}", file=sys.stderr)
        result = await client.call_tool("text_to_video", {"prompt": args.prompt, **small},
                                        progress_callback=on_progress)
        if result.is_error:  # a bad argument: the same one-line message as the command line
            print(f"error: {result.content[0].text}", file=sys.stderr)
            return 2
        first = result.structured_content
        print(f"video: {unquote(urlparse(first['video']).path)} ({first['seconds']} s)")
        print(f"route: {' -> '.join(first['route'])}")
        print(f"enhanced prompt: {first['enhanced_prompt']}")
        more = await client.call_tool("extend_video", {"video": f"job:{first['job_id']}", **small},
                                      progress_callback=on_progress)
        if more.is_error:
            print(f"error: {more.content[0].text}", file=sys.stderr)
            return 1
        print(f"extended: {unquote(urlparse(more.structured_content['video']).path)} "
              f"({more.structured_content['seconds']} s)")
        print(f"score card: {more.structured_content['score_card']}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompt", nargs="?", default="a red fox running through snow")
    p.add_argument("--preset", default="tiny", help="tiny: toy models, seconds on a CPU (noise); mora: the paper's")
    p.add_argument("--out-dir", default="outputs/mcp", help="where the server puts jobs")
    p.add_argument("--num-frames", type=int, default=3, help="tiny presets only: frames per segment")
    p.add_argument("--steps", type=int, default=1, help="tiny presets only: denoising steps")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse_args()))
