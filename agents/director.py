"""The director agent of `mora chat`: talks with the user and starts a task with a `start_task` call."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import autogen

from mora.agents import prompts
from mora.agents.team import autogen_llm_config

logger = logging.getLogger(__name__)


def start_task(
    task: Annotated[str, "One of: text-to-video, image-to-video, extend, edit, connect, simulate"],
    prompt: Annotated[str | None, "What the video shows (text-to-video, image-to-video, simulate; optional for extend, connect)"] = None,
    image: Annotated[str | None, "Image path the user gave (image-to-video; optional for simulate)"] = None,
    video: Annotated[str | None, "Video path the user gave (extend, edit)"] = None,
    instruction: Annotated[str | None, "Edit instruction (edit)"] = None,
    video_a: Annotated[str | None, "First video path (connect)"] = None,
    video_b: Annotated[str | None, "Second video path (connect)"] = None,
) -> str:
    """Start one Mora task with the user's inputs."""
    return task  # never executed: the chat loop validates the call and runs the task itself


def make_director(config_list: list[dict]) -> autogen.ConversableAgent:
    """A ConversableAgent whose LLM sees the typed `start_task` schema."""
    director = autogen.ConversableAgent(
        "director", system_message=prompts.DIRECTOR, llm_config=autogen_llm_config(config_list),
        human_input_mode="NEVER", code_execution_config=False,
    )
    director.register_for_llm(name="start_task", description="Start one Mora video task.")(start_task)
    return director


def ask_director(director: autogen.ConversableAgent, messages: list[dict]) -> Any:
    """One LLM answer of the director: a str (a question or remark) or a dict with tool_calls."""
    ok, answer = director.generate_oai_reply(messages=messages)
    return answer if ok else None
