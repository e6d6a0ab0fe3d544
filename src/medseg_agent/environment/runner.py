"""Drive one episode: policy replies in, observations out, a trajectory record at the end."""

from __future__ import annotations

import time
from collections.abc import Callable

from medseg_agent.environment.episode import Observation, SegmentationEnv
from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.policies.base import EpisodeContext, Policy
from medseg_agent.tools.base import ToolSession
from medseg_agent.vocabulary.sample import Sample


def run_episode(
    env: SegmentationEnv,
    policy: Policy,
    sample: Sample,
    *,
    seed: int = 0,
    session: ToolSession | None = None,
    on_step: Callable[[Observation], None] | None = None,
) -> TrajectoryRecord:
    """Run ``policy`` on ``sample`` until it stops, errs out or reaches the turn limit.

    ``on_step(observation)`` is called after reset and after every step (overlay writers, UIs).
    A look-ahead policy (one with ``bind_session``, e.g. the expert) gets the episode's tool session,
    so its probes reuse the single image encode.
    """
    encode_seconds = None
    bind = getattr(policy, "bind_session", None)
    if callable(bind):
        if session is None:
            started = time.perf_counter()
            session = env.tool.set_image(sample.image)
            encode_seconds = time.perf_counter() - started
        bind(session)
    observation = env.reset(
        sample.image,
        sample.target,
        sample.mask,
        sample_id=sample.sample_id,
        dataset=sample.dataset,
        modality=sample.modality,
        spacing=sample.spacing,
        image_path=sample.image_path,
        policy_name=policy.name,
        session=session,
    )
    context = EpisodeContext(
        target=sample.target,
        frame=env.frame,
        protocol=env.protocol,
        image=env.image,
        gt_mask=sample.mask if policy.uses_ground_truth else None,
        max_turns=env.config.max_turns,
        seed=seed,
    )
    policy.reset(context, observation)
    if on_step:
        on_step(observation)
    while not observation.done:
        started = time.perf_counter()
        reply = policy.act(observation)
        elapsed = time.perf_counter() - started
        observation = env.step(
            reply.text,
            tool_calls=reply.tool_calls,
            action=reply.action,
            reasoning=reply.reasoning,
            policy_seconds=elapsed,
        )
        if on_step:
            on_step(observation)
    assert env.record is not None
    if encode_seconds is not None:
        env.record.meta["encode_seconds"] = encode_seconds
    return env.record
