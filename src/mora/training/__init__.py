"""The paper's training: self-modulated multi-agent fine-tuning (modulation embeddings + LoRA).

Each trained agent i (A2 `text_to_image_agent`/SDXL, A3 `image_to_image_agent`/InstructPix2Pix,
A4 `image_to_video_agent`/SVD) gets LoRA parameters theta_i on its denoiser's attention and a
modulation embedding z_i = E_i("[Mod]") appended to its conditioning; both are trained on the
coupled loss L = L_A4(clip | first frame from A2) + lambda * L_A2 (+ L_A3), whose gradients flow
from the video agent back into the image agent. The modulation factor ||z_i|| is reported in the
metrics, the adapter and every manifest made with it. Design and limits: docs/training.md.

API for the command line and the web page (nothing here imports torch until used). The adapter
names below are re-exported from `mora.adapters`, the package below the tools that inference uses:

Training (`mora train`):
    train(data, out, *, progress=True, callback=None, **options) -> TrainResult
        options are `TrainConfig` fields: preset, agents, steps, batch_size, lr, mod_lr, rank,
        mod_tokens, coupling (False = --no-coupling), lambda_image, train_size ("WxH" or (w, h)),
        train_frames, checkpoint_every, resume, seed, device, optimizer ("adamw8bit" on CUDA), ...
        The CLI maps --flag-name to flag_name and --quiet to progress=False; every `InputError`
        (bad option, bad data line, RUN_DIR conflict, bad resume) is exit 2, KeyboardInterrupt 130.
    TrainConfig(data, out, ...).validate()  validates without torch (for the CLI, before loading)
    parse_size("512x288") -> (512, 288)     for --train-size
    TrainResult(adapter_dir, metrics_path, final_loss, run_dir, steps, modulation, manifest)
    train(prompts=FILE or [...], out=RUN_DIR, human=callable or None, iterations=3, candidates=4, steps=50,
          quality_floor=0.0, llm_config=None, ...) -> LoopResult   the data-free loop (mora.training.loop)

Inference (`--adapter DIR` for every task, `mora.run(adapter=...)`, `Toolset(adapter=...)`):
    adapter = load_adapter(DIR, preset)          verifies files, sha256 and base models (InputError)
    adapter.manifest_entry()                     -> the manifest's `adapter` {path, sha256, agents, modulation}
    adapter.agent_for_role(role)                 -> the agent whose LoRA/z a preset role uses, or None
    adapter.apply(pipe, agent)                   loads theta_i into the pipeline's UNet, in place
                                                 (cache such pipelines under a key with adapter.sha256)
    sdxl_call_kwargs(pipe, adapter, prompt, negative_prompt) -> kwargs for the SDXL base call
    pix2pix_call_kwargs(pipe, adapter, prompt)   -> kwargs for the InstructPix2Pix call
    with svd_modulation(pipe, adapter): pipe(image, ...)    z_4 appended to SVD's image embedding
    All three append z_i to both classifier-free-guidance branches and fall back to the plain call
    when the adapter is None or lacks the agent.

Example:
    >>> import mora
    >>> result = mora.train(data="clips", out="runs/fox", preset="tiny", steps=20)  # doctest: +SKIP
    >>> adapter = load_adapter(result.adapter_dir, "tiny")                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mora._lazy import lazy_names
from mora.adapters import PUBLIC_NAMES as ADAPTER_NAMES

# public name -> module; imported on first use (PEP 562), so `import mora.training` stays light
_LAZY = {
    "train": "mora.training.loop",
    "train_data_free": "mora.training.loop",
    "LoopResult": "mora.training.loop",
    "Trainer": "mora.training.trainer",
    "TrainResult": "mora.training.trainer",
    "TrainConfig": "mora.training.config",
    "parse_size": "mora.training.config",
    "check_dataset": "mora.training.data",
    # the adapter format lives below the tools (mora.adapters); its names stay here for users
    **{name: module for name, module in ADAPTER_NAMES.items() if name != "MOD_TOKEN"},
}

__all__ = [
    "AGENTS", "Adapter", "LoopResult", "train_data_free", "TrainConfig", "TrainResult", "Trainer", "check_dataset", "load_adapter", "parse_size",
    "pix2pix_call_kwargs", "preview_video", "sdxl_call_kwargs", "svd_modulation", "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from mora.adapters.adapter import Adapter, load_adapter
    from mora.adapters.inference import pix2pix_call_kwargs, preview_video, sdxl_call_kwargs, svd_modulation
    from mora.adapters.spec import AGENTS
    from mora.training.config import TrainConfig, parse_size
    from mora.training.data import check_dataset
    from mora.training.loop import LoopResult, train, train_data_free
    from mora.training.trainer import Trainer, TrainResult


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
