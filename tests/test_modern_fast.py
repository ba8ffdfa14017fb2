"""Preset `modern-fast` (few-step distilled weights) and its toy twin `tiny-modern-fast`.

The twin runs modern-fast's code path on CPU: LoRA adapters named by repo + file in the preset file are
loaded into the pipelines, and the few-step settings (steps, guidance, the Lightning scheduler, VACE's
flow shift) reach the pipeline calls. A Hub LoRA that is not to be had is one line naming it, before the
first step, as a missing model is.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from mora import media
from mora.config import PRESETS, LoraAdapter, get_preset
from mora.errors import InputError, ModelUnavailableError


def _record(monkeypatch, cls) -> list[dict]:
    """Every call of `cls` (a pipeline class): its keyword arguments and the pipeline itself."""
    calls: list[dict] = []
    original = cls.__call__

    def recording(self, *args, **kwargs):
        calls.append({**kwargs, "_pipe": self})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", recording)
    return calls


FASTWAN = "FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers"
FASTWAN_SIGMAS = (1.0, 0.757, 0.522)  # FastVideo's DMD timesteps 1000, 757, 522 as sigmas


def test_modern_fast_names_the_publishers_files_and_their_settings():
    fast, modern = PRESETS["modern-fast"], PRESETS["modern"]
    assert fast.capabilities == modern.capabilities
    assert {r: m for r, m in fast.models().items() if m != FASTWAN} == {
        r: m for r, m in modern.models().items() if r not in ("image_to_video", "extend")}
    t2i, edit = fast.spec("text_to_image"), fast.spec("image_to_image")
    assert t2i.lora_files() == {"lightx2v/Qwen-Image-2512-Lightning":
                                "Qwen-Image-2512-Lightning-4steps-V1.0-fp32.safetensors"}
    assert edit.lora_files() == {"lightx2v/Qwen-Image-Edit-2511-Lightning":
                                 "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-fp32.safetensors"}
    for spec in (t2i, edit):
        assert (spec.settings.steps, spec.settings.true_cfg_scale, spec.settings.lightning_shift) == (4, 1.0, 3.0)
    for role in ("connect", "edit_video"):
        s = fast.spec(role).settings
        assert (s.steps, s.guidance_scale, s.flow_shift) == (4, 1.0, 5.0)
    for role in ("image_to_video", "extend"):  # FastWan: full DMD weights, 3 fixed steps, no CFG
        spec = fast.spec(role)
        assert (spec.family, spec.model, spec.adapters) == ("wan22", FASTWAN, ())
        assert (spec.settings.steps, spec.settings.guidance_scale, spec.settings.dmd_sigmas) == (3, 1.0, FASTWAN_SIGMAS)
        assert modern.spec(role).settings.dmd_sigmas is None
    twin = PRESETS["tiny-modern-fast"]
    assert twin.is_tiny and twin.capabilities == fast.capabilities
    for role in fast.roles:  # the twin has the same few-step settings, at toy size
        a, b = fast.spec(role), twin.spec(role)
        assert (a.family, bool(a.adapters)) == (b.family, bool(b.adapters)), role
        for name in ("steps", "true_cfg_scale", "lightning_shift", "guidance_scale", "dmd_sigmas"):
            if a.adapters or a.model == FASTWAN:
                assert getattr(a.settings, name, None) == getattr(b.settings, name, None), (role, name)


def test_a_preset_file_names_a_hub_lora_by_repo_and_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "tiny-modern"\n[roles.text_to_image]\n'
                    'adapters = [{ repo = "org/lora", file = "a.safetensors", weight = 0.5 }]\n')
    spec = get_preset(None, preset_file=path).spec("text_to_image")
    assert spec.adapters == (LoraAdapter(repo="org/lora", file="a.safetensors", weight=0.5),)
    assert spec.adapters[0].source == "org/lora/a.safetensors"


@pytest.mark.parametrize("adapter, field, says", [
    ('{ repo = "org/lora" }', "adapters[0].file", "missing"),
    ('{ path = "x.safetensors", repo = "org/lora", file = "a.safetensors" }', "adapters[0]", "either path or repo"),
    ('{ weight = 0.5 }', "adapters[0]", "either path or repo"),
    ('{ repo = "./nowhere", file = "a.safetensors" }', "adapters[0].repo", "does not exist"),
])
def test_a_bad_lora_entry_is_one_line_naming_the_field(tmp_path, adapter, field, says):
    _refused(tmp_path, f'extends = "tiny-modern"\n[roles.text_to_image]\nadapters = [{adapter}]\n',
             f"roles.text_to_image.{field}", says)


def _refused(tmp_path, toml: str, field: str, says: str) -> None:
    """The preset file `toml` is refused in one line naming `field` and saying `says`."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(InputError) as caught:
        get_preset(None, preset_file=path)
    text = str(caught.value)
    assert "\n" not in text and field in text and says in text


