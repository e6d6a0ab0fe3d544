"""The agent loop for segmentation rollouts: verl's ``ToolAgentLoop`` plus episode bookkeeping.

Generation, tool-call parsing and multimodal tokenisation are verl's own. This subclass only closes
the trajectory's episode when the loop ends (the model stopped calling tools, hit the turn or token
limit), so the final mask and metrics are in the record the reward sees, and frees the episode.

Registered through ``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (see
``training/configs/verl_agent_loop.yaml``); RL rows select it with ``agent_name: medseg_agent``.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop

from medseg_agent.training.verl.episodes import AGENT_NAME, EPISODE_ID_FIELD, STORE, record_fields
from medseg_agent.vocabulary.stop import StopReason

__all__ = ["AGENT_NAME", "MedSegAgentLoop"]


class MedSegAgentLoop(ToolAgentLoop):
    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        output = await super().run(sampling_params, **kwargs)
        key = output.extra_fields.pop(EPISODE_ID_FIELD, None)
        episode = STORE.pop(key) if key else None
        if episode is not None:
            record = episode.close(StopReason.POLICY_ENDED)
            output.extra_fields.update(record_fields(record))
        return output
