"""The manifest of a job (`<out stem>.json`), built in one place (ARCHITECTURE.md, "Manifest")."""

from __future__ import annotations

from importlib import metadata
from typing import Any


def versions() -> dict:
    """Installed versions of Mora and the libraries that shape its output."""
    out: dict[str, str | None] = {}
    for name in ("mora", "torch", "diffusers", "transformers", "autogen"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def llm_record(config_list: list[dict] | None, steps: list[dict], faults: list[str]) -> dict:
    """The manifest's `llm`: what was configured, and what the LLM actually did, step by step.

    Args:
        config_list: the job's LLM entries, or None.
        steps: one `{"agent", "answer"}` per agent step that asked the LLM; `answer` is "llm" (its
            answer was used) or "fallback" (no usable answer: the scripted one was used).
        faults: the reason of every unusable answer, keys scrubbed.

    `used` is true only when some step used an LLM answer: a run whose every call fell back
    (a wrong key, a server down) says so, whatever was configured.

    Example:
        >>> llm_record([{"model": "m"}], [{"agent": "prompt_agent", "answer": "fallback"}], ["500"])["used"]
        False
    """
    from mora.agents.llm import describe

    fallbacks = sum(step["answer"] == "fallback" for step in steps)
    return {**describe(config_list), "used": len(steps) > fallbacks, "steps": steps, "fallbacks": fallbacks,
            "faults": faults}


def build_manifest(job_spec: Any, job: Any, tools: Any, *, info: dict, card: dict | None, chat_s: float) -> dict:
    """Everything a user needs to understand and repeat a job; never an API key.

    Args:
        job_spec: the `Prepared` job (task, inputs, preset, seed, out, config).
        job: the route state machine after the route ran (route, prompt, review, candidates).
        tools: the Toolset (its per-call records: arguments, settings, seconds, outputs).
        info: the final video's `num_frames`, `fps`, `width`, `height`.
        card: the score card, or None.
        chat_s: seconds in the group chat.
    """
    calls = tools.calls
    tool_s = sum(v for k, v in job.timings.items() if k.startswith("tool:"))
    per_turn = max(0.0, chat_s - tool_s - job.timings.get("llm", 0.0)) / max(1, job.turns)
    timings = {**job.timings, "per_step": [{"tool": c["tool"], "seconds": c["seconds"]} for c in calls],
               "chat_s": round(chat_s, 3), "orchestration_per_turn_s": round(per_turn, 4)}
    manifest = {
        "task": job_spec.task, "preset": job_spec.preset.name, "seed": job_spec.seed, "inputs": job_spec.inputs,
        "prompt": job_spec.inputs.get("prompt") or job_spec.inputs.get("instruction"),
        "enhanced_prompt": job.enhanced_prompt, "route": job.acted,
        "artifacts": [path for c in calls for path in (c["output"], *c.get("segment_files", ()))],
        "video": {"path": str(job_spec.out), **info}, "models": job_spec.preset.models(),
        "settings": [{"tool": c["tool"], **(c.get("settings") or {})} for c in calls],
        "tool_calls": [{k: c[k] for k in ("tool", "args", "seed", "output", "seconds", "model", "profile",
                                            "cache", "attention", "prompt_tokens", "peak_memory") if k in c}
                       for c in calls],
        "timings": timings,
        "llm": llm_record(job_spec.config_list, job.llm_steps, job.llm_faults),
        "review": job.review, "metrics": card, "oom_retries": tools.oom_retries,
        "memory": {"budget_bytes": tools.memory_budget(), "decisions": tools.runtime.memory_events},
        **({"candidates": job.candidates, "critic": job.critic} if job_spec.best_of > 1 else {}),
        "device": tools.device, "profile": tools.runtime.profile,
        "cache": tools.runtime.speed.cache, "cache_threshold": tools.runtime.speed.threshold,
        "attention": tools.runtime.speed.attention, "gpus": tools.runtime.gpus, "versions": versions(),
    }
    if job_spec.adapter is not None:
        manifest["adapter"] = job_spec.adapter.manifest_entry()  # path, sha256, agents, modulation factors
    if job_spec.preset.is_tiny:
        manifest["note"] = "tiny preset: random weights, the video is noise (for tests and offline checks)"
    return manifest
