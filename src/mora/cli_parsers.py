"""The `mora` command's parsers. Every job flag is generated from the job model.

Each task's subcommand gets its inputs from the task table and its options from
`mora.workflows.jobspec.OPTIONS` (flag, type, choices, help); nothing here lists an option.
argparse (standard library) keeps `mora --help` fast: the job model is pydantic, not torch.
The values are checked by the job model itself (`parse_job`), so a bad `--num-frames` gets the same
message on the command line, in a batch line and from `mora.run`, each naming the field its own way
(`--num-frames` here: the error's `param` spelled by `jobspec.spell_flag`).
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any

from mora import __version__
from mora.cli_flags import add_job_options, add_option, number_type, output_flags, positive_int

PROG = "mora"


class UsageError(Exception):
    """A command-line usage problem (exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line `mora: error: ...` (exit 2) with the way to get help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_inputs(p: argparse.ArgumentParser, task: str) -> None:
    """A task's inputs: positional, or `--name` for those the task table marks as options."""
    from mora.workflows.jobspec import task_inputs

    for item in task_inputs(task):
        if item.option:
            p.add_argument(f"--{item.name}", help=item.help, metavar=item.name.upper() if item.kind == "text" else
                           "FILE.json" if item.kind == "storyboard" else "PATH")
        else:
            p.add_argument(item.name, nargs=None if item.required else "?", help=item.help)


def build_parser() -> argparse.ArgumentParser:
    """The `mora` parser: one subcommand per task (from the task table, story included), then the other commands."""
    from mora.workflows.tasks import TASK_TABLE  # data only: no torch

    parser = Parser(prog=PROG, description="Mora: multi-agent generalist video generation (arXiv 2403.13248) on "
                    "AutoGen and diffusers.", epilog="Example: mora text-to-video \"a red fox running through snow\" "
                    "--preset tiny")
    parser.add_argument("--version", action="version", version=f"mora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for task in TASK_TABLE.values():
        p = sub.add_parser(task.name, help=task.help, description=task.about or task.help)
        add_inputs(p, task.name)
        add_job_options(p, task.name)
        output_flags(p)
    chat = sub.add_parser("chat", help="Describe the video in a conversation; an LLM director picks the task.",
                          description="Conversational prompting: needs an LLM config (OAI_CONFIG_LIST).")
    chat.add_argument("message", nargs="?", help="first message (asked for when omitted)")
    add_job_options(chat, None)
    add_job_options(chat, "text-to-video", scopes=("person",), title="review")
    output_flags(chat)
    _add_ui_parser(sub)
    _add_batch_parser(sub)
    add_train_parser(sub)
    _add_info_parsers(sub)
    from mora.service.cli import add_serve_parser  # argparse only

    add_serve_parser(sub, sys.modules[__name__])
    from mora.mcp.cli import add_mcp_parser

    add_mcp_parser(sub)
    return parser


def _add_ui_parser(sub: Any) -> None:
    ui = sub.add_parser("ui", help="Serve the web page (Gradio): one tab per task.",
                        description="Serve Mora's web page. Needs the ui extra: pip install -e \".[ui]\".")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    ui.add_argument("--out-dir", default="outputs/ui", help="where jobs and their uploads go (default outputs/ui)")
    # the page's jobs all use these; each job's own options are fields of the page
    add_job_options(ui, None, scopes=("host",), skip=("out", "overwrite"), title="for every job of the page")
    from mora.workflows.jobspec import OPTIONS

    add_option(ui, OPTIONS["preset"])
    output_flags(ui, "quiet", "verbose", "debug")


def _add_batch_parser(sub: Any) -> None:
    p = sub.add_parser("batch", help="Run many jobs from a JSON Lines file, models kept warm (Ray for many GPUs).",
                       description="Run every job of JOBS.jsonl (one job per line, the job model's fields: "
                       "{\"task\": ..., \"prompt\": ..., \"seed\": 1, \"out\": \"fox.mp4\"}). The options below "
                       "are defaults for every job.")
    p.add_argument("jobs", metavar="JOBS.jsonl", help="one job per line; the whole file is checked before any runs")
    p.add_argument("--out-dir", default="outputs/batch", help="relative outputs and batch.json go here "
                   "(default outputs/batch)")
    p.add_argument("--workers", type=positive_int, metavar="N", help="with --ray: N CPU actors (default: one "
                   "actor per GPU)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="spread the jobs over a Ray cluster (ADDRESS, e.g. auto or HOST:6379; none: a local "
                   "instance). Needs the ray extra: pip install -e \".[ray]\"")
    p.add_argument("--resume", action="store_true", help="skip the jobs an earlier run of this batch finished "
                   "(their manifest exists and matches); needs that run's batch.json in --out-dir")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of earlier jobs at the same paths")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed job")
    add_job_options(p, None, scopes=("job", "host"), skip=("out", "overwrite"), title="defaults for every job")
    output_flags(p)


def _add_info_parsers(sub: Any) -> None:
    pr = sub.add_parser("presets", help="List the presets: built-in and user files (name, description, models).",
                        description="List every preset: the built-in ones, $MORA_HOME/presets/*.toml and --preset-file.")
    pr.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    pr.add_argument("--preset-file", metavar="PATH.toml", help="also list (and check) this preset file")
    pr.add_argument("--memory", action="store_true",
                    help="print, from the full-size configs, the weights each preset's largest step keeps on the GPU "
                         "per profile and whether it fits 24, 48 and 80 GB cards (estimates: weights only)")
    pr.add_argument("--debug", action="store_true", help="show tracebacks")
    ev = sub.add_parser("eval", help="Score a video: temporal flickering, dynamic degree, smoothness, ...",
                        description="Print the score card of a video (seam scores too for a Mora output).")
    ev.add_argument("video", help="video to score")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")


# --- mora train: the options it shares with every job come from the job model; the training
# options are its own ---

def add_train_parser(sub: Any) -> None:
    """`mora train`: the training flags are derived from `TrainConfig`'s fields, the loop's from `LoopOptions`."""
    from mora.training.config import LoopOptions, flag_fields
    from mora.workflows.jobspec import OPTIONS

    p = sub.add_parser("train", help="Fine-tune the agents together (the paper's training): LoRA + modulation.",
                       description="Self-modulated multi-agent fine-tuning on a folder of captioned clips "
                       "(videos + metadata.jsonl with {\"file_name\", \"text\"} per line). Writes RUN_DIR/adapter "
                       "for --adapter, metrics.jsonl, loss.png, train.json and checkpoints.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="videos plus metadata.jsonl (every line is checked "
                        "before training starts)")
    source.add_argument("--prompts", metavar="FILE", help="data-free training: one prompt per line; the agents "
                        "make candidates, judges filter them, the agents fine-tune on what survives, repeat")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder (new, or this run with --resume, "
                   "or an earlier run's with --overwrite)")
    for name in ("preset", "preset_file", "device", "seed"):  # shared with every job: from the job model
        add_option(p, OPTIONS[name])
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of RUN_DIR")
    p.add_argument("--processes", type=number_type(int, "a whole number"), metavar="N", help="train in N processes "
                   "(one per GPU; gloo on a CPU) through `accelerate launch`; or run `accelerate launch -m mora.cli "
                   "train ...` yourself (several machines: docs/training.md)")
    training = p.add_argument_group("training")
    for name, info in flag_fields():
        _add_model_flag(training, name, info)
    loop = p.add_argument_group("data-free loop (--prompts; --steps is per iteration)")
    for name, info in LoopOptions.model_fields.items():
        _add_model_flag(loop, name, info)
    loop.add_argument("--human", choices=("ask", "never"), help="who settles a judges' disagreement: ask (on "
                      "the terminal; default when stdin is one) or never (the prompt is dropped)")
    add_option(loop, OPTIONS["llm_config"])
    output_flags(p)


def _add_model_flag(group: Any, name: str, info: Any) -> None:
    """One pydantic field as a flag (default None: not given, so the model's default applies)."""
    extra = info.json_schema_extra or {}
    kind = info.annotation
    shown = info.default if info.default not in (None, False) and not extra.get("text") else None
    text = (info.description or "") + (f" (default {shown})" if shown is not None else "")
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        action = argparse.BooleanOptionalAction if info.default is True else "store_true"
        group.add_argument(flag, dest=name, action=action, default=None, help=text)
        return
    kwargs: dict[str, Any] = {"dest": name, "default": None, "help": text, "metavar": extra.get("metavar")}
    if extra.get("repeat"):
        kwargs["action"] = "append"
    elif typing.get_origin(kind) is typing.Literal:
        kwargs.update(choices=typing.get_args(kind), metavar=None)
    elif not extra.get("text"):
        number = next((k for k in (int, float) if k is kind or k in typing.get_args(kind)), None)
        if number is not None:
            kwargs["type"] = number_type(number, "a whole number" if number is int else "a number")
    group.add_argument(flag, **kwargs)


def job_data(args: argparse.Namespace, task: str) -> dict:
    """The job's fields from parsed arguments: the task's inputs and every option given (None: not given)."""
    from mora.workflows.jobspec import OPTIONS, task_inputs

    names = [i.name for i in task_inputs(task)] + [name for name in OPTIONS if hasattr(args, name)]
    return {"task": task, **{k: getattr(args, k) for k in names if getattr(args, k, None) is not None}}
