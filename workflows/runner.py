"""`mora.run()`: validate everything, run a task's route through the agent team, write the video
and its manifest atomically.

Layout of one job (ARCHITECTURE.md): the video at `out`, the manifest at `<out stem>.json`, tool
outputs in `<out stem>_artifacts/`. Nothing appears at `out` or at the manifest path unless the
whole route finished; an interrupted job keeps the artifacts it finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mora import media
from mora.config import get_preset
from mora.errors import InputError
from mora.tools.toolset import MAX_SEED, MAX_SIDE, MAX_STEPS, check_int, check_text
from mora.workflows.routes import TASK_INPUTS, TASKS, route_for

logger = logging.getLogger(__name__)

_FILE_KINDS = {"image": ("image",), "video": ("video",), "video_a": ("video",), "video_b": ("video",)}
_TEXT_INPUTS = ("prompt", "instruction")
_VIDEO_ROLE = {"extend": "extend", "connect": "connect"}  # other tasks animate with image_to_video


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


def default_out(task: str) -> Path:
    return Path("outputs") / f"{task}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.mp4"


def output_paths(out: str | Path | None, task: str) -> tuple[Path, Path, Path]:
    """(video, manifest, artifacts dir) for `--out`; checks it is a usable .mp4 path."""
    path = Path(out).expanduser() if out else default_out(task)
    if path.suffix.lower() != ".mp4":
        raise InputError(f"--out: {str(out)!r} does not end in .mp4; pass a path like outputs/{task}.mp4")
    if path.is_dir():
        raise InputError(f"--out: {str(out)!r} is a directory; pass a file path ending in .mp4")
    artifacts = path.with_name(f"{path.stem}_artifacts")
    if artifacts.exists() and not artifacts.is_dir():
        raise InputError(f"--out: {str(artifacts)!r} (the artifacts folder of {str(out)!r}) is a file; move it or "
                         "choose another --out")
    return path, path.with_suffix(".json"), artifacts


def validate_inputs(task: str, inputs: dict) -> dict:
    """Check a task's inputs (texts non-empty, files readable media) before any model loads."""
    if task not in TASK_INPUTS:
        raise InputError(f"task: {task!r} is not a task; choose one of {', '.join(TASKS)}")
    required, optional = TASK_INPUTS[task]
    given = {k: v for k, v in inputs.items() if v is not None}
    extra = sorted(set(given) - set(required) - set(optional))
    if extra:
        raise InputError(
            f"{extra[0]}: {given[extra[0]]!r} is not an input of {task}; it takes {', '.join(required + optional)}"
        )
    for key in required:
        if key not in given:
            raise InputError(f"{key}: missing; {task} needs {' and '.join(required)}")
    clean = {}
    for key, value in given.items():
        if key in _TEXT_INPUTS:
            clean[key] = check_text(value, key)
        else:
            media.check_file(value, argument=key, kinds=_FILE_KINDS[key])
            clean[key] = str(value)
    return clean


def validate_options(task: str, preset, options: dict) -> dict:
    """Check numeric options against the preset's models (size multiples, frame rules)."""
    video_spec = preset.spec(_VIDEO_ROLE.get(task, "image_to_video"))
    multiple = max(video_spec.get("size_multiple", 8), preset.spec("text_to_image").get("size_multiple", 8))
    opts = dict(options)
    for side in ("width", "height"):
        opts[side] = check_int(options.get(side), f"--{side}", low=multiple, high=MAX_SIDE, multiple=multiple,
                               hint=f" (a multiple of {multiple} for preset {preset.name})")
    opts["steps"] = check_int(options.get("steps"), "--steps", low=1, high=MAX_STEPS)
    opts["fps"] = check_int(options.get("fps"), "--fps", low=1, high=120)
    m = video_spec.get("frame_multiple") if task != "extend" else None
    opts["num_frames"] = check_int(
        options.get("num_frames"), "--num-frames", low=2, high=video_spec.get("max_frames", 256),
        multiple=m, remainder=1 if m else 0,
    )
    return opts


def check_best_of(task: str, best_of: Any) -> int:
    """`--best-of`: 1..MAX_BEST_OF, and more than 1 only where a critic can choose (text-to-video, simulate)."""
    from mora.workflows.routes import BEST_OF_TASKS, MAX_BEST_OF

    n = check_int(best_of, "--best-of", low=1, high=MAX_BEST_OF) or 1
    if n > 1 and task not in BEST_OF_TASKS:
        raise InputError(f"--best-of: {n} is only for {' and '.join(BEST_OF_TASKS)}, not {task}; drop --best-of")
    return n


