"""The `mora` command. Parses and checks arguments, then calls `mora.run` / `mora.chat`.

argparse (standard library) keeps `mora --help` fast: nothing here imports torch, diffusers or
transformers until a command actually runs. Exit codes: 0 ok, 2 bad input or usage (one line
`mora: error: ...`), 1 unexpected failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Any

from mora import __version__
from mora.errors import InputError, MoraError

PROG = "mora"
TASK_HELP = {
    "text-to-video": "Make a video from a text prompt (prompt -> first frame -> video).",
    "image-to-video": "Animate an image, adapted to a text prompt first.",
    "extend": "Continue a video (the input's frames, then new ones).",
    "edit": "Edit a video by instruction (edits the first frame, then re-animates it).",
    "connect": "Join two videos with a generated transition.",
    "simulate": "Make a 'digital world' (video game style) video from a prompt, optionally from an image.",
}


class UsageError(Exception):
    """A command-line usage problem (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line `mora: error: ...` (exit 2) with the way to get help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _positive_int():
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass a whole number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} must be positive; pass a number of at least 1")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass a whole number such as 0") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; pass a number from 0 to 4294967295")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--preset", default="mora", help="models to use: mora (the paper's; default), ltx, mora-wan, or "
                   "tiny, tiny-ltx, tiny-wan (toy random models: offline, seconds on a CPU, noise output)")
    g.add_argument("--out", metavar="PATH.mp4", help="output video (default outputs/<task>-<timestamp>.mp4); the "
                   "manifest goes to <stem>.json and intermediate files to <stem>_artifacts/")
    g.add_argument("--seed", type=_seed, help="random seed (default: random, recorded in the manifest)")
    g.add_argument("--num-frames", type=_positive_int(), metavar="N",
                   help="frames per generated segment (SVD), clip (LTX) or frames to add (extend)")
    g.add_argument("--width", type=_positive_int(), metavar="W", help="width in pixels")
    g.add_argument("--height", type=_positive_int(), metavar="H", help="height in pixels")
    g.add_argument("--steps", type=_positive_int(), metavar="N", help="denoising steps of every model")
    g.add_argument("--fps", type=_positive_int(), metavar="N", help="frame rate of generated videos")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--profile", default="balanced", choices=("fast", "balanced", "low-vram", "auto"),
                   help="fast: resident, compiled; balanced (default): resident; low-vram: CPU offload; auto: "
                   "by free GPU memory")
    g.add_argument("--llm-config", metavar="PATH", help="OAI_CONFIG_LIST file (default: $OAI_CONFIG_LIST or "
                   "./OAI_CONFIG_LIST if present; without one, prompts are enhanced deterministically)")
    g.add_argument("--review", action="store_true", help="approve, regenerate, edit or abort the first frame")
    _output_flags(p)


