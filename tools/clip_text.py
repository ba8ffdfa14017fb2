"""CLIP text embeddings for prompts of any length (SDXL and InstructPix2Pix), never truncated.

CLIP reads 77 tokens (75 plus BOS and EOS); diffusers' own encoding cuts everything after that,
so most of an enhanced prompt would be thrown away unnoticed. As the community does for SDXL
(e.g. compel, the "long prompt weighting" pipelines), the prompt is split into 75-token chunks,
each encoded in its own 77-token window, and the hidden states are concatenated along the token
axis; cross-attention takes any number of tokens. A prompt that fits one window gives exactly
the embeddings diffusers computes. The pooled embedding comes from the first window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class PromptTokens:
    """What the manifest records of a prompt's encoding."""

    tokens: int  # the prompt's CLIP tokens, BOS/EOS excluded
    window: int  # tokens one CLIP pass reads (77)
    chunks: int  # windows used
    truncated: bool = False  # never, with chunking; recorded so a reader need not trust that

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "window": self.window, "chunks": self.chunks, "truncated": self.truncated}


def _ids(tokenizer: Any, text: str) -> list[int]:
    # verbose=False: the length warning is what this module exists to make unnecessary
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids


def _windows(tokenizer: Any, ids: list[int], chunks: int) -> list[list[int]]:
    body = tokenizer.model_max_length - 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for i in range(chunks):
        part = ids[i * body:(i + 1) * body]
        row = [tokenizer.bos_token_id, *part, tokenizer.eos_token_id]
        rows.append(row + [pad] * (tokenizer.model_max_length - len(row)))
    return rows


def count_chunks(tokenizer: Any, *texts: str) -> tuple[int, list[list[int]]]:
    """(windows needed by the longest text, token ids of each text)."""
    ids = [_ids(tokenizer, t or "") for t in texts]
    body = tokenizer.model_max_length - 2
    return max(1, *(math.ceil(len(i) / body) for i in ids)), ids


def encode(tokenizer: Any, encoder: Any, ids: list[int], chunks: int, device: Any, *, penultimate: bool):
    """(hidden states concatenated over `chunks` windows, the first window's output[0]).

    `penultimate`: SDXL conditions on the second-to-last hidden layer; InstructPix2Pix on the last.
    """
    import torch

    hidden, first = [], None
    for row in _windows(tokenizer, ids, chunks):
        out = encoder(torch.tensor([row], device=device), output_hidden_states=penultimate)
        if first is None:
            first = out[0]
        hidden.append(out.hidden_states[-2] if penultimate else out[0])
    return torch.cat(hidden, dim=1), first


def sdxl_embeds(pipe: Any, prompt: str, negative_prompt: str) -> tuple[dict, PromptTokens]:
    """Keyword arguments (prompt_embeds, pooled, negatives) for an SDXL base or refiner call."""
    import torch

    pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
             if t is not None and e is not None]
    device = pipe._execution_device
    chunks, ids = count_chunks(pairs[-1][0], prompt, negative_prompt)
    embeds, negatives, pooled, neg_pooled = [], [], None, None
    with torch.no_grad():
        for tokenizer, encoder in pairs:
            _, (pos_ids, neg_ids) = count_chunks(tokenizer, prompt, negative_prompt)
            hidden, pooled = encode(tokenizer, encoder, pos_ids, chunks, device, penultimate=True)
            neg_hidden, neg_pooled = encode(tokenizer, encoder, neg_ids, chunks, device, penultimate=True)
            embeds.append(hidden)
            negatives.append(neg_hidden)
    prompt_embeds, negative_embeds = torch.cat(embeds, dim=-1), torch.cat(negatives, dim=-1)
    if not negative_prompt and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        negative_embeds, neg_pooled = torch.zeros_like(negative_embeds), torch.zeros_like(neg_pooled)
    kwargs = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                  pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=neg_pooled)
    return kwargs, PromptTokens(tokens=len(ids[0]), window=pairs[-1][0].model_max_length, chunks=chunks)


def single_encoder_embeds(pipe: Any, prompt: str, negative_prompt: str = "") -> tuple[dict, PromptTokens]:
    """prompt_embeds / negative_prompt_embeds for a one-encoder CLIP pipeline (InstructPix2Pix)."""
    import torch

    chunks, (pos_ids, neg_ids) = count_chunks(pipe.tokenizer, prompt, negative_prompt)
    with torch.no_grad():
        embeds, _ = encode(pipe.tokenizer, pipe.text_encoder, pos_ids, chunks, pipe._execution_device,
                           penultimate=False)
        negatives, _ = encode(pipe.tokenizer, pipe.text_encoder, neg_ids, chunks, pipe._execution_device,
                              penultimate=False)
    kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negatives)
    return kwargs, PromptTokens(tokens=len(pos_ids), window=pipe.tokenizer.model_max_length, chunks=chunks)
