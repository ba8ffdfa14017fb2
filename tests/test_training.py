"""Self-modulated multi-agent fine-tuning (mora.training) on the tiny preset, on the CPU.

Covers the issue's phase-1 tests: z_i = E_i("[Mod]") at the start; the coupling gradient path
(lambda = 0: A4's loss alone reaches A2's LoRA and z_2; none with --no-coupling); overfitting one
clip lowers the loss by >= 30%; save -> load reproduces the in-memory adapter's video and differs
from the base's; resume after Ctrl-C ends at the same step with the same losses; every bad-data
case is an InputError with nothing written under RUN_DIR; adapter verification errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_frames
from PIL import Image

from mora import media
from mora.errors import InputError

SIZE = (64, 64)
FRAMES = 4
# Small and fast: no gradient checkpointing (it only trades time for memory), rank 4.
FAST = dict(preset="tiny", train_size=SIZE, train_frames=FRAMES, rank=4, gradient_checkpointing=False,
            device="cpu", progress=False)
A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"


def write_data(folder: Path, lines: list[dict], clips: dict[str, np.ndarray] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames in (clips or {}).items():
        media.write_video(frames, folder / name, fps=8)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """One 6-frame clip with a caption."""
    folder = tmp_path_factory.mktemp("clips")
    return write_data(folder, [{"file_name": "fox.mp4", "text": "a red fox running through snow"}],
                      {"fox.mp4": gradient_frames(6, 96, 64)})


def make_trainer(data: Path, out: Path, *, progress: bool = False, callback=None, **options):
    from mora.training import TrainConfig, Trainer

    fast = {k: v for k, v in FAST.items() if k != "progress"}
    return Trainer(TrainConfig(data=data, out=out, **{**fast, **options}), progress=progress, callback=callback)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished 4-step run (lr high enough that theta_i and z_i clearly move), its Trainer kept."""
    trainer = make_trainer(data, tmp_path_factory.mktemp("run") / "run", steps=4, lr=1e-2, mod_lr=1e-1,
                           checkpoint_every=2)
    result = trainer.run()
    return trainer, result


# --- z_i = E_i("[Mod]") -----------------------------------------------------------------------------


