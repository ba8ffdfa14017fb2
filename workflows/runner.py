"""`mora.run()`: a job in three stages, each its own function.

1. `prepare`: check the inputs, options and output paths against the task table and the preset;
   nothing is loaded or written (so a typo costs no model load).
2. `execute`: build the tools and the route state machine, run the route through the agent team.
3. `write`: score the video, build the manifest, write the video and the manifest atomically.

Layout of one job (ARCHITECTURE.md): the video at `out`, the manifest at `<out stem>.json`, tool
outputs in `<out stem>_artifacts/`. Nothing appears at `out` or at the manifest path unless the
whole route finished; an interrupted job keeps the artifacts it finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mora import media
from mora.config import Preset, get_preset
from mora.errors import InputError
from mora.limits import TOOL_ROLES, check_best_of, check_int, check_options, check_seed, check_text
from mora.workflows.options import RunOptions
from mora.workflows.tasks import CRITIC, CRITIC_TASKS, GATE, TASK_TABLE, TASKS, route_for

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `mora.run` made.

    Attributes:
        video_path: the final video.
        manifest: the manifest as written beside it.
        manifest_path: `<out stem>.json`.
        artifacts_dir: `<out stem>_artifacts/`, the intermediate images and videos.
    """

    video_path: Path
    manifest: dict
    manifest_path: Path
    artifacts_dir: Path


@dataclass
class Prepared:
    """A job checked and ready to run: nothing loaded, nothing written."""

    task: str
    inputs: dict
    options: RunOptions
    preset: Preset
    pinned: dict  # the user's numeric options, checked (None = the preset's)
    seed: int
    best_of: int
    out: Path
    manifest_path: Path
    artifacts_dir: Path
    config_list: list[dict] | None
    adapter: Any = None  # the loaded, checked adapter (None without one)
    started: float = field(default_factory=time.perf_counter)


def default_out(task: str) -> Path:
    """`outputs/<task>-<timestamp>.mp4`, the timestamp to the microsecond, never an existing file."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = Path("outputs") / f"{task}-{stamp}.mp4"
    n = 1
    while path.exists() or path.with_name(f"{path.stem}_artifacts").exists():
        path = Path("outputs") / f"{task}-{stamp}-{n}.mp4"
        n += 1
    return path


def output_paths(out: str | Path | None, task: str, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """(video, manifest, artifacts dir) for `--out`; checks it is a usable .mp4 path the job may own."""
    path = Path(out).expanduser() if out else default_out(task)
    if path.suffix.lower() != ".mp4":
        raise InputError(f"--out: {str(out)!r} does not end in .mp4; pass a path like outputs/{task}.mp4")
    if path.is_dir():
        raise InputError(f"--out: {str(out)!r} is a directory; pass a file path ending in .mp4")
    artifacts = path.with_name(f"{path.stem}_artifacts")
    if artifacts.exists() and not artifacts.is_dir():
        raise InputError(f"--out: {str(artifacts)!r} (the artifacts folder of {str(out)!r}) is a file; move it or "
                         "choose another --out")
    if artifacts.is_dir() and any(artifacts.iterdir()) and not overwrite:
        raise InputError(f"--out: {str(out)!r} already has an earlier job's artifacts in {str(artifacts)!r}; pass "
                         "--overwrite (overwrite=True) to replace that job, or choose another --out")
    return path, path.with_suffix(".json"), artifacts


def validate_inputs(task: str, inputs: dict) -> dict:
    """Check a task's inputs (texts non-empty, files readable media) before any model loads."""
    if task not in TASK_TABLE:
        raise InputError(f"task: {task!r} is not a task; choose one of {', '.join(TASKS)}")
    spec = TASK_TABLE[task]
    given = {k: v for k, v in inputs.items() if v is not None}
    names = spec.required + spec.optional
    extra = sorted(set(given) - set(names))
    if extra:
        raise InputError(f"{extra[0]}: {given[extra[0]]!r} is not an input of {task}; it takes {', '.join(names)}")
    for key in spec.required:
        if key not in given:
            raise InputError(f"{key}: missing; {task} needs {' and '.join(spec.required)}")
    kinds = {i.name: i.kind for i in spec.inputs}
    clean = {}
    for key, value in given.items():
        if kinds[key] == "text":
            clean[key] = check_text(value, key)
        else:
            media.check_file(value, argument=key, kinds=(kinds[key],))
            clean[key] = str(value)
    return clean


def prepare(task: str, inputs: dict, options: RunOptions) -> Prepared:
    """Every check of a job, once, before anything loads or is written. Raises InputError."""
    inputs = validate_inputs(task, inputs)
    preset = get_preset(options.preset, options.preset_file)
    pinned = check_options(task, preset, options.numeric())
    if options.fps is not None and task in ("extend", "connect"):
        logger.warning("--fps is ignored by %s: the output keeps the input video's frame rate", task)
        pinned["fps"] = None
    seed = check_int(options.seed, "--seed", low=0, high=2**32 - 1)
    best_of = check_best_of(task, options.best_of, CRITIC_TASKS)
    route = route_for(task, inputs, best_of, preset.capabilities)
    if options.review is not None and GATE not in route and CRITIC not in route:  # never ignored silently
        raise InputError(f"--review: {task} has no image to review with preset {preset.name} (its route has no "
                         "review gate); drop --review")
    out, manifest_path, artifacts_dir = output_paths(options.out, task, options.overwrite)
    from mora.agents.llm import load_llm_config

    config_list = load_llm_config(options.llm_config)
    from mora.tools.runtime import check_models, resolve_device

    if options.device not in ("auto", "cpu"):  # needs torch, not diffusers: still before any model
        resolve_device(options.device)
    roles = {TOOL_ROLES[s.tool] for s in route if s.tool}
    check_models([m for role in sorted(roles) for m in preset.spec(role).model_ids()], preset.name)
    adapter = options.adapter
    if isinstance(adapter, (str, Path)):  # files, sha256 and base models checked before any step
        from mora.adapters.adapter import load_adapter

        adapter = load_adapter(adapter, preset)
    return Prepared(task=task, inputs=inputs, options=options, preset=preset, pinned=pinned, seed=check_seed(seed),
                    best_of=best_of, out=out, manifest_path=manifest_path, artifacts_dir=artifacts_dir,
                    config_list=config_list, adapter=adapter)


