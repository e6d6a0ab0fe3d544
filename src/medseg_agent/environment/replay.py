"""Rebuild what the policy saw from a trajectory record: every overlay and the whole conversation.

Exports (SFT/RL data) and galleries use this instead of keeping images in records, so a record stays
small and still reproduces the exact training conversation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_agent.environment.record import RecordError, TrajectoryRecord, turn_masks
from medseg_agent.environment.render import render_overlay, resize_view, tinted
from medseg_agent.protocols import get_protocol
from medseg_agent.protocols.conversation import Conversation
from medseg_agent.vocabulary.actions import CoordinateSpace
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.prompts import PromptState


def replay_views(record: TrajectoryRecord, image: np.ndarray, base: Path | None = None) -> list[np.ndarray]:
    """The observation image after each turn (errors repeat the previous view), in turn order."""
    image = as_rgb_uint8(image)
    if tuple(image.shape[:2]) != tuple(record.image_size):
        raise ValueError(f"image shape {image.shape[:2]} does not match the record's {tuple(record.image_size)}")
    base_view = resize_view(image, tuple(record.view_size))
    tinted_view = tinted(base_view)
    masks = iter(turn_masks(record, base))
    state = PromptState()
    mask = None
    views = []
    for turn in record.turns:
        if turn.ran_tool:
            if turn.action_pixels is None:
                raise RecordError(f"turn {turn.turn} ran the tool but stores no action_pixels")
            state = state.after(turn.action_pixels)
            mask = next(masks)
        views.append(
            render_overlay(base_view, mask, image.shape[:2], state.box, state.points, state.labels, tinted_view)
        )
    return views


def conversation_from_record(
    record: TrajectoryRecord, image: np.ndarray, base: Path | None = None, include_final_user: bool = False
) -> Conversation:
    """The exact multi-turn conversation of the episode: prompts from the record's protocol, each
    assistant reply as recorded, each follow-up user turn with its overlay.

    The user turn after the last reply is left out by default: nothing answers it.
    """
    protocol = get_protocol(record.protocol)
    image = as_rgb_uint8(image)
    first_view = resize_view(image, tuple(record.view_size))
    conversation = Conversation.start(protocol, record.target, first_view, CoordinateSpace(record.coordinate_space))
    views = replay_views(record, image, base)
    for index, (turn, view) in enumerate(zip(record.turns, views, strict=True)):
        conversation.add_assistant(turn.raw_text or "")
        last = index == len(record.turns) - 1
        if last and not include_final_user:
            break
        text = turn.observation_text or ""
        conversation.add_user(text, None if turn.error else view)
    return conversation