def test_modulation_starts_as_the_agents_encoder_output_for_mod(data, tmp_path):
    from mora.adapters.modulation import mod_image

    trainer = make_trainer(data, tmp_path / "run", agents=(A2, A3, A4), steps=1)
    trainer.prepare()
    trainer.close()
    models = trainer.models
    # SDXL: the pipeline's own prompt embedding of "[Mod]" (both encoders), at the end-of-text token.
    sdxl = models[A2].pipe
    embeds = sdxl.encode_prompt("[Mod]", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    eos = len(sdxl.tokenizer("[Mod]").input_ids) - 1
    assert models[A2].z.shape == (1, sdxl.unet.config.cross_attention_dim)
    torch.testing.assert_close(models[A2].z.detach(), embeds[0, eos:eos + 1].float())
    torch.testing.assert_close(models[A2].z.detach(), models[A2].z_init)
    # InstructPix2Pix: its text encoder's embedding of "[Mod]".
    pix = models[A3].pipe
    embeds = pix._encode_prompt("[Mod]", "cpu", 1, False)
    torch.testing.assert_close(models[A3].z.detach(), embeds[0, eos:eos + 1].float())
    # SVD: the pipeline's own _encode_image (PIL path) of the rendered token.
    svd = models[A4].pipe
    size = svd.image_encoder.config.image_size
    image_embeds = svd._encode_image(Image.fromarray(mod_image(size)), "cpu", 1, False)
    torch.testing.assert_close(models[A4].z.detach(), image_embeds[0].float(), atol=1e-5, rtol=1e-4)


def test_more_mod_tokens_end_at_the_same_token(data, tmp_path):
    from mora.adapters.modulation import image_modulation, text_modulation
    from mora.config import get_preset
    from mora.training.models import load_pipeline

    sdxl = load_pipeline(get_preset("tiny"), A2, "cpu", torch.float32)
    one, three = text_modulation(sdxl, "sdxl", 1), text_modulation(sdxl, "sdxl", 3)
    assert three.shape == (3, 64)
    torch.testing.assert_close(three[-1:], one)  # K tokens end at the end-of-text token
    svd = load_pipeline(get_preset("tiny"), A4, "cpu", torch.float32)
    one, three = image_modulation(svd, 1), image_modulation(svd, 3)
    torch.testing.assert_close(three[:1], one, atol=1e-5, rtol=1e-4)  # token 0 is image_embeds


# --- the coupled gradient path -----------------------------------------------------------------------


@pytest.mark.parametrize("coupling", [True, False])
def test_video_loss_reaches_the_image_agent_only_when_coupled(data, tmp_path, coupling):
    from mora.training.coupled import compute_losses

    trainer = make_trainer(data, tmp_path / "run", steps=1, lambda_image=0.0, cond_dropout=0.0, coupling=coupling,
                           real_frame_p=0.0)
    trainer.prepare()
    trainer.close()
    losses = compute_losses(trainer.models, trainer.feed.batch(0), trainer.feed.draws(0), trainer.cfg)
    losses.total.backward()  # lambda = 0: only A4's loss
    a2, a4 = trainer.models[A2], trainer.models[A4]
    lora_grad = sum(float(p.grad.abs().sum()) for p in a2.lora_params if p.grad is not None)
    z_grad = float(a2.z.grad.abs().sum()) if a2.z.grad is not None else 0.0
    if coupling:
        assert lora_grad > 0 and z_grad > 0, "A4's loss must reach theta_2 and z_2 through the coupled frame"
    else:
        assert lora_grad == 0 and z_grad == 0, "--no-coupling: nothing may cross from A4 to A2"
    assert float(a4.z.grad.abs().sum()) > 0
    assert sum(float(p.grad.abs().sum()) for p in a4.lora_params if p.grad is not None) > 0


# --- learning ------------------------------------------------------------------------------------------


def test_overfitting_one_clip_lowers_the_loss_by_30_percent(data, tmp_path):
    # One clip and, as an overfit-one-batch check does, one fixed set of random draws: the tiny models
    # have random weights, so only a fixed batch can be memorised in a few steps (docs/training.md).
    trainer = make_trainer(data, tmp_path / "run", steps=20, rank=16, lr=1e-2, mod_lr=1e-1, cond_dropout=0.0,
                           overfit_batch=True, seed=0, checkpoint_every=100)
    before = trainer.eval_loss(at_steps=(0,))
    result = trainer.run()
    after = trainer.eval_loss(at_steps=(0,))
    assert after <= 0.7 * before, f"loss {before:.4f} -> {after:.4f}"
    assert result.steps == 20 and np.isfinite(result.final_loss)


def test_a_run_writes_adapter_checkpoints_metrics_plot_and_manifest(trained):
    trainer, result = trained
    run = result.run_dir
    assert result.adapter_dir == run / "adapter" and result.metrics_path == run / "metrics.jsonl"
    meta = json.loads((run / "adapter" / "adapter.json").read_text())
    assert meta["base"]["models"][A2]["model"] == "tiny/sdxl-base" and meta["agents"] == [A2, A4]
    assert set(meta["files"]) == {f"{A2}.safetensors", f"{A4}.safetensors", "modulation.safetensors"}
    assert meta["modulation"][A2] == pytest.approx(float(trainer.models[A2].z.detach().norm()), rel=1e-5)
    assert meta["steps"] == 4 and meta["rank"] == 4 and meta["mod_tokens"] == 1 and meta["coupling"] is True
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert set(records[0]) >= {"loss", "loss_per_agent", "modulation", "lr", "seconds"}
    assert set(records[0]["modulation"]) == {A2, A4}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((run / "train.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps_done"] == 4
    assert manifest["adapter"]["sha256"] and set(manifest["adapter"]["modulation"]) == {A2, A4}
    assert manifest["modulation"] != manifest["modulation_initial"]  # z_i moved


# --- save -> load, inference -------------------------------------------------------------------------


def fresh_pipelines():
    from mora.config import get_preset
    from mora.training.models import load_pipeline

    return {agent: load_pipeline(get_preset("tiny"), agent, "cpu", torch.float32) for agent in (A2, A4)}


def test_saved_adapter_reproduces_the_in_memory_video_and_differs_from_base(trained):
    from mora.training import load_adapter, preview_video

    trainer, result = trained
    shot = dict(prompt="a red fox", seed=3, width=64, height=64, num_frames=FRAMES, steps=2)
    in_memory = preview_video(trainer.pipelines(), trainer.adapter(), **shot)
    adapter = load_adapter(result.adapter_dir, "tiny")
    pipes = fresh_pipelines()
    base = preview_video(pipes, None, **shot)
    for agent, pipe in pipes.items():
        adapter.apply(pipe, agent)
    loaded = preview_video(pipes, adapter, **shot)
    assert in_memory.shape == (FRAMES, 64, 64, 3)
    np.testing.assert_array_equal(loaded, in_memory)
    assert np.abs(loaded - base).max() > 1e-3
    entry = adapter.manifest_entry()
    assert entry["agents"] == [A2, A4] and entry["sha256"] == adapter.sha256
    assert entry["modulation"][A4] == pytest.approx(result.modulation[A4])


def test_sdxl_lora_file_reads_with_diffusers_load_lora_weights(trained):
    from mora.adapters.lora import ADAPTER_NAME, lora_state

    trainer, result = trained
    pipe = fresh_pipelines()[A2]
    pipe.load_lora_weights(str(result.adapter_dir), weight_name=f"{A2}.safetensors", adapter_name=ADAPTER_NAME)
    expected = lora_state(trainer.models[A2].pipe.unet)
    loaded = lora_state(pipe.unet)
    assert loaded.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(loaded[key], expected[key], rtol=0, atol=0)


def test_call_kwargs_append_z_to_both_guidance_branches(trained):
    from mora.adapters.inference import sdxl_call_kwargs, svd_modulation

    trainer, _ = trained
    adapter = trainer.adapter()
    sdxl = trainer.models[A2].pipe
    kwargs = sdxl_call_kwargs(sdxl, adapter, "a fox")
    z = adapter.modulation(A2)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        assert kwargs[key].shape[1] == 77 + 1
        torch.testing.assert_close(kwargs[key][0, -1:], z)
    assert sdxl_call_kwargs(sdxl, None, "a fox") == {"prompt": "a fox", "negative_prompt": None}
    svd = trainer.models[A4].pipe
    with svd_modulation(svd, adapter):
        embeds = svd._encode_image(Image.new("RGB", (64, 64), "gray"), "cpu", 1, True)
    assert embeds.shape[:2] == (2, 2)  # [uncond, cond] x [image embedding, z]
    torch.testing.assert_close(embeds[:, 1], adapter.modulation(A4).expand(2, -1))
    assert "_encode_image" not in vars(svd)  # unwrapped after the block


def test_image_to_image_agent_adapter_round_trip(data, tmp_path):
    from mora.config import get_preset
    from mora.training import load_adapter, pix2pix_call_kwargs
    from mora.training.models import load_pipeline

    trainer = make_trainer(data, tmp_path / "run", agents=(A3,), steps=2, lr=1e-2, mod_lr=1e-1)
    result = trainer.run()
    assert result.manifest["coupled"] is False and set(result.modulation) == {A3}
    image = Image.fromarray(gradient_frames(1, 64, 64)[0])

    def edit(pipe, adapter):
        return np.asarray(pipe(**pix2pix_call_kwargs(pipe, adapter, "make it snowy"), image=image, num_inference_steps=2,
                               generator=torch.Generator().manual_seed(0), output_type="np").images[0])

    in_memory = edit(trainer.models[A3].pipe, trainer.adapter())
    pipe = load_pipeline(get_preset("tiny"), A3, "cpu", torch.float32)
    base = edit(pipe, None)
    adapter = load_adapter(result.adapter_dir, "tiny")
    np.testing.assert_array_equal(edit(adapter.apply(pipe, A3), adapter), in_memory)
    assert np.abs(in_memory - base).max() > 1e-3


# --- resume ---------------------------------------------------------------------------------------------


def test_resume_after_interrupt_ends_at_the_same_step_with_the_same_losses(data, tmp_path):
    def stop_after_3(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    options = dict(steps=5, checkpoint_every=2, lr=1e-2, mod_lr=1e-1)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(data, tmp_path / "run", callback=stop_after_3, **options).run()
    run = tmp_path / "run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-2"]
    assert not (run / "adapter").exists()
    assert json.loads((run / "train.json").read_text())["status"] == "interrupted"
    with pytest.raises(InputError, match="already holds a training run"):
        make_trainer(data, run, **options).run()
    with pytest.raises(InputError, match="steps"):
        make_trainer(data, run, resume=True, **{**options, "steps": 6}).run()
    resumed = make_trainer(data, run, resume=True, **options).run()
    assert resumed.steps == 5 and resumed.manifest["resumed_from"] == "checkpoints/step-2"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    straight = make_trainer(data, tmp_path / "straight", **options).run()
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["loss"] for line in straight.metrics_path.read_text().splitlines()]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)  # same data order, draws and lr schedule
    assert resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-5)


