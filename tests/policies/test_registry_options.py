"""Policy options from a command line (``--policy-option KEY=VALUE``, JSON values) are checked against
the policy's signature when it is built, not met as a TypeError in the middle of an episode."""

from __future__ import annotations

import pytest

from medseg_agent.policies.registry import build_policy, checked_options


@pytest.mark.parametrize(
    ("name", "options", "problem"),
    [
        ("clicker", {"bogus": 1}, r"^no option bogus \(the options are: stop_iou\)$"),
        ("clicker", {"stop_iou": "high"}, r"^option stop_iou: Input should be a valid number.* \(got 'high'\)$"),
        ("clicker", {"stop_iou": 5}, r"stop_iou must be in \(0, 1\]"),
        ("expert", {"max_tries": 1.5}, r"^option max_tries: Input should be a valid integer.* \(got 1\.5\)$"),
        ("expert", {"epsilon": [0.1]}, r"^option epsilon: Input should be a valid number"),
        ("box-only", {"stop_iou": 0.9}, r"^no option stop_iou \(the options are: none\)$"),
    ],
)
def test_a_wrong_option_is_named_when_the_policy_is_built(name, options, problem):
    with pytest.raises(ValueError, match=problem):
        build_policy(name, **options)


def test_text_that_reads_as_the_hinted_type_is_converted():
    assert build_policy("clicker", stop_iou="0.75").stop_iou == 0.75
    assert build_policy("clicker", stop_iou=None).stop_iou is None
    expert = build_policy("expert", max_tries="3", lookahead="false")
    assert expert.max_tries == 3 and expert.lookahead is False


def test_factories_that_take_any_keyword_get_their_options_unchanged():
    def factory(**options):
        return options

    assert checked_options("mine", factory, {"anything": "x", "n": "3"}) == {"anything": "x", "n": "3"}
