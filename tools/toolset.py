"""`mora.Toolset`: the tools the agents call. Each validates its arguments, runs one pipeline
family (chosen by the preset) and returns the path of the file it wrote in `output_dir`.

Output paths are always chosen here, never by the caller: an LLM can name inputs, not outputs.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from mora import media
from mora.config import ModelSpec, Preset, get_preset
from mora.errors import InputError
from mora.tools import ltx, pix2pix, sdxl, svd, wan
from mora.tools.runtime import Runtime, release
from mora.tools.sizing import fit_size, resize_frames

logger = logging.getLogger(__name__)

_VIDEO_FAMILIES = {"svd": svd, "ltx": ltx}
_TRANSITION_FAMILIES = {"ltx": ltx, "wan": wan}  # first-last-frame models
MAX_SEED = 2**32 - 1
MAX_SIDE = 4096
MAX_STEPS = 500
MAX_PROMPT_CHARS = 2000


# --- argument checks: shared by the Python API, the CLI and the LLM tool-call validator ---------


def check_text(value: Any, argument: str, *, required: bool = True) -> str | None:
    """A non-empty string of reasonable length (None allowed when not required)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{argument}: {value!r} is empty or not text; pass a non-empty description")
    if len(value) > MAX_PROMPT_CHARS:
        raise InputError(f"{argument}: text of {len(value)} characters is too long; keep it under {MAX_PROMPT_CHARS}")
    return value.strip()


