"""`mora story`: a multi-shot film from a story (`mora.story`).

The route is data: the story task's `Film` in the task table (`mora.workflows.tasks`), built from the
task routes' steps:

    storyboard_agent
    shot 1:   text_to_image_agent -> image_to_video_agent (image_to_video, then extend_video until its seconds)
    shot k:   image_to_image_agent (keyframe continuity: edits shot k-1's last frame) or text_to_image_agent
              (prompt continuity: style sheet + characters in the prompt, seed + k) -> image_to_video_agent ...
    between:  video_connection_agent (a `connect` transition) or nothing (a `cut`)

Each shot and each transition runs through the agent team (`mora.agents.team.Team` over a `RouteRun`),
in `<out stem>_artifacts/shot-NN/` (`transition-NN/`), and leaves a record (`shot.json`,
`transition.json`, written atomically) that `--resume` reuses after checking its prompt and seed.
The film is streamed frame by frame from those files into one writer (`media.write_video` over a
generator, inside `media.atomic_path`): memory holds one shot, never the film, and nothing appears
at `out` until the whole film is written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from mora import media
from mora.agents.roles import STORYBOARD_AGENT_NAME
from mora.errors import InputError
from mora.limits import derive_seed
from mora.workflows.prepare import RunResult, StoryPrepared, job_from_call, prepare, seconds_range, shot_route
from mora.workflows.route_run import RouteRun
from mora.workflows.storyboard import edit_instruction, shot_prompt, split_story, validate_storyboard
from mora.workflows.tasks import STORY, TASK_TABLE, Film

logger = logging.getLogger(__name__)

TRANSITION_SEED_OFFSET = 1000  # transition k uses seed + 1000 + k: apart from the shots' seed + k
SEAM_WINDOW = 4  # frames each side of a boundary scored for the film's seams and cuts


# --- the storyboard ----------------------------------------------------------------------------------

def make_storyboard(p: StoryPrepared) -> tuple[dict, dict]:
    """(storyboard, llm record): the user's file, a resumed run's file, or storyboard_agent's answer."""
    from mora.workflows.manifest import llm_record

    llm = {**llm_record(p.config_list, [], []), "storyboard": "file"}
    board = p.storyboard
    if board is None and p.resume and p.storyboard_path.is_file():
        board = validate_storyboard(json.loads(p.storyboard_path.read_text(encoding="utf-8")),
                                    source=str(p.storyboard_path))
        llm["storyboard"] = "resumed"
    if board is None:
        from mora.agents.storyboard import write_storyboard

        rng = seconds_range(p.preset, p.pinned)
        if p.hooks.on_step:  # the story's first step line, as each shot's agents have theirs
            p.hooks.on_step(_film(p).storyboard.agent, "writing the storyboard")
        answer = write_storyboard(
            p.story, p.shots, p.shot_seconds, config_list=p.config_list,
            validate=lambda data: validate_storyboard(data, seconds_range=rng, source="storyboard_agent answer"),
            fallback=lambda: split_story(p.story, p.shots, p.shot_seconds))
        board = answer.storyboard
        asked = [{"agent": STORYBOARD_AGENT_NAME, "answer": "fallback" if answer.fallbacks else "llm"}]
        llm.update(llm_record(p.config_list, asked if answer.source == "llm" or answer.fallbacks else [], answer.faults),
                   storyboard=answer.source, llm_s=answer.seconds)
    if p.transition is not None:  # --transition overrides every shot's
        board = {**board, "shots": [{**s, "transition": p.transition} for s in board["shots"]]}
    media.write_json(board, p.storyboard_path)
    logger.info("storyboard %r: %d shots, written to %s", board["title"], len(board["shots"]), p.storyboard_path)
    return board, llm


# --- running the shots -------------------------------------------------------------------------------

class ShotRun(RouteRun):
    """A shot's route state machine: image_to_video makes one segment, extend_video chains the rest."""

    def scripted_call(self, tool: str) -> dict:
        args = super().scripted_call(tool)
        if tool == "image_to_video":
            args["segments"] = 1
        return args


def _film(p: StoryPrepared) -> Film:
    film = TASK_TABLE[p.task].film
    assert film is not None, p.task  # prepare made a StoryPrepared for a film only
    return film


