"""The annotation app used as a person uses it, in headless Chromium: real demo images, boxes and
clicks with the mouse, undo, the agent proposing through an OpenAI-compatible server, saving, and a
saved record that replays to the saved mask."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from app_page import error_click

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask
from medseg_agent.experts.generate import load_generation
from medseg_agent.io.masks import read_mask_png
from medseg_agent.tools.registry import build_tool
from scripted_chat import scripted_chat_server

pytestmark = pytest.mark.slow
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "app.png"


def sample_named(running_app, text: str):
    return next(s for s in running_app.samples if text in s.sample_id)


def bbox(mask: np.ndarray, margin: int = 3) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (max(xs.min() - margin, 0), max(ys.min() - margin, 0), min(xs.max() + margin, w - 1),
            min(ys.max() + margin, h - 1))


def replay(record, sample) -> np.ndarray:
    """Run the record's replies through a fresh environment with the same tool: the final mask."""
    env = SegmentationEnv(build_tool("classic"), EpisodeConfig(max_turns=record.max_turns))
    env.reset(sample)
    for turn in record.turns:
        observation = env.step(turn.raw_text, actor=turn.actor)
    assert [t.actor for t in env.record.turns] == [t.actor for t in record.turns]
    return observation.mask


def saved_record(running_app, key: str):
    stored = next(s for s in load_generation(running_app.out) if s.key == key)
    return stored, stored.records[0]


def test_a_person_segments_a_demo_image_undoes_and_saves(app_page, running_app):
    sample = sample_named(running_app, "z068_MRI-T1_head_left+putamen")
    opened = app_page.open_library(sample.sample_id)
    assert (opened["height"], opened["width"]) == sample.mask.shape
    assert app_page.page.input_value("#target") == sample.target

    boxed = app_page.drag_box(*bbox(sample.mask))
    after_box = app_page.mask()
    assert boxed["turns"][0]["actor"] == "person" and boxed["turns"][0]["name"] == "add_bbox"
    assert after_box.any()

    # zoom in with the wheel, at the cursor: the click still lands on the intended pixel
    point = error_click(after_box, sample.mask, positive=True) or error_click(after_box, ~after_box, True)
    scale = app_page.state("app.view.scale")
    app_page.page.mouse.move(*app_page.to_screen(point[0] + 3, point[1] + 2))
    app_page.page.mouse.wheel(0, -400)
    app_page.wait(f"app.view.scale > {scale * 1.5}")
    clicked = app_page.click(*point, positive=True)
    after_positive = app_page.mask()
    assert not np.array_equal(after_positive, after_box) and after_positive[int(point[1]), int(point[0])]
    assert np.allclose(clicked["turns"][1]["action_pixels"]["arguments"]["point_2d"], point, atol=1.0)
    app_page.press("f", f"Math.abs(app.view.scale - {scale}) < 1e-6")

    point = error_click(after_positive, sample.mask, positive=False) or error_click(after_positive, ~after_positive,
                                                                                     False)
    negative = app_page.click(*point, positive=False)
    after_negative = app_page.mask()
    assert not np.array_equal(after_negative, after_positive) and not after_negative[int(point[1]), int(point[0])]
    assert [t["actor"] for t in negative["turns"]] == ["person"] * 3
    assert negative["prompt"]["labels"] == [1, 0]

    app_page.page.click("#undo")
    app_page.wait("app.episode.turns.length === 2")
    assert np.array_equal(app_page.mask(), after_positive)
    assert app_page.page.locator("#turns li").count() == 2
    app_page.press("Control+Shift+Z", "app.episode.turns.length === 3")
    assert np.array_equal(app_page.mask(), after_negative)
    app_page.press("Control+z", "app.episode.turns.length === 2 && app.episode.can_redo")

    app_page.page.click("#save")
    app_page.wait("app.episode.saved.length === 1")
    assert "masks/" in app_page.page.inner_text("#saved-info")
    key = app_page.episode()["saved"][0]["key"]
    stored, record = saved_record(running_app, key)
    saved_mask = read_mask_png(running_app.out / "masks" / (stored.image_path.stem + ".png"))
    assert np.array_equal(saved_mask, after_positive) and np.array_equal(final_mask(record), after_positive)
    assert [t.actor for t in record.turns] == ["person", "person", "person"]
    assert np.array_equal(replay(record, sample), saved_mask)


