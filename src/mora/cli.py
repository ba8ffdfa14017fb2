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


def _common(p: argparse.ArgumentParser, review: bool = True) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--preset", default="mora", help="models to use: mora (the paper's; default), ltx, mora-wan, modern "
                   "(today's strongest open models), or tiny, tiny-ltx, tiny-wan, tiny-modern (toy random models: "
                   "offline, seconds on a CPU, noise output); `mora presets` lists them with user presets")
    g.add_argument("--preset-file", metavar="PATH.toml", help="a preset file (TOML, e.g. extends = \"mora\" and "
                   "the fields to change); alone it selects that file's preset (user presets also load from "
                   "$MORA_HOME/presets/)")
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
    if review:
        g.add_argument("--review", action="store_true", help="approve, regenerate, edit or abort the route's image "
                       "(the first frame, or the edited image) before it is animated")
    g.add_argument("--overwrite", action="store_true", help="replace the earlier job at --out (its video, manifest "
                   "and artifacts)")
    g.add_argument("--adapter", metavar="DIR", help="a trained adapter (mora train's RUN_DIR/adapter): LoRA and "
                   "modulation tokens for the agents it trained")
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
    from mora.workflows.tasks import TASK_TABLE  # data only: no torch

    for task in TASK_TABLE.values():
        p = sub.add_parser(task.name, help=task.help, description=task.help)
        for item in task.inputs:
            if item.option:
                p.add_argument(f"--{item.name}", help=item.help)
            else:
                p.add_argument(item.name, nargs=None if item.required else "?", help=item.help)
        if task.critic:
            p.add_argument("--best-of", type=_positive_int(), default=1, metavar="N",
                           help="make N candidates (seeds seed..seed+N-1); critic_agent keeps the best by the "
                           "score card (and a vision LLM judge when a config entry is tagged \"vision\")")
        _common(p, review=task.review or task.critic)
    chat = sub.add_parser("chat", help="Describe the video in a conversation; an LLM director picks the task.",
                          description="Conversational prompting: needs an LLM config (OAI_CONFIG_LIST).")
    chat.add_argument("message", nargs="?", help="first message (asked for when omitted)")
    _common(chat)
    ui = sub.add_parser("ui", help="Serve the web page (Gradio): one tab per task.",
                        description="Serve Mora's web page. Needs the ui extra: pip install -e \".[ui]\".")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=_positive_int(), default=7860, help="port (default 7860)")
    ui.add_argument("--preset", default="mora", help="models for every job (default mora)")
    ui.add_argument("--preset-file", metavar="PATH.toml", help="a preset file (TOML) that defines or extends --preset")
    ui.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    ui.add_argument("--profile", default="balanced", choices=("fast", "balanced", "low-vram", "auto"))
    ui.add_argument("--llm-config", metavar="PATH", help="OAI_CONFIG_LIST file for the agents")
    ui.add_argument("--out-dir", default="outputs/ui", help="where jobs and their uploads go (default outputs/ui)")
    ui.add_argument("--adapter", metavar="DIR", help="a trained adapter (mora train) for every job of the page")
    _output_flags(ui)
    _add_batch_parser(sub)
    _add_train_parser(sub)
    _add_story_parser(sub)
    pr = sub.add_parser("presets", help="List the presets: built-in and user files (name, description, models).",
                        description="List every preset: the built-in ones, $MORA_HOME/presets/*.toml and --preset-file.")
    pr.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    pr.add_argument("--preset-file", metavar="PATH.toml", help="also list (and check) this preset file")
    pr.add_argument("--debug", action="store_true", help="show tracebacks")
    ev = sub.add_parser("eval", help="Score a video: temporal flickering, dynamic degree, smoothness, ...",
                        description="Print the score card of a video (seam scores too for a Mora output).")
    ev.add_argument("video", help="video to score")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _add_batch_parser(sub: Any) -> None:
    p = sub.add_parser("batch", help="Run many jobs from a JSON Lines file, models kept warm (Ray for many GPUs).",
                       description="Run every job of JOBS.jsonl (one mora.run per line: {\"task\": ..., \"prompt\": "
                       "..., \"seed\": 1, \"out\": \"fox.mp4\"}). The options below are defaults for every job.")
    p.add_argument("jobs", metavar="JOBS.jsonl", help="one job per line; the whole file is checked before any runs")
    p.add_argument("--out-dir", default="outputs/batch", help="relative outputs and batch.json go here "
                   "(default outputs/batch)")
    p.add_argument("--workers", type=_positive_int(), metavar="N", help="with --ray: N CPU actors (default: one "
                   "actor per GPU)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="spread the jobs over a Ray cluster (ADDRESS, e.g. auto or HOST:6379; none: a local "
                   "instance). Needs the ray extra: pip install -e \".[ray]\"")
    p.add_argument("--resume", action="store_true", help="skip jobs whose manifest exists and matches")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed job")
    g = p.add_argument_group("defaults for every job")
    g.add_argument("--preset", help="models (default mora)")
    g.add_argument("--preset-file", metavar="PATH.toml", help="a preset file (TOML) for every job")
    g.add_argument("--adapter", metavar="DIR", help="a trained adapter (mora train) for every job")
    g.add_argument("--seed", type=_seed)
    for flag in ("--num-frames", "--width", "--height", "--steps", "--fps"):
        g.add_argument(flag, type=_positive_int(), metavar="N")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--profile", choices=("fast", "balanced", "low-vram", "auto"))
    g.add_argument("--llm-config", metavar="PATH")
    _output_flags(p)


def _add_story_parser(sub: Any) -> None:
    p = sub.add_parser("story", help="Make a multi-shot film from a story: storyboard_agent, then each shot.",
                       description="storyboard_agent writes a storyboard (<out stem>_storyboard.json), then each shot "
                       "runs through the agents and the shots are joined by transitions into one film.")
    p.add_argument("story", nargs="?", help="the story (optional with --storyboard)")
    p.add_argument("--shots", type=int, default=3, metavar="N", help="number of shots, 1..64 (default 3)")
    p.add_argument("--shot-seconds", type=float, metavar="S", help="seconds per shot (default: the preset's video "
                   "length; within the preset's range)")
    p.add_argument("--storyboard", metavar="FILE.json", help="run this (edited) storyboard instead of writing one")
    p.add_argument("--storyboard-only", action="store_true", help="write the storyboard and stop")
    p.add_argument("--transition", choices=("connect", "cut"), help="every boundary: a generated transition "
                   "(connect) or a hard cut (default: the storyboard's)")
    p.add_argument("--continuity", choices=("keyframe", "prompt"), default="keyframe", help="keyframe (default): "
                   "each shot starts from an edit of the previous shot's last frame; prompt: style sheet and "
                   "characters in every prompt, related seeds")
    p.add_argument("--resume", action="store_true", help="reuse the finished shots of an earlier run at --out")
    _common(p, review=False)


def _run_story(args: argparse.Namespace) -> int:
    from mora.workflows.story import story

    result = story(args.story, shots=args.shots, shot_seconds=args.shot_seconds, storyboard=args.storyboard,
                   storyboard_only=args.storyboard_only, transition=args.transition, continuity=args.continuity,
                   resume=args.resume, preset=args.preset, seed=args.seed, out=args.out, num_frames=args.num_frames,
                   width=args.width, height=args.height, steps=args.steps, fps=args.fps, device=args.device,
                   profile=args.profile, llm_config=args.llm_config, overwrite=args.overwrite, adapter=args.adapter,
                   on_step=_Progress(args.quiet), progress=not args.quiet)
    if args.storyboard_only:
        print(json.dumps(result.manifest, indent=2) if args.json else str(result.manifest_path))
        return 0
    _report(args, result.manifest)
    return 0


def _number(kind: type):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; pass e.g. 1e-4") from None

    return parse


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="Fine-tune the agents together (the paper's training): LoRA + modulation.",
                       description="Self-modulated multi-agent fine-tuning on a folder of captioned clips "
                       "(videos + metadata.jsonl with {\"file_name\", \"text\"} per line). Writes RUN_DIR/adapter "
                       "for --adapter, metrics.jsonl, loss.png, train.json and checkpoints.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="videos plus metadata.jsonl (every line is checked "
                        "before training starts)")
    source.add_argument("--prompts", metavar="FILE", help="data-free training: one prompt per line; the agents "
                        "make candidates, judges filter them, the agents fine-tune on what survives, repeat")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder (new, or this run with --resume)")
    p.add_argument("--preset", default="mora", help="base models (default mora; tiny for an offline check)")
    p.add_argument("--agents", metavar="A,B", help="agents to train (default text_to_image_agent,"
                   "image_to_video_agent; image_to_image_agent too is possible)")
    p.add_argument("--steps", type=_positive_int(), metavar="N")
    p.add_argument("--batch-size", type=_positive_int(), metavar="B")
    p.add_argument("--lr", type=_number(float), metavar="X", help="LoRA learning rate")
    p.add_argument("--mod-lr", type=_number(float), metavar="X", help="modulation embedding learning rate")
    p.add_argument("--rank", type=_positive_int(), metavar="R", help="LoRA rank (default 16)")
    p.add_argument("--mod-tokens", type=_positive_int(), metavar="K", help="modulation tokens per agent (default 1)")
    p.add_argument("--no-coupling", action="store_true", help="train each agent on its own loss only")
    p.add_argument("--lambda-image", type=_number(float), metavar="X", help="weight of the image agent's own loss")
    p.add_argument("--train-size", metavar="WxH", help="training frame size (default 512x288)")
    p.add_argument("--train-frames", type=_positive_int(), metavar="N", help="frames per training clip (default 14)")
    p.add_argument("--checkpoint-every", type=_positive_int(), metavar="N")
    p.add_argument("--optimizer", choices=("adamw", "adamw8bit"), help="adamw8bit: bitsandbytes, CUDA only")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of RUN_DIR")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    loop = p.add_argument_group("data-free loop (--prompts; --steps is per iteration)")
    loop.add_argument("--iterations", type=int, default=3, metavar="K", help="rounds (default 3)")
    loop.add_argument("--candidates", type=int, default=4, metavar="N", help="videos per prompt (default 4, >= 2)")
    loop.add_argument("--human", choices=("ask", "never"), help="who settles a judges' disagreement: ask (on "
                      "the terminal; default when stdin is one) or never (the prompt is dropped)")
    loop.add_argument("--quality-floor", type=_number(float), default=0.0, metavar="X",
                      help="candidates under this score-card quality (0..1) are never kept (default 0)")
    loop.add_argument("--llm-config", metavar="PATH", help="OAI_CONFIG_LIST; entries tagged \"vision\" are judges")
    _output_flags(p)


# --- running ---------------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mora").setLevel(level)
    # Silence what a user cannot act on: library deprecation chatter, load bars, tokenizer notes.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.debug:
        for name in ("httpx", "autogen", "openai"):
            logging.getLogger(name).setLevel(logging.ERROR)


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
    from mora.workflows.options import RunOptions
    from mora.workflows.runner import run
    from mora.workflows.tasks import INPUT_NAMES

    inputs = {k: getattr(args, k, None) for k in INPUT_NAMES}
    options = RunOptions(
        preset=args.preset, preset_file=args.preset_file, seed=args.seed, out=args.out, num_frames=args.num_frames,
        width=args.width, height=args.height, steps=args.steps, fps=args.fps, device=args.device, profile=args.profile,
        llm_config=args.llm_config, best_of=getattr(args, "best_of", 1), overwrite=args.overwrite,
        adapter=args.adapter,
        review=_terminal_review if getattr(args, "review", False) else None, on_step=_Progress(args.quiet),
        progress=not args.quiet,
    )
    result = run(args.command, **{k: v for k, v in inputs.items() if v is not None}, **vars(options))
    _report(args, result.manifest)
    return 0


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

    outcome = mora.chat(
        message, llm_config=args.llm_config, ask=ask, preset=args.preset, seed=args.seed, out=args.out,
        num_frames=args.num_frames, width=args.width, height=args.height, steps=args.steps, fps=args.fps,
        device=args.device, profile=args.profile, review=_terminal_review if args.review else None,
        on_step=_Progress(args.quiet), progress=not args.quiet, overwrite=args.overwrite, adapter=args.adapter,
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


def _run_batch(args: argparse.Namespace) -> int:
    from mora.workflows.batch import BatchInterrupted, JobsFileError, format_summary
    from mora.workflows.batch import batch as run_batch

    defaults = {k: getattr(args, k) for k in ("preset", "preset_file", "adapter", "seed", "num_frames", "width",
                                              "height", "steps", "fps", "device", "profile", "llm_config")
                if getattr(args, k) is not None}
    try:
        result = run_batch(args.jobs, out_dir=args.out_dir, workers=args.workers, ray=args.ray, resume=args.resume,
                           fail_fast=args.fail_fast, progress=not args.quiet, **defaults)
    except JobsFileError as bad:  # every bad line, one `mora: error:` line each
        for problem in bad.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    except BatchInterrupted as stop:
        print(format_summary(stop.result), file=sys.stderr)
        return _interrupted()
    if args.json:
        print(json.dumps({"jobs": [vars(r) for r in result.jobs], "path": str(result.path)}, indent=2, default=str))
    if not args.quiet:
        print(format_summary(result), file=sys.stderr)
    return result.exit_code


def _ask_human(candidates: list[dict], votes: dict) -> int | None:
    """--human ask: show each candidate's contact sheet and the votes on stderr; read a number or none."""
    print("\nThe judges disagree on: " + candidates[0]["enhanced_prompt"], file=sys.stderr)
    for c in candidates:
        print(f"  {c['number']}: {c['sheet']}  (score card quality {c['quality']:.3f})", file=sys.stderr)
    print("  votes: " + ", ".join(f"{judge} -> {choice}" for judge, choice in votes.items()), file=sys.stderr)
    while True:
        print(f"Keep which candidate? 1-{len(candidates)} or none: ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            raise KeyboardInterrupt  # stdin closed: stop here; --resume asks again
        answer = line.strip().lower()
        if answer == "none":
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return int(answer)


def _print_iterations(rows: list[dict]) -> None:
    head = f"{'iter':>4} {'prompts':>7} {'made':>5} {'kept':>5} {'quality':>8} {'disagree':>8} {'human':>6} " \
           f"{'mean score':>10} {'loss':>9} {'seconds':>8}"
    print(head, file=sys.stderr)
    for r in rows:
        score = "-" if r["mean_kept_score"] is None else f"{r['mean_kept_score']:.4f}"
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        print(f"{r['iteration']:>4} {r['prompts']:>7} {r['candidates']:>5} {r['kept']:>5} {r['dropped']['quality']:>8} "
              f"{r['dropped']['disagreement']:>8} {r['human_decisions']:>6} {score:>10} {loss:>9} "
              f"{r['seconds']:>8.1f}", file=sys.stderr)


def _run_data_free(args: argparse.Namespace, options: dict) -> int:
    from mora.training.loop import train_data_free

    human = args.human or ("ask" if sys.stdin.isatty() else "never")
    result = train_data_free(args.prompts, args.out, human=_ask_human if human == "ask" else None,
                             progress=not args.quiet, iterations=args.iterations, candidates=args.candidates,
                             quality_floor=args.quality_floor, llm_config=args.llm_config, resume=args.resume,
                             preset=args.preset, device=args.device, coupling=not args.no_coupling, **options)
    if args.json:
        print(json.dumps(result.manifest, indent=2, default=str))
    else:
        _print_iterations(result.iterations)
        if result.manifest.get("single_judge"):
            print(result.manifest["summary"], file=sys.stderr)
        print(result.adapter_dir or f"{result.run_dir} (nothing was kept: no adapter)")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from mora.training.config import parse_size
    from mora.training.trainer import train

    options = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "mod_lr", "rank", "mod_tokens",
                                             "lambda_image", "train_frames", "checkpoint_every", "optimizer", "seed")
               if getattr(args, k) is not None}
    if args.agents:
        options["agents"] = tuple(a.strip() for a in args.agents.split(",") if a.strip())
    if args.train_size:
        options["train_size"] = parse_size(args.train_size)
    if args.prompts is not None:
        return _run_data_free(args, options)
    result = train(args.data, args.out, progress=not args.quiet, preset=args.preset, device=args.device,
                   coupling=not args.no_coupling, resume=args.resume, **options)
    if args.json:
        print(json.dumps(result.manifest, indent=2, default=str))
    else:
        factors = ", ".join(f"{agent} {value:.3f}" for agent, value in result.modulation.items())
        print(f"{result.adapter_dir}  ({result.steps} steps, final loss {result.final_loss:.4f}; modulation {factors})")
    return 0


def _run_ui(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise InputError("ui: gradio is not installed; install the ui extra: pip install -e \".[ui]\"")
    from mora.agents.llm import load_llm_config
    from mora.config import get_preset
    from mora.tools.runtime import check_profile, resolve_device

    get_preset(args.preset, args.preset_file)
    resolve_device(args.device)
    check_profile(args.profile)
    load_llm_config(args.llm_config)
    from mora.ui import launch

    launch(host=args.host, port=args.port, preset=args.preset, device=args.device, profile=args.profile,
           llm_config=args.llm_config, output_root=args.out_dir, adapter=args.adapter, preset_file=args.preset_file)
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
    print(f"{PROG}: interrupted; finished work (artifacts, shots, checkpoints) was kept, nothing was written at "
          "--out", file=sys.stderr)
    return 130


def _run_presets(args: argparse.Namespace) -> int:
    """`mora presets [--json]`: every preset with its description, capabilities and models per role."""
    from mora.config import PRESETS, load_presets

    rows = [dict(name=p.name, description=p.description, source="built-in" if p.name in PRESETS else p.source,
                 capabilities=sorted(p.capabilities),
                 roles={role: dict(family=s.family, model=s.model, **({"refiner": s.refiner} if s.refiner else {}))
                        for role, s in p.roles.items()})
            for p in load_presets(args.preset_file).values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        caps = f" [{', '.join(row['capabilities'])}]" if row["capabilities"] else ""
        where = "" if row["source"] == "built-in" else f" ({row['source']})"
        print(f"{row['name']}{caps}{where}\n  {row['description']}")
        for role, spec in row["roles"].items():
            print(f"  {role:15} {spec['family']:16} {spec['model']}")
    return 0


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
        if args.command == "presets":
            return _run_presets(args)
        from mora.workflows.tasks import TASKS  # data only: no torch

        if getattr(args, "preset_file", None) and args.command not in TASKS:
            from mora.config import get_preset  # chat, story: the file's preset, resolved (and checked) here

            args.preset = get_preset(args.preset, args.preset_file)
        if args.command == "chat":
            return _run_chat(args)
        if args.command == "ui":
            return _run_ui(args)
        if args.command == "batch":
            return _run_batch(args)
        if args.command == "story":
            return _run_story(args)
        if args.command == "train":
            return _run_train(args)
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