def _record_matches(record: dict, expect: dict, where: str) -> bool:
    for key in ("prompt", "seed", "route"):
        if record.get(key) != expect[key]:
            raise InputError(f"--resume: {where}'s recorded {key} {record.get(key)!r:.80} differs from this run's "
                             f"{expect[key]!r:.80}; use the same storyboard and --seed, or drop --resume "
                             "and pass --overwrite")
    return all(Path(f).is_file() for f in record.get("files", []))


def _run_team(p: StoryPrepared, job: RouteRun, folder: Path, label: str) -> tuple[Any, float]:
    """Run one job's route through the agent team with a fresh Toolset writing into `folder`."""
    from mora.agents.team import Team
    from mora.tools.toolset import Toolset

    spec, hooks = p.spec, p.hooks
    tools = Toolset(preset=p.preset, device=spec.device, dtype=spec.dtype, profile=spec.profile, cache=spec.cache,
                    cache_threshold=spec.cache_threshold, attention=spec.attention, output_dir=folder,
                    progress=hooks.progress, input_guard=job.guard, adapter=p.adapter)
    on_step = (lambda agent, doing: hooks.on_step(agent, f"{label}: {doing}")) if hooks.on_step else None
    started = time.perf_counter()
    Team(job, tools, config_list=None, on_step=on_step).run()
    return tools, time.perf_counter() - started


def _calls(tools: Any) -> list[dict]:
    return [{k: c[k] for k in ("tool", "args", "seed", "output", "seconds", "video", "settings", "peak_memory")
             if k in c}
            for c in tools.calls]


def run_shot(p: StoryPrepared, board: dict, k: int, keyframe: str | None) -> dict:
    """Shot k (0-based) through its agents, or its record when resuming; returns the record."""
    where = f"shot-{k + 1:02d}"
    folder = p.artifacts_dir / where
    film = _film(p)
    steps = shot_route(film, k, board["shots"][k]["seconds"], p.continuity, p.preset, p.pinned)
    prompt = shot_prompt(board, k, p.continuity)
    seed = derive_seed(p.seed, k)  # related seeds: the story's seed + k
    expect = {"prompt": prompt, "seed": seed, "route": [s.agent for s in steps]}
    record_path = folder / "shot.json"
    if p.resume and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if _record_matches(record, expect, where):
            logger.info("%s: resumed from %s", where, record_path)
            return {**record, "resumed": True}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    edit = steps[0] == film.keyframe
    inputs = {"prompt": prompt, **({"instruction": edit_instruction(board, k), "image": keyframe} if edit else {})}
    job = ShotRun(task="edit" if edit else "text-to-video", inputs=inputs, options=p.pinned, seed=seed,
                  route=list(steps), artifacts_dir=folder)
    if edit:
        job.allow(keyframe)
        job.images.append(keyframe)
    tools, seconds = _run_team(p, job, folder, f"shot {k + 1}/{len(board['shots'])}")
    video = media.read_video(job.videos[-1], argument=where)
    last = media.write_image(video.pil_frames()[-1], folder / "last_frame.png")
    card = None
    if p.spec.metrics and video.num_frames >= 2:
        from mora.evaluation import score_video

        card = score_video(video.frames, fps=video.fps, prompt=prompt)
    record = {**expect, "index": k + 1, "seconds": board["shots"][k]["seconds"], "video": job.videos[-1],
              "first_image": job.images[0] if not edit else job.images[-1], "last_frame": str(last),
              "frames": video.num_frames, "fps": video.fps, "width": video.width, "height": video.height,
              "tool_calls": _calls(tools), "timings": {**job.timings, "total_s": round(seconds, 3)},
              "metrics": card, "artifacts": sorted(str(f) for f in folder.iterdir()),
              "files": [job.videos[-1], str(last)]}
    media.write_json(record, record_path)
    return {**record, "resumed": False}