def test_a_missing_hub_lora_stops_the_job_before_its_first_step(tmp_path, monkeypatch):
    import mora

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = tmp_path / "lora.toml"
    path.write_text('extends = "tiny-modern"\n[roles.text_to_image]\n'
                    'adapters = [{ repo = "nobody/no-such-lora", file = "a.safetensors" }]\n')
    with pytest.raises(ModelUnavailableError) as caught:
        mora.run("text-to-video", prompt="a fox", preset_file=str(path), out=tmp_path / "x.mp4", device="cpu",
                 progress=False, metrics=False)
    text = str(caught.value)
    assert "nobody/no-such-lora" in text and "hf download nobody/no-such-lora a.safetensors" in text
    assert not (tmp_path / "x.mp4").exists()


def test_loading_a_hub_lora_offline_is_one_clear_error(monkeypatch):
    from huggingface_hub import constants

    from mora.tools.weights import load_preset_loras

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    class Pipe:  # what diffusers raises for a file it cannot fetch: an OSError (hub errors are among them)
        def load_lora_weights(self, repo, **kwargs):
            raise OSError(f"{repo}: no such file {kwargs['weight_name']} in the cache")

    with pytest.raises(ModelUnavailableError, match="LoRA 'a.safetensors' of 'nobody/no-such-lora'"):
        load_preset_loras(Pipe(), (LoraAdapter(repo="nobody/no-such-lora", file="a.safetensors"),))


@pytest.fixture(scope="module")
def fast_runs(tmp_path_factory):
    """text-to-video and edit on tiny-modern-fast, with the pipelines' calls recorded."""
    from conftest import gradient_frames
    from diffusers import QwenImageEditPlusPipeline, QwenImagePipeline, WanVACEPipeline

    import mora

    folder = tmp_path_factory.mktemp("fast")
    source = folder / "source.mp4"
    media.write_video(gradient_frames(7, 96, 64), source, fps=8)
    options = dict(preset="tiny-modern-fast", seed=0, device="cpu", progress=False, metrics=False)
    with pytest.MonkeyPatch.context() as mp:
        calls = {cls.__name__: _record(mp, cls) for cls in (QwenImagePipeline, QwenImageEditPlusPipeline,
                                                             WanVACEPipeline)}
        t2v = mora.run("text-to-video", prompt="a red fox in snow", out=folder / "t2v.mp4", **options)
        edit = mora.run("edit", video=str(source), instruction="make it night", out=folder / "edit.mp4", **options)
    return dict(t2v=t2v, edit=edit, source=source, calls=calls)


def test_tiny_modern_fast_text_to_video_runs_the_lightning_recipe(fast_runs):
    assert fast_runs["t2v"].video_path.is_file() and fast_runs["t2v"].manifest["preset"] == "tiny-modern-fast"
    (call,) = fast_runs["calls"]["QwenImagePipeline"]
    assert call["num_inference_steps"] == 4 and call["true_cfg_scale"] == 1.0
    pipe = call["_pipe"]
    config = pipe.scheduler.config
    assert math.isclose(config.base_shift, math.log(3)) and math.isclose(config.max_shift, math.log(3))
    assert config.shift_terminal is None and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.get_active_adapters() == ["preset_0"]  # the preset's LoRA, loaded from its repo + file
    assert any("lora" in name for name, _ in pipe.transformer.named_parameters())