def check_int(value: Any, argument: str, *, low: int = 1, high: int | None = None, multiple: int | None = None,
              remainder: int = 0, hint: str = "") -> int | None:
    """An integer in [low, high]; optionally `value % multiple == remainder`. None passes through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{argument}: {value!r} is not an integer; pass a whole number{hint}")
    value = int(value)
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InputError(f"{argument}: {value} is out of range; pass a number {span}{hint}")
    if multiple and value % multiple != remainder:
        below = (value - remainder) // multiple * multiple + remainder
        options = [v for v in (below, below + multiple) if v >= max(low, remainder or multiple)]
        kind = f"a multiple of {multiple}" if not remainder else f"{multiple}k+{remainder}"
        raise InputError(
            f"{argument}: {value} is not {kind} as this model needs; use {' or '.join(map(str, options))}"
        )
    return value


def check_seed(seed: Any) -> int:
    """The given seed, or a fresh random one (logged, so the run can be repeated)."""
    if seed is None:
        seed = secrets.randbelow(2**31)
        logger.info("seed not given; using %d", seed)
        return seed
    return check_int(seed, "seed", low=0, high=MAX_SEED)


class Toolset:
    """The model tools of Mora's agents, over one preset.

    Args:
        preset: preset name (`mora`, `ltx`, `tiny`, `tiny-ltx`) or a `Preset`.
        device: `auto` (CUDA, else MPS, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `auto` (fp16/bf16 on GPU, fp32 on CPU), `float16`, `bfloat16` or `float32`.
        profile: `fast`, `balanced` or `low-vram` (CPU offload, small VAE decode chunks).
        output_dir: where every tool writes; file names are chosen by the tool.
        progress: show diffusion step bars.
        input_guard: optional `(path, argument) -> Path` check applied to every input path
            (the agent layer uses it to accept only the current job's inputs and artifacts).

    Example:
        >>> tools = Toolset(preset="tiny", device="cpu", output_dir="outputs")
        >>> frame = tools.text_to_image(prompt="a red fox running through snow", seed=0)
        >>> video = tools.image_to_video(image_path=frame, seed=0)
    """

    def __init__(
        self, preset: str | Preset = "mora", device: str = "auto", dtype: str = "auto", profile: str = "balanced",
        output_dir: str | Path = "outputs", progress: bool = True,
        input_guard: Callable[[str, str], Path] | None = None,
    ):
        self.preset = get_preset(preset)
        self.runtime = Runtime(device=device, dtype=dtype, profile=profile, progress=progress)
        self.output_dir = Path(output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InputError(f"output_dir: {str(output_dir)!r} is a file; pass a directory (it is created if missing)")
        self.input_guard = input_guard
        self.calls: list[dict] = []  # one record per tool call: args, seed, model, settings, output, seconds
        self.oom_retries: list[dict] = []  # out-of-memory retries in low-vram (recorded in manifests)

    @property
    def device(self) -> str:
        return self.runtime.device

    def release(self) -> int:
        """Free every loaded pipeline (they reload on next use)."""
        return release()

    # --- helpers ---------------------------------------------------------------------------------

    def _out(self, stem: str, suffix: str) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        n = len(self.calls) + 1
        while (path := self.output_dir / f"{stem}-{n:03d}{suffix}").exists():
            n += 1
        return path

    def _input(self, path: Any, argument: str) -> Path:
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise InputError(f"{argument}: {path!r} is not a path; pass the path of an existing file")
        if self.input_guard is not None:
            return self.input_guard(str(path), argument)
        return Path(path)

    def _size(self, spec: ModelSpec, width: Any, height: Any, like: tuple[int, int] | None) -> tuple[int, int]:
        m = spec.get("size_multiple", 8)
        width = check_int(width, "width", low=m, high=MAX_SIDE, multiple=m)
        height = check_int(height, "height", low=m, high=MAX_SIDE, multiple=m)
        if width and height:
            return width, height
        area = spec.get("width") * spec.get("height")
        if like is None:
            return width or spec.get("width"), height or spec.get("height")
        if width:  # one side given: keep the aspect ratio of `like`
            w, h = width, max(m, round(width * like[1] / like[0] / m) * m)
        elif height:
            w, h = max(m, round(height * like[0] / like[1] / m) * m), height
        else:
            w, h = fit_size(*like, area, m)
        if max(w, h) > MAX_SIDE:  # an extreme aspect ratio would ask the model for a huge frame
            raise InputError(
                f"width/height: the input's {like[0]}x{like[1]} aspect ratio gives a {w}x{h} frame, over {MAX_SIDE} "
                "pixels a side; crop the input or pass both width and height"
            )
        return w, h

    def _frames(self, spec: ModelSpec, num_frames: Any, argument: str = "num_frames", *, any_count: bool = False) -> int:
        m = spec.get("frame_multiple")
        n = check_int(
            num_frames, argument, low=1 if any_count else 2, high=spec.get("max_frames", 256),
            multiple=None if any_count else m, remainder=1 if m else 0,
        )
        return n if n is not None else spec.get("num_frames")

    def _steps(self, spec: ModelSpec, steps: Any) -> int:
        return check_int(steps, "steps", low=1, high=MAX_STEPS) or spec.get("steps")

    def _generate(self, call: Callable[[], Any]) -> Any:
        """Run a model call; on GPU out-of-memory in `fast`/`balanced`, retry once in `low-vram`."""
        import torch

        try:
            return call()
        except torch.OutOfMemoryError:
            if self.runtime.profile == "low-vram":
                raise
            previous = self.runtime.profile
            logger.warning("out of GPU memory in profile %s; releasing models and retrying once in low-vram",
                           previous)
            release()
            self.runtime.profile = "low-vram"
            self.oom_retries.append({"tool_call": len(self.calls) + 1, "from": previous, "to": "low-vram"})
            return call()

    def _record(self, tool: str, spec: ModelSpec, args: dict, output: Path, started: float, **extra: Any) -> str:
        seconds = time.perf_counter() - started
        self.calls.append(
            dict(tool=tool, args=args, output=str(output), model=spec.model_ids(), family=spec.family,
                 seconds=round(seconds, 3), profile=self.runtime.profile, **extra)
        )
        logger.info("%s wrote %s in %.2fs", tool, output, seconds)
        return str(output)

    # --- the tools --------------------------------------------------------------------------------

    def text_to_image(
        self,
        prompt: Annotated[str, "Detailed visual description of the first frame"],
        negative_prompt: Annotated[str, "What the image must not show"] = "",
        seed: Annotated[int | None, "Random seed, 0..4294967295; omit for a random one"] = None,
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
        image = self._generate(lambda: sdxl.text_to_image(
            spec, self.runtime, prompt=prompt, negative_prompt=negative_prompt, width=w, height=h, steps=steps, seed=seed
        ))
        out = media.write_image(image, self._out("text_to_image", ".png"))
        return self._record(
            "text_to_image", spec, dict(prompt=prompt, negative_prompt=negative_prompt), out, started,
            seed=seed, settings=dict(width=w, height=h, steps=steps, guidance_scale=spec.get("guidance_scale"),
                                     high_noise_frac=spec.get("high_noise_frac") if spec.refiner else None),
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
        edited = self._generate(lambda: pix2pix.edit_image(
            spec, self.runtime, image=image, instruction=instruction, steps=steps, seed=seed
        ))
        out = media.write_image(edited, self._out("edit_image", ".png"))
        return self._record(
            "edit_image", spec, dict(image_path=str(image_path), instruction=instruction), out, started, seed=seed,
            settings=dict(width=edited.width, height=edited.height, steps=steps,
                          guidance_scale=spec.get("guidance_scale"),
                          image_guidance_scale=spec.get("image_guidance_scale")),
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
        fps = check_int(fps, "fps", low=1, high=120) or spec.get("fps")
        segments = check_int(segments, "segments", low=1, high=16) or spec.get("segments", 1)
        w, h = self._size(spec, width, height, image.size)
        steps, seed = self._steps(spec, steps), check_seed(seed)
        frames = self._generate(lambda: _VIDEO_FAMILIES[spec.family].generate(
            spec, self.runtime, image=image, prompt=prompt, width=w, height=h, num_frames=n, segments=segments,
            steps=steps, fps=fps, seed=seed,
        ))
        out = media.write_video(frames, self._out("image_to_video", ".mp4"), fps=fps)
        boundaries = [n + i * (n - 1) for i in range(segments - 1)]
        return self._record(
            "image_to_video", spec, dict(image_path=str(image_path), prompt=prompt), out, started, seed=seed,
            settings=self._video_settings(spec, w, h, n, steps, fps, segments=segments),
            video=dict(num_frames=len(frames), fps=fps, width=w, height=h, boundaries=boundaries),
        )

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
        video = media.read_video(self._input(video_path, "video_path"), argument="video_path")
        prompt = check_text(prompt, "prompt", required=False)
        # num_frames counts new frames; the family rounds its own clip to what the model needs
        n = self._frames(spec, num_frames, any_count=True)
        if num_frames is None and spec.family == "svd":
            n = spec.get("num_frames") - 1
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
            settings=self._video_settings(spec, w, h, n, steps, fps),
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
        a = media.read_video(self._input(first_video, "first_video"), argument="first_video")
        b = media.read_video(self._input(second_video, "second_video"), argument="second_video")
        prompt = check_text(prompt, "prompt", required=False)
        n = self._frames(spec, num_frames)
        if n < 3:
            raise InputError(f"num_frames: {n} leaves no transition frames; pass at least {spec.get('frame_multiple', 8) + 1}")
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
            out, started, seed=seed, settings=self._video_settings(spec, w, h, n, steps, a.fps),
            video=dict(num_frames=len(frames), fps=a.fps, width=_even(a.width), height=_even(a.height),
                       boundaries=[a.num_frames, a.num_frames + len(middle)]),
        )

    @staticmethod
    def _video_settings(spec: ModelSpec, w: int, h: int, n: int, steps: int, fps: float, **extra: Any) -> dict:
        keys = ("motion_bucket_id", "noise_aug_strength", "min_guidance_scale", "max_guidance_scale",
                "guidance_scale", "decode_timestep", "image_cond_noise_scale")
        return dict(width=w, height=h, num_frames=n, steps=steps, fps=fps, **extra,
                    **{k: spec.get(k) for k in keys if spec.get(k) is not None})

    @property
    def tools(self) -> dict[str, Callable[..., str]]:
        """name -> bound tool method, for registering with agents."""
        return {name: getattr(self, name) for name in TOOL_NAMES}


def _even(side: int) -> int:
    """The side as written: H.264 yuv420p needs even sides, so media.write_video pads odd ones."""
    return side + side % 2


TOOL_NAMES = ("text_to_image", "edit_image", "image_to_video", "extend_video", "connect_videos")
