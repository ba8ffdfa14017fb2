"""Image editing by instruction with Qwen-Image-Edit (2509/2511: QwenImageEditPlusPipeline).

Chosen over FLUX.1 Kontext [dev]: Apache-2.0 (Kontext [dev] is under the FLUX non-commercial
licence), and at release it led the open models on the GEdit and ImgEdit editing benchmarks (its
technical report) and on public image-edit arenas. It reads the input image twice: through the
Qwen2.5-VL vision tower (what is in it) and through the VAE (how it looks), which keeps unedited
regions close to the input.

The processor is loaded image-only (`mora.tools.qwen_processor`): transformers 5 cannot build
Qwen2-VL's processor without torchvision, and editing never passes a video.
"""

from __future__ import annotations

import logging

from PIL import Image

from mora.config import ModelSpec
from mora.tools.qwen_image import with_scheduler
from mora.tools.runtime import Runtime, generator
from mora.tools.sizing import fit_size
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

GPU_DTYPE = "bfloat16"
_PIPELINES = ("QwenImageEditPlusPipeline", "QwenImageEditPipeline")  # 2509/2511, and the first release


def _pipeline_class(name: str):
    import diffusers

    if name not in _PIPELINES:
        raise ValueError(f"qwen-image-edit: pipeline_class {name!r} is not one of {_PIPELINES}")
    return getattr(diffusers, name)


def load(spec: ModelSpec, rt: Runtime):
    cls = _pipeline_class(spec.settings.pipeline_class)

    def build(dtype):
        from mora.tools.qwen_processor import ImageOnlyQwen2VLProcessor

        processor = from_pretrained(ImageOnlyQwen2VLProcessor, spec.model, subfolder="processor")
        return from_pretrained(cls, spec.model, dtype=dtype, processor=processor)

    name, build_with_scheduler = with_scheduler(spec, build)
    return rt.pipeline("qwen-image-edit", name, build_with_scheduler, GPU_DTYPE)


def model_size(spec: ModelSpec, width: int, height: int) -> tuple[int, int]:
    """The image's aspect ratio at the model's output area, in the model's size multiple."""
    return fit_size(width, height, spec.settings.max_area, spec.settings.size_multiple)


def _condition_image(pipe, image: Image.Image) -> Image.Image:
    """The image as the pipeline hands it to the vision tower (its own resize, reproduced for counting)."""
    if type(pipe).__name__ == "QwenImageEditPlusPipeline":
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (
            CONDITION_IMAGE_SIZE,
            calculate_dimensions,
        )

        w, h = calculate_dimensions(CONDITION_IMAGE_SIZE, image.width / image.height)
    else:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

        w, h, _ = calculate_dimensions(1024 * 1024, image.width / image.height)
    return pipe.image_processor.resize(image, h, w)


def instruction_tokens(pipe, instruction: str, image: Image.Image, max_sequence_length: int) -> dict:
    """How the instruction is encoded: its tokens, the window left for them, whether any are cut.

    The kept sequence (after the template's first `prompt_template_encode_start_idx` tokens) holds the
    image's vision tokens, the instruction and the template's tail; the pipeline keeps the first
    `max_sequence_length` of it.
    """
    tokens = len(pipe.tokenizer(instruction, add_special_tokens=False).input_ids)
    text = instruction
    if type(pipe).__name__ == "QwenImageEditPlusPipeline":
        text = "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" + instruction  # the pipeline's own prefix
    inputs = pipe.processor(text=[pipe.prompt_template_encode.format(text)], images=[_condition_image(pipe, image)],
                            padding=True)
    kept = len(inputs["input_ids"][0]) - pipe.prompt_template_encode_start_idx
    window = max(0, max_sequence_length - (kept - tokens))
    return {"tokens": tokens, "window": window, "chunks": 1, "truncated": tokens > window}


def edit_image(spec: ModelSpec, rt: Runtime, *, image: Image.Image, instruction: str, steps: int,
               seed: int) -> tuple[Image.Image, dict]:
    """(the edited image, how the instruction was encoded: tokens, window, chunks, truncated).

    The output keeps the input's aspect ratio at `settings.max_area` pixels (about 1024x1024 for the
    real model); the pipeline resizes the input itself for its vision tower and VAE.

    Args:
        spec: family `qwen-image-edit`; settings `QwenImageEditSettings`.
        rt: where and how to run.
        image: the image to edit (RGB).
        instruction: what to change, e.g. "make it night, with street lights on".
        steps: denoising steps.
        seed: the noise seed.

    Example:
        >>> edited, tokens = edit_image(spec, Runtime(), image=frame, instruction="make it snow", steps=40, seed=0)
    """
    s = spec.settings
    image = image.convert("RGB")
    w, h = model_size(spec, *image.size)
    pipe = load(spec, rt)
    tokens = instruction_tokens(pipe, instruction, image, s.max_sequence_length)
    if tokens["truncated"]:
        logger.warning("qwen-image-edit: the instruction has %d tokens; the window holds %d, the rest are cut",
                       tokens["tokens"], tokens["window"])
    edited = pipe(
        image=image, prompt=instruction, negative_prompt=s.negative_prompt, true_cfg_scale=s.true_cfg_scale,
        width=w, height=h, num_inference_steps=steps, max_sequence_length=s.max_sequence_length,
        generator=generator(seed), **rt.step_end(pipe),
    ).images[0]
    return edited, tokens
