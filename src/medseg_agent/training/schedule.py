"""The optimisation schedule both trainers (SFT, GRPO) take, checked before a model is loaded."""

from __future__ import annotations

from medseg_agent.vocabulary.numbers import is_finite_number, is_whole_number


def check_schedule(learning_rate: float, epochs: float, max_steps: int) -> None:
    """Refuse a schedule that would train nothing or diverge: transformers accepts a learning rate of -1
    and 0 epochs, and the mistake shows only as a flat or exploding loss after the model has loaded."""
    if not (is_finite_number(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    if not is_whole_number(max_steps) or (max_steps != -1 and max_steps < 1):
        raise ValueError(f"max_steps must be -1 (train by epochs) or a whole number >= 1, got {max_steps!r}")
    if max_steps == -1 and not (is_finite_number(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a number > 0 (or set max_steps), got {epochs!r}")
