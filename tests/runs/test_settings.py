"""A run folder resumes only with the settings it was started with; differences and damaged settings
files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg_agent.runs.settings import SettingsMismatch, remember_settings


def test_a_fresh_run_writes_its_settings_and_a_resume_with_the_same_ones_passes(tmp_path):
    settings = {"tool": {"name": "classic", "checkpoint": Path("/m/ck.pt")}, "seed": 0, "sizes": (1, 2)}
    remember_settings(tmp_path / "run.json", settings)
    remember_settings(tmp_path / "run.json", settings)  # paths and tuples compare as JSON stores them
    assert (tmp_path / "run.json").is_file()


def test_each_difference_is_named_by_its_dotted_name(tmp_path):
    remember_settings(tmp_path / "run.json", {"tool": {"name": "classic", "device": "cpu"}, "seed": 0})
    with pytest.raises(SettingsMismatch) as caught:
        remember_settings(tmp_path / "run.json", {"tool": {"name": "sam", "device": "cpu"}, "seed": 0, "new": 1})
    assert str(caught.value) == (
        f'{tmp_path} holds a run made with other settings (new was null, now 1; tool.name was "classic", now "sam"); '
        "use another --out, or the same settings to resume"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"seed": 0', r"run\.json is not valid JSON \(Expecting ',' delimiter"),
        (b'{"site": "f\xe9mur"}', r"run\.json is not UTF-8 text \(byte 11 is 0xe9\)"),
        (b"[1, 2]", r"run\.json holds a JSON list, not an object"),
    ],
)
def test_a_damaged_settings_file_is_named_not_a_traceback(tmp_path, content, problem):
    (tmp_path / "run.json").write_bytes(content)
    expected = r"^run settings file .*" + problem + r".*; delete it to start the run afresh"
    with pytest.raises(SettingsMismatch, match=expected):
        remember_settings(tmp_path / "run.json", {"seed": 0})