def run_transition(p: StoryPrepared, board: dict, k: int, a: dict, b: dict) -> dict:
    """video_connection_agent's transition from shot k (1-based) into shot k+1; returns its record."""
    where = f"transition-{k:02d}"
    folder = p.artifacts_dir / where
    seed = derive_seed(p.seed, TRANSITION_SEED_OFFSET, k)
    prompt = board["shots"][k]["prompt"]  # what the transition leads into
    step = _film(p).transition
    expect = {"prompt": prompt, "seed": seed, "route": [step.agent]}
    record_path = folder / "transition.json"
    if p.resume and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if _record_matches(record, expect, where):
            return {**record, "resumed": True}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    # Only the two frames the transition joins are connected (not whole shots): memory stays one frame.
    end_a = media.write_video([media.read_frame(a["video"], a["frames"] - 1, argument="video_a")],
                              folder / "from.mp4", fps=a["fps"])
    start_b = media.write_video([media.read_frame(b["video"], 0, argument="video_b")], folder / "to.mp4", fps=a["fps"])
    job = RouteRun(task="connect", inputs={"video_a": str(end_a), "video_b": str(start_b), "prompt": prompt},
                   options=p.pinned, seed=seed, route=[step], artifacts_dir=folder)
    for path in (end_a, start_b):
        job.allow(path)
        job.videos.append(str(path))
    tools, seconds = _run_team(p, job, folder, f"transition {k}->{k + 1}")
    frames = tools.calls[-1]["video"]["num_frames"]
    record = {**expect, "index": k, "video": job.videos[-1], "frames": frames - 2, "skip": 1,
              "tool_calls": _calls(tools), "timings": {**job.timings, "total_s": round(seconds, 3)},
              "files": [job.videos[-1]]}
    media.write_json(record, record_path)
    return {**record, "resumed": False}


# --- the film ------------------------------------------------------------------------------------------

def _pieces(shots: list[dict], transitions: dict[int, dict]) -> list[dict]:
    """The film's pieces in order: each shot, and each transition's generated middle frames."""
    pieces = []
    for k, shot in enumerate(shots, start=1):
        if k - 1 in transitions:
            t = transitions[k - 1]
            pieces.append({"kind": "transition", "index": k - 1, "video": t["video"], "skip": 1, "frames": t["frames"]})
        pieces.append({"kind": "shot", "index": k, "video": shot["video"], "skip": 0, "frames": shot["frames"]})
    return pieces


def _piece_frames(piece: dict, size: tuple[int, int]):
    """A piece's frames, one at a time, at the film's size."""
    from mora.tools.sizing import resize_frames

    for i, frame in enumerate(media.iter_frames(piece["video"], argument=piece["kind"])):
        if piece["skip"] <= i < piece["skip"] + piece["frames"]:
            yield resize_frames(frame[None], *size)[0]


def _score_seam(before: list, after: list, start: int) -> dict:
    """Seam continuity at one boundary and the cuts near it, from the frames around it."""
    import numpy as np

    from mora.evaluation.seams import cuts, seam_continuity

    clip = np.stack([*before, *after])
    if not before or not after or len(clip) < 3:
        return {"frame": start, "score": None, "cuts": []}
    score = seam_continuity(clip, [len(before)])["scores"][0]
    return {"frame": start, "score": round(float(score), 4), "cuts": [start - len(before) + c for c in cuts(clip)]}


def write_film(pieces: list[dict], out: Path, fps: float, size: tuple[int, int]) -> tuple[int, list[dict]]:
    """Stream every piece into `out` (atomic); returns (frames written, each boundary's seam score).

    Memory: one frame plus SEAM_WINDOW frames each side of the boundary being scored.
    """
    tail: deque = deque(maxlen=SEAM_WINDOW)
    seams: list[dict] = []
    count = 0

    def frames():
        nonlocal count
        for n, piece in enumerate(pieces):
            start, before, head = count, list(tail), []
            for i, frame in enumerate(_piece_frames(piece, size)):
                if n and i < SEAM_WINDOW:
                    head.append(frame)
                tail.append(frame)
                count += 1
                yield frame
            if n:
                seams.append(_score_seam(before, head, start))

    media.write_video(frames(), out, fps=fps)
    return count, seams


