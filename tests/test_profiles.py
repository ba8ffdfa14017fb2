"""Execution profiles on the tiny preset, on the CPU: the same pixels in every profile, what each
profile records that it applied, the out-of-memory retry in low-vram, `auto`, and the benchmark
script (`benchmarks/run.py`) end to end on tiny models and as a full-size dry run.

GPU-only choices (compile, channels_last, model CPU offload) cannot run here; what can be checked
on a CPU is that preparing them does not fail and that off-GPU they are recorded as skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_frames
from PIL import Image

from mora import media
from mora.config import get_preset
from mora.tools import ltx, profiles, runtime, sdxl, svd, weights
from mora.tools.runtime import Runtime
from mora.tools.toolset import Toolset

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "run.py"
SAME_OUTPUT_PROFILES = ("balanced", "fast", "low-vram")

# Profiles change where and how models run, not what they compute. Off-GPU the only numeric change
# is fast's fused QKV projections (one matmul instead of three: a different float summation order,
# ~1e-6 relative in fp32), which can flip a rounding to uint8 here and there; the videos also go
# through H.264, which can spread such a flip over a few neighbouring pixels. A mean absolute
# difference of 1.0 (0-255) allows that and still catches any real change: a different decode
# chunk or VAE tiling moved the mean by 1.6-7.5 on these inputs.
SAME_OUTPUT_TOL = 1.0


def mad(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts and ends with no cached pipelines (profiles are part of the cache key)."""
    runtime.release()
    yield
    runtime.release()


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared CPU, two OpenMP threads can be several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def media_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("profile-inputs")
    image = d / "frame.png"
    Image.fromarray(gradient_frames(1, 96, 64)[0]).save(image)
    a, b = d / "a.mp4", d / "b.mp4"
    media.write_video(gradient_frames(5, 96, 64), a, fps=8)
    media.write_video(gradient_frames(5, 96, 64, shift=9)[::-1], b, fps=8)
    return dict(image=image, a=a, b=b)


# --- (1) the same pixels in every profile ------------------------------------------------------------


def test_profiles_give_the_same_pixels(tiny_tools_factory, media_inputs, tmp_path, one_thread):
    """Equal seeds: text_to_image, image_to_video (4 frames: the SVD decode chunk matters) and
    connect_videos agree across balanced, fast and low-vram within SAME_OUTPUT_TOL (placement only: fast's
    step cache, approximate by design, is off)."""
    outputs = {}
    for profile in SAME_OUTPUT_PROFILES:
        runtime.release()  # separate pipelines per profile, never a cache hit across profiles
        tools = tiny_tools_factory(tmp_path / profile, profile=profile, cache="none")
        image = tools.text_to_image(prompt="a lighthouse at dusk", seed=11, steps=2)
        video = tools.image_to_video(image_path=str(media_inputs["image"]), seed=11, steps=2, segments=1)
        joined = tools.connect_videos(first_video=str(media_inputs["a"]), second_video=str(media_inputs["b"]),
                                      seed=11, steps=2, num_frames=5)
        assert {c["profile"] for c in tools.calls} == {profile}
        outputs[profile] = dict(
            image=np.asarray(media.read_image(image)), video=media.read_video(video).frames,
            connect=media.read_video(joined).frames,
        )
    reference = outputs["balanced"]
    assert reference["video"].shape[0] == 4
    for profile in ("fast", "low-vram"):
        for kind, pixels in outputs[profile].items():
            diff = mad(reference[kind], pixels)
            assert diff <= SAME_OUTPUT_TOL, f"{kind} in {profile} differs from balanced by {diff:.3f} (mean, 0-255)"


