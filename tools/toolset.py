"""`mora.Toolset`: the tools the agents call. Each validates its arguments, runs one pipeline
family (chosen by the preset) and returns the path of the file it wrote in `output_dir`.

Output paths are always chosen here, never by the caller: an LLM can name inputs, not outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from mora import media
from mora.config import DEFAULT_PRESET, ROLE_FAMILIES, ModelSpec, Preset, get_preset
from mora.errors import InputError, one_line
from mora.limits import check_bounded, check_seed, check_text, default_added_frames, frame_rule, span
from mora.tools import (
    ltx,
    memory_peak,
    pix2pix,
    qwen_image,
    qwen_image_edit,
    sdxl,
    speed,
    svd,
    wan,
    wan22,
    wan_vace,
)
from mora.tools.runtime import Runtime, release
from mora.tools.segments import segment_boundaries
from mora.tools.sizing import fit_size, resize_frames
from mora.tooltable import TOOL_NAMES  # the tool table (`mora.tooltable`): one method below per name

logger = logging.getLogger(__name__)

_MODULES = {"sdxl": sdxl, "qwen-image": qwen_image, "pix2pix": pix2pix, "qwen-image-edit": qwen_image_edit, "svd": svd,
            "ltx": ltx, "wan": wan, "wan22": wan22, "wan-vace": wan_vace}  # family -> its module


def _playing(role: str) -> dict[str, Any]:
    """family -> module for the families that can play `role` (`ROLE_FAMILIES`, which the preset loader checks)."""
    return {family: _MODULES[family] for family in ROLE_FAMILIES[role]}


_IMAGE_FAMILIES = _playing("text_to_image")
_EDIT_FAMILIES = _playing("image_to_image")
_VIDEO_FAMILIES = _playing("image_to_video")  # extend_video too: ROLE_FAMILIES["extend"] is the same
_TRANSITION_FAMILIES = _playing("connect")  # first-last-frame models
_VIDEO_EDIT_FAMILIES = _playing("edit_video")  # video-to-video: the source as control, a reference frame
# settings that describe the model, not a call: left out of the manifest's per-call settings
_STRUCTURAL = ("size_multiple", "frame_multiple", "max_frames", "fp16_variant", "tail_frames", "max_area")


class Toolset:
    """The model tools of Mora's agents, over one preset.

    Args:
        preset: preset name (`mora`, `ltx`, `tiny`, `tiny-ltx`) or a `Preset`.
        device: `auto` (CUDA, else MPS, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `auto` (fp16/bf16 on GPU, fp32 on CPU), `float16`, `bfloat16` or `float32`.
        profile: one of `mora.config.PROFILES` (`mora.tools.profiles` says what each does).
        output_dir: where every tool writes; file names are chosen by the tool.
        progress: show diffusion step bars.
        input_guard: optional `(path, argument) -> Path` check applied to every input path
            (the agent layer uses it to accept only the current job's inputs and artifacts).
        adapter: a trained adapter (`mora train` output: its folder, or a loaded
            `mora.adapters.Adapter`): its LoRA and modulation tokens apply to the agents it trained.
        cancelled: polled after every denoising step; True stops the tool with `mora.errors.Cancelled`
            (default: the running job's, `mora.tools.runtime.cancellable`).
        memory_budget: bytes the weights may take on the device (`mora.memory`; default: a CUDA card's
            memory less the working reserve, no limit on a CPU).
        cache, cache_threshold, attention: step cache and attention backend (`mora.tools.speed`); each
            call records what its model ran with.
        gpus: processes that split each denoiser's attention (`mora.tools.parallel`; started by `mora.processes`).

    Example:
        >>> tools = Toolset(preset="tiny", device="cpu", output_dir="outputs")
        >>> frame = tools.text_to_image(prompt="a red fox running through snow", seed=0)
        >>> video = tools.image_to_video(image_path=frame, seed=0)
    """

    def __init__(
        self, preset: str | Preset = DEFAULT_PRESET, device: str = "auto", dtype: str = "auto", profile: str = "balanced",
        output_dir: str | Path = "outputs", progress: bool = True,
        input_guard: Callable[[str, str], Path] | None = None, adapter: Any = None,
        cancelled: Callable[[], bool] | None = None, memory_budget: int | None = None, cache: str | None = None,
        cache_threshold: float | None = None, attention: str = "auto", gpus: int = 1,
    ):
        self.preset = get_preset(preset)
        self.runtime = Runtime(device=device, dtype=dtype, profile=profile, progress=progress,
                               adapter=_load_adapter(adapter, self.preset), cancelled=cancelled,
                               memory_budget=memory_budget, cache=cache, cache_threshold=cache_threshold,
                               attention=attention, gpus=gpus)
        self.runtime.preset_loras = {spec.model: spec.adapters for spec in self.preset.roles.values() if spec.adapters}
        self.output_dir = Path(output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InputError(f"output_dir: {str(output_dir)!r} is a file; pass a directory (it is created if missing)")
        self.input_guard = input_guard
        self.calls: list[dict] = []  # one record per tool call: args, seed, model, settings, output, seconds
        self.oom_retries: list[dict] = []  # out-of-memory retries in low-vram (recorded in manifests)
        self._videos: dict[str, media.Video] = {}  # decoded input videos, by resolved path
        self._step_profile: str | None = None  # the profile the current step ran in (low-vram after an OOM)
        self._events_from = 0  # the runtime's memory decisions before the current step
        self._peak_measure = memory_peak.SINCE_START_RSS  # what `memory_peak.start` chose at this step's model call

    @property
    def device(self) -> str:
        return self.runtime.device

    def release(self) -> int:
        """Free every loaded pipeline (they reload on next use)."""
        return release()

    def memory_budget(self) -> int | None:
        """The bytes the memory policy lets weights take on this device (None: no limit)."""
        from mora.tools.residency import device_budget

        return device_budget(self.device, self.runtime.memory_budget)

    def models_for(self, roles: list[str]) -> list[str]:
        """The model ids the preset's `roles` load (what the memory policy keeps for later steps)."""
        return [model for role in roles for model in self.preset.spec(role).model_ids()]

    # --- helpers ---------------------------------------------------------------------------------

    def _out(self, stem: str, suffix: str) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        n = len(self.calls) + 1
        while (path := self.output_dir / f"{stem}-{n:03d}{suffix}").exists():
            n += 1
        return path

    def _input(self, path: Any, argument: str) -> Path:
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise InputError(f"{path!r} is not a path; pass the path of an existing file", param=argument)
        if self.input_guard is not None:
            return self.input_guard(str(path), argument)
        return Path(path)

    def _video(self, path: Any, argument: str) -> media.Video:
        """An input video, decoded once per Toolset (a job's tools read each input once)."""
        resolved = self._input(path, argument)
        key = str(Path(resolved).resolve())
        if key not in self._videos:
            self._videos[key] = media.read_video(resolved, argument=argument)
        return self._videos[key]

    def _size(self, spec: ModelSpec, width: Any, height: Any, like: tuple[int, int] | None) -> tuple[int, int]:
        s = spec.settings
        m = s.size_multiple
        width = check_bounded(width, "width", low=m, multiple=m)
        height = check_bounded(height, "height", low=m, multiple=m)
        if width and height:
            return width, height
        area = s.width * s.height
        if like is None:
            return width or s.width, height or s.height
        if width:  # one side given: keep the aspect ratio of `like`
            w, h = width, max(m, round(width * like[1] / like[0] / m) * m)
        elif height:
            w, h = max(m, round(height * like[0] / like[1] / m) * m), height
        else:
            w, h = fit_size(*like, area, m)
        for side, value in (("width", w), ("height", h)):  # an extreme aspect ratio would ask for a huge frame
            high = span(side)[1]
            if high is not None and value > high:
                raise InputError(
                    f"width/height: the input's {like[0]}x{like[1]} aspect ratio gives a {w}x{h} frame, over {high} "
                    "pixels a side; crop the input or pass both width and height"
                )
        return w, h

    def _frames(self, spec: ModelSpec, num_frames: Any, argument: str = "num_frames", *, any_count: bool = False) -> int:
        n = check_bounded(num_frames, "num_frames", argument=argument, **frame_rule(spec.settings, added=any_count))
        return n if n is not None else spec.settings.num_frames

    def _steps(self, spec: ModelSpec, steps: Any) -> int:
        return check_bounded(steps, "steps") or spec.settings.steps

    def _generate(self, call: Callable[[], Any]) -> Any:
        """Run a model call; on GPU out-of-memory in `fast`/`balanced`, retry this step once in `low-vram`.

        The retry happens after the `except` block: inside it, the traceback still references the
        failed call's frames and so its pipelines, and releasing the cache would free nothing.
        The fallback applies to the failing step only; later steps run in the job's profile again.
        The step's peak memory (`_record`) is measured from here (pipeline loading included; its inputs,
        already decoded, are resident): from the retry's start after a retry.
        """
        import torch

        self._step_profile = self.runtime.profile
        self._events_from = len(self.runtime.memory_events)
        self.runtime.begin_step()
        self._peak_measure = memory_peak.start(self.device)
        try:
            return call()
        except torch.OutOfMemoryError as error:
            self.runtime.reset_step_state()
            if self.runtime.profile == "low-vram":
                raise
            reason = one_line(error, limit=200)
        except BaseException:  # cancelled, Ctrl-C, an error: no half-filled step cache for the next call
            self.runtime.reset_step_state()
            raise
        previous = self.runtime.profile
        logger.warning("out of GPU memory in profile %s (%s); releasing models and retrying this step in low-vram",
                       previous, reason)
        release()
        self.runtime.profile = self._step_profile = "low-vram"
        self._peak_measure = memory_peak.start(self.device)  # the step's peak is the retry's
        try:
            result = call()
        finally:
            self.runtime.profile = previous
        self.oom_retries.append({"tool_call": len(self.calls) + 1, "from": previous, "to": "low-vram",
                                 "applies_to": "this step only", "error": reason})
        return result

    def _record(self, tool: str, spec: ModelSpec, args: dict, output: Path, started: float, **extra: Any) -> str:
        seconds = time.perf_counter() - started
        for event in self.runtime.memory_events[self._events_from:]:  # the memory policy's, in this step
            event["tool_call"] = len(self.calls) + 1
            if event["low_vram"]:
                self._step_profile = "low-vram"
        self.calls.append(
            dict(tool=tool, args=args, output=str(output), model=spec.model_ids(), family=spec.family,
                 seconds=round(seconds, 3), profile=self._step_profile or self.runtime.profile,
                 **(self.runtime.speed_applied.get(spec.family) or speed.applied(self.runtime.speed, spec.family)),
                 peak_memory=memory_peak.read(self.device, self._peak_measure), **extra)
        )
        logger.info("%s wrote %s in %.2fs", tool, output, seconds)
        return str(output)

    # --- the tools --------------------------------------------------------------------------------

    def text_to_image(
        self,
        prompt: Annotated[str, "Detailed visual description of the first frame"],
        negative_prompt: Annotated[str, "What the image must not show"] = "",
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        width: Annotated[int | None, "Width in pixels (the model's size multiple)"] = None,
        height: Annotated[int | None, "Height in pixels (the model's size multiple)"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """Generate the first frame from text (SDXL base, then the refiner); returns the PNG's path.

        Example:
            >>> Toolset(preset="tiny", device="cpu").text_to_image("a lighthouse at dusk", seed=1)
            'outputs/text_to_image-001.png'
        """
        started = time.perf_counter()
        spec = self.preset.spec("text_to_image")
        prompt = check_text(prompt, "prompt")
        negative_prompt = check_text(negative_prompt, "negative_prompt", required=False) if negative_prompt else ""
        w, h = self._size(spec, width, height, None)
        steps, seed = self._steps(spec, steps), check_seed(seed)
        image, tokens = self._generate(lambda: _IMAGE_FAMILIES[spec.family].text_to_image(
            spec, self.runtime, prompt=prompt, negative_prompt=negative_prompt, width=w, height=h, steps=steps, seed=seed
        ))
        out = media.write_image(image, self._out("text_to_image", ".png"))
        return self._record(
            "text_to_image", spec, dict(prompt=prompt, negative_prompt=negative_prompt), out, started,
            seed=seed, settings=_call_settings(spec, width=w, height=h, steps=steps,
                                               high_noise_frac=spec.settings.high_noise_frac if spec.refiner else None),
            prompt_tokens=tokens,
        )

    def edit_image(
        self,
        image_path: Annotated[str, "Path of the image to edit (an input or artifact of this job)"],
        instruction: Annotated[str, "Edit instruction, e.g. 'make it winter'"],
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """Edit an image by instruction (InstructPix2Pix); returns the PNG's path.

        Any JPEG/PNG/WebP/GIF in any mode and size is accepted; it is resized to the model's working
        area keeping its aspect ratio (sides rounded to the model's multiple).

        Example:
            >>> tools.edit_image(image_path="cat.png", instruction="make it a watercolor", seed=0)
        """
        started = time.perf_counter()
        spec = self.preset.spec("image_to_image")
        image = media.read_image(self._input(image_path, "image_path"), argument="image_path")
        instruction = check_text(instruction, "instruction")
        steps, seed = self._steps(spec, steps), check_seed(seed)
        edited, tokens = self._generate(lambda: _EDIT_FAMILIES[spec.family].edit_image(
            spec, self.runtime, image=image, instruction=instruction, steps=steps, seed=seed
        ))
        out = media.write_image(edited, self._out("edit_image", ".png"))
        return self._record(
            "edit_image", spec, dict(image_path=str(image_path), instruction=instruction), out, started, seed=seed,
            settings=_call_settings(spec, width=edited.width, height=edited.height, steps=steps),
            prompt_tokens=tokens,
        )

    def edit_video(
        self,
        video_path: Annotated[str, "Path of the video to edit (an input or artifact of this job)"],
        image_path: Annotated[str, "Path of its edited first frame, the look to carry through the clip"],
        prompt: Annotated[str | None, "Description of the edited video"] = None,
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """Edit a whole video keeping its motion: every source frame is the control input and the edited
        first frame the reference (Wan VACE); returns the MP4's path.

        The output has the source's frame count, size and fps.

        Example:
            >>> tools.edit_video(video_path="clip.mp4", image_path="first_edited.png", prompt="at night", seed=0)
        """
        started = time.perf_counter()
        spec = self.preset.spec("edit_video")
        if spec.family not in _VIDEO_EDIT_FAMILIES:
            raise InputError(f"--preset: {self.preset.name!r} edits videos with {spec.family!r}, which is not a "
                             f"video-to-video model; use a family of {', '.join(_VIDEO_EDIT_FAMILIES)}")
        video = self._video(video_path, "video_path")
        reference = media.read_image(self._input(image_path, "image_path"), argument="image_path")
        prompt = check_text(prompt, "prompt", required=False)
        steps, seed = self._steps(spec, steps), check_seed(seed)
        w, h = self._size(spec, None, None, (video.width, video.height))
        fps = max(1, round(video.fps))
        frames = self._generate(lambda: _VIDEO_EDIT_FAMILIES[spec.family].edit_video(
            spec, self.runtime, frames=video.frames, reference=reference, prompt=prompt, width=w, height=h,
            steps=steps, fps=fps, seed=seed,
        ))
        frames = resize_frames(frames, video.width, video.height)
        out = media.write_video(frames, self._out("edit_video", ".mp4"), fps=video.fps)
        return self._record(
            "edit_video", spec, dict(video_path=str(video_path), image_path=str(image_path), prompt=prompt), out,
            started, seed=seed, settings=_call_settings(spec, width=w, height=h, num_frames=len(frames), steps=steps,
                                                        fps=fps),
            video=dict(num_frames=len(frames), fps=video.fps, width=_even(video.width), height=_even(video.height),
                       boundaries=[]),
        )

    def image_to_video(
        self,
        image_path: Annotated[str, "Path of the first frame (an input or artifact of this job)"],
        prompt: Annotated[str | None, "Motion description (used by text-conditioned models)"] = None,
        num_frames: Annotated[int | None, "Frames per generated segment"] = None,
        fps: Annotated[int | None, "Frames per second of the video"] = None,
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        segments: Annotated[int | None, "Segments chained from each previous segment's last frame"] = None,
        width: Annotated[int | None, "Video width (default: the image's aspect at the model's size)"] = None,
        height: Annotated[int | None, "Video height"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """Animate an image into a video; returns the MP4's path.

        `segments` clips of `num_frames` each are chained, each starting from the previous clip's last
        frame, which is not repeated: the video has num_frames + (segments - 1) * (num_frames - 1) frames.

        Example:
            >>> tools.image_to_video(image_path="frame.png", seed=0, segments=1)
        """
        started = time.perf_counter()
        spec = self.preset.spec("image_to_video")
        image = media.read_image(self._input(image_path, "image_path"), argument="image_path")
        prompt = check_text(prompt, "prompt", required=False)
        n = self._frames(spec, num_frames)
        fps = check_bounded(fps, "fps") or spec.settings.fps
        segments = check_bounded(segments, "segments") or spec.settings.segments
        w, h = self._size(spec, width, height, image.size)
        steps, seed = self._steps(spec, steps), check_seed(seed)
        frames = self._generate(lambda: _VIDEO_FAMILIES[spec.family].generate(
            spec, self.runtime, image=image, prompt=prompt, width=w, height=h, num_frames=n, segments=segments,
            steps=steps, fps=fps, seed=seed,
        ))
        out = media.write_video(frames, self._out("image_to_video", ".mp4"), fps=fps)
        boundaries = segment_boundaries(n, segments)
        return self._record(
            "image_to_video", spec, dict(image_path=str(image_path), prompt=prompt), out, started, seed=seed,
            settings=_call_settings(spec, width=w, height=h, num_frames=n, steps=steps, fps=fps, segments=segments),
            video=dict(num_frames=len(frames), fps=fps, width=w, height=h, boundaries=boundaries),
            segment_files=self._write_segments(frames, boundaries, out, fps),
        )

    @staticmethod
    def _write_segments(frames: np.ndarray, boundaries: list[int], out: Path, fps: float) -> list[str]:
        """Each chained segment as its own file beside the video, for inspecting a seam.

        Segment k starts at the frame it was generated from (the previous segment's last frame),
        as the model saw it; the joined video keeps that frame once.
        """
        if not boundaries:
            return []
        starts, ends = [0, *(b - 1 for b in boundaries)], [*boundaries, len(frames)]
        return [str(media.write_video(frames[a:b], out.with_name(f"{out.stem}-segment{k + 1}.mp4"), fps=fps))
                for k, (a, b) in enumerate(zip(starts, ends, strict=True))]

    def extend_video(
        self,
        video_path: Annotated[str, "Path of the video to extend (an input or artifact of this job)"],
        prompt: Annotated[str | None, "What happens next (used by text-conditioned models)"] = None,
        num_frames: Annotated[int | None, "Frames to add"] = None,
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """The input video's frames (its resolution and fps) followed by a generated continuation.

        SVD continues from the last frame; LTX conditions on the video's last frames. Returns the MP4's path.

        Example:
            >>> tools.extend_video(video_path="clip.mp4", num_frames=24, seed=0)
        """
        started = time.perf_counter()
        spec = self.preset.spec("extend")
        video = self._video(video_path, "video_path")
        prompt = check_text(prompt, "prompt", required=False)
        # num_frames counts new frames; the family rounds its own clip to what the model needs
        n = self._frames(spec, num_frames, any_count=True) if num_frames is not None else \
            default_added_frames(spec.settings)
        steps, seed = self._steps(spec, steps), check_seed(seed)
        w, h = self._size(spec, None, None, (video.width, video.height))
        fps = max(1, round(video.fps))
        new = self._generate(lambda: _VIDEO_FAMILIES[spec.family].continue_video(
            spec, self.runtime, frames=video.frames, prompt=prompt, width=w, height=h, num_frames=n, steps=steps,
            fps=fps, seed=seed,
        ))
        frames = np.concatenate([video.frames, resize_frames(new, video.width, video.height)])
        out = media.write_video(frames, self._out("extend_video", ".mp4"), fps=video.fps)
        return self._record(
            "extend_video", spec, dict(video_path=str(video_path), prompt=prompt), out, started, seed=seed,
            settings=_call_settings(spec, width=w, height=h, num_frames=n, steps=steps, fps=fps),
            video=dict(num_frames=len(frames), fps=video.fps, width=_even(video.width), height=_even(video.height),
                       boundaries=[video.num_frames]),
        )

    def connect_videos(
        self,
        first_video: Annotated[str, "Path of the video that plays first (an input or artifact of this job)"],
        second_video: Annotated[str, "Path of the video that plays last"],
        prompt: Annotated[str | None, "Description of the transition"] = None,
        num_frames: Annotated[int | None, "Frames of the generated transition clip, both ends included"] = None,
        seed: Annotated[int | None, "Random seed; omit for a random one"] = None,
        steps: Annotated[int | None, "Denoising steps"] = None,
    ) -> str:
        """A, then a generated transition from A's last frame to B's first frame, then B; returns the MP4.

        B is resized to A's size and played at A's fps. The transition clip's two end frames are the
        conditioning frames themselves, so num_frames - 2 new frames are inserted.

        Example:
            >>> tools.connect_videos(first_video="a.mp4", second_video="b.mp4", seed=0)
        """
        started = time.perf_counter()
        spec = self.preset.spec("connect")
        if spec.family not in _TRANSITION_FAMILIES:
            raise InputError(
                f"--preset: {self.preset.name!r} connects videos with {spec.family!r}, which cannot condition on a "
                "last frame; use a preset whose connect role is LTX or Wan FLF2V (mora, ltx, mora-wan, tiny)"
            )
        a = self._video(first_video, "first_video")
        b = self._video(second_video, "second_video")
        prompt = check_text(prompt, "prompt", required=False)
        n = self._frames(spec, num_frames)
        if n < 3:
            raise InputError(f"{n} leaves no transition frames; pass at least {(spec.settings.frame_multiple or 1) + 1}",
                             param="num_frames")
        steps, seed = self._steps(spec, steps), check_seed(seed)
        if abs(a.fps - b.fps) > 0.01:
            logger.warning("connect_videos: second video is %.3g fps, first %.3g fps; playing both at %.3g",
                           b.fps, a.fps, a.fps)
        b_frames = resize_frames(b.frames, a.width, a.height)
        w, h = self._size(spec, None, None, (a.width, a.height))
        from PIL import Image

        middle = self._generate(lambda: _TRANSITION_FAMILIES[spec.family].transition(
            spec, self.runtime, first=Image.fromarray(a.frames[-1]), last=Image.fromarray(b_frames[0]), prompt=prompt,
            width=w, height=h, num_frames=n, steps=steps, fps=max(1, round(a.fps)), seed=seed,
        ))
        middle = resize_frames(middle, a.width, a.height)
        frames = np.concatenate([a.frames, middle, b_frames])
        out = media.write_video(frames, self._out("connect_videos", ".mp4"), fps=a.fps)
        return self._record(
            "connect_videos", spec, dict(first_video=str(first_video), second_video=str(second_video), prompt=prompt),
            out, started, seed=seed, settings=_call_settings(spec, width=w, height=h, num_frames=n, steps=steps, fps=a.fps),
            video=dict(num_frames=len(frames), fps=a.fps, width=_even(a.width), height=_even(a.height),
                       boundaries=[a.num_frames, a.num_frames + len(middle)]),
        )

    @property
    def tools(self) -> dict[str, Callable[..., str]]:
        """name -> bound tool method, for registering with agents."""
        return {name: getattr(self, name) for name in TOOL_NAMES}


def _load_adapter(adapter: Any, preset: Preset) -> Any:
    """A folder path is loaded (and checked against the preset's models); a loaded adapter passes."""
    if adapter is None or not isinstance(adapter, (str, Path)):
        return adapter
    from mora.adapters.adapter import (
        load_adapter,  # the adapter format sits below the tools (no tools import)
    )

    return load_adapter(adapter, preset)


def _call_settings(spec: ModelSpec, **used: Any) -> dict:
    """What a call ran with, for the manifest: the family's settings with this call's values over them."""
    settings = {k: v for k, v in dataclasses.asdict(spec.settings).items() if k not in _STRUCTURAL}
    return {**settings, **used}


def _even(side: int) -> int:
    """The side as written: H.264 yuv420p needs even sides, so media.write_video pads odd ones."""
    return side + side % 2

