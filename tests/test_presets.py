"""Presets as files (issue 15): the built-in presets are TOML package data identical to the former Python
table; users add presets (`--preset-file`, `$MORA_HOME/presets/`) that extend others; invalid files are
exit 2 naming the file and field; `mora presets` lists them all. And preset `tiny-modern`, the toy
counterpart of `modern`: image-to-video animates the user's image as given, driven by the prompt;
`edit` re-renders every frame of the source with Wan VACE, the edited first frame as reference.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mora import media
from mora.cli import main
from mora.config import (
    BUILTIN_PRESET_DIR,
    CAPABILITIES,
    PRESETS,
    ROLES,
    get_preset,
    load_presets,
    read_preset_file,
)
from mora.errors import InputError
from mora.workflows.tasks import TASKS, route_for

# config.py's preset table before presets were files, as data: each role's family, model, refiner,
# settings class and settings (JSON keeps int, float, str, bool and null apart).
REFERENCE = Path(__file__).parent / "data" / "presets_v0_reference.json"


def _reference_presets() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))["presets"]


# --- built-in presets: one source, the TOML files ----------------------------------------------------


def test_builtin_presets_are_identical_to_the_former_python_table():
    old = _reference_presets()
    for name, before in old.items():
        after = PRESETS[name]
        assert after.description == before["description"]
        assert set(after.roles) == set(before["roles"]) and not after.capabilities
        for role, spec in before["roles"].items():
            new = after.roles[role]
            assert (new.family, new.model, new.refiner, new.adapters) == (spec["family"], spec["model"],
                                                                          spec["refiner"], ())
            assert type(new.settings).__name__ == spec["settings_class"]
            settings = dataclasses.asdict(new.settings)
            assert settings == spec["settings"], (name, role)
            # float stays float, None stays None: the same values and types the code saw before
            assert [type(v) for v in settings.values()] == [type(v) for v in spec["settings"].values()], (name, role)
            assert list(settings) == list(spec["settings"])  # the same fields, in the same order
    assert set(PRESETS) == set(old) | {"modern", "tiny-modern", "modern-fast", "tiny-modern-fast"}


def test_builtin_presets_are_package_data_files():
    files = sorted(p.stem for p in BUILTIN_PRESET_DIR.glob("*.toml"))
    assert files == sorted(PRESETS)
    for name in files:
        table, _ = read_preset_file(BUILTIN_PRESET_DIR / f"{name}.toml")
        assert table["name"] == name and PRESETS[name].source.endswith(f"{name}.toml")


def test_modern_presets_declare_their_capabilities():
    for name in ("modern", "tiny-modern"):
        preset = PRESETS[name]
        assert preset.capabilities == set(CAPABILITIES)
        assert {r: s.family for r, s in preset.roles.items()} == {
            "text_to_image": "qwen-image", "image_to_image": "qwen-image-edit", "image_to_video": "wan22",
            "extend": "wan22", "connect": "wan-vace", "edit_video": "wan-vace"}
    assert PRESETS["tiny-modern"].is_tiny and not PRESETS["modern"].is_tiny
    with pytest.raises(InputError, match="has no edit_video model"):
        PRESETS["mora"].spec("edit_video")


# The paper's routes, written out: presets without capabilities keep them step for step.
PAPER_ROUTES = {
    "text-to-video": [("prompt_agent", None), ("text_to_image_agent", "text_to_image"), ("review", None),
                      ("image_to_video_agent", "image_to_video")],
    "image-to-video": [("prompt_agent", None), ("image_to_image_agent", "edit_image"), ("review", None),
                       ("image_to_video_agent", "image_to_video")],
    "extend": [("image_to_video_agent", "extend_video")],
    "edit": [("prompt_agent", None), ("image_to_image_agent", "edit_image"), ("review", None),
             ("image_to_video_agent", "image_to_video")],
    "connect": [("video_connection_agent", "connect_videos")],
    "simulate": [("prompt_agent", None), ("text_to_image_agent", "text_to_image"), ("review", None),
                 ("image_to_video_agent", "image_to_video")],
}


@pytest.mark.parametrize("name", ["mora", "ltx", "mora-wan", "tiny", "tiny-ltx", "tiny-wan"])
def test_paper_presets_keep_the_paper_routes(name):
    for task in TASKS:
        steps = route_for(task, {}, 1, PRESETS[name].capabilities)
        assert [(s.agent, s.tool) for s in steps] == PAPER_ROUTES[task]


def test_capabilities_pick_the_routes():
    caps = PRESETS["modern"].capabilities
    assert [(s.agent, s.tool) for s in route_for("image-to-video", {}, 1, caps)] == [
        ("prompt_agent", None), ("image_to_video_agent", "image_to_video")]
    assert [(s.agent, s.tool) for s in route_for("edit", {}, 1, caps)] == [
        ("prompt_agent", None), ("image_to_image_agent", "edit_image"), ("review", None),
        ("image_to_video_agent", "edit_video")]
    for task in ("text-to-video", "extend", "connect", "simulate"):
        assert route_for(task, {}, 1, caps) == route_for(task, {}, 1)


# --- user presets ------------------------------------------------------------------------------------

ONE_CHANGE = """
extends = "tiny"
description = "tiny, with less motion"