def test_decode_chunk_is_the_presets_in_every_profile_but_paper(monkeypatch):
    # SVD's temporal decoder mixes the frames of a chunk: the chunk belongs to the output, not the profile.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * profiles.GIB, 80 * profiles.GIB))
    for profile in SAME_OUTPUT_PROFILES:
        for device in ("cpu", "cuda"):
            assert profiles.decode_chunk(profile, device, 8, 25, 1024, 576) == 8
            assert profiles.decode_chunk(profile, device, 8, 4, 96, 64) == 4
    assert profiles.decode_chunk("paper", "cuda", 8, 25, 1024, 576) == 12  # the paper code's


def test_low_vram_decodes_smaller_chunks_only_when_memory_is_short(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * profiles.GIB, 8 * profiles.GIB))
    chunk = profiles.decode_chunk("low-vram", "cuda", 8, 25, 1024, 576)
    assert 1 <= chunk < 8
    assert "differ slightly" in caplog.text
    assert profiles.decode_chunk("balanced", "cuda", 8, 25, 1024, 576) == 8  # other profiles never shrink it


# --- (2) what each profile records -------------------------------------------------------------------


def _loaded(profile: str, tmp_path: Path):
    tools = Toolset(preset="tiny", device="cpu", profile=profile, output_dir=tmp_path, progress=False)
    preset = tools.preset
    base, refiner = sdxl.load(preset.spec("text_to_image"), tools.runtime)
    video = svd.load(preset.spec("image_to_video"), tools.runtime)
    connect = ltx.load(preset.spec("connect"), tools.runtime)
    return base, refiner, video, connect


def test_fast_on_cpu_records_fused_qkv_and_skipped_gpu_steps(tmp_path):
    base, refiner, video, connect = _loaded("fast", tmp_path)
    for pipe in (base, refiner, video, connect):
        assert "no compile/channels_last off-GPU" in pipe._mora_profile
        assert not any("compile" in a and "no compile" not in a for a in pipe._mora_profile)
    assert "fused QKV" in base._mora_profile
    # the fused projections are really in place on SDXL's UNet
    assert any(getattr(m, "fused_projections", False) for m in base.unet.modules())


def test_low_vram_on_cpu_records_resident_and_only_exact_vae_savings(tmp_path):
    base, refiner, video, connect = _loaded("low-vram", tmp_path)
    for pipe in (base, refiner, video, connect):
        assert "resident on cpu (offload needs CUDA)" in pipe._mora_profile
        assert "model CPU offload" not in pipe._mora_profile
        assert "VAE tiling" not in pipe._mora_profile  # tiling changes pixels
        assert pipe.device.type == "cpu"
    assert "VAE slicing" in base._mora_profile


def test_balanced_and_paper_record_their_choices(tmp_path):
    base, _, video, _ = _loaded("balanced", tmp_path)
    assert base._mora_profile == [] and video._mora_profile == []
    runtime.release()
    base, _, video, _ = _loaded("paper", tmp_path)
    assert base._mora_profile == ["paper choices"]
    # the paper code offloads SVD; off-GPU that is recorded as not possible
    assert video._mora_profile == ["paper choices", "resident on cpu (offload needs CUDA)"]


def _run_small(pipe, seed: int = 5) -> np.ndarray:
    """One short call of a tiny pipeline at 64x64, as numpy in [0, 1]."""
    gen = torch.Generator("cpu").manual_seed(seed)
    name = type(pipe).__name__
    if name == "StableVideoDiffusionPipeline":
        image = Image.fromarray(gradient_frames(1, 64, 64)[0])
        return pipe(image, width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4,
                    generator=gen, output_type="np").frames[0]
    if name == "LTXConditionPipeline":
        return pipe(prompt="a fox in snow", width=64, height=64, num_frames=9, num_inference_steps=2,
                    generator=gen, output_type="np").frames[0]
    return pipe(prompt="a fox in snow", width=64, height=64, num_inference_steps=2, generator=gen,
                output_type="np").images[0]


