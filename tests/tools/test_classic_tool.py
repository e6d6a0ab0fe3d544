"""The classic (weight-free) tool: box, clicks, refinement, hard click constraints, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from medseg_agent.tools.classic import ClassicTool, build_classic_tool
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt

METHODS = ("grabcut", "random_walker", "watershed")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _blob(h: int, w: int, cy: float, cx: float, r: float, wobble: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    theta = np.arctan2(yy - cy, xx - cx)
    rad = 1 + sum(rng.uniform(0, wobble / k) * np.cos(k * theta + rng.uniform(0, 6.28)) for k in (2, 3, 4))
    return np.hypot(yy - cy, xx - cx) <= r * rad


def _gray_case(size: int = 160, noise: float = 14.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy organ-like blob on textured tissue (CT/MRI-like, 2-D uint8)."""
    rng = np.random.default_rng(seed)
    mask = _blob(size, size, size * 0.5, size * 0.45, size * 0.2, seed=seed)
    img = np.full((size, size), 90.0) + rng.normal(0, 4, (size, size))
    img[mask] = 150
    img += rng.normal(0, noise, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _rgb_case(size: int = 160, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A textured brown lesion on skin (dermoscopy-like RGB)."""
    rng = np.random.default_rng(seed)
    mask = _blob(size, size, size * 0.52, size * 0.5, size * 0.24, wobble=0.3, seed=seed)
    img = np.empty((size, size, 3))
    img[:] = (215, 170, 150)
    img[mask] = (130, 80, 55)
    img += rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _leak_case(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """The target touches a neighbour of the same intensity that reaches well into its box."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    target = np.hypot(yy - 80, xx - 70) <= 32
    neighbour = np.hypot(yy - 110, xx - 98) <= 26
    img = np.full((size, size), 80.0)
    img[target | neighbour] = 160
    img += rng.normal(0, 10, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8), target


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def _interior(region: np.ndarray) -> tuple[int, int]:
    import cv2

    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _click(pred: np.ndarray, gt: np.ndarray) -> tuple[tuple[int, int], int]:
    fn, fp = gt & ~pred, pred & ~gt
    return (_interior(fn), 1) if fn.sum() >= fp.sum() else (_interior(fp), 0)


@pytest.fixture(scope="module")
def tool() -> ClassicTool:
    return ClassicTool()


@pytest.mark.parametrize("method", ("auto", *METHODS))
def test_box_only_on_a_noisy_gray_blob(method: str) -> None:
    image, gt = _gray_case()
    t = ClassicTool(method=method)
    pred = t.set_image(image).predict(Prompt(box=_box(gt)))
    assert _iou(pred.mask, gt) > 0.8


def test_box_only_on_rgb(tool: ClassicTool) -> None:
    image, gt = _rgb_case()
    pred = tool.set_image(image).predict(Prompt(box=_box(gt)))
    assert _iou(pred.mask, gt) > 0.8


def test_corrective_clicks_fix_a_touching_neighbour(tool: ClassicTool) -> None:
    image, gt = _leak_case()
    session = tool.set_image(image)
    box = _box(gt) + np.array([0, 0, 16, 16], np.float32)  # a loose box that reaches into the neighbour
    pred = session.predict(Prompt(box=box))
    first = _iou(pred.mask, gt)
    assert first < 0.9  # the box alone cannot tell the two apart: there is something to fix
    points, labels = [], []
    for _ in range(3):
        xy, lab = _click(pred.mask, gt)
        points.append(xy)
        labels.append(lab)
        pred = session.predict(Prompt(box=box, points=points, labels=labels, mask_input=pred.logits))
    assert _iou(pred.mask, gt) > first + 0.05
    assert _iou(pred.mask, gt) > 0.9


def test_a_positive_click_recovers_a_miss(tool: ClassicTool) -> None:
    image, gt = _gray_case(seed=4)
    session = tool.set_image(image)
    # a box around a third of the object only: the rest is missed
    x1, y1, x2, y2 = _box(gt)
    half = np.array([x1, y1, x1 + (x2 - x1) * 0.4, y2], np.float32)
    pred = session.predict(Prompt(box=half))
    before = _iou(pred.mask, gt)
    xy, lab = _click(pred.mask, gt)
    assert lab == 1
    after = session.predict(Prompt(box=half, points=[xy], labels=[1], mask_input=pred.logits))
    assert after.mask[xy[1], xy[0]]
    assert _iou(after.mask, gt) > before


@pytest.mark.parametrize("case", ("gray", "rgb"))
def test_points_only(tool: ClassicTool, case: str) -> None:
    image, gt = _gray_case() if case == "gray" else _rgb_case()
    x, y = _interior(gt)
    pred = tool.set_image(image).predict(Prompt(points=[[x, y]], labels=[1]))
    assert pred.mask[y, x]
    assert _iou(pred.mask, gt) > 0.7


def test_points_only_then_refined(tool: ClassicTool) -> None:
    image, gt = _gray_case(seed=2)
    session = tool.set_image(image)
    points, labels = [list(_interior(gt))], [1]
    pred = session.predict(Prompt(points=points, labels=labels))
    first = _iou(pred.mask, gt)
    for _ in range(2):
        xy, lab = _click(pred.mask, gt)
        points.append(list(xy))
        labels.append(lab)
        pred = session.predict(Prompt(points=points, labels=labels, mask_input=pred.logits))
    assert _iou(pred.mask, gt) >= first - 0.02
    assert _iou(pred.mask, gt) > 0.8


@pytest.mark.parametrize("method", METHODS)
def test_clicks_are_hard_constraints(method: str) -> None:
    image, gt = _gray_case(seed=5)
    t = ClassicTool(method=method, click_method=method, refine_method=method)
    session = t.set_image(image)
    rng = np.random.default_rng(0)
    h, w = gt.shape
    prev = None
    for trial in range(4):
        flat = rng.choice(h * w, size=6, replace=False)
        pts = np.stack([flat % w, flat // w], axis=1)
        # labels that contradict the image: positives in the background, negatives in the object
        labels = np.array([0 if gt[y, x] else 1 for x, y in pts])
        labels[0] = 1
        box = _box(gt) if trial % 2 == 0 else None
        pred = session.predict(Prompt(box=box, points=pts, labels=labels, mask_input=prev))
        for (x, y), lab in zip(pts, labels, strict=True):
            assert pred.mask[y, x] == bool(lab), (method, trial, x, y, lab)
        prev = pred.logits


def test_positive_click_outside_the_box_is_honoured(tool: ClassicTool) -> None:
    image, gt = _gray_case()
    box = _box(gt)
    pred = tool.set_image(image).predict(Prompt(box=box, points=[[box[2] + 15, box[3] + 10]], labels=[1]))
    assert pred.mask[int(box[3] + 10), int(box[2] + 15)]


def test_gray_and_rgb_inputs(tool: ClassicTool) -> None:
    image, gt = _gray_case()
    as_2d = tool.set_image(image).predict(Prompt(box=_box(gt)))
    as_rgb = tool.set_image(np.repeat(image[:, :, None], 3, axis=2)).predict(Prompt(box=_box(gt)))
    np.testing.assert_array_equal(as_2d.mask, as_rgb.mask)
    rgb, gt_rgb = _rgb_case()
    pred = tool.set_image(rgb).predict(Prompt(box=_box(gt_rgb)))
    assert pred.mask.shape == gt_rgb.shape


def test_deterministic(tool: ClassicTool) -> None:
    image, gt = _rgb_case()
    prompt = Prompt(box=_box(gt), points=[[80, 80], [20, 20]], labels=[1, 0])
    a = tool.set_image(image).predict(prompt)
    b = ClassicTool().set_image(image.copy()).predict(prompt)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.score == b.score
    c = tool.set_image(image).predict(Prompt(box=_box(gt), mask_input=a.logits))
    d = tool.set_image(image).predict(Prompt(box=_box(gt), mask_input=a.logits))
    np.testing.assert_array_equal(c.mask, d.mask)


def test_output_types_and_a_large_image(tool: ClassicTool) -> None:
    image, gt = _gray_case(size=640, noise=10)
    pred = tool.set_image(image).predict(Prompt(box=_box(gt)))
    assert pred.mask.shape == (640, 640) and pred.mask.dtype == bool
    assert pred.logits is not None and pred.logits.dtype == np.float32
    assert max(pred.logits.shape) == 512  # the working frame, not full resolution
    assert 0.0 <= pred.score <= 1.0
    assert _iou(pred.mask, gt) > 0.8
    assert abs((pred.logits > 0).mean() - gt.mean()) < 0.05


def test_mask_input_refines_rather_than_restarts(tool: ClassicTool) -> None:
    image, gt = _gray_case(seed=7)
    session = tool.set_image(image)
    first = session.predict(Prompt(box=_box(gt)))
    again = session.predict(Prompt(box=_box(gt), mask_input=first.logits))
    assert _iou(first.mask, again.mask) > 0.9
    # another tool's logits (other size, e.g. 256x256) are resampled, not rejected
    foreign = np.where(np.kron(gt[::5, ::5], np.ones((8, 8))) > 0, 5.0, -5.0).astype(np.float32)[:256, :256]
    other = session.predict(Prompt(box=_box(gt), mask_input=foreign))
    assert _iou(other.mask, gt) > 0.7


def test_encode_once_for_many_decodes() -> None:
    t = ClassicTool()
    image, gt = _gray_case()
    session = t.set_image(image)
    first = session.predict(Prompt(box=_box(gt)))
    second = session.predict(Prompt(points=[[70, 80]], labels=[1], mask_input=first.logits))
    session.predict(Prompt(box=_box(gt), points=[[5, 5]], labels=[0], mask_input=second.logits))
    assert t.encode_count == 1
    assert t.decode_count == 3


def test_negative_clicks_alone_give_an_empty_mask(tool: ClassicTool) -> None:
    image, _ = _gray_case()
    pred = tool.set_image(image).predict(Prompt(points=[[10, 10]], labels=[0]))
    assert not pred.mask.any() and pred.score == 0.0


def test_factory_and_registry() -> None:
    from medseg_agent.tools.registry import build_tool

    t = build_tool("classic", method="random_walker")
    assert isinstance(t, ClassicTool) and t.method == "random_walker"
    assert isinstance(build_classic_tool(device="cuda"), ClassicTool)
    with pytest.raises(ToolError):
        build_classic_tool(checkpoint="weights.pt")
    with pytest.raises(ToolError):
        ClassicTool(method="snakes")
    with pytest.raises(ToolError):
        ClassicTool().set_image(np.zeros((8, 8), np.uint8)).predict(Prompt(mask_input=None))
