"""The optimisation schedule both trainers (SFT, GRPO) take, checked before a model is loaded."""

from __future__ import annotations

import math


def check_schedule(learning_rate: float, epochs: float, max_steps: int) -> None:
    """Refuse a schedule that would train nothing or diverge: transformers accepts a learning rate of -1
    and 0 epochs, and the mistake shows only as a flat or exploding loss after the model has loaded."""
    if not (isinstance(learning_rate, int | float) and 0.0 < learning_rate < math.inf):
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or (max_steps != -1 and max_steps < 1):
        raise ValueError(f"max_steps must be -1 (train by epochs) or a whole number >= 1, got {max_steps!r}")
    if max_steps == -1 and not (isinstance(epochs, int | float) and 0.0 < epochs < math.inf):
        raise ValueError(f"epochs must be a number > 0 (or set max_steps), got {epochs!r}")
