"""Qwen2-VL's processor without its video half, for Qwen-Image-Edit on machines without torchvision.

transformers 5 builds `Qwen2VLProcessor` with a video processor, and its video processors exist only
with torchvision installed: without it the processor cannot be constructed at all (transformers
issue 43986; diffusers issue 13140 hits it with Qwen-Image-Edit). Image editing never passes a
video, so `ImageOnlyQwen2VLProcessor` drops that attribute: the same tokenizer, image processor,
chat template and image-token expansion, hence the same model inputs. It reads a Hub repo's
`processor/` folder as is (the video processor's config there is simply not loaded).

This module imports transformers: import it lazily (the families' loaders and the tiny builders do).

Example:
    >>> from mora.tools.qwen_processor import ImageOnlyQwen2VLProcessor
    >>> processor = ImageOnlyQwen2VLProcessor.from_pretrained("Qwen/Qwen-Image-Edit-2511", subfolder="processor")
"""

from __future__ import annotations

from transformers import Qwen2VLProcessor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` with only `image_processor` and `tokenizer` (no `video_processor`)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The attributes come from this signature: the base passes a third (video) argument, which
        # ProcessorMixin pairs with no attribute and so never checks, stores or saves.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