@pytest.mark.parametrize("family", ["sdxl-base", "svd", "ltx"])
def test_fast_gpu_branch_prepares_compiles_and_keeps_the_output(family, monkeypatch, one_thread):
    """fast's CUDA branch on the CPU: channels_last on 2D convolutions only (SVD's UNet and VAE and
    LTX's VAE have Conv3d, on which a whole-module channels_last raises "required rank 4"), fused
    QKV, and torch.compile (regional with fullgraph where diffusers declares repeated blocks). The
    compiler backend is swapped for `eager` so dynamo traces the real graphs without a C++ build;
    the result must match the plain pipeline's. Fresh pipelines, outside the cache."""
    from diffusers import LTXConditionPipeline, StableDiffusionXLPipeline, StableVideoDiffusionPipeline

    cls = {"sdxl-base": StableDiffusionXLPipeline, "svd": StableVideoDiffusionPipeline,
           "ltx": LTXConditionPipeline}[family]
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compile_(self, *a, **{**k, "backend": "eager"}))
    reference = _run_small(weights.from_pretrained(cls, f"tiny/{family}"))
    pipe = weights.from_pretrained(cls, f"tiny/{family}")
    try:
        applied = profiles._fast(pipe, cuda=True)
        expected = {"sdxl-base": ["fused QKV", "unet channels_last", "vae channels_last", "regional torch.compile"],
                    "svd": ["fused QKV", "unet channels_last", "vae channels_last", "torch.compile"],
                    "ltx": ["fused QKV", "regional torch.compile"]}[family]  # LTX's VAE is all Conv3d
        assert applied == expected
        convs = [m for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
        fast = _run_small(pipe)
    finally:
        torch._dynamo.reset()
    assert fast.shape == reference.shape
    assert float(np.abs(fast - reference).mean()) * 255 <= SAME_OUTPUT_TOL


# --- (3) out-of-memory retry ---------------------------------------------------------------------------


def _oom_once(monkeypatch):
    real = sdxl.text_to_image
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[1].profile)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sdxl, "text_to_image", flaky)
    return calls


def test_oom_in_balanced_retries_once_in_low_vram(tiny_tools_factory, tmp_path, monkeypatch):
    calls = _oom_once(monkeypatch)
    tools = tiny_tools_factory(tmp_path, profile="balanced")
    out = tools.text_to_image(prompt="a lighthouse at dusk", seed=1, steps=1)
    assert Path(out).is_file()
    assert calls == ["balanced", "low-vram"]
    assert len(tools.oom_retries) == 1
    assert {k: tools.oom_retries[0][k] for k in ("tool_call", "from", "to")} == {
        "tool_call": 1, "from": "balanced", "to": "low-vram"}
    assert tools.oom_retries[0]["applies_to"] == "this step only"
    assert tools.runtime.profile == "balanced"  # the next step runs in the job's profile again
    assert tools.calls[-1]["profile"] == "low-vram"  # the manifest says the failing step ran in low-vram
    assert all(key[4] == "low-vram" for key in runtime.cached_keys())  # balanced's pipelines were released


def test_oom_retry_releases_the_failed_pipeline_before_retrying(tiny_tools_factory, tmp_path, monkeypatch):
    """The retry runs outside the except block: the failed call's frames (and pipelines) are gone by then."""
    import gc
    import weakref

    real, real_load = sdxl.text_to_image, sdxl.load
    refs, alive_at_retry = [], []

    def flaky(spec, rt, **kwargs):
        if not refs:
            pipe, _ = real_load(spec, rt)  # the pipeline is loaded and held by this frame when the OOM hits
            refs.append(weakref.ref(pipe))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated after loading)")
        gc.collect()
        alive_at_retry.append(refs[0]() is not None)
        return real(spec, rt, **kwargs)

    monkeypatch.setattr(sdxl, "text_to_image", flaky)
    tools = tiny_tools_factory(tmp_path, profile="balanced")
    assert Path(tools.text_to_image(prompt="a lighthouse at dusk", seed=1, steps=1)).is_file()
    assert alive_at_retry == [False]


