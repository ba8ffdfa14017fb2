"""Preset `modern-fast` (few-step distilled weights) and its toy twin `tiny-modern-fast`.

The twin runs modern-fast's code path on CPU: LoRA adapters named by repo + file in the preset file are
loaded into the pipelines, and the few-step settings (steps, guidance, the Lightning scheduler, VACE's
flow shift) reach the pipeline calls. A Hub LoRA that is not to be had is one line naming it, before the
first step, as a missing model is.
"""

from __future__ import annotations

import math

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


def test_modern_fast_names_the_publishers_files_and_their_settings():
    fast, modern = PRESETS["modern-fast"], PRESETS["modern"]
    assert fast.models() == modern.models() and fast.capabilities == modern.capabilities
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
    assert fast.spec("image_to_video") == modern.spec("image_to_video")  # no confirmed distilled TI2V-5B path
    twin = PRESETS["tiny-modern-fast"]
    assert twin.is_tiny and twin.capabilities == fast.capabilities
    for role in fast.roles:  # the twin has the same few-step settings, at toy size
        a, b = fast.spec(role), twin.spec(role)
        assert (a.family, bool(a.adapters)) == (b.family, bool(b.adapters)), role
        for name in ("steps", "true_cfg_scale", "lightning_shift", "guidance_scale"):
            if a.adapters:
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
    path = tmp_path / "bad.toml"
    path.write_text(f'extends = "tiny-modern"\n[roles.text_to_image]\nadapters = [{adapter}]\n')
    with pytest.raises(InputError) as caught:
        get_preset(None, preset_file=path)
    text = str(caught.value)
    assert "\n" not in text and f"roles.text_to_image.{field}" in text and says in text


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

    from mora.tools.runtime import load_preset_loras

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
