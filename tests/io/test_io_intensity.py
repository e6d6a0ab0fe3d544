from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medseg_agent.io.intensity import (
    CT_WINDOWS,
    apply_window,
    ensure_rgb_uint8,
    gray_to_rgb,
    percentile_normalize,
    resolve_window,
    to_display_rgb,
)


def test_presets_have_the_standard_values():
    assert CT_WINDOWS["abdomen"] == (400, 40)
    assert CT_WINDOWS["lung"] == (1500, -600)
    assert CT_WINDOWS["bone"] == (1800, 400)
    assert CT_WINDOWS["brain"] == (80, 40)
    assert CT_WINDOWS["soft_tissue"] == (350, 50)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("abdomen", (400, 40)),
        ("Soft-Tissue", (350, 50)),
        ("soft tissue", (350, 50)),
        ("W1500L-600", (1500, -600)),
        ((80, 40), (80, 40)),
    ],
)
def test_resolve_window(spec, expected):
    assert resolve_window(spec) == expected


@pytest.mark.parametrize("spec", ["nonsense", (0, 40), (-5, 0)])
def test_resolve_window_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        resolve_window(spec)


@pytest.mark.parametrize("spec", [400, 1.5, True, (400, 40, 1), ("wide", "low"), [None, 40]])
def test_a_window_of_the_wrong_shape_is_a_value_error_naming_it(spec):
    with pytest.raises(ValueError, match="preset name, 'W<width>L<level>' or a \\(width, level\\) pair"):
        resolve_window(spec)


def test_abdomen_window_maps_edges_and_level():
    hu = np.array([[-1000, -160, 40, 240, 3000]], dtype=np.int16)
    out = apply_window(hu, "abdomen")
    assert out.dtype == np.uint8
    assert out[0, [0, 1, 3, 4]].tolist() == [0, 0, 255, 255]
    assert abs(int(out[0, 2]) - 128) <= 1


def test_lung_window_shows_lung_but_saturates_bone():
    out = apply_window(np.array([-1350.0, -600.0, 150.0, 1000.0]), "lung")
    assert out[[0, 2, 3]].tolist() == [0, 255, 255] and abs(int(out[1]) - 128) <= 1


def test_percentile_normalize_clips_outliers():
    a = np.concatenate([np.linspace(100, 200, 1000), [1e6, -1e6]])
    out = percentile_normalize(a)
    assert out.dtype == np.uint8
    assert out[-2] == 255 and out[-1] == 0
    assert out[500] in range(120, 136)


def test_percentile_normalize_with_reference_shares_mapping():
    vol = np.arange(1000, dtype=np.float32).reshape(10, 100)
    a = percentile_normalize(vol[0], reference=vol)
    b = percentile_normalize(vol[-1], reference=vol)
    assert a.max() < 30 and b.min() > 220


def test_constant_image_does_not_divide_by_zero():
    out = percentile_normalize(np.full((4, 4), 7.0))
    assert out.dtype == np.uint8 and (out == 0).all()


def test_gray_to_rgb_and_ensure_rgb():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = gray_to_rgb(g)
    assert rgb.shape == (3, 4, 3) and rgb.flags.c_contiguous and (rgb[..., 1] == g).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert ensure_rgb_uint8(rgba).shape == (3, 4, 3)
    assert ensure_rgb_uint8(g[:, :, None]).shape == (3, 4, 3)
    assert ensure_rgb_uint8(np.ones((3, 4), bool)).max() == 255
    f = np.full((3, 4), 0.5)
    assert ensure_rgb_uint8(f)[0, 0, 0] == 128
    with pytest.raises(ValueError):
        ensure_rgb_uint8(np.zeros((2, 3, 4, 5)))


def test_to_display_rgb_chooses_by_modality():
    hu = np.array([[-1000.0, 40.0], [240.0, 1000.0]])
    ct = to_display_rgb(hu, "CT")
    assert ct.shape == (2, 2, 3) and abs(int(ct[0, 1, 0]) - 128) <= 1  # abdomen window by default
    assert to_display_rgb(hu, "CT", window="lung")[0, 1, 0] > 200
    mr = to_display_rgb(np.array([[0.0, 10.0], [20.0, 30.0]]), "MRI")
    assert mr[0, 0, 0] < 5 and mr[1, 1, 0] > 250


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 7), elements=st.floats(-5000, 5000)), st.sampled_from(sorted(CT_WINDOWS)))
def test_window_is_monotonic_uint8(a, preset):
    out = apply_window(a, preset)
    assert out.dtype == np.uint8
    order = np.argsort(a, axis=None, kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (6, 6), elements=st.floats(-1e4, 1e4, width=32)))
def test_percentile_normalize_is_uint8_and_monotonic(a):
    out = percentile_normalize(a)
    assert out.dtype == np.uint8 and out.shape == a.shape
    order = np.argsort(a, axis=None, kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()