def test_oom_in_low_vram_propagates(tiny_tools_factory, tmp_path, monkeypatch):
    calls = _oom_once(monkeypatch)
    tools = tiny_tools_factory(tmp_path / "out", profile="low-vram")
    with pytest.raises(torch.OutOfMemoryError):
        tools.text_to_image(prompt="a lighthouse at dusk", seed=1, steps=1)
    assert calls == ["low-vram"]
    assert tools.oom_retries == [] and tools.calls == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- (4) auto ---------------------------------------------------------------------------------------------


def test_auto_profile_on_cpu_is_balanced(tmp_path):
    assert profiles.auto_profile("cpu") == "balanced"
    assert Runtime(device="cpu", profile="auto").profile == "balanced"
    assert Toolset(preset="tiny", device="cpu", profile="auto", output_dir=tmp_path).runtime.profile == "balanced"


# --- (5) the benchmark script ------------------------------------------------------------------------------


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # MORA_HOME: the test session's private cache (conftest)
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def _bench_module():
    spec = importlib.util.spec_from_file_location("mora_benchmark_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_tiny_runs_end_to_end(tmp_path):
    # Small settings keep it to seconds; one thread keeps it steady on a busy shared CPU.
    result = _bench("--scale", "tiny", "--device", "cpu", "--steps", "1", "--size", "32x32", "--threads", "1",
                    "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup \d+\.\d\d", lines[-1]), lines[-1]
    jobs = [line for line in lines if line.startswith("text-to-video ")]
    for profile in ("paper", "balanced", "fast", "low-vram"):
        assert any(line.split()[1] == profile for line in jobs), f"no job row for {profile}"
        assert f"== text-to-video, profile {profile}: components of the timed run ==" in result.stdout
    assert "svd.unet" in result.stdout and "sdxl-refiner.unet" in result.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert f"speedup {data['speedup']:.2f}" == lines[-1]
    timed = data["profiles"]["fast"]["tasks"]["text-to-video"]
    assert timed["seconds"] > 0 and timed["components"]["svd.unet"]["calls"] >= 1
    assert data["flops"]["text-to-video"]["svd.unet"] > 0  # the counting pass attributed FLOPs
    assert "no compile/channels_last off-GPU" in data["profiles"]["fast"]["applied"]["sdxl-base"]


def test_benchmark_full_dry_run_matches_verified_parameter_counts():
    bench = _bench_module()
    path = next(p for p in bench.arch_candidates(None) if p.is_file())  # benchmarks/ ships a copy
    arch = json.loads(path.read_text())
    result = _bench("--scale", "full", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    verified = [(f"{label}.{attr}", arch[key]["params"]) for label, attr, key, _ in bench.CHECKS
                if key and arch[key].get("verified")]
    assert len(verified) >= 5
    for component, params in verified:
        assert f"{params:,}" in rows[component] and " ok " in rows[component], rows[component]
    assert f"dry run: {len(verified)}/{len(verified)} verified parameter counts match" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_benchmark_cuda_without_gpu_fails_clearly():
    result = _bench("--scale", "full", "--device", "cuda", timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU is available" in result.stderr and "Traceback" not in result.stderr


def test_benchmark_full_preset_keeps_the_papers_settings():
    bench = _bench_module()
    preset, paper = bench.full_preset(), get_preset("mora")
    for role in paper.roles:
        assert preset.spec(role).settings == paper.spec(role).settings
        assert preset.spec(role).family == paper.spec(role).family
    assert preset.spec("text_to_image").refiner
    t2i, i2v = preset.spec("text_to_image"), preset.spec("image_to_video")
    assert (t2i.settings.steps, t2i.settings.width, t2i.settings.height, t2i.settings.high_noise_frac) == (40, 1024, 576, 0.8)
    assert (i2v.settings.num_frames, i2v.settings.segments, i2v.settings.steps, i2v.settings.motion_bucket_id,
            i2v.settings.noise_aug_strength) == (25, 3, 25, 180, 0.1)
