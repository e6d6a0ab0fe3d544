"""Records written before the typed records (schema 1) still load and replay exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medseg_agent.environment.record import SCHEMA_VERSION, load_record, save_record, turn_masks
from medseg_agent.environment.replay import conversation_from_record, replay_views
from medseg_agent.io.images import load_image
from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop
from medseg_agent.vocabulary.errors import ErrorKind
from medseg_agent.vocabulary.stop import StopReason

FIXTURES = Path(__file__).parent.parent / "fixtures" / "records_v1"
NAMES = ["medsam_norm1000", "ibis_turn_limit", "medsam_errors"]


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_v1_records_replay_to_the_same_views_and_conversation(name):
    assert json.loads((FIXTURES / f"{name}.json").read_text())["schema_version"] == 1
    record = load_record(FIXTURES / f"{name}.json")
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    image = load_image(FIXTURES / "disc.png")
    assert [sha(v) for v in replay_views(record, image)] == expected["views_sha256"]
    conversation = conversation_from_record(record, image, include_final_user=True)
    got = [
        {"role": m.role, "text": m.text, "image_sha256": None if m.image is None else sha(m.image)}
        for m in conversation.messages
    ]
    assert got == expected["messages"]


def test_v1_records_read_as_typed_actions_errors_and_stop_reasons():
    record = load_record(FIXTURES / "medsam_norm1000.json")
    assert record.schema_version == SCHEMA_VERSION and record.stop_reason is StopReason.STOP_ACTION
    first, box, bad, point, stop = record.turns
    assert first.action == Stop() and first.error.kind is ErrorKind.REJECTED and not first.ran_tool
    assert box.action == AddBox(300, 250, 700, 780) and box.action_pixels == AddBox(48, 30, 112, 93.60000000000001)
    assert bad.action is None and bad.error.kind is ErrorKind.NO_ACTION
    assert isinstance(point.action_pixels, AddPoint) and not point.action_pixels.positive
    assert stop.action == Stop() and stop.error is None
    assert [t.actor for t in record.turns] == ["agent"] * 5
    assert [t.turn for t in record.action_turns()] == [2, 4]
    assert load_record(FIXTURES / "ibis_turn_limit.json").stop_reason is StopReason.TURN_LIMIT
    assert load_record(FIXTURES / "medsam_errors.json").stop_reason is StopReason.TOO_MANY_ERRORS


@pytest.mark.parametrize("name", NAMES)
def test_a_v1_record_saved_again_is_version_2_and_replays_the_same(tmp_path, name):
    record = load_record(FIXTURES / f"{name}.json")
    path = save_record(record, tmp_path / "again.json")
    assert json.loads(path.read_text())["schema_version"] == 2
    again = load_record(path)
    assert again == record
    image = load_image(FIXTURES / "disc.png")
    for a, b in zip(replay_views(again, image), replay_views(record, image), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(turn_masks(again), turn_masks(record), strict=True):
        assert np.array_equal(a, b)
