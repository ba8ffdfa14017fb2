"""The prompt agent's answer when no LLM is configured: deterministic prompt enhancement.

It keeps the user's subject word for word and appends what a video model benefits from and the
user did not already say: framing and camera, lighting, motion, style. The same input always
gives the same prompt, so runs without an LLM are reproducible.
"""

from __future__ import annotations

import re

# (category, words that show the user already covered it, the detail added otherwise)
_DETAILS = (
    ("camera", ("shot", "camera", "close-up", "closeup", "angle", "pan", "dolly", "drone", "tracking", "aerial"),
     "cinematic wide shot, slow steady tracking camera"),
    ("lighting", ("light", "lit", "sunset", "sunrise", "dusk", "dawn", "night", "glow", "neon", "shadow"),
     "soft natural lighting with gentle shadows"),
    ("motion", ("moving", "motion", "running", "flying", "walking", "flowing", "drifting", "swaying", "spinning"),
     "smooth natural motion"),
    ("style", ("photo", "realistic", "style", "painting", "anime", "cartoon", "render", "illustration", "voxel"),
     "highly detailed, photorealistic, sharp focus"),
)
_QUALITY = "coherent scene, consistent subject"

# The paper's digital-world simulation: a Minecraft-like look, named generically.
DIGITAL_WORLD_CUE = "rendered as a voxel sandbox video game world, blocky cubic terrain and textures, game screenshot"
SIMULATE_NEGATIVE = "photograph, realistic photo, blurry"


def _covers(prompt: str, words: tuple[str, ...]) -> bool:
    text = prompt.lower()
    return any(re.search(rf"\b{re.escape(w)}", text) for w in words)


def enhance_prompt(prompt: str, *, task: str = "text-to-video") -> str:
    """Rewrite `prompt` into a detailed, visual prompt, keeping the subject first and unchanged.

    Args:
        prompt: the user's text.
        task: the task; `simulate` adds the digital-world style cue in place of the photographic style.

    Example:
        >>> enhance_prompt("a red fox in snow")
        'a red fox in snow, cinematic wide shot, slow steady tracking camera, soft natural lighting with gentle shadows, smooth natural motion, highly detailed, photorealistic, sharp focus, coherent scene, consistent subject'
    """
    subject = " ".join(prompt.split()).rstrip(" .,;")
    parts = [subject]
    for category, words, detail in _DETAILS:
        if task == "simulate" and category == "style":
            continue
        if not _covers(subject, words):
            parts.append(detail)
    if task == "simulate":
        parts.append(DIGITAL_WORLD_CUE)
    parts.append(_QUALITY)
    return ", ".join(parts)


def edit_instruction(prompt: str, *, task: str) -> str:
    """An InstructPix2Pix instruction from the user's text: short and imperative, as the model was trained."""
    text = " ".join(prompt.split()).rstrip(" .")
    if task == "simulate":
        return "turn it into a voxel sandbox video game world with blocky cubic textures"
    if re.match(r"^(make|turn|change|add|remove|replace|put|give|convert)\b", text, re.I):
        return text
    return f"make it look like {text}"
