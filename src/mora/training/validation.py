"""Validation while training (`--validate-every K`, `--validation-prompt TEXT`): videos with the current adapter.

Every K steps process 0 writes the current adapter (the moving average with `--ema`) to
`RUN_DIR/validation/step-K/adapter`, makes one video per validation prompt through the normal
text-to-video route with it (`mora.workflows.runner.run_job`: the same code `mora run --adapter`
runs; seed = the run's seed, so steps are comparable), writes a contact sheet of all of them, and
returns their score cards as a `metrics.jsonl` row `{"step": K, "validation": {...}}`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VALIDATION_DIR = "validation"
SHEET = "contact_sheet.png"


def validation_prompts(cfg: Any, clips: list[Any]) -> list[str]:
    """The prompts: `--validation-prompt` as given, else the first two captions."""
    return list(cfg.validation_prompt or [c.text for c in clips[:2]])


def validate(trainer: Any, step: int) -> dict[str, Any]:
    """Videos and score cards of the validation prompts with `trainer`'s current adapter at `step`.

    Example:
        >>> row = validate(trainer, 100)   # doctest: +SKIP
        >>> row["validation"]["quality"]
        [0.41, 0.38]
    """
    from mora.evaluation.critic import quality
    from mora.workflows.prepare import Hooks
    from mora.workflows.runner import run_job

    folder = trainer.run_dir / VALIDATION_DIR / f"step-{step}"
    adapter = trainer.save_adapter(folder / "adapter")
    prompts = validation_prompts(trainer.cfg, trainer.clips)
    hooks = Hooks(progress=False, preset=trainer.cfg.preset_obj())
    videos, cards = [], []
    for j, prompt in enumerate(prompts, start=1):
        video = folder / f"v{j}.mp4"
        job = {"task": "text-to-video", "prompt": prompt, "preset": trainer.cfg.preset_name, "seed": trainer.cfg.seed,
               "device": trainer.device, "adapter": str(adapter), "out": str(video), "overwrite": True,
               "metrics": True}
        manifest = run_job(job, hooks).manifest
        videos.append(video)
        cards.append(manifest.get("metrics") or {})
    sheet = contact_sheets(videos, folder / SHEET)
    logger.info("validation at step %d: %s", step, folder)
    return {"step": step, "validation": {
        "prompts": prompts, "videos": [str(v.relative_to(trainer.run_dir)) for v in videos],
        "contact_sheet": str(sheet.relative_to(trainer.run_dir)), "scores": cards,
        "quality": [round(quality(card), 4) for card in cards]}}


def contact_sheets(videos: list[Path], path: Path) -> Path:
    """One image: a row of evenly spaced frames per video, top to bottom."""
    from PIL import Image

    from mora import media
    from mora.training.report import contact_sheet

    rows = [Image.open(contact_sheet(v, v.with_name(v.stem + "_sheet.png"))).convert("RGB") for v in videos]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 4
    return media.write_image(sheet, path)