# --- bad data and options: InputError, nothing written but a log -----------------------------------------


def _only_log(run: Path) -> bool:
    """A refused run writes nothing: no RUN_DIR, no train.log (issue 20, item 4)."""
    return not run.exists()


BAD_LINES = {
    "missing file": ({"file_name": "gone.mp4", "text": "x"}, "'gone.mp4' is missing"),
    "undecodable": ({"file_name": "junk.mp4", "text": "x"}, "'junk.mp4' cannot be decoded"),
    "empty text": ({"file_name": "ok.mp4", "text": "  "}, "empty text"),
    "short clip": ({"file_name": "short.mp4", "text": "x"}, "'short.mp4' has 2 frames, fewer than --train-frames 4"),
    "duplicate": ({"file_name": "ok.mp4", "text": "again"}, "duplicates line 1"),
    "no file_name": ({"text": "x"}, "has no file_name"),
    "outside": ({"file_name": "../ok.mp4", "text": "x"}, "outside the data folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_data_line_is_an_input_error_and_writes_nothing(tmp_path, case):
    from mora.training import train

    line, message = BAD_LINES[case]
    lines = [{"file_name": "ok.mp4", "text": "a fox"}, line]
    folder = write_data(tmp_path / "clips", lines, {"ok.mp4": gradient_frames(5, 32, 32),
                                                    "short.mp4": gradient_frames(2, 32, 32)})
    (folder / "junk.mp4").write_bytes(b"not a video at all")
    run = tmp_path / "run"
    with pytest.raises(InputError, match="line 2: ") as error:
        train(folder, run, **FAST, steps=1)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert _only_log(run)


def test_every_bad_line_is_reported_first_ten_listed(tmp_path):
    from mora.training import train

    lines = [{"file_name": f"missing{i}.mp4", "text": "x"} for i in range(12)] + ["not json"]
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n"
                                                   for x in lines))
    with pytest.raises(InputError, match=r"13 bad line\(s\).*line 10: .*\(and 3 more\); fix or remove them"):
        train(folder, tmp_path / "run", **FAST, steps=1)
    assert _only_log(tmp_path / "run")


