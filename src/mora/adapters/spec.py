"""The adapter format's names that need no torch: the trainable agents and the modulation token.

`mora train` writes adapters for these agents and every task loads them (`mora.adapters.adapter`);
the command line checks `--agents` against this table before any model loads.

Example:
    >>> from mora.adapters.spec import AGENTS
    >>> AGENTS["image_to_video_agent"].role
    'image_to_video'
"""

from __future__ import annotations

from dataclasses import dataclass

#: The special token whose encoding initialises every modulation embedding (the paper's "[Mod]").
MOD_TOKEN = "[Mod]"


@dataclass(frozen=True)
class AgentInfo:
    """A trainable agent: the preset role it plays and the pipeline family training supports.

    Args:
        role: the preset role whose model the agent runs (`mora.config.ROLES`).
        family: the pipeline family this trainer knows how to fine-tune for that role.
        paper: the agent's name in the paper (A2, A3, A4).
    """

    role: str
    family: str
    paper: str


#: agent name -> what it trains. `image_to_video_agent` also serves the `extend` role (same model).
AGENTS: dict[str, AgentInfo] = {
    "text_to_image_agent": AgentInfo("text_to_image", "sdxl", "A2"),
    "image_to_image_agent": AgentInfo("image_to_image", "pix2pix", "A3"),
    "image_to_video_agent": AgentInfo("image_to_video", "svd", "A4"),
}
