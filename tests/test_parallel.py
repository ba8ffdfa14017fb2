"""`--gpus N` (mora.tools.parallel, mora.processes): refusals, launcher, processes' roles; on gloo, the frames.

diffusers 0.42's context parallelism cannot start on a CPU as shipped (`enable_parallelism` divides by
`torch.accelerator.device_count()`, 0 there), so users get a refusal on a CPU; the slow test below sets that
one count to 1 in its two processes (tests/parallel_probe.py) and checks that the clip equals one process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames

from mora import media
from mora.cli import main
from mora.errors import InputError
from mora.processes import LAUNCHED_ENV, Processes, launch, launch_command
from mora.tools import parallel

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def two_gpus(monkeypatch):
    """torch says there are two CUDA GPUs (nothing runs on them: every test stops before a model loads)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["--preset", "tiny", "--device", "cpu"], "svd (preset tiny's image_to_video model, a UNet) has no context"),
    (["--preset", "tiny-modern", "--device", "cpu"], "needs CUDA GPUs (one per process, NCCL) and the device is cpu"),
    (["--preset", "tiny-modern", "--gpus", "0"], "--gpus: 0 is out of range; pass a number >= 1"),
])
def test_a_route_without_a_plan_or_a_cpu_is_refused_in_one_line(capsys, argv, says):
    err = _refused(capsys, ["text-to-video", "a fox", "--gpus", "2", *argv])
    assert err.startswith("mora: error: --gpus: ") and says in err
    if "cpu" in argv and "tiny-modern" in argv:
        assert "ZeroDivisionError" in err  # the reason a CPU cannot run it, named


def test_wan_vace_has_no_plan_so_connect_on_modern_is_refused(capsys, tmp_path):
    clips = []
    for name in ("a.mp4", "b.mp4"):
        clips.append(str(media.write_video(gradient_frames(9, 64, 64), tmp_path / name, fps=8)))
    err = _refused(capsys, ["connect", *clips, "--preset", "tiny-modern", "--gpus", "2", "--device", "cpu"])
    assert "wan-vace (preset tiny-modern's connect model, WanVACETransformer3DModel) has no context-parallel" in err


@pytest.mark.parametrize("extra, says", [
    (["--gpus", "3"], "--gpus: 3 is more than the 2 visible GPUs; use --gpus 2 or fewer"),
    (["--gpus", "2", "--device", "cuda:1"], "--gpus: 2 gives each process its own GPU"),
    (["--gpus", "2", "--llm-config", "LLM"], "--gpus: 2 runs the agents in every process, and an LLM"),
])
def test_on_cuda_too_many_gpus_a_fixed_gpu_or_an_llm_are_refused(two_gpus, capsys, tmp_path, extra, says):
    llm = tmp_path / "OAI_CONFIG_LIST"
    llm.write_text(json.dumps([{"model": "gpt-4o-mini", "api_key": "sk-test"}]))
    argv = [str(llm) if a == "LLM" else a for a in extra]
    err = _refused(capsys, ["text-to-video", "a fox", "--preset", "tiny-modern", *argv])
    assert says in err


def test_the_command_checks_the_job_then_launches_itself_in_n_processes(two_gpus, monkeypatch):
    import mora.processes

    launched = []
    monkeypatch.setattr(mora.processes, "launch", lambda argv, n: launched.append((argv, n)) or 0)
    argv = ["text-to-video", "a fox", "--preset", "tiny-modern", "--gpus", "2", "--quiet"]
    assert main(argv) == 0
    assert launched == [(argv, 2)]
    assert main(["text-to-video", "a fox", "--preset", "tiny", "--gpus", "2"]) == 2  # refused: nothing launched
    assert len(launched) == 1