def test_the_agent_proposes_and_the_person_takes_over(app_page, running_app):
    sample = sample_named(running_app, "z068_MRI-T1_head_left+putamen")
    app_page.open_library(sample.sample_id)
    h, w = sample.mask.shape
    x1, y1, x2, y2 = bbox(sample.mask, margin=2)
    box = [round(x1 / w * 1000), round(y1 / h * 1000), round(x2 / w * 1000), round(y2 / h * 1000)]
    thought = "The left putamen is the grey lens lateral to the internal capsule; a box around it first."
    with scripted_chat_server() as chat:
        chat.reply(
            {"content": f"<think>{thought}</think>\n<tool_call>\n"
                        f'{{"name": "add_bbox", "arguments": {{"bbox_2d": {box}}}}}\n</tool_call>'},
            {"content": "<think>The mask now follows the putamen.</think>\n<tool_call>\n"
                        '{"name": "stop_action", "arguments": {}}\n</tool_call>'},
        )
        page = app_page.page
        page.select_option("#agent-kind", "openai")
        page.fill("#agent-url", chat.base_url)
        page.click("#agent-step")
        app_page.wait("app.episode && app.episode.turns.length === 1 && !app.agentRunning")
        agent_box = app_page.mask()
        assert app_page.episode()["turns"][0]["actor"] == "agent"
        assert thought in page.inner_text("#agent-says") and "score" in page.inner_text("#agent-says")

        missed = error_click(agent_box, sample.mask, positive=True)
        if missed is not None:
            app_page.click(*missed, positive=True)
        leaked = error_click(app_page.mask(), sample.mask, positive=False) or error_click(
            app_page.mask(), ~app_page.mask(), False)
        app_page.click(*leaked, positive=False)
        person_turns = app_page.turns() - 1
        page.wait_for_timeout(150)
        page.screenshot(path=str(running_app.out / "app.png"))
        if os.environ.get("MEDSEG_UPDATE_DOCS"):
            DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(running_app.out / "app.png", DOCS_SCREENSHOT)

        page.click("#agent-run")
        app_page.wait("app.episode.done && !app.agentRunning")
        episode = app_page.episode()
        assert [t["actor"] for t in episode["turns"]] == ["agent"] + ["person"] * person_turns + ["agent"]
        assert episode["stop_reason"] == "stop_action"
        assert "Episode ended" in page.inner_text("#banner")
        history = [m for m in chat.requests[-1]["messages"] if m["role"] == "assistant"]
        assert len(history) == 1 + person_turns and '"point_type": "negative"' in history[-1]["content"]

    page.click("#save")
    app_page.wait("app.episode.saved.length === 1")
    _, record = saved_record(running_app, app_page.episode()["saved"][0]["key"])
    assert [t.actor for t in record.turns] == [t["actor"] for t in episode["turns"]]
    assert record.meta["annotation"]["corrected"] and record.meta["annotation"]["agent"]["kind"] == "openai"
    assert np.array_equal(replay(record, sample), final_mask(record))


def test_a_volume_is_browsed_slice_by_slice_and_saved_as_nifti(app_page, running_app):
    import nibabel as nib

    from medseg_agent.data.volumes import canonical, display_slice

    page = app_page.page
    app_page.open_library("Colin27 T1 brain MRI")
    first = app_page.state("app.image.slice")
    assert first["axis"] == "axial" and not page.locator("#volume-controls").is_hidden()
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowUp")
    app_page.wait(f"app.image.slice.index === {first['index'] + 1}")
    page.select_option("#axis", "coronal")
    app_page.wait("app.image.slice.axis === 'coronal'")
    page.select_option("#contrast", "pct:2:98")
    app_page.wait("app.image.contrast.percentiles[0] === 2")
    image = app_page.state("app.image")
    app_page.drag_box(image["width"] * 0.3, image["height"] * 0.3, image["width"] * 0.7, image["height"] * 0.6)
    mask = app_page.mask()
    app_page.press("s", "app.episode.saved.length === 1")
    saved = app_page.episode()["saved"][0]
    assert saved["mask_format"] == "nifti"
    written = nib.load(running_app.out / saved["mask"])
    assert written.shape == (181, 217, 181)
    index = image["slice"]["index"]
    assert np.array_equal(display_slice(np.asanyarray(canonical(written).dataobj), index, "coronal") > 0, mask)


def test_click_to_overlay_latency_at_512(app_page, running_app, demo_data):
    """A 512x512 16-bit microscopy image uploaded from disk; the Performance API times each click."""
    import tifffile

    page = app_page.page
    page.set_input_files("#file-input", str(demo_data.cells / "img2d.tif"))
    app_page.wait("app.image && app.image.width === 512 && app.bitmap")
    page.fill("#target", "cell nucleus")
    labels = tifffile.imread(demo_data.cells / "mask2d.tif")
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    nucleus = labels == values[np.argmax(counts)]
    app_page.drag_box(*bbox(nucleus, margin=4))
    clicks = 0
    for _ in range(6):
        mask = app_page.mask()
        point = error_click(mask, nucleus, positive=clicks % 2 == 0) or error_click(mask, ~mask, True)
        app_page.click(*point, positive=clicks % 2 == 0)
        clicks += 1
    latencies = app_page.latencies_ms()
    assert len(latencies) == clicks
    report = {"clicks": clicks, "latency_ms": latencies, "median_ms": statistics.median(latencies)}
    (running_app.out / "latency.json").write_text(json.dumps(report))
    print(f"click -> overlay at 512x512 (classic): {report}")
    assert max(latencies) < 2000