def test_missing_metadata_or_folder(tmp_path):
    from mora.training import train

    with pytest.raises(InputError, match="is not a folder"):
        train(tmp_path / "nope", tmp_path / "run", **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no metadata.jsonl"):
        train(tmp_path / "empty", tmp_path / "run", **FAST)
    assert _only_log(tmp_path / "run")


@pytest.mark.parametrize("options, message", [
    (dict(rank=0), "--rank: 0 is out of range"),
    (dict(train_size="100x50"), "--train-size: '100x50' must have sides that are multiples of 8"),
    (dict(train_size="big"), "--train-size: 'big' is not WxH"),
    (dict(agents="text_to_image_agent,critic_agent"), "--agents: .* names 'critic_agent', which is not a trainable"),
    (dict(lr=-1.0), "--lr: -1.0 is out of range; pass a number > 0"),
    (dict(rnak=4), "--rnak: 4 is not a known field"),
    (dict(steps=2.5), "--steps: 2.5 is not a whole number"),
    (dict(cond_dropout=0.5), "--cond-dropout: 0.5 is out of range; pass a number <= 0.3"),
    (dict(lr_schedule="linear"), "--lr-schedule: 'linear' is not allowed"),
    (dict(mod_tokens=99), "--mod-tokens: 99 is out of range"),
    (dict(preset="tiny-ltx"), "--agents: image_to_video_agent runs a 'ltx' model"),
    (dict(preset="nope"), "preset: unknown preset"),  # the command line spells it --preset
    (dict(optimizer="adamw8bit"), "--optimizer: adamw8bit needs a CUDA GPU"),
    (dict(resume=True), "--resume: .* has no checkpoint"),
])
def test_bad_options_are_input_errors_before_anything_is_written(data, tmp_path, options, message):
    from mora.training import train

    with pytest.raises(InputError, match=message):
        train(data, tmp_path / "run", **{**FAST, **options})
    assert not (tmp_path / "run").exists()


# --- adapter verification ------------------------------------------------------------------------------


@pytest.fixture
def adapter_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[1].adapter_dir, tmp_path / "adapter"))


