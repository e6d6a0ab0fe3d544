"""What counts as a number in settings people write: JSON and YAML hand over bools as numbers
(``true`` is 1 to Python) and NaN or infinity as floats, and none of them is a setting's value."""

from __future__ import annotations

import math


def is_finite_number(value: object) -> bool:
    """A finite int or float, not a bool: a NaN or infinite weight or rate turns every result into NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value: object) -> bool:
    """An int, not a bool and not a float: a batch size or step count of 1.5 is a slip, not a value."""
    return isinstance(value, int) and not isinstance(value, bool)