[roles.image_to_video.settings]
motion_bucket_id = 100
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_a_user_preset_extends_tiny_and_changes_one_setting(tmp_path, capsys):
    path = _write(tmp_path, "calm", ONE_CHANGE)
    preset = get_preset(None, path)
    assert preset.name == "calm" and preset.source == str(path)
    assert preset.spec("image_to_video").settings == dataclasses.replace(
        PRESETS["tiny"].spec("image_to_video").settings, motion_bucket_id=100)
    assert {r: s for r, s in preset.roles.items() if r != "image_to_video"} == {
        r: s for r, s in PRESETS["tiny"].roles.items() if r != "image_to_video"}
    out = tmp_path / "calm.mp4"
    code = main(["text-to-video", "a red fox running through snow", "--preset-file", str(path), "--seed", "0",
                 "--out", str(out), "--device", "cpu", "--quiet", "--json"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["preset"] == "calm"
    (video_settings,) = [s for s in manifest["settings"] if s["tool"] == "image_to_video"]
    assert video_settings["motion_bucket_id"] == 100


def test_a_family_change_starts_from_that_familys_defaults_and_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "weights").mkdir()
    path = _write(tmp_path, "local", """
extends = "mora"
[roles.connect]
family = "wan"
model = "./weights"
settings = { num_frames = 33 }
""")
    spec = get_preset("local", path).spec("connect")
    assert spec.model == str((tmp_path / "weights").resolve())
    assert spec.settings.num_frames == 33 and spec.settings.steps == 50  # Wan's defaults, not LTX's


INVALID = {
    "unknown-family": ('extends = "tiny"\n[roles.connect]\nfamily = "sora"\nmodel = "x/y"\n',
                       "roles.connect.family", "is not a pipeline family"),
    "unknown-setting": ('extends = "tiny"\n[roles.image_to_video.settings]\nmotion_bucket = 100\n',
                        "roles.image_to_video.settings.motion_bucket", "is not a known field; use one of the svd settings"),
    "wrong-type": ('extends = "tiny"\n[roles.image_to_video.settings]\nsteps = "many"\n',
                   "roles.image_to_video.settings.steps", "'many' is not a whole number"),
    "size-multiple": ('extends = "tiny-modern"\n[roles.image_to_video.settings]\nwidth = 80\n',
                      "roles.image_to_video.settings.width", "not a multiple of 32"),
    "frame-rule": ('extends = "tiny-modern"\n[roles.image_to_video.settings]\nnum_frames = 10\n',
                   "roles.image_to_video.settings.num_frames", "4k+1"),
    "missing-path": ('extends = "tiny"\n[roles.image_to_image]\nmodel = "./no/such/folder"\n',
                     "roles.image_to_image.model", "does not exist"),
    "missing-adapter": ('extends = "tiny"\n[roles.text_to_image]\nadapters = [{ path = "nope.safetensors" }]\n',
                        "roles.text_to_image.adapters[0].path", "does not exist"),
    "unknown-extends": ('extends = "sora"\n', "extends", "is not a preset"),
    "unknown-role": ('extends = "tiny"\n[roles.music]\nfamily = "svd"\nmodel = "x/y"\n', "roles.music",
                     "is not a known field; use one of text_to_image"),
    "unknown-field": ('extends = "tiny"\nmodels = 3\n', "models", "is not a known field; use only name"),
    "capability": ('extends = "tiny"\ncapabilities = ["video-edit"]\n', "capabilities", "needs role edit_video"),
    "missing-role": ('description = "x"\n[roles.connect]\nfamily = "ltx"\nmodel = "tiny/ltx"\n',
                     "roles.text_to_image", "missing"),
    "builtin-name": ('name = "mora"\nextends = "tiny"\n', "name", "is a built-in preset"),
    "syntax": ('extends = "tiny\n', "not valid TOML", ""),
    # the file's models (mora.config._PresetFile, strict types, counts >= 1) speak through mora.validation
    "zero-steps": ('extends = "tiny"\n[roles.connect.settings]\nsteps = 0\n', "roles.connect.settings.steps",
                   "0 is out of range; pass a number >= 1"),
    "float-for-int": ('extends = "tiny"\n[roles.image_to_video.settings]\nfps = 7.5\n',
                      "roles.image_to_video.settings.fps", "7.5 is not a whole number"),
    "adapter-key": ('extends = "tiny"\n[roles.text_to_image]\nadapters = [{ path = "a.safetensors", scale = 1 }]\n',
                    "roles.text_to_image.adapters[0].scale", "is not a known field; give path (or repo and file) and optionally weight"),
    "adapter-weight": ('extends = "tiny"\n[roles.text_to_image]\nadapters = [{ path = "a.safetensors", weight = "x" }]\n',
                       "roles.text_to_image.adapters[0].weight", "'x' is not a number; write e.g. 0.8"),
    "role-key": ('extends = "tiny"\n[roles.connect]\nmodle = "x/y"\n', "roles.connect.modle",
                 "is not a known field; use only family, model"),
    "bad-name": ('name = "my preset"\nextends = "tiny"\n', "name", "'my preset' is not a preset name; use one word"),
    "capability-name": ('extends = "tiny"\ncapabilities = ["flying"]\n', "capabilities",
                        "'flying' is not a capability; use text-motion"),
    "settings-not-table": ('extends = "tiny"\n[roles.connect]\nsettings = 3\n', "roles.connect.settings",
                           "3 is not an object; write [roles.<role>.settings]"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_preset_file_is_exit_2_naming_file_and_field(tmp_path, capsys, case):
    text, field, problem = INVALID[case]
    path = _write(tmp_path, case, text)
    out = tmp_path / "x.mp4"
    code = main(["text-to-video", "a fox", "--preset-file", str(path), "--out", str(out), "--device", "cpu",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mora: error: --preset-file: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and field in err, err
    assert problem in err and "; " in err, err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_presets_json_lists_builtin_and_user_presets(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    (home / "presets").mkdir(parents=True)
    _write(home / "presets", "calm", ONE_CHANGE)
    extra = _write(tmp_path, "fast-modern", 'extends = "tiny-modern"\n[roles.image_to_video.settings]\nsteps = 1\n')
    monkeypatch.setenv("MORA_HOME", str(home))
    assert main(["presets", "--json", "--preset-file", str(extra)]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert list(by_name)[:len(PRESETS)] == list(PRESETS)
    assert set(by_name) == set(PRESETS) | {"calm", "fast-modern"}
    assert by_name["mora"]["source"] == "built-in"
    assert by_name["calm"]["source"] == str(home / "presets" / "calm.toml")
    assert by_name["fast-modern"]["capabilities"] == ["text-motion", "video-edit"]
    assert by_name["modern"]["roles"]["edit_video"] == {"family": "wan-vace",
                                                        "model": "Wan-AI/Wan2.1-VACE-14B-diffusers"}
    assert by_name["mora"]["roles"]["text_to_image"]["refiner"] == "stabilityai/stable-diffusion-xl-refiner-1.0"
    assert set(by_name["tiny"]["roles"]) == set(ROLES)
    assert main(["presets"]) == 0 and "tiny-modern [text-motion, video-edit]" in capsys.readouterr().out
    assert "calm" in load_presets() and get_preset("calm").spec("image_to_video").settings.motion_bucket_id == 100


def test_a_bad_file_in_mora_home_does_not_block_builtin_presets(tmp_path, monkeypatch):
    (tmp_path / "presets").mkdir()
    _write(tmp_path / "presets", "broken", 'extends = "sora"\n')
    monkeypatch.setenv("MORA_HOME", str(tmp_path))
    assert get_preset("tiny") is PRESETS["tiny"]
    with pytest.raises(InputError, match=r"\$MORA_HOME/presets .*broken\.toml: extends: 'sora' is not a preset"):
        get_preset("calm")


# --- tiny-modern: text drives the motion, edits keep the motion ---------------------------------------


def _record(monkeypatch, cls) -> list[dict]:
    calls: list[dict] = []
    original = cls.__call__

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", recording)
    return calls


@pytest.fixture(scope="module")
def modern_runs(tmp_path_factory):
    """image-to-video and edit on tiny-modern, with the video pipelines' call arguments recorded."""
    from diffusers import WanImageToVideoPipeline, WanVACEPipeline

    import mora

    folder = tmp_path_factory.mktemp("modern")
    image = folder / "user.png"
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)).save(image)
    source = folder / "source.mp4"
    from conftest import gradient_frames

    media.write_video(gradient_frames(7, 96, 64), source, fps=8)
    options = dict(preset="tiny-modern", seed=0, device="cpu", progress=False, metrics=False)
    with pytest.MonkeyPatch.context() as mp:
        i2v_calls = _record(mp, WanImageToVideoPipeline)
        vace_calls = _record(mp, WanVACEPipeline)
        i2v = mora.run("image-to-video", image=str(image), prompt="waves roll in slowly", out=folder / "i2v.mp4",
                       **options)
        edit = mora.run("edit", video=str(source), instruction="make it night", out=folder / "edit.mp4", **options)
    return dict(image=image, source=source, i2v=i2v, edit=edit, i2v_calls=i2v_calls, vace_calls=vace_calls)


def test_tiny_modern_image_to_video_animates_the_users_image_with_the_users_prompt(modern_runs):
    from mora.tools.sizing import cover_resize

    manifest = modern_runs["i2v"].manifest
    assert manifest["route"] == ["prompt_agent", "image_to_video_agent"]  # no image-editing step
    (call,) = manifest["tool_calls"]
    assert call["tool"] == "image_to_video"
    assert call["args"]["image_path"] == str(modern_runs["image"])  # the user's file, not an edited copy
    assert call["args"]["prompt"].startswith("waves roll in slowly")  # the user's prompt drives the motion
    assert manifest["models"]["image_to_video"] == "tiny/wan22-ti2v"
    (pipe_call,) = modern_runs["i2v_calls"]
    assert pipe_call["prompt"] == call["args"]["prompt"]
    given = cover_resize(Image.open(modern_runs["image"]).convert("RGB"), pipe_call["width"], pipe_call["height"])
    assert np.array_equal(np.asarray(pipe_call["image"]), np.asarray(given))  # the image as given, resized only
    assert manifest["video"]["num_frames"] == 9


def test_tiny_modern_edit_re_renders_every_source_frame_with_the_edited_first_frame(modern_runs):
    from mora.tools import wan_vace
    from mora.tools.sizing import cover_resize

    manifest = modern_runs["edit"].manifest
    assert manifest["route"] == ["prompt_agent", "image_to_image_agent", "image_to_video_agent"]
    assert [c["tool"] for c in manifest["tool_calls"]] == ["edit_image", "edit_video"]
    edited_frame = manifest["tool_calls"][0]["output"]
    args = manifest["tool_calls"][1]["args"]
    assert args["video_path"] == str(modern_runs["source"]) and args["image_path"] == edited_frame
    source = media.read_video(modern_runs["source"])
    (call,) = modern_runs["vace_calls"]
    w, h = call["width"], call["height"]
    reference = np.asarray(cover_resize(Image.open(edited_frame).convert("RGB"), w, h))
    controls = wan_vace.control_frames(source.frames, w, h, "gray")
    assert len(call["video"]) == 9 and len(controls) == source.num_frames == 7  # 7 padded to 4k+1
    assert np.array_equal(np.asarray(call["video"][0]), reference)  # frame 0: the edited first frame, kept
    for t in range(1, 7):  # every other source frame is the control input
        assert np.array_equal(np.asarray(call["video"][t]), np.asarray(controls[t]))
    assert [np.asarray(r).tolist() for r in call["reference_images"]] == [reference.tolist()]
    video = manifest["video"]
    assert video["num_frames"] == source.num_frames  # the source's frame count, size and rate
    assert (video["width"], video["height"], video["fps"]) == (96, 64, source.fps)
    assert media.read_video(modern_runs["edit"].video_path).num_frames == source.num_frames


@pytest.mark.slow
def test_tiny_modern_runs_the_other_four_tasks(modern_runs, tmp_path):
    import mora

    options = dict(preset="tiny-modern", seed=0, device="cpu", progress=False, metrics=False)
    jobs = {
        "text-to-video": dict(prompt="a red fox running through snow"),
        "extend": dict(video=str(modern_runs["source"]), prompt="the colours keep drifting"),
        "connect": dict(video_a=str(modern_runs["source"]), video_b=str(modern_runs["i2v"].video_path)),
        "simulate": dict(prompt="a voxel forest at dawn"),
    }
    for task, inputs in jobs.items():
        result = mora.run(task, **inputs, out=tmp_path / f"{task}.mp4", **options)
        assert result.video_path.is_file() and result.manifest["preset"] == "tiny-modern"
        models = {c["tool"]: c["model"] for c in result.manifest["tool_calls"]}
        assert {m for ids in models.values() for m in ids} <= set(PRESETS["tiny-modern"].models().values())
    assert models == {"text_to_image": ["tiny/qwen-image"], "image_to_video": ["tiny/wan22-ti2v"]}


# --- real weights (never in CI): what random weights cannot show ------------------------------------


def _real_weights(*roles: str) -> bool:
    from mora.tools.weights import model_available

    return all(model_available(m) for r in roles for m in PRESETS["modern"].spec(r).model_ids())


@pytest.mark.gpu
def test_modern_first_frame_is_the_input_and_edits_keep_the_sources_motion(tmp_path):
    import torch

    if not torch.cuda.is_available() or not _real_weights("image_to_video", "image_to_image", "edit_video"):
        pytest.skip("needs a CUDA GPU and the modern preset's weights in the Hugging Face cache")
    import cv2
    from conftest import gradient_frames

    import mora

    image = tmp_path / "in.png"
    Image.fromarray(gradient_frames(1, 832, 480)[0]).save(image)
    opts = dict(preset="modern", seed=0, device="cuda", num_frames=33, progress=False, metrics=False)
    i2v = mora.run("image-to-video", image=str(image), prompt="the colours drift slowly to the right",
                   out=tmp_path / "i2v.mp4", width=832, height=480, **opts)
    first = media.read_video(i2v.video_path).frames[0].astype(float)
    expected = np.asarray(Image.open(image).convert("RGB").resize(first.shape[1::-1])).astype(float)
    assert np.abs(first - expected).mean() < 12  # frame 0 is the input image (out of 255)

    edit = mora.run("edit", video=str(i2v.video_path), instruction="make it a watercolor painting",
                    out=tmp_path / "edit.mp4", **opts)
    src, out = media.read_video(i2v.video_path).frames, media.read_video(edit.video_path).frames

    def flows(frames):
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                         for a, b in zip(gray, gray[1:], strict=False)])

    a, b = flows(src), flows(out)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5  # the edit moves as the source does


# --- LoRA adapters named in a preset file ------------------------------------------------------------


def test_a_preset_files_lora_adapter_is_loaded_into_its_roles_pipeline(tmp_path, tiny_tools_factory):
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from mora.tools import runtime
    from mora.tools.weights import from_pretrained

    pipe = from_pretrained(StableDiffusionXLPipeline, "tiny/sdxl-base")
    # random (not zero-initialised) LoRA weights, so the adapter visibly changes the output
    pipe.unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False))
    StableDiffusionXLPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    path = _write(tmp_path, "styled", 'extends = "tiny"\n[roles.text_to_image]\nrefiner = false\n'
                  'adapters = [{ path = "lora/pytorch_lora_weights.safetensors", weight = 0.5 }]\n')
    preset = get_preset("styled", path)
    (adapter,) = preset.spec("text_to_image").adapters
    assert adapter.weight == 0.5 and Path(adapter.path).is_file()
    plain = get_preset(None, _write(tmp_path, "plain", 'extends = "tiny"\n[roles.text_to_image]\nrefiner = false\n'))
    images = [np.asarray(Image.open(tiny_tools_factory(tmp_path / p.name, preset=p).text_to_image("a fox", seed=0)))
              for p in (preset, plain)]
    assert not np.array_equal(*images)
    keys = [k for k in runtime.cached_keys() if "+lora:" in k[1] and k[0] == "sdxl"]  # other tests cache theirs
    assert keys and keys[0][0] == "sdxl" and adapter.path in keys[0][1]
    assert runtime._CACHE[keys[0]].get_list_adapters()["unet"] == ["preset_0"]


def test_image_to_video_edits_the_image_only_when_asked_with_a_text_motion_preset():
    from pathlib import Path

    from mora.workflows.route_run import RouteRun
    from mora.workflows.tasks import route_for

    given = {"image": "cat.png", "prompt": "the cat jumps"}
    asked = {**given, "instruction": "make it night"}
    assert [s.tool for s in route_for("image-to-video", given, 1, {"text-motion"})] == [None, "image_to_video"]
    assert [s.tool for s in route_for("image-to-video", asked, 1, {"text-motion"})] == [
        None, "edit_image", None, "image_to_video"]  # prompt, the requested edit, the review gate, the video
    # the paper's route always adapts the image; a given instruction is the one it uses
    steps = list(route_for("image-to-video", asked))
    assert [s.tool for s in steps] == [None, "edit_image", None, "image_to_video"]
    job = RouteRun("image-to-video", asked, {}, 0, steps, Path("a"), images=["cat.png"])
    assert job.scripted_call("edit_image")["instruction"] == "make it night"