def film_card(seams: list[dict], pieces: list[dict], shots: list[dict], board: dict) -> dict:
    """Per-boundary seam continuity and detected cuts vs the storyboard's intended cuts."""
    starts, total = [], 0
    for piece in pieces:
        starts.append(total)
        total += piece["frames"]
    detected = {c for s in seams for c in s["cuts"]}
    for piece, start in zip(pieces, starts, strict=True):
        if piece["kind"] == "shot":
            detected |= {start + c for c in (shots[piece["index"] - 1].get("metrics") or {}).get("cuts", [])}
    intended = [start for piece, start in zip(pieces, starts, strict=True) if piece["kind"] == "shot"
                and piece["index"] > 1 and board["shots"][piece["index"] - 2]["transition"] == "cut"]
    found, scores = sorted(detected), [s["score"] for s in seams if s["score"] is not None]
    return {"num_frames": total, "boundaries": starts[1:],
            "seam_continuity": [{"frame": s["frame"], "score": s["score"]} for s in seams],
            "seam_mean": round(sum(scores) / len(scores), 4) if scores else 1.0,
            "cuts": {"intended": intended, "detected": found, "matched": [c for c in intended if c in detected],
                     "missed": [c for c in intended if c not in detected],
                     "unexpected": [c for c in found if c not in intended]}}


