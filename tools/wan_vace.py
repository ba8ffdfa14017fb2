"""Video-to-video editing that keeps the source's motion, and first/last-frame transitions, with Wan
VACE (WanVACEPipeline).

VACE ("all-in-one video creation and editing") conditions Wan on a control video and a mask: where
the mask is black the control video's pixels are kept as they are ("inactive"), where it is white
they are a signal to follow while generating ("reactive": a depth, pose, flow or grey-scale video),
and reference images add appearance. Tasks compose through that one interface (the VACE paper's
"any-to-video" compositions), which is how `edit_video` combines two of its trained tasks:

- first frame: frame 0 of the control video is the edited first frame, mask black there, so the
  output starts from exactly that edit (VACE's first-frame extension task);
- structure and motion: frames 1.. are the source frames through VACE's `gray` annotator
  (luminance), mask white, so the output follows the source's layout and motion while colours and
  appearance come from the edited first frame (VACE's grey-scale "recolour" control);
- reference: the edited first frame is also passed as a reference image (VACE's reference-to-video
  task), which keeps its look in later frames too.

Depth or pose control (VACE's other annotators) would follow motion more loosely and restyle more
freely; they need annotator models (Depth-Anything, DWPose) and wait for a later change.

VACE encodes 4k+1 frames: a source of another length is padded (its last control frame repeated)
and the extra output frames are dropped; longer than `max_frames` it is edited in windows, each
starting from the previous window's last output frame. `transition` is the first-last-frame task of
the diffusers example: both end frames kept, grey (127.5) frames between them to generate.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.errors import InputError
from mora.tools.runtime import Runtime, generator
from mora.tools.segments import segment_seed
from mora.tools.sizing import cover_resize, to_uint8
from mora.tools.wan_loader import WAN_NEGATIVE_PROMPT, load_wan

logger = logging.getLogger(__name__)

EDIT_PROMPT = "the same scene and motion as the source video, in the style and appearance of the first frame"
TRANSITION_PROMPT = "a smooth, natural transition between the two scenes, consistent lighting and camera"
CONTROLS = ("gray",)  # VACE annotators that need no model of their own


def load(spec: ModelSpec, rt: Runtime):
    """Wan VACE: the VAE in float32; flow shift from the settings (the example: 5.0 for 720p, 3.0 for 480p)."""
    return load_wan(spec, rt, "wan-vace", "WanVACEPipeline")


def round_frames(n: int, multiple: int) -> int:
    """The smallest count of the form multiple*k + 1 that is >= n.

    Example:
        >>> round_frames(7, 4), round_frames(9, 4), round_frames(10, 4)
        (9, 9, 13)
    """
    return -(-(max(n, 1) - 1) // multiple) * multiple + 1


def control_frames(frames: np.ndarray, width: int, height: int, control: str) -> list[Image.Image]:
    """The source frames as VACE control images, cover-resized to width x height.

    `gray`: VACE's grey-scale annotator (ITU-R 601 luma, as OpenCV's RGB2GRAY), three equal channels.
    """
    if control not in CONTROLS:
        raise ValueError(f"wan-vace: control {control!r} is not supported; use one of {CONTROLS}")
    return [cover_resize(Image.fromarray(f), width, height).convert("L").convert("RGB") for f in frames]


def _masks(width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """(keep, generate): black keeps the control pixels, white generates following them."""
    return Image.new("L", (width, height), 0), Image.new("L", (width, height), 255)


def _check_size(spec: ModelSpec, width: int, height: int) -> None:
    m = spec.settings.size_multiple
    if width % m or height % m:
        raise ValueError(f"wan-vace: width and height must be multiples of {m}, got {width}x{height}")


def _call(spec: ModelSpec, rt: Runtime, *, video, mask, reference_images, prompt, width, height, steps,
          seed) -> np.ndarray:
    s = spec.settings
    pipe = load(spec, rt)
    out = pipe(
        video=video, mask=mask, reference_images=reference_images, conditioning_scale=s.conditioning_scale,
        prompt=prompt, negative_prompt=WAN_NEGATIVE_PROMPT, height=height, width=width, num_frames=len(video),
        num_inference_steps=steps, guidance_scale=s.guidance_scale, generator=generator(seed), output_type="np",
        **rt.step_end(pipe),
    ).frames[0]
    return to_uint8(out)


def edit_video(
    spec: ModelSpec, rt: Runtime, *, frames: np.ndarray, reference: Image.Image, prompt: str | None, width: int,
    height: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """The source video re-rendered to look like `reference` (its edited first frame), motion kept.

    Returns (T, height, width, 3) uint8 with T = len(frames): frame 0 is the edited first frame as
    the model keeps it, later frames follow the source's structure and motion (see the module doc).

    Args:
        spec: family `wan-vace`; settings `WanVACESettings` (`control`, `pin_first_frame`,
            `use_reference`, `conditioning_scale`, `max_frames`).
        frames: the source video, (T, H, W, 3) uint8; any length.
        reference: the edited first frame (e.g. from `qwen_image_edit.edit_image`).
        prompt: a description of the edited video (a generic one when empty).
        width, height: multiples of 16; frames and reference are cover-resized to it.
        steps: denoising steps.
        fps: the source's frame rate (Wan takes no fps conditioning; recorded by the caller).
        seed: the first window's seed; window i uses seed + i (`mora.tools.segments`).

    Example:
        >>> edited = edit_video(spec, Runtime(), frames=video.frames, reference=edited_first_frame,
        ...                     prompt="the same street at night", width=1280, height=720, steps=50, fps=16, seed=0)
    """
    s = spec.settings
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"wan-vace: frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape} {frames.dtype}")
    _check_size(spec, width, height)
    m, window = s.frame_multiple, s.max_frames
    if window % m != 1:
        raise ValueError(f"wan-vace: max_frames must be {m}k+1, got {window}")
    controls = control_frames(frames, width, height, s.control)
    reference = cover_resize(reference.convert("RGB"), width, height)
    keep, generate = _masks(width, height)
    first, pinned = reference, s.pin_first_frame
    out: list[np.ndarray] = []
    start, index = 0, 0
    while True:
        chunk = controls[start:start + window]
        n = len(chunk)
        padded = round_frames(n, m)
        if padded != n:
            logger.info("wan-vace: %d source frames padded to %d (VACE needs %dk+1; the last control frame repeats) "
                        "and the %d extra output frames dropped", n, padded, m, padded - n)
        # Frame 0: the edited first frame (first window) or the previous window's last output frame, kept.
        video = ([first] if pinned else [chunk[0]]) + chunk[1:] + [chunk[-1]] * (padded - n)
        mask = [keep if pinned else generate] + [generate] * (padded - 1)
        clip = _call(spec, rt, video=video, mask=mask, reference_images=[reference] if s.use_reference else None,
                     prompt=prompt or EDIT_PROMPT, width=width, height=height, steps=steps,
                     seed=segment_seed(seed, index))[:n]
        out.extend(clip if start == 0 else clip[1:])  # a later window's frame 0 repeats the last output frame
        if start + n >= len(frames):
            break
        logger.info("wan-vace: source frames %d-%d edited; the next window starts from the last output frame",
                    start, start + n - 1)
        first, pinned = Image.fromarray(clip[-1]), True
        start, index = start + n - 1, index + 1
    return np.stack(out)


def transition(
    spec: ModelSpec, rt: Runtime, *, first: Image.Image, last: Image.Image, prompt: str | None, width: int,
    height: int, num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """A clip from `first` (frame 0) to `last` (final frame); returns only the num_frames - 2 between.

    Raises:
        InputError: num_frames is not 4k+1 (at least 5), the lengths VACE encodes.
    """
    m = spec.settings.frame_multiple
    if num_frames < m + 1 or num_frames % m != 1:
        raise InputError(f"{num_frames} is not a Wan VACE clip length; use {m}k+1 frames, at least "
                         f"{m + 1} (e.g. {round_frames(max(num_frames, m + 1), m)})", param="num_frames")
    _check_size(spec, width, height)
    keep, generate = _masks(width, height)
    grey = Image.new("RGB", (width, height), (128, 128, 128))  # "nothing here": the frames to generate
    video = [cover_resize(first.convert("RGB"), width, height), *[grey] * (num_frames - 2),
             cover_resize(last.convert("RGB"), width, height)]
    mask = [keep, *[generate] * (num_frames - 2), keep]
    clip = _call(spec, rt, video=video, mask=mask, reference_images=None, prompt=prompt or TRANSITION_PROMPT,
                 width=width, height=height, steps=steps, seed=seed)
    return clip[1:-1]
