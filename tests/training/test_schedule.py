from __future__ import annotations

import math

import pytest

from medseg_agent.training.schedule import check_schedule
from medseg_agent.training.sft import SFTOptions
from medseg_agent.training.trl_grpo import GRPOOptions


@pytest.mark.parametrize(
    ("learning_rate", "epochs", "max_steps", "problem"),
    [
        (-1e-5, 1.0, -1, r"learning_rate must be a number > 0, got -1e-05"),
        (0.0, 1.0, -1, r"learning_rate must be a number > 0, got 0\.0"),
        (math.nan, 1.0, -1, r"learning_rate .* got nan"),
        (1e-5, 0.0, -1, r"epochs must be a number > 0 \(or set max_steps\), got 0\.0"),
        (1e-5, -2.0, -1, r"epochs must be"),
        (1e-5, 1.0, 0, r"max_steps must be -1 \(train by epochs\) or a whole number >= 1, got 0"),
        (1e-5, 1.0, -5, r"max_steps must be"),
    ],
)
def test_a_schedule_that_trains_nothing_or_diverges_is_refused(learning_rate, epochs, max_steps, problem):
    with pytest.raises(ValueError, match=problem):
        check_schedule(learning_rate, epochs, max_steps)


def test_both_trainers_check_their_schedule_when_their_options_are_made():
    check_schedule(1e-5, 0.0, 10)  # epochs do not matter when max_steps is set
    with pytest.raises(ValueError, match="learning_rate"):
        SFTOptions(model="m", data="d", output_dir="o", learning_rate=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        GRPOOptions(model="m", output_dir="o", max_steps=0)
    assert GRPOOptions(model="m", output_dir="o").learning_rate == 1e-6