def test_remote_callers_cannot_set_gpus_and_story_does_not_take_it():
    from mora.workflows.jobspec import job_model, job_schema, parse_job

    with pytest.raises(InputError, match="a request cannot set it") as e:
        parse_job({"task": "text-to-video", "prompt": "a fox", "gpus": 2}, scopes=("job",), door="a request")
    assert e.value.param == "gpus"
    assert "gpus" not in job_schema("text-to-video")["properties"]  # the service's and MCP's schemas
    assert "gpus" in job_model("image-to-video").model_fields and "gpus" not in job_model("story").model_fields


def test_doors_that_run_a_job_in_their_own_process_refuse_gpus_before_it_starts(monkeypatch, tmp_path):
    import mora
    from mora.workflows.prepare import prepare

    monkeypatch.setattr(parallel, "check_host", lambda *a, **k: None)
    says = r"2 needs 2 processes and this job runs in 1: run it with the command"
    with pytest.raises(InputError, match=says):
        mora.run("text-to-video", prompt="a fox", preset="tiny-modern", gpus=2, device="cpu",
                 out=str(tmp_path / "a.mp4"))
    assert not (tmp_path / "a.mp4").exists()
    with pytest.raises(InputError, match=says):  # a batch line, checked with the others before any job runs
        prepare({"task": "text-to-video", "prompt": "a fox", "preset": "tiny-modern", "gpus": 2}, files=False)


def test_families_and_their_denoiser_classes_agree_with_diffusers_and_the_tiny_models():
    from mora.config import get_preset
    from mora.tools import tiny, tiny_modern

    assert {f for f in parallel.DENOISER_CLASSES if parallel.takes_gpus(f)} == {"ltx", "wan", "wan22", "qwen-image",
                                                                                "qwen-image-edit"}
    assert not parallel.takes_gpus("sdxl") and not parallel.takes_gpus("svd")
    seen = set()
    for preset in ("tiny-ltx", "tiny-wan", "tiny-modern"):
        for spec in get_preset(preset).roles.values():
            if spec.family not in parallel.DENOISER_CLASSES:
                continue
            name = spec.model.removeprefix("tiny/")
            folder = tiny_modern.ensure(name) if name in tiny_modern.BUILDERS else tiny.ensure_tiny(spec.model)
            config = json.loads((folder / "transformer" / "config.json").read_text())
            assert config["_class_name"] == parallel.DENOISER_CLASSES[spec.family], spec.family
            seen.add(spec.family)
    assert seen == set(parallel.DENOISER_CLASSES)


def test_enable_gives_each_denoiser_its_own_ulysses_config():
    class Denoiser:
        def __init__(self):
            self.configs = []

        def enable_parallelism(self, *, config):
            self.configs.append(config)

    class Pipe:
        transformer, transformer_2 = Denoiser(), Denoiser()

    pipe = Pipe()
    assert parallel.enable(pipe, "wan22", 1) == 0 and pipe.transformer.configs == []
    assert parallel.enable(pipe, "wan22", 2) == 2
    first, second = pipe.transformer.configs[0], pipe.transformer_2.configs[0]
    assert first is not second
    assert (first.ulysses_degree, first.ring_degree, first.ulysses_anything) == (2, 1, True)
    with pytest.raises(RuntimeError, match="wan-vace has no context-parallel plan"):
        parallel.enable(pipe, "wan-vace", 2)


def _as_process(monkeypatch, rank: int, calls: dict) -> None:
    """This test's process plays process `rank` of 2 (no process group: `join`, `enable` and the end recorded)."""
    import mora.processes

    monkeypatch.setenv("WORLD_SIZE", "2")  # as the launcher sets it
    monkeypatch.setattr(parallel, "check_host", lambda *a, **k: None)
    monkeypatch.setattr(parallel, "join", lambda gpus, device, seed: (Processes(rank, gpus), "cpu", 7))
    monkeypatch.setattr(parallel, "enable", lambda pipe, family, gpus: calls["enable"].append((family, gpus)))
    monkeypatch.setattr(mora.processes, "end_processes", lambda processes: calls["end"].append(processes.rank))