def test_tiny_modern_fast_edit_runs_both_distilled_loras(fast_runs):
    result = fast_runs["edit"]
    assert media.read_video(result.video_path).num_frames == media.read_video(fast_runs["source"]).num_frames
    (edit_call,) = fast_runs["calls"]["QwenImageEditPlusPipeline"]
    assert edit_call["num_inference_steps"] == 4 and edit_call["true_cfg_scale"] == 1.0
    assert math.isclose(edit_call["_pipe"].scheduler.config.base_shift, math.log(3))
    assert edit_call["_pipe"].get_active_adapters() == ["preset_0"]
    (vace_call,) = fast_runs["calls"]["WanVACEPipeline"]
    assert vace_call["num_inference_steps"] == 4 and vace_call["guidance_scale"] == 1.0
    assert vace_call["_pipe"].scheduler.config.flow_shift == 5.0
    assert vace_call["_pipe"].get_active_adapters() == ["preset_0"]


def test_the_toy_lora_changes_the_output():
    """The tiny LoRAs are not zero (a zero LoRA would load and change nothing, proving nothing)."""
    import torch
    from safetensors.torch import load_file

    from mora.tools import tiny_modern

    for name in tiny_modern.LORA_BUILDERS:
        weights = load_file(tiny_modern.ensure_lora(name) / tiny_modern.TINY_LORA_FILE)
        ups = [w for k, w in weights.items() if "lora_B" in k]
        assert ups and all(torch.count_nonzero(w) > 0 for w in ups), name