def _output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the manifest (JSON) on stdout")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    g.add_argument("--verbose", "-v", action="store_true", help="log what Mora does (model loads, files)")
    g.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Mora: multi-agent generalist video generation (arXiv 2403.13248) on AutoGen and diffusers.",
        epilog="Example: mora text-to-video \"a red fox running through snow\" --preset tiny",
    )
    parser.add_argument("--version", action="version", version=f"mora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    specs = {
        "text-to-video": [("prompt", "what the video shows")],
        "image-to-video": [("image", "first frame (PNG, JPEG, WebP, GIF)"), ("prompt", "what should happen")],
        "extend": [("video", "video to continue (MP4, WebM, MOV, GIF)"), ("prompt?", "what happens next")],
        "edit": [("video", "video to edit"), ("instruction", "edit, e.g. 'make it winter'")],
        "connect": [("video_a", "video that plays first"), ("video_b", "video that plays last"),
                    ("prompt?", "what the transition shows")],
        "simulate": [("prompt", "the world to simulate")],
    }
    for name, positionals in specs.items():
        p = sub.add_parser(name, help=TASK_HELP[name], description=TASK_HELP[name])
        for arg, help_text in positionals:
            optional = arg.endswith("?")
            p.add_argument(arg.rstrip("?"), nargs="?" if optional else None, help=help_text)
        if name == "simulate":
            p.add_argument("--image", help="start from this image instead of generating one")
        if name in ("text-to-video", "simulate"):
            p.add_argument("--best-of", type=_positive_int(), default=1, metavar="N",
                           help="make N candidates (seeds seed..seed+N-1); critic_agent keeps the best by the "
                           "score card (and a vision LLM judge when a config entry is tagged \"vision\")")
        _common(p)
    chat = sub.add_parser("chat", help="Describe the video in a conversation; an LLM director picks the task.",
                          description="Conversational prompting: needs an LLM config (OAI_CONFIG_LIST).")
    chat.add_argument("message", nargs="?", help="first message (asked for when omitted)")
    _common(chat)
    ui = sub.add_parser("ui", help="Serve the web page (Gradio): one tab per task.",
                        description="Serve Mora's web page. Needs the ui extra: pip install -e \".[ui]\".")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=_positive_int(), default=7860, help="port (default 7860)")
    ui.add_argument("--preset", default="mora", help="models for every job (default mora)")
    ui.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    ui.add_argument("--profile", default="balanced", choices=("fast", "balanced", "low-vram", "auto"))
    ui.add_argument("--llm-config", metavar="PATH", help="OAI_CONFIG_LIST file for the agents")
    ui.add_argument("--out-dir", default="outputs/ui", help="where jobs and their uploads go (default outputs/ui)")
    _output_flags(ui)
    ev = sub.add_parser("eval", help="Score a video: temporal flickering, dynamic degree, smoothness, ...",
                        description="Print the score card of a video (seam scores too for a Mora output).")
    ev.add_argument("video", help="video to score")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


