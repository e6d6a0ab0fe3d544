"""``--set KEY=VALUE`` values keep their types, scientific notation included (YAML 1.1 reads 1e-4,
written without a dot, as a string; learning rates are written that way)."""

from __future__ import annotations

import math

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from medseg_agent.cli.common import parse_settings


@given(st.floats(min_value=1e-12, max_value=1e12, allow_nan=False), st.sampled_from(["e", "E"]), st.booleans())
def test_numbers_in_any_notation_are_numbers(value, letter, signed):
    mantissa, exponent = f"{value:e}".split("e")
    text = f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}{letter}{int(exponent)}"
    text = f"-{text}" if signed else text
    parsed = parse_settings([f"lr={text}"])["lr"]
    assert isinstance(parsed, float) and math.isclose(parsed, float(text))


def test_other_values_keep_their_yaml_types():
    assert parse_settings(["a=3e-4", "b=10", "c=true", "d=[1, 2]", "e=cosine", "f=1e5x", "g=1.5"]) == {
        "a": 3e-4, "b": 10, "c": True, "d": [1, 2], "e": "cosine", "f": "1e5x", "g": 1.5}


def test_a_pair_without_a_value_is_refused():
    with pytest.raises(typer.Exit):
        parse_settings(["lr"])


@pytest.mark.parametrize("item", ["lr=[1", "lr={", 'lr="3e-4', "lr=!!python/name:os.system"])
def test_a_value_yaml_cannot_read_is_a_clean_exit_naming_it(item, capsys):
    with pytest.raises(typer.Exit):
        parse_settings([item])
    message = " ".join(capsys.readouterr().err.split())
    assert f"--set {item!r}: " in message and "is not a value YAML can read" in message