def execute(job_spec: Prepared) -> tuple[Any, Any, float]:
    """Run the route through the agent team; returns (job, tools, seconds in the group chat)."""
    from mora.agents.team import Team
    from mora.tools.toolset import Toolset  # torch loads here, after every check
    from mora.workflows.job import Job

    p, o = job_spec, job_spec.options
    job = Job(task=p.task, inputs=p.inputs, options=p.pinned, seed=p.seed, best_of=p.best_of,
              steps=list(route_for(p.task, p.inputs, p.best_of, p.preset.capabilities)), artifacts_dir=p.artifacts_dir,
              reviewer=o.review)
    tools = Toolset(preset=p.preset, device=o.device, dtype=o.dtype, profile=o.profile, output_dir=p.artifacts_dir,
                    progress=o.progress, input_guard=job.guard, adapter=p.adapter)
    if p.artifacts_dir.is_dir():  # an earlier job's (overwrite was checked in prepare): this job owns the folder
        shutil.rmtree(p.artifacts_dir)
    p.artifacts_dir.mkdir(parents=True)
    for key in ("image", "video", "video_a", "video_b"):
        if key in p.inputs:
            job.allow(p.inputs[key])
            (job.images if key == "image" else job.videos).append(p.inputs[key])
    if p.task == "edit":  # the image agent edits the video's first frame: decode only that one
        frame = media.write_image(media.read_frame(p.inputs["video"], 0, argument="video"),
                                  p.artifacts_dir / "first_frame.png")
        job.images.append(str(frame))
        job.allow(frame)
    team = Team(job, tools, config_list=p.config_list, on_step=o.on_step)
    started = time.perf_counter()
    team.run()
    return job, tools, time.perf_counter() - started


def write(job_spec: Prepared, job: Any, tools: Any, chat_s: float) -> RunResult:
    """Score the final video, write it and its manifest atomically; returns the RunResult."""
    from mora.workflows.manifest import build_manifest

    final = job.videos[-1]
    info = next(c for c in reversed(tools.calls) if c["output"] == final)["video"]
    card = _score(final, info, job_spec.inputs.get("prompt")) if job_spec.options.metrics else None
    manifest = build_manifest(job_spec, job, tools, info=info, card=card, chat_s=chat_s)
    with media.atomic_path(job_spec.out) as tmp:
        shutil.copyfile(final, tmp)
    manifest["timings"]["total_s"] = round(time.perf_counter() - job_spec.started, 3)
    media.write_json(manifest, job_spec.manifest_path)
    logger.info("wrote %s (%d frames) and %s", job_spec.out, info["num_frames"], job_spec.manifest_path)
    return RunResult(video_path=job_spec.out, manifest=manifest, manifest_path=job_spec.manifest_path,
                     artifacts_dir=job_spec.artifacts_dir)


def run(task: str, *, prompt: str | None = None, image: str | Path | None = None, video: str | Path | None = None,
        instruction: str | None = None, video_a: str | Path | None = None, video_b: str | Path | None = None,
        **options: Any) -> RunResult:
    """Run one of the six tasks through Mora's agents and write the video and its manifest.

    Args:
        task: `text-to-video`, `image-to-video`, `extend`, `edit`, `connect` or `simulate`.
        prompt, image, video, instruction, video_a, video_b: the task's inputs (`mora.workflows.tasks`).
        **options: the fields of `RunOptions` (preset, seed, out, num_frames, width, height, steps,
            fps, device, dtype, profile, llm_config, review, on_step, progress, metrics, best_of,
            overwrite), each documented there.

    Returns:
        RunResult with `.video_path` and `.manifest`.

    Raises:
        InputError: bad inputs or options (nothing is loaded or written).
        ReviewAborted: the reviewer aborted (artifacts kept, nothing at `out`).

    Example:
        >>> result = mora.run("text-to-video", prompt="a red fox running through snow", preset="tiny", seed=0,
        ...                   out="fox.mp4")
        >>> result.manifest["route"]
        ['prompt_agent', 'text_to_image_agent', 'image_to_video_agent']
    """
    inputs = dict(prompt=prompt, image=image, video=video, instruction=instruction, video_a=video_a, video_b=video_b)
    job_spec = prepare(task, inputs, RunOptions.from_kwargs(options))
    job, tools, chat_s = execute(job_spec)
    return write(job_spec, job, tools, chat_s)


def _score(path: str, info: dict, prompt: str | None) -> dict | None:
    from mora.evaluation import score_video

    frames = media.read_video(path, argument="video").frames
    return score_video(frames, fps=info["fps"], boundaries=info.get("boundaries") or None, prompt=prompt)
