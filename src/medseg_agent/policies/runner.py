"""The one episode loop: policy replies in, observations out, a trajectory record at the end.

The CLI, the evaluator, the expert's trajectory generator and the benchmarks all run episodes
through :func:`run_episode`; trainers whose own loop drives the tools (TRL, verl) use the same
environment contract (:meth:`SegmentationEnv.reset` / ``step`` / ``close``).
"""

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
    A look-ahead policy (:attr:`Policy.wants_session`, e.g. the expert) gets the episode's tool
    session through :meth:`Policy.bind_session`, so its probes reuse the single image encode.
    """
    encode_seconds = None
    if policy.wants_session:
        if session is None:
            started = time.perf_counter()
            session = env.tool.set_image(sample.image)
            encode_seconds = time.perf_counter() - started
        policy.bind_session(session)
    observation = env.reset(sample, session=session, options={"policy": policy.name, "seed": seed})
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
        if reply.action is not None:
            observation = env.step(reply.action, text=reply.text, reasoning=reply.reasoning, policy_seconds=elapsed)
        elif reply.tool_calls:
            observation = env.step(reply.tool_calls, text=reply.text, policy_seconds=elapsed)
        else:
            observation = env.step(reply.text, policy_seconds=elapsed)
        if on_step:
            on_step(observation)
    record = env.record
    assert record is not None
    if encode_seconds is not None:
        record.meta["encode_seconds"] = encode_seconds
    return record
