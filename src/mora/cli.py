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

from mora.cli_parsers import PROG, UsageError, build_parser, job_data
from mora.errors import InputError, MoraError, one_line

# --- running ---------------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mora").setLevel(level)
    # Silence what a user cannot act on: library deprecation chatter, load bars, tokenizer notes.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.debug:  # a filter on the handler, not logger levels: importing autogen resets its level to INFO
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Keep only errors of the libraries whose warnings a user cannot act on."""
    return record.levelno >= logging.ERROR or record.name.split(".")[0] not in ("httpx", "autogen", "openai")


class _Progress:
    """One line per agent step on stderr."""

    def __init__(self, quiet: bool):
        self.quiet, self.n = quiet, 0

    def __call__(self, agent: str, doing: str) -> None:
        self.n += 1
        if not self.quiet:
            print(f"[{self.n}] {agent}: {doing}", file=sys.stderr, flush=True)


def _bars(args: argparse.Namespace) -> bool:
    """Diffusion step bars only on a terminal: written to a pipe or a log file, tqdm's redraws are `\\r`
    fragments (`0%| | 0/1`); there the one line per agent step (`_Progress`) says what runs."""
    from mora.progress import on_terminal

    return not args.quiet and on_terminal()


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


def _hooks(args: argparse.Namespace) -> Any:
    from mora.workflows.prepare import Hooks

    # Ctrl-C also stops the job at its next denoising step, should a library swallow the KeyboardInterrupt
    return Hooks(review=_terminal_review, on_step=_Progress(args.quiet), progress=_bars(args),
                 cancelled=lambda: bool(_Interrupts.seen))


def _run_task(args: argparse.Namespace) -> int:
    """A task or a story: the job from the flags (checked by the job model), then `run_job`."""
    from mora.processes import launch, world_size
    from mora.workflows.jobspec import parse_job
    from mora.workflows.runner import run_job

    spec = parse_job(job_data(args, args.command))
    other = int(os.environ.get("RANK", "0")) != 0  # one of --gpus N processes, not process 0: it reports nothing
    args.quiet = args.quiet or other
    if getattr(spec, "gpus", 1) > 1 and world_size() == 1:  # --gpus N: checked here, then run in N processes
        from dataclasses import replace

        from mora.workflows.prepare import prepare

        prepare(spec, replace(_hooks(args), launcher=True))
        return launch(args.argv, spec.gpus)
    result = run_job(spec, _hooks(args))
    if other:
        return 0
    if getattr(spec, "storyboard_only", False):
        print(json.dumps(result.manifest, indent=2) if args.json else str(result.manifest_path))
        return 0
    _report(args, result.manifest)
    return 0


def _report(args: argparse.Namespace, manifest: dict) -> None:
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
        return
    video = manifest["video"]
    print(f"{video['path']}  ({video['num_frames']} frames, {video['width']}x{video['height']}, {video['fps']:g} fps)")
    if not args.quiet:
        reused = [str(s["index"]) for s in manifest.get("shots") or () if s.get("resumed")]
        if reused:
            print(f"reused shot{'s' if len(reused) > 1 else ''} {', '.join(reused)} from the earlier run",
                  file=sys.stderr)
        print(f"route: {' -> '.join(manifest['route'])}", file=sys.stderr)
        if manifest.get("note"):
            print(f"note: {manifest['note']}", file=sys.stderr)


def _shown(path: str) -> str:
    """A path as the single commands print their `--out`: relative to the working directory when under it
    (a batch's jobs hold absolute paths, for Ray workers that start elsewhere)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # Windows: another drive
        return path
    return path if relative.startswith(os.pardir) else relative


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

    options = {k: v for k, v in job_data(args, "text-to-video").items() if k not in ("task", "prompt", "review")}
    outcome = mora.chat(message, ask=ask, review=_terminal_review if args.review else None,
                        on_step=_Progress(args.quiet), progress=_bars(args), cancelled=lambda: bool(_Interrupts.seen),
                        **options)
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
    from mora.workflows.jobspec import OPTIONS

    own = ("resume", "overwrite")  # the batch's own flags, not defaults for its jobs
    defaults = {k: getattr(args, k) for k in OPTIONS if k not in own and getattr(args, k, None) is not None}
    try:
        result = run_batch(args.jobs, out_dir=args.out_dir, workers=args.workers, ray=args.ray, resume=args.resume,
                           overwrite=args.overwrite, fail_fast=args.fail_fast, progress=not args.quiet, **defaults)
    except JobsFileError as bad:  # every bad line, one `mora: error:` line each
        for problem in bad.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    except BatchInterrupted as stop:
        print(format_summary(stop.result, _shown), file=sys.stderr)
        return _interrupted("batch")
    if args.json:
        print(json.dumps({"jobs": [vars(r) for r in result.jobs], "path": str(result.path)}, indent=2, default=str))
    if not args.quiet:
        print(format_summary(result, _shown), file=sys.stderr)
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
    """The data-free loop's table: one row per iteration; the `dropped:` columns count prompts, not videos."""
    head = f"{'iter':>4} {'prompts':>7} {'made':>5} {'kept':>5} {'dropped:quality':>15} {'disagree':>8} " \
           f"{'human':>6} {'mean score':>10} {'loss*':>9} {'seconds':>8}"
    print(head, file=sys.stderr)
    for r in rows:
        score = "-" if r["mean_kept_score"] is None else f"{r['mean_kept_score']:.4f}"
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        print(f"{r['iteration']:>4} {r['prompts']:>7} {r['candidates']:>5} {r['kept']:>5} "
              f"{r['dropped']['quality']:>15} {r['dropped']['disagreement']:>8} {r['dropped']['human']:>6} "
              f"{score:>10} {loss:>9} {r['seconds']:>8.1f}", file=sys.stderr)
    print("dropped: prompts dropped (every candidate under --quality-floor; judges disagreed with no human; the "
          "human said none); loss*: mean of the iteration's last 10 steps", file=sys.stderr)


def _print_trained(result: Any) -> None:
    """The summary line of a finished training (the same after --data and --prompts)."""
    from mora.training.manifest import FINAL_LOSS_STEPS

    factors = ", ".join(f"{agent} {value:.3f}" for agent, value in result.modulation.items())
    last = min(FINAL_LOSS_STEPS, result.steps)
    print(f"{result.adapter_dir}  ({result.steps} steps, final loss {result.final_loss:.4f} (mean of the last {last} "
          f"steps); modulation {factors})")


def _run_data_free(args: argparse.Namespace, options: dict, job: dict) -> int:
    from mora.training.config import LoopOptions
    from mora.training.loop import train_data_free

    human = args.human or ("ask" if sys.stdin.isatty() else "never")
    loop = {k: getattr(args, k) for k in LoopOptions.model_fields if getattr(args, k, None) is not None}
    result = train_data_free(args.prompts, args.out, human=_ask_human if human == "ask" else None,
                             progress=not args.quiet, job=job, resume=args.resume, **loop, **options)
    if args.json:
        print(json.dumps(result.manifest, indent=2, default=str))
        return 0
    _print_iterations(result.iterations)
    if result.manifest.get("single_judge"):
        print(result.manifest["summary"], file=sys.stderr)
    if result.final is not None:
        _print_trained(result.final)
    else:
        print(f"{result.run_dir} (nothing was kept: no adapter)")
    return 0


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The `mora train` arguments of `args` again (without --processes), for the processes `accelerate` starts."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    argv = []
    for action in sub.choices["train"]._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("processes", "help") or value in (None, False):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:
            argv.append(action.option_strings[0])
        else:
            argv += [action.option_strings[0], str(value)]
    return argv


def _run_train(args: argparse.Namespace) -> int:
    from mora.training.config import flag_fields
    from mora.training.trainer import train
    from mora.workflows.jobspec import OPTIONS

    if args.processes is not None and args.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        if args.prompts is not None:
            raise InputError("--processes: the data-free loop (--prompts) runs in one process; drop --processes")
        from mora.processes import launch

        return launch(["train", *_train_argv(args)], args.processes)

    options = {name: getattr(args, name) for name, _ in flag_fields() if getattr(args, name, None) is not None}
    if args.seed is not None:
        options["seed"] = args.seed
    # the job options `mora train` shares with every task (checked by the job model)
    job = {k: getattr(args, k) for k in ("preset", "preset_file", "device", "llm_config")
           if k in OPTIONS and getattr(args, k, None) is not None}
    if args.prompts is not None:
        return _run_data_free(args, options, job)
    job.pop("llm_config", None)
    result = train(args.data, args.out, progress=not args.quiet, resume=args.resume, **job, **options)
    if int(os.environ.get("RANK", "0")) != 0:  # one of several processes: process 0 reports
        return 0
    if args.json:
        print(json.dumps(result.manifest, indent=2, default=str))
    else:
        _print_trained(result)
    return 0


def _run_ui(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise InputError("ui: gradio is not installed; install the ui extra: pip install -e \".[ui]\"")
    from mora.workflows.jobspec import OPTIONS

    # the options every job of the page shares (host options and the preset), checked before serving
    shared = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    from mora.ui import check_shared, launch

    check_shared(shared)
    launch(host=args.host, port=args.port, output_root=args.out_dir, shared=shared)
    return 0


class _Interrupts:
    """Remembers Ctrl-C (SIGINT) and SIGTERM, and stops the run the same way for both: a
    KeyboardInterrupt, finished work kept, nothing written at --out, exit 128 + the signal's number
    (130, 143). Without it SIGTERM killed the process where it stood, leaving Python's and the
    libraries' cleanup undone. Libraries sometimes turn the KeyboardInterrupt raised inside their
    native code into another error (e.g. an OSError while loading weights), or swallow it; the exit
    code stays, and a running job stops at its next denoising step (`Hooks.cancelled`)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    seen: int = 0  # the signal received (0: none)

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.seen = signum
        signal.default_int_handler(signum, frame)

    @classmethod
    def install(cls) -> None:
        cls.seen = 0  # a signal of an earlier main() in this process (tests) is not this one's
        for signum in cls.SIGNALS:
            signal.signal(signum, cls.handler)


def _interrupted(command: str | None = None) -> int:
    code = 128 + (_Interrupts.seen or signal.SIGINT)
    from mora.processes import reports_interrupt

    if not reports_interrupt():  # one of several processes (train, --gpus): the launcher or process 0 says it
        return code
    from mora.workflows.jobspec import OPTIONS

    resumable = command in ("batch", "train") or (command is not None and OPTIONS["resume"].applies_to(command))
    again = " (run the same command with --resume to continue)" if resumable else ""
    print(f"{PROG}: interrupted; finished work (artifacts, shots, checkpoints) was kept, nothing was written at "
          f"--out{again}", file=sys.stderr)
    return code


def _run_presets(args: argparse.Namespace) -> int:
    """`mora presets [--json] [--memory]`: every preset with its description, capabilities and models per role."""
    from mora.config import preset_rows

    rows = preset_rows(args.preset_file)
    if args.memory:
        return _print_memory([row["name"] for row in rows], args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        caps = f" [{', '.join(row['capabilities'])}]" if row["capabilities"] else ""
        where = "" if row["source"] == "built-in" else f" ({row['source']})"
        print(f"{row['name']}{caps}{where}\n  {row['description']}")
        for role, spec in row["roles"].items():
            lora = "".join(f" + LoRA {source}" for source in spec.get("adapters", ()))
            print(f"  {role:15} {spec['family']:16} {spec['model']}{lora}")
    return 0


def _print_memory(names: list[str], args: argparse.Namespace) -> int:
    """`mora presets --memory`: `mora.memory.preset_rows` for each preset, as a table or JSON."""
    from mora import memory
    from mora.config import get_preset

    rows = [row for name in names for row in memory.preset_rows(get_preset(name))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("\n".join(memory.table_lines(rows)))
    return 0


def _run_extra(module: str, name: str, args: argparse.Namespace, **kwargs: Any) -> int:
    """A command whose code lives in its own package (imported only when it runs)."""
    import importlib

    return getattr(importlib.import_module(module), name)(args, **kwargs)


def _say(args: argparse.Namespace):
    """A status line for the person at the terminal (stderr; nothing with --quiet)."""
    return lambda line: None if getattr(args, "quiet", False) else print(line, file=sys.stderr, flush=True)


# command -> its runner (every task of the task table, story included, runs through _run_task)
_COMMANDS = {"eval": _run_eval, "presets": _run_presets, "chat": _run_chat, "ui": _run_ui, "batch": _run_batch,
             "train": _run_train, "serve": lambda args: _run_extra("mora.service.cli", "run_serve", args, announce=_say(args)),
             "mcp": lambda args: _run_extra("mora.mcp.cli", "run_mcp", args)}


def _spelled(e: MoraError) -> str:
    """The error's line as the command line names things: a field of the job model as its flag."""
    if not isinstance(e, InputError):
        return str(e)
    from mora.workflows.jobspec import spell_flag

    return e.spelled(spell_flag)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mora` command; returns the exit code."""
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if threading.current_thread() is threading.main_thread():
        _Interrupts.install()
    command = None
    try:
        args = parser.parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])  # what `--gpus N` relaunches in N processes
        command = args.command
        if not args.command:
            parser.print_help(sys.stderr)
            return 2
        _setup_logging(args)
        return _COMMANDS.get(args.command, _run_task)(args)  # the tasks and story: _run_task
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(command)
    except MoraError as e:
        if _Interrupts.seen:
            return _interrupted(command)
        if debug:  # the traceback too, but the same exit code (2 stays "bad input")
            traceback.print_exc()
        print(f"{PROG}: error: {_spelled(e)}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`mora eval x.mp4 | head -1`): nothing to report to, and
        # the interpreter's final flush must not print its own BrokenPipeError either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _Interrupts.seen:
            return _interrupted(command)
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"{PROG}: error: unexpected failure: {one_line(e)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