def shot_sheet(shots: list[dict], path: Path) -> Path:
    """One frame per shot (its first), labelled `shot N`, in a grid of up to 4 columns (atomic write)."""
    from PIL import Image, ImageDraw

    frames = [media.read_frame(s["video"], 0, argument=f"shot {s['index']}") for s in shots]
    w, h = frames[0].size
    cols = min(4, len(frames))
    rows = math.ceil(len(frames) / cols)
    label = 14
    sheet = Image.new("RGB", (cols * w, rows * (h + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, frame in enumerate(frames):
        x, y = (i % cols) * w, (i // cols) * (h + label)
        sheet.paste(frame.resize((w, h)), (x, y + label))
        draw.text((x + 2, y + 1), f"shot {i + 1}", fill="black")
    return media.write_image(sheet, path)


# --- the whole story ------------------------------------------------------------------------------------

def _start(p: StoryPrepared) -> None:
    """Own the artifacts folder: keep it when resuming, else start empty (overwrite was checked).

    The seed was fixed by `prepare` (given, a resumed run's, or drawn), as every task's is."""
    if p.artifacts_dir.is_dir() and not p.resume:
        shutil.rmtree(p.artifacts_dir)
    p.artifacts_dir.mkdir(parents=True, exist_ok=True)


def execute_story(p: StoryPrepared, board: dict) -> tuple[list[dict], dict[int, dict]]:
    """Every shot and transition, in film order; returns (shot records, transition records by index)."""
    shots: list[dict] = []
    transitions: dict[int, dict] = {}
    for k in range(len(board["shots"])):
        keyframe = shots[-1]["last_frame"] if shots and p.continuity == "keyframe" else None
        shots.append(run_shot(p, board, k, keyframe))
        if k and board["shots"][k - 1]["transition"] == "connect":
            transitions[k] = run_transition(p, board, k, shots[k - 1], shots[k])
    return shots, transitions


def _route(shots: list[dict], transitions: dict[int, dict]) -> tuple[list[str], list[dict]]:
    """(agents that acted, in order; the steps per shot) for the manifest."""
    route, steps = [STORYBOARD_AGENT_NAME], [{"where": "storyboard", "agent": STORYBOARD_AGENT_NAME}]
    for k, shot in enumerate(shots, start=1):  # execution order: shot k, then the transition into it
        route += shot["route"]
        steps += [{"where": f"shot-{k:02d}", "agent": a, "tool": c["tool"], "resumed": shot["resumed"]}
                  for a, c in zip(shot["route"], shot["tool_calls"], strict=False)]
        if k - 1 in transitions:
            t = transitions[k - 1]
            route += t["route"]
            steps += [{"where": f"transition-{k - 1:02d}", "agent": a, "tool": c["tool"], "resumed": t["resumed"]}
                      for a, c in zip(t["route"], t["tool_calls"], strict=False)]
    return route, steps


def write_story(p: StoryPrepared, board: dict, llm: dict, shots: list[dict], transitions: dict[int, dict]) -> dict:
    """Stream the film to `out`, write the contact sheet and the manifest; returns the manifest."""
    from mora.workflows.manifest import versions

    pieces = _pieces(shots, transitions)
    size, fps = (shots[0]["width"], shots[0]["height"]), shots[0]["fps"]
    started = time.perf_counter()
    contact = shot_sheet(shots, p.contact_path)
    count, seams = write_film(pieces, p.out, fps, size)
    card = film_card(seams, pieces, shots, board) if p.spec.metrics else None
    route, steps = _route(shots, transitions)
    keep = ("index", "prompt", "seed", "seconds", "frames", "video", "first_image", "last_frame", "artifacts",
            "tool_calls", "timings", "metrics", "route", "resumed")
    manifest = {
        "task": p.task, "preset": p.preset.name, "seed": p.seed,
        "inputs": {"story": p.story, "storyboard": p.storyboard_source, "shots": p.shots,
                   "shot_seconds": p.shot_seconds, "transition": p.transition, "continuity": p.continuity},
        "prompt": p.story, "enhanced_prompt": None, "route": route, "steps": steps,
        "storyboard": str(p.storyboard_path), "contact_sheet": str(contact),
        "artifacts": [f for s in shots for f in s["artifacts"]] + [t["video"] for t in transitions.values()],
        "video": {"path": str(p.out), "num_frames": count, "fps": fps, "width": size[0], "height": size[1]},
        "models": p.preset.models(), "settings": {"shot_seconds": p.shot_seconds, **p.pinned},
        "timings": {"film_write_s": round(time.perf_counter() - started, 3),
                    "shots_s": [s["timings"].get("total_s") for s in shots]},
        "llm": llm, "metrics": card,
        "shots": [{**{k: s.get(k) for k in keep}, "transition": board["shots"][s["index"] - 1]["transition"]}
                  for s in shots],
        "transitions": [{k: t.get(k) for k in ("index", "video", "frames", "seed", "timings", "resumed")}
                        for t in transitions.values()],
        "versions": versions(),
    }
    if p.adapter is not None:
        manifest["adapter"] = p.adapter.manifest_entry()
    if p.preset.is_tiny:
        manifest["note"] = "tiny preset: random weights, the film is noise (for tests and offline checks)"
    manifest["timings"]["total_s"] = round(time.perf_counter() - p.started, 3)
    media.write_json(manifest, p.manifest_path)
    logger.info("wrote %s (%d frames, %d shots) and %s", p.out, count, len(shots), p.manifest_path)
    return manifest


def story(story: str | None = None, **options: Any) -> RunResult:
    """Make a multi-shot film from a story: storyboard_agent, then each shot through the agents.

    Args:
        story: the story (may be omitted when `storyboard` is given).
        **options: the job model's options for `story` (`mora.workflows.jobspec.task_options("story")`):
            shots, shot_seconds, storyboard (a JSON file path, or the storyboard as a dict),
            storyboard_only, transition, continuity, resume, and the common ones (preset, preset_file,
            seed, out, num_frames, ...), plus the callbacks `on_step` and `progress`.

    Returns:
        RunResult (`video_path` is None with `storyboard_only`; `manifest` is then the storyboard).

    Example:
        >>> result = mora.story("A fox wakes. The fox runs. The fox sleeps.", shots=3, preset="tiny", seed=0,
        ...                     out="fox_story.mp4")
        >>> len(result.manifest["shots"])
        3
    """
    board = options.pop("storyboard", None)
    spec, hooks = job_from_call(STORY, {"story": story, "storyboard": board}, options)
    return run_story(prepare(spec, hooks))


def run_story(p: StoryPrepared) -> RunResult:
    """Run a prepared story: its storyboard, then (unless storyboard only) every shot, the film, the manifest."""
    board, llm = make_storyboard(p)
    if p.storyboard_only:
        return RunResult(video_path=None, manifest=board, manifest_path=p.storyboard_path,
                         artifacts_dir=p.artifacts_dir)
    _start(p)
    shot_records, transitions = execute_story(p, board)
    manifest = write_story(p, board, llm, shot_records, transitions)
    return RunResult(video_path=p.out, manifest=manifest, manifest_path=p.manifest_path,
                     artifacts_dir=p.artifacts_dir)