def test_mora_presets_lists_the_fast_presets_with_their_loras(capsys):
    import json

    from mora.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "modern-fast [text-motion, video-edit]" in out and "tiny-modern-fast [text-motion, video-edit]" in out
    assert ("Qwen/Qwen-Image-2512 + LoRA lightx2v/Qwen-Image-2512-Lightning/"
            "Qwen-Image-2512-Lightning-4steps-V1.0-fp32.safetensors") in out
    assert main(["presets", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny-modern-fast"]["roles"]["connect"]["adapters"] == ["tiny/wan-vace-distill/lightning.safetensors"]
    assert "adapters" not in rows["modern"]["roles"]["connect"]  # a role without LoRA lists none


# --- FastWan's DMD sampler (mora.tools.schedulers) on the toy Wan 2.2 TI2V model ---------------------------


def test_the_dmd_step_is_x0_then_fresh_noise_at_the_next_sigma():
    import torch

    from mora.tools.schedulers import DMDScheduler

    scheduler = DMDScheduler.with_sigmas(FASTWAN_SIGMAS)
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == pytest.approx([1000.0, 757.0, 522.0])
    x, v = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    scheduler.generator = torch.Generator().manual_seed(5)
    twin = torch.Generator().manual_seed(5)
    for t, sigma, after in zip(scheduler.timesteps, (1.0, 0.757, 0.522), (0.757, 0.522, 0.0)):
        x0 = x - sigma * v
        expected = (1 - after) * x0 + after * torch.randn(x.shape, generator=twin)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        assert torch.allclose(x, expected, atol=1e-6)


def _sampled(folder: Path, seed: int) -> dict:
    """One tiny-modern-fast image-to-video job: its Wan call, the transformer's timesteps, the scheduler's
    steps (the generator's state before and after each) and the frames handed to media.write_video."""
    import numpy as np
    from conftest import gradient_frames
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from PIL import Image

    import mora
    from mora.tools.runtime import release

    seen: dict = {"timesteps": [], "steps": [], "frames": []}
    monkeypatch = pytest.MonkeyPatch()
    calls = _record(monkeypatch, WanImageToVideoPipeline)
    forward, step, write = WanTransformer3DModel.forward, FlowMatchEulerDiscreteScheduler.step, media.write_video

    def recording_forward(self, *args, **kwargs):
        seen["timesteps"].append(float(kwargs["timestep"].max()))  # frame 0 (the image) is held at 0
        return forward(self, *args, **kwargs)

    def recording_step(self, *args, **kwargs):
        gen = kwargs.get("generator", getattr(self, "generator", None))
        before = None if gen is None else gen.get_state().clone()
        out = step(self, *args, **kwargs)
        seen["steps"].append((gen, before, None if gen is None else gen.get_state().clone()))
        return out

    def recording_write(frames, *args, **kwargs):
        seen["frames"].append(np.array(frames))
        return write(frames, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "forward", recording_forward)
    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "step", recording_step)
    monkeypatch.setattr(media, "write_video", recording_write)
    folder.mkdir(exist_ok=True)
    Image.fromarray(gradient_frames(1, 64, 64)[0]).save(folder / "first.png")
    try:
        mora.run("image-to-video", image=str(folder / "first.png"), prompt="waves roll in", preset="tiny-modern-fast",
                 seed=seed, out=folder / "v.mp4", device="cpu", progress=False, metrics=False)
    finally:
        monkeypatch.undo()
        release()
    (seen["call"],) = calls
    return seen


def test_tiny_modern_fast_image_to_video_runs_fastwans_three_renoised_steps(tmp_path):
    import torch

    from mora.tools.schedulers import DMDScheduler

    run = _sampled(tmp_path, seed=3)
    call = run["call"]
    assert call["num_inference_steps"] == 3 and call["guidance_scale"] == 1.0
    assert type(call["_pipe"].scheduler) is DMDScheduler and call["_pipe"].config.expand_timesteps
    assert run["timesteps"] == pytest.approx([1000.0, 757.0, 522.0])  # one transformer pass a step: no CFG
    assert len(run["steps"]) == 3
    for gen, before, after in run["steps"]:  # each step drew its noise from the call's CPU generator
        assert gen is call["generator"] and gen.device == torch.device("cpu")
        assert not torch.equal(before, after)


def test_the_same_seed_gives_the_same_fastwan_video(tmp_path):
    import numpy as np

    first, again, other = (_sampled(tmp_path / str(i), seed) for i, seed in enumerate((7, 7, 8)))
    (a,), (b,), (c,) = first["frames"], again["frames"], other["frames"]
    assert a.shape == b.shape and np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed (and so the re-noising) matters


@pytest.mark.parametrize("steps", [2, 4])
def test_steps_other_than_the_dmd_sigmas_are_one_line_naming_steps(tmp_path, steps):
    import mora

    image = tmp_path / "first.png"
    from conftest import gradient_frames
    from PIL import Image

    Image.fromarray(gradient_frames(1, 64, 64)[0]).save(image)
    with pytest.raises(InputError) as caught:
        mora.run("image-to-video", image=str(image), prompt="waves", preset="tiny-modern-fast", steps=steps,
                 out=tmp_path / "v.mp4", device="cpu", progress=False, metrics=False)
    text = str(caught.value)
    assert caught.value.param == "steps" and "\n" not in text and f"{steps} does not fit" in text and "pass 3" in text


def test_the_dmd_scheduler_refuses_other_steps_itself():
    from mora.tools.schedulers import DMDScheduler

    with pytest.raises(InputError, match="^steps: 5 does not fit this model's 3 fixed sampling steps"):
        DMDScheduler.with_sigmas(FASTWAN_SIGMAS).set_timesteps(5)
    with pytest.raises(InputError, match="^dmd_sigmas: "):
        DMDScheduler.with_sigmas((0.5, 1.0))


def test_an_llm_may_only_ask_fastwan_for_its_own_steps():
    from mora.limits import llm_bounds

    assert llm_bounds(PRESETS["modern-fast"], "image_to_video")["steps"] == (3, 3)
    assert llm_bounds(PRESETS["modern"], "image_to_video")["steps"] == (1, 100)


def test_modern_without_sigmas_calls_the_ti2v_pipeline_as_before(monkeypatch):
    """modern's settings (no dmd_sigmas): the repo's UniPC scheduler, 50 steps, CFG, on the toy weights."""
    import dataclasses

    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from PIL import Image

    from mora.tools import wan22
    from mora.tools.runtime import Runtime

    spec = dataclasses.replace(PRESETS["modern"].spec("image_to_video"), model="tiny/wan22-ti2v")
    calls, passes = _record(monkeypatch, WanImageToVideoPipeline), []
    forward = WanTransformer3DModel.forward
    monkeypatch.setattr(WanTransformer3DModel, "forward", lambda self, *a, **k: passes.append(1) or forward(self, *a, **k))
    wan22.generate(spec, Runtime(device="cpu", progress=False), image=Image.new("RGB", (64, 64)), prompt="x",
                   width=64, height=64, num_frames=5, segments=1, steps=spec.settings.steps, fps=24, seed=0)
    (call,) = calls
    assert (call["num_inference_steps"], call["guidance_scale"]) == (50, 5.0)
    assert type(call["_pipe"].scheduler) is UniPCMultistepScheduler and len(passes) == 100  # cond + uncond


def test_wan22_loads_a_ti2v_repo_whose_config_lacks_expand_timesteps(tmp_path):
    """FastWan's model_index names FastVideo's WanDMDPipeline: no expand_timesteps entry; the family sets it."""
    import json

    from mora.config import ModelSpec
    from mora.tools import wan22
    from mora.tools.modern_settings import tiny_settings
    from mora.tools.runtime import Runtime
    from mora.tools.weights import model_source

    folder = tmp_path / "fastwan"
    shutil.copytree(model_source("tiny/wan22-ti2v"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if k not in ("expand_timesteps", "boundary_ratio")}
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanDMDPipeline"}))
    pipe = wan22.load(ModelSpec("wan22", str(folder), tiny_settings("wan22")), Runtime(device="cpu", progress=False))
    assert pipe.config.expand_timesteps is True


@pytest.mark.parametrize("settings, field, says", [
    ("dmd_sigmas = [0.5, 1.0]", "dmd_sigmas", "not strictly decreasing"),
    ("dmd_sigmas = [1.0, 0.0]", "dmd_sigmas", "in (0, 1]"),
    ('dmd_sigmas = ["1.0"]', "dmd_sigmas", "number"),
    ("dmd_sigmas = [1.0, 0.5], steps = 3", "steps", "set steps = 2"),
])
def test_a_bad_dmd_sigmas_setting_is_one_line_naming_the_field(tmp_path, settings, field, says):
    _refused(tmp_path, f'extends = "tiny-modern-fast"\n[roles.image_to_video]\nsettings = {{ {settings} }}\n',
             f"roles.image_to_video.settings.{field}", says)


def test_a_preset_file_sets_and_unsets_dmd_sigmas(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "tiny-modern"\n[roles.image_to_video]\nsettings = { steps = 2, dmd_sigmas = [1, 0.5] }\n'
                    '[roles.extend]\nsettings = { dmd_sigmas = false }\n')
    preset = get_preset(None, preset_file=path)
    assert preset.spec("image_to_video").settings.dmd_sigmas == (1.0, 0.5)  # a TOML array, frozen as a tuple
    assert preset.spec("extend").settings.dmd_sigmas is None
    unset = tmp_path / "unset.toml"
    unset.write_text('extends = "tiny-modern-fast"\n[roles.extend]\nsettings = { dmd_sigmas = false, steps = 8 }\n')
    assert get_preset(None, preset_file=unset).spec("extend").settings.dmd_sigmas is None
