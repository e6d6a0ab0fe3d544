"""COCO RLE of masks: exactly pycocotools' encoding, whatever the shape, content or path taken
(8-pixel words or pixels, numpy or torch), with the area read from the run boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from medseg_agent.io.masks import (
    RleError,
    boundaries_batch,
    decode_rle,
    encode_rle,
    encode_rle_with_area,
    rle_area,
    rle_from_boundaries,
    rle_run_lengths,
    run_boundaries,
)


def coco(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def shapes_of_every_kind(draw: st.DrawFn) -> np.ndarray:
    height = draw(st.integers(1, 40))
    width = draw(st.sampled_from([1, 3, 7, 8, 16, 24, 33, 40]))
    kind = draw(st.sampled_from(["random", "blob", "empty", "full"]))
    if kind == "random":
        return draw(arrays(bool, (height, width)))
    mask = np.full((height, width), kind == "full")
    if kind == "blob":
        top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        mask[top : top + draw(st.integers(1, height)), left : left + draw(st.integers(1, width))] = True
    return mask


masks = st.composite(shapes_of_every_kind)()


@settings(max_examples=300, deadline=None)
@given(mask=masks)
def test_encode_rle_is_exactly_pycocotools_with_the_right_area(mask):
    rle, area = encode_rle_with_area(mask)
    assert rle == coco(mask) == encode_rle(mask)
    assert area == int(mask.sum()) == rle_area(rle)
    decoded = decode_rle(rle)
    assert np.array_equal(decoded, mask)
    assert decoded.dtype == np.bool_ and decoded.flags.c_contiguous  # what OpenCV and numpy expect


@settings(max_examples=100, deadline=None)
@given(mask=masks)
def test_a_strided_view_takes_the_pixel_path_and_agrees(mask):
    wide = np.zeros((mask.shape[0], 2 * mask.shape[1]), bool)
    wide[:, ::2] = mask
    view = wide[:, ::2]  # not contiguous: no 8-pixel words
    assert encode_rle(view) == coco(mask)


def test_large_masks_with_long_runs_encode_exactly():
    mask = np.zeros((4096, 2048), bool)  # runs longer than 2**21 need every 5-bit group of COCO's code
    mask[5:, 7:] = True
    mask[100:200, 1000:1010] = False
    assert encode_rle(mask) == coco(mask)


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 4).flatmap(lambda b: arrays(bool, (b, 9, 16))))
def test_batches_from_numpy_and_torch_give_each_masks_boundaries(batch):
    expected = [run_boundaries(mask) for mask in batch]
    for found in (boundaries_batch(batch), boundaries_batch(torch.from_numpy(batch))):
        assert [b.tolist() for b in found] == [e.tolist() for e in expected]
    assert [rle_from_boundaries(b, 9, 16) for b in expected] == [coco(mask) for mask in batch]


def test_a_mask_of_the_wrong_rank_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"2-D mask, got shape \(2, 3, 4\)"):
        encode_rle(np.zeros((2, 3, 4), bool))


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths by walking the pixels one by one, zeros first (COCO's order)."""
    runs, value, length = [], False, 0
    for pixel in mask.T.ravel():
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    return [*runs, length]


@settings(max_examples=200, deadline=None)
@given(mask=masks)
def test_the_run_lengths_read_from_counts_are_the_masks_runs(mask):
    assert rle_run_lengths(coco(mask)["counts"].encode("ascii")).tolist() == column_major_runs(mask)


def test_the_longest_runs_read_back_exactly():
    mask = np.zeros((4096, 2048), bool)  # a first run of 28,677 zeros needs three 5-bit groups
    mask[5:, 7:] = True
    expected = [7 * 4096 + 5, *[4091, 5] * (2048 - 8), 4091]
    assert rle_run_lengths(coco(mask)["counts"].encode("ascii")).tolist() == expected


@pytest.mark.parametrize(
    ("rle", "problem"),
    [
        ({"size": [10, 10], "counts": "3"}, r"cover 3 pixels, the size \[10, 10\] has 100"),  # pycocotools: garbage
        ({"size": [2, 2], "counts": "h" * 10 + "0"}, "in 11 characters; a run needs at most 7"),
        ({"size": [-1, 5], "counts": "0"}, r"two whole numbers >= 0, got \[-1, 5\]"),  # pycocotools: OverflowError
        ({"size": [2.5, 2], "counts": "4"}, "two whole numbers"),
        ({"size": [True, 4], "counts": "4"}, "two whole numbers"),
        ({"size": [2, 2, 2], "counts": "4"}, r"must be \[height, width\]"),
        ({"size": None, "counts": "4"}, r"must be \[height, width\]"),
        ({"size": [100_000, 100_000], "counts": "0"}, "over the image pixel limit"),
        ({"size": [2, 2], "counts": "\u00e9"}, "outside pycocotools' alphabet"),
        ({"size": [2, 2], "counts": "4~"}, "outside pycocotools' alphabet"),
        ({"size": [2, 2], "counts": "4P"}, "end in the middle of a number"),
        ({"size": [2, 2], "counts": "2@"}, "negative run length"),
        ({"size": [2, 2], "counts": [1, 3]}, "must be the compressed string, got list"),
        ({"counts": "4"}, "needs 'size' and 'counts'"),
        ("4", "needs 'size' and 'counts'"),
    ],
)
def test_an_rle_that_is_not_a_mask_is_refused_naming_what_is_wrong(rle, problem):
    with pytest.raises(RleError, match=problem):
        decode_rle(rle)
    with pytest.raises(RleError, match=problem):
        rle_area(rle)


def test_the_empty_mask_and_the_mask_of_no_pixels_decode():
    assert decode_rle({"size": [3, 4], "counts": "<"}).shape == (3, 4)  # one run of 12 zeros
    assert decode_rle({"size": [0, 4], "counts": "0"}).shape == (0, 4)