# --- running ---------------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mora").setLevel(level)
    # Silence what a user cannot act on: library deprecation chatter, load bars, tokenizer notes.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|diffusers|transformers)\.")
    if not args.debug:
        for name in ("httpx", "autogen", "openai"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _quiet_libraries() -> None:
    """Called once torch-side libraries are imported anyway (a command is running)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()  # the model-loading bars, not the denoising bars
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _Progress:
    """One line per agent step on stderr."""

    def __init__(self, quiet: bool):
        self.quiet, self.n = quiet, 0

    def __call__(self, agent: str, doing: str) -> None:
        self.n += 1
        if not self.quiet:
            print(f"[{self.n}] {agent}: {doing}", file=sys.stderr, flush=True)


def _terminal_review(image_path: str, info: dict) -> Any:
    """Ask the person at the terminal about the first frame."""
    print(f"\nFirst frame: {image_path}\n  prompt: {info.get('prompt')}", file=sys.stderr)
    while True:
        print("[a]pprove, [r]egenerate, [e]dit, a[b]ort? ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:  # end of input: nobody can approve, so stop cleanly
            return "abort"
        choice = answer.strip().lower()
        if choice in ("a", "approve", "y", "yes"):
            return "approve"
        if choice in ("r", "regenerate"):
            return "regenerate"
        if choice in ("b", "abort", "q", "quit"):
            return "abort"
        if choice in ("e", "edit"):
            print("edit instruction: ", end="", file=sys.stderr, flush=True)
            instruction = sys.stdin.readline().strip()
            if instruction:
                return ("edit", instruction)


def _run_task(args: argparse.Namespace) -> int:
    import mora

    inputs = {k: getattr(args, k, None) for k in ("prompt", "image", "video", "instruction", "video_a", "video_b")}
    progress = _Progress(args.quiet)
    options = dict(preset=args.preset, seed=args.seed, out=args.out, num_frames=args.num_frames, width=args.width,
                   height=args.height, steps=args.steps, fps=args.fps, device=args.device, profile=args.profile,
                   llm_config=args.llm_config, best_of=getattr(args, "best_of", 1))
    # Check everything before the heavy imports: a typo costs no model load.
    from mora.config import get_preset
    from mora.workflows.runner import check_best_of, output_paths, validate_inputs, validate_options

    validate_inputs(args.command, inputs)
    validate_options(args.command, get_preset(args.preset), options)
    output_paths(args.out, args.command)
    check_best_of(args.command, options["best_of"])
    _check_runtime(args)
    _quiet_libraries()
    result = mora.run(
        args.command, **{k: v for k, v in inputs.items() if v is not None}, **options,
        review=_terminal_review if args.review else None, on_step=progress, progress=not args.quiet,
    )
    _report(args, result.manifest)
    return 0


def _check_runtime(args: argparse.Namespace) -> None:
    """LLM config and device checks, before the slow library imports."""
    from mora.agents.llm import load_llm_config

    load_llm_config(args.llm_config)
    if args.device not in ("auto", "cpu"):  # needs torch, but not diffusers or transformers
        from mora.tools.runtime import resolve_device

        resolve_device(args.device)


def _report(args: argparse.Namespace, manifest: dict) -> None:
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
        return
    video = manifest["video"]
    print(f"{video['path']}  ({video['num_frames']} frames, {video['width']}x{video['height']}, {video['fps']:g} fps)")
    if not args.quiet:
        print(f"route: {' -> '.join(manifest['route'])}", file=sys.stderr)
        if manifest.get("note"):
            print(f"note: {manifest['note']}", file=sys.stderr)


def _run_chat(args: argparse.Namespace) -> int:
    import mora

    message = args.message
    from mora.agents.llm import load_llm_config

    if not load_llm_config(args.llm_config):
        raise InputError(
            "--llm-config: chat needs an LLM and none is configured; pass --llm-config PATH or set OAI_CONFIG_LIST "
            "(see OAI_CONFIG_LIST.example), or run a task directly, e.g. mora text-to-video \"a fox\""
        )
    if not message:
        print("Describe the video you want: ", end="", file=sys.stderr, flush=True)
        message = sys.stdin.readline().strip()
        if not message:
            raise InputError("message: empty; describe the video you want")

    def ask(question: str) -> str | None:
        print(f"director: {question}\nyou: ", end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip() or None

    _quiet_libraries()
    outcome = mora.chat(
        message, llm_config=args.llm_config, ask=ask, preset=args.preset, seed=args.seed, out=args.out,
        num_frames=args.num_frames, width=args.width, height=args.height, steps=args.steps, fps=args.fps,
        device=args.device, profile=args.profile, review=_terminal_review if args.review else None,
        on_step=_Progress(args.quiet), progress=not args.quiet,
    )
    if outcome.result is None:
        print(f"director: {outcome.reply}", file=sys.stderr)
        return 0
    _report(args, outcome.result.manifest)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mora import media
    from mora.evaluation import format_table, score_card_for_file

    media.check_file(args.video, argument="video", kinds=("video",))
    manifest_path = Path(args.video).with_suffix(".json")
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = None
    card = score_card_for_file(args.video, manifest=manifest)
    print(json.dumps(card, indent=2) if args.json else format_table(card))
    return 0


def _run_ui(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise InputError("ui: gradio is not installed; install the ui extra: pip install -e \".[ui]\"")
    from mora.agents.llm import load_llm_config
    from mora.config import get_preset
    from mora.tools.runtime import check_profile, resolve_device

    get_preset(args.preset)
    resolve_device(args.device)
    check_profile(args.profile)
    load_llm_config(args.llm_config)
    _quiet_libraries()
    from mora.ui import launch

    launch(host=args.host, port=args.port, preset=args.preset, device=args.device, profile=args.profile,
           llm_config=args.llm_config, output_root=args.out_dir)
    return 0


class _Interrupts:
    """Remembers Ctrl-C. Libraries sometimes turn the KeyboardInterrupt raised inside their native
    code into another error (e.g. an OSError while loading weights); the exit code stays 130."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        signal.default_int_handler(signum, frame)


def _interrupted() -> int:
    print(f"{PROG}: interrupted; finished artifacts were kept, nothing was written at --out", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mora` command; returns the exit code."""
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _Interrupts.handler)
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return 2
        _setup_logging(args)
        if args.command == "eval":
            return _run_eval(args)
        if args.command == "chat":
            return _run_chat(args)
        if args.command == "ui":
            return _run_ui(args)
        return _run_task(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except MoraError as e:
        if _Interrupts.seen:
            return _interrupted()
        if debug:  # the traceback too, but the same exit code (2 stays "bad input")
            traceback.print_exc()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`mora eval x.mp4 | head -1`): nothing to report to, and
        # the interpreter's final flush must not print its own BrokenPipeError either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _Interrupts.seen:
            return _interrupted()
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"{PROG}: error: unexpected failure: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