def test_process_0_writes_with_the_degree_and_the_others_leave_nothing(monkeypatch, tmp_path):
    from mora.workflows.runner import run_job

    job = {"task": "text-to-video", "prompt": "a fox", "preset": "tiny-modern", "gpus": 2, "device": "cpu",
           "out": str(tmp_path / "a.mp4"), "metrics": False}
    calls: dict = {"enable": [], "end": []}
    _as_process(monkeypatch, 1, calls)
    other = run_job(job)
    assert other.video_path is None and sorted(os.listdir(tmp_path)) == []  # nothing at out, no artifacts
    assert not other.artifacts_dir.exists()  # its scratch folder is gone
    assert calls == {"enable": [("qwen-image", 2), ("wan22", 2)], "end": [1]}

    calls = {"enable": [], "end": []}
    _as_process(monkeypatch, 0, calls)
    result = run_job(job)
    assert result.video_path == tmp_path / "a.mp4" and result.video_path.is_file()
    manifest = json.loads((tmp_path / "a.json").read_text())
    assert manifest["gpus"] == 2 and manifest["seed"] == 7  # the degree, and process 0's seed
    assert calls["end"] == [0]


def test_launch_command_runs_accelerate_on_one_machine_with_a_free_port():
    command, env = launch_command(["text-to-video", "a fox", "--gpus", "2"], 2)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2" and command[command.index("--num_machines") + 1] == "1"
    assert command[command.index("--main_process_port") + 1] == "0"  # a free one: two runs side by side do not meet
    assert command[-6:] == ["-m", "mora.cli", "text-to-video", "a fox", "--gpus", "2"]
    assert env[LAUNCHED_ENV] == "1"


def test_launched_processes_get_their_ranks_the_world_size_and_a_loopback_master(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    assert launch(["env", str(tmp_path / "env")], 2, module="parallel_probe") == 0
    seen = [json.loads((tmp_path / f"env.{rank}").read_text()) for rank in (0, 1)]
    assert [(s["RANK"], s["LOCAL_RANK"], s["WORLD_SIZE"]) for s in seen] == [("0", "0", "2"), ("1", "1", "2")]
    assert {s["MASTER_ADDR"] for s in seen} == {"127.0.0.1"} and seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]
    assert all(s["MORA_LAUNCHED"] == "1" for s in seen)


@pytest.mark.slow
def test_two_gloo_processes_make_the_frames_of_one_process(tmp_path):
    """The whole command in two processes (context parallelism on gloo, tests/parallel_probe.py) against one."""
    job = ["text-to-video", "a fox", "--preset", "tiny-modern", "--seed", "3", "--device", "cpu", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "mora.cli", *job, "--out", str(tmp_path / "one.mp4")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command, launch_env = launch_command([*job, "--gpus", "2", "--out", str(tmp_path / "two.mp4")], 2,
                                         module="parallel_probe")
    two = subprocess.run(command, env={**launch_env, **env}, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("two.mp4") == 1  # process 0 reports; process 1 says nothing
    probes = sorted(line for line in two.stderr.splitlines() if line.startswith("probe:"))
    assert probes == [f"probe: rank {r} {cls} ulysses=2 ring=1" for r in (0, 1)
                      for cls in ("QwenImageTransformer2DModel", "WanTransformer3DModel")]
    manifest = json.loads((tmp_path / "two.json").read_text())
    assert manifest["gpus"] == 2 and json.loads((tmp_path / "one.json").read_text())["gpus"] == 1
    a, b = (media.read_video(str(tmp_path / f"{n}.mp4")).frames.astype(np.int16) for n in ("one", "two"))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 2  # the same clip (x264 may round a frame differently; see test_speed)
    image = [np.asarray(media.read_image(str(p))) for p in sorted(tmp_path.glob("*_artifacts/text_to_image-*.png"))]
    np.testing.assert_allclose(image[0].astype(float), image[1].astype(float), atol=1)