def _versions() -> dict:
    out = {}
    for name in ("mora", "torch", "diffusers", "transformers", "autogen"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run(
    task: str,
    *,
    prompt: str | None = None,
    image: str | Path | None = None,
    video: str | Path | None = None,
    instruction: str | None = None,
    video_a: str | Path | None = None,
    video_b: str | Path | None = None,
    preset: str = "mora",
    seed: int | None = None,
    out: str | Path | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    fps: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    profile: str = "balanced",
    llm_config: str | Path | list | None = None,
    review: Callable[[str, dict], Any] | None = None,
    on_step: Callable[[str, str], None] | None = None,
    progress: bool = True,
    metrics: bool = True,
    best_of: int = 1,
) -> RunResult:
    """Run one of the six tasks through Mora's agents and write the video and its manifest.

    Args:
        task: `text-to-video`, `image-to-video`, `extend`, `edit`, `connect` or `simulate`.
        prompt, image, video, instruction, video_a, video_b: the task's inputs (see ARCHITECTURE.md).
        preset: `mora` (the paper's models), `ltx`, `tiny` or `tiny-ltx` (toy random models).
        seed: the job's seed (random when None; recorded in the manifest).
        out: the video path (`.mp4`); default `outputs/<task>-<timestamp>.mp4`.
        num_frames, width, height, steps, fps: override the preset's settings.
        device, dtype, profile: where and how models run (see `mora.Toolset`).
        llm_config: an OAI_CONFIG_LIST path or list of entries; default `$OAI_CONFIG_LIST`, then
            `./OAI_CONFIG_LIST`, else no LLM (deterministic prompts, scripted tool calls).
        review: called at the first-frame gate with (image_path, info); returns `approve`,
            `regenerate`, `('edit', instruction)` or `abort`.
        on_step: called with (agent_name, what_it_does) as each agent starts.
        progress: show diffusion step bars.
        metrics: compute the score card into `manifest.metrics`.
        best_of: text-to-video and simulate: make N candidates (seeds seed..seed+N-1) and let
            critic_agent keep the best by the score card (and a vision LLM judge when an LLM config
            entry is tagged "vision"); every candidate and its scores go into the manifest.

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
    started = time.perf_counter()
    # --- everything is checked before any model loads ---
    inputs = validate_inputs(task, dict(prompt=prompt, image=image, video=video, instruction=instruction,
                                        video_a=video_a, video_b=video_b))
    preset_obj = get_preset(preset)
    options = validate_options(task, preset_obj, dict(num_frames=num_frames, width=width, height=height,
                                                      steps=steps, fps=fps))
    if fps is not None and task in ("extend", "connect"):
        logger.warning("--fps is ignored by %s: the output keeps the input video's frame rate", task)
        options["fps"] = None
    job_seed = check_int(seed, "--seed", low=0, high=MAX_SEED)
    best_of = check_best_of(task, best_of)
    out_path, manifest_path, artifacts_dir = output_paths(out, task)

    from mora.agents.llm import describe, load_llm_config

    config_list = load_llm_config(llm_config)
    from mora.tools.toolset import Toolset, check_seed  # torch loads here, after validation

    job_seed = check_seed(job_seed)
    from mora.workflows.job import Job

    job = Job(task=task, inputs=inputs, options=options, seed=job_seed, best_of=best_of,
              steps=list(route_for(task, inputs, best_of)), artifacts_dir=artifacts_dir)
    tools = Toolset(preset=preset_obj, device=device, dtype=dtype, profile=profile, output_dir=artifacts_dir,
                    progress=progress, input_guard=job.guard)
    for key in ("image", "video", "video_a", "video_b"):
        if key in inputs:
            job.allow(inputs[key])
            (job.images if key == "image" else job.videos).append(inputs[key])
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    if task == "edit":  # the image agent edits the video's first frame
        first = media.read_video(inputs["video"], argument="video").pil_frames()[0]
        frame = media.write_image(first, artifacts_dir / "first_frame.png")
        job.images.append(str(frame))
        job.allow(frame)

    from mora.agents.team import Team

    team = Team(job, tools, config_list=config_list, review=review, on_step=on_step)
    chat_started = time.perf_counter()
    team.run()
    chat_s = time.perf_counter() - chat_started

    final = job.videos[-1]
    info = next(c for c in reversed(tools.calls) if c["output"] == final)["video"]
    card = _score(final, info, inputs.get("prompt")) if metrics else None
    tool_s = sum(v for k, v in job.timings.items() if k.startswith("tool:"))
    timings = {**job.timings, "chat_s": round(chat_s, 3),
               "orchestration_per_turn_s": round(max(0.0, chat_s - tool_s - job.timings.get("llm", 0.0))
                                                 / max(1, job.turns), 4)}
    manifest = {
        "task": task, "preset": preset_obj.name, "seed": job_seed, "inputs": inputs,
        "prompt": inputs.get("prompt") or inputs.get("instruction"), "enhanced_prompt": job.enhanced_prompt,
        "route": job.acted, "artifacts": [c["output"] for c in tools.calls],
        "video": {"path": str(out_path), **info}, "models": preset_obj.models(),
        "settings": {c["tool"]: c.get("settings") for c in tools.calls},
        "tool_calls": [{k: c[k] for k in ("tool", "args", "seed", "output", "seconds", "model")} for c in tools.calls],
        "timings": timings, "llm": {**describe(config_list), "fallbacks": job.fallbacks, "faults": job.llm_faults},
        "review": job.review, "metrics": card, "oom_retries": tools.oom_retries,
        **({"candidates": job.candidates, "critic": job.critic} if best_of > 1 else {}),
        "device": tools.device, "profile": tools.runtime.profile,
        "versions": _versions(),
    }
    if preset_obj.is_tiny:
        manifest["note"] = "tiny preset: random weights, the video is noise (for tests and offline checks)"
    with media.atomic_path(out_path) as tmp:
        shutil.copyfile(final, tmp)
    manifest["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    media.write_json(manifest, manifest_path)
    logger.info("wrote %s (%d frames) and %s", out_path, info["num_frames"], manifest_path)
    return RunResult(video_path=out_path, manifest=manifest, manifest_path=manifest_path, artifacts_dir=artifacts_dir)


def _score(path: str, info: dict, prompt: str | None) -> dict | None:
    try:
        from mora.evaluation import score_video
    except ImportError:  # pragma: no cover - evaluation is part of the package
        return None
    frames = media.read_video(path, argument="video").frames
    return score_video(frames, fps=info["fps"], boundaries=info.get("boundaries") or None, prompt=prompt)