def test_adapter_for_other_base_models_names_both(adapter_copy):
    from mora.training import load_adapter

    with pytest.raises(InputError, match=r"trained for image_to_video_agent on 'tiny/svd'.*runs 'tiny/ltx'"):
        load_adapter(adapter_copy, "tiny-ltx")
    load_adapter(adapter_copy, "tiny")  # its own base: fine


@pytest.mark.parametrize("damage, message", [
    ("delete", "is missing"),
    ("corrupt", "is corrupt"),
    ("json", "is not valid JSON"),
    ("nofolder", "is not an adapter folder"),
])
def test_missing_or_corrupt_adapter_files_are_input_errors(adapter_copy, damage, message):
    from mora.training import load_adapter

    target = adapter_copy
    if damage == "delete":
        (adapter_copy / f"{A4}.safetensors").unlink()
    elif damage == "corrupt":
        data = bytearray((adapter_copy / "modulation.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (adapter_copy / "modulation.safetensors").write_bytes(bytes(data))
    elif damage == "json":
        (adapter_copy / "adapter.json").write_text("{not json")
    else:
        target = adapter_copy / "nothing-here"
    with pytest.raises(InputError, match=message):
        load_adapter(target, "tiny")


def test_checkpoint_folders_are_adapters_too(trained):
    from mora.training import load_adapter

    _, result = trained
    adapter = load_adapter(result.run_dir / "checkpoints" / "step-2", "tiny")
    assert adapter.meta["steps"] == 2 and adapter.agents == [A2, A4]


def test_config_validates_without_torch_and_maps_roles():
    from mora.training import AGENTS, TrainConfig, parse_size

    assert parse_size("512x288") == (512, 288)
    cfg = TrainConfig(data="d", out="o", preset="tiny", agents="image_to_video_agent,text_to_image_agent").validate()
    assert cfg.agents == (A2, A4) and cfg.coupled  # chain order, both ends trained
    assert not TrainConfig(data="d", out="o", preset="tiny", agents=(A4,)).validate().coupled
    assert {a: info.role for a, info in AGENTS.items()} == {A2: "text_to_image", A3: "image_to_image",
                                                            A4: "image_to_video"}
