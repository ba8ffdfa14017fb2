"""`mora.run()`: a job in three stages, each its own function.

1. `prepare` (`mora.workflows.prepare`): the job model's checks, then the inputs, options and
   output paths against the task table and the preset; nothing is loaded or written.
2. `execute`: build the tools and the route state machine, run the route through the agent team.
3. `write`: score the video, build the manifest, write the video and the manifest atomically.

Layout of one job (ARCHITECTURE.md): the video at `out`, the manifest at `<out stem>.json`, tool
outputs in `<out stem>_artifacts/`. Nothing appears at `out` or at the manifest path unless the
whole route finished; an interrupted job keeps the artifacts it finished.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mora import media
from mora.workflows.jobspec import JobSpec
from mora.workflows.prepare import Hooks, Prepared, RunResult, StoryPrepared, job_from_call, prepare

logger = logging.getLogger(__name__)


def execute(job_spec: Prepared, device: str | None = None, gpus: int = 1) -> tuple[Any, Any, float]:
    """Run the route through the agent team; returns (job, tools, seconds in the group chat).

    `device` and `gpus`: one of `gpus` processes' own device (`_run_parallel`); default the job's, one process.
    """
    from mora.agents.team import Team
    from mora.tools.toolset import Toolset  # torch loads here, after every check
    from mora.workflows.route_run import RouteRun

    p, spec = job_spec, job_spec.spec
    job = RouteRun(task=p.task, inputs=p.inputs, options=p.pinned, seed=p.seed, best_of=p.best_of, route=list(p.route),
              artifacts_dir=p.artifacts_dir, reviewer=p.reviewer)
    tools = Toolset(preset=p.preset, device=device or spec.device, dtype=spec.dtype, profile=spec.profile,
                    cache=spec.cache, cache_threshold=spec.cache_threshold, attention=spec.attention, gpus=gpus,
                    output_dir=p.artifacts_dir, progress=p.hooks.progress, input_guard=job.guard, adapter=p.adapter)
    tools.runtime.needed_later = lambda: tools.models_for(job.remaining_roles())  # the memory policy's view ahead
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
    team = Team(job, tools, config_list=p.config_list, on_step=p.hooks.on_step)
    started = time.perf_counter()
    team.run()
    return job, tools, time.perf_counter() - started


def write(job_spec: Prepared, job: Any, tools: Any, chat_s: float) -> RunResult:
    """Score the final video, write it and its manifest atomically; returns the RunResult."""
    from mora.workflows.manifest import build_manifest

    final = job.videos[-1]
    info = next(c for c in reversed(tools.calls) if c["output"] == final)["video"]
    card = _score(final, info, job_spec.inputs.get("prompt")) if job_spec.spec.metrics else None
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
        **options: the job model's options (`mora.workflows.jobspec.OPTIONS`: preset, seed, out,
            num_frames, ...; `mora.workflows.jobspec.task_options(task)` lists a task's), plus the
            callbacks `review` (a reviewer function), `on_step`, `progress` and `cancelled`. `preset` may be a
            `Preset` and `adapter` a loaded adapter.

    Returns:
        RunResult with `.video_path` and `.manifest`.

    Raises:
        InputError: bad inputs or options (nothing is loaded or written).
        Cancelled: the `cancelled` callback said so (artifacts kept, nothing at `out`).
        ReviewAborted: the reviewer aborted (artifacts kept, nothing at `out`).

    Example:
        >>> result = mora.run("text-to-video", prompt="a red fox running through snow", preset="tiny", seed=0,
        ...                   out="fox.mp4")
        >>> result.manifest["route"]
        ['prompt_agent', 'text_to_image_agent', 'image_to_video_agent']
    """
    inputs = dict(prompt=prompt, image=image, video=video, instruction=instruction, video_a=video_a, video_b=video_b)
    spec, hooks = job_from_call(task, {k: v for k, v in inputs.items() if v is not None}, options)
    return run_job(spec, hooks)


def run_job(spec: JobSpec | dict, hooks: Hooks | None = None) -> RunResult:
    """Run a job of the job model (any task of the task table, `story` included): prepare, execute, write.

    A `hooks.cancelled()` that turns True stops the job within one denoising step (`mora.errors.Cancelled`).

    Example:
        >>> run_job({"task": "simulate", "prompt": "a village", "preset": "tiny"}).manifest["task"]
        'simulate'
    """
    from mora.tools.runtime import cancellable  # no torch: that loads with the Toolset

    job_spec = prepare(spec, hooks)
    job_spec.hooks = job_spec.hooks.checked()  # `cancelled` before each agent step, then in each denoising step
    with cancellable(job_spec.hooks.cancelled):
        if isinstance(job_spec, StoryPrepared):  # a film (the task table's route says so): shot by shot
            from mora.workflows.story import run_story

            return run_story(job_spec)
        if job_spec.spec.gpus > 1:
            return _run_parallel(job_spec)
        job, tools, chat_s = execute(job_spec)
        return write(job_spec, job, tools, chat_s)


def _run_parallel(job_spec: Prepared) -> RunResult:
    """One clip in `--gpus` processes (`mora.tools.parallel`), this being one of them: process 0 writes the
    video and manifest; the others compute the same route in a scratch folder, remove it and return a
    result without a video. Each waits for the others (and process 0's writes) before it returns."""
    from mora.processes import end_processes
    from mora.tools import parallel

    processes, device, seed = parallel.join(job_spec.spec.gpus, job_spec.spec.device, job_spec.seed)
    job_spec = dataclasses.replace(job_spec, seed=seed)
    if processes.main:
        job, tools, chat_s = execute(job_spec, device, processes.world)
        result = write(job_spec, job, tools, chat_s)
        end_processes(processes)  # not after a failure: the launcher stops the others when one fails
        return result
    scratch = Path(tempfile.mkdtemp(prefix=f"mora-process{processes.rank}-"))
    try:
        execute(dataclasses.replace(job_spec, artifacts_dir=scratch / "artifacts"), device, processes.world)
        end_processes(processes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RunResult(video_path=None, manifest={}, manifest_path=job_spec.manifest_path, artifacts_dir=scratch)


def _score(path: str, info: dict, prompt: str | None) -> dict | None:
    from mora.evaluation import score_video

    frames = media.read_video(path, argument="video").frames
    return score_video(frames, fps=info["fps"], boundaries=info.get("boundaries") or None, prompt=prompt)
