"""The director agent of `mora chat`: talks with the user and starts a task with a `start_task` call.

The task list and the `start_task` schema come from the caller (`mora.workflows.chat` builds both
from the task table), so this module knows no task by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import autogen

from mora.agents import roles
from mora.agents.llm import autogen_llm_config

logger = logging.getLogger(__name__)


def make_director(config_list: list[dict], task_list: str, start_task: Callable[..., str]) -> autogen.ConversableAgent:
    """A ConversableAgent whose LLM sees the typed `start_task` schema.

    Args:
        config_list: the LLM entries.
        task_list: the tasks and their inputs, for the system message (`text-to-video (prompt), ...`).
        start_task: a function whose typed signature is the schema the LLM fills in (never executed).

    Example:
        >>> director = make_director(config_list, director_task_list(), start_task_function())
    """
    director = autogen.ConversableAgent(
        "director", system_message=roles.DIRECTOR.format(tasks=task_list), llm_config=autogen_llm_config(config_list),
        human_input_mode="NEVER", code_execution_config=False,
    )
    director.register_for_llm(name="start_task", description="Start one Mora video task.")(start_task)
    return director


def ask_director(director: autogen.ConversableAgent, messages: list[dict]) -> Any:
    """One LLM answer of the director: a str (a question or remark) or a dict with tool_calls."""
    ok, answer = director.generate_oai_reply(messages=messages)
    return answer if ok else None
