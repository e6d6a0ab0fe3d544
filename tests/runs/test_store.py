from __future__ import annotations

import pytest

from medseg_agent.runs.parallel import run_jobs
from medseg_agent.runs.store import ResultStore


def _setup():
    return {"offset": 10}


def _work(state, job):
    return {"value": job + state["offset"]}


def test_store_skips_done_jobs_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path)
    ran = run_jobs([(f"j{i}", i) for i in range(3)], _setup, _work, store, show_progress=False)
    assert ran == 3
    with path.open("ab") as handle:  # a kill in the middle of a write
        handle.write(b'{"key": "j3", "val')
    store = ResultStore(path)
    assert store.keys == {"j0", "j1", "j2"}
    ran = run_jobs([(f"j{i}", i) for i in range(5)], _setup, _work, store, show_progress=False)
    assert ran == 2
    rows = list(ResultStore(path).rows())
    assert [r["key"] for r in rows] == ["j0", "j1", "j2", "j3", "j4"]
    assert rows[4]["value"] == 14
    with pytest.raises(ValueError, match="already stored"):
        store.append("j0", {})


def test_worker_processes_give_the_same_results(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    run_jobs([(f"j{i}", i) for i in range(6)], _setup, _work, store, workers=2, show_progress=False)
    assert sorted(r["value"] for r in store.rows()) == list(range(10, 16))


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    from medseg_agent.io.atomic import atomic_write_json, read_jsonl

    store = ResultStore(tmp_path / "r.jsonl")
    store.append("a", {"hd95": float("inf"), "nested": [float("nan"), 1.5]})
    assert read_jsonl(tmp_path / "r.jsonl")[0] == {"key": "a", "hd95": None, "nested": [None, 1.5]}
    atomic_write_json(tmp_path / "x.json", {"v": float("-inf")})
    assert (tmp_path / "x.json").read_text().strip() == '{\n "v": null\n}'


def test_lines_damaged_on_disk_are_redone_not_fatal(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append("a", {"v": 1})
    with path.open("ab") as handle:
        for damaged in (b"[1, 2]", b"5", b"null", b'{"key": [1]}', b'{"key": {"k": 1}}', b'{"key": 7}',
                        b'{"key": "\xff"}', b"\x00"):
            handle.write(damaged + b"\n")
    with caplog.at_level("WARNING", logger="medseg_agent.runs.store"):
        store = ResultStore(path)
    assert store.keys == {"a"}
    assert store.damaged_lines == list(range(2, 10))
    assert f"{path}: 8 damaged line(s)" in caplog.text and "(lines 2, 3, 4, 5, 6, 7, 8, 9)" in caplog.text
    store.append("b", {"v": 2})
    assert [(r["key"], r["v"]) for r in ResultStore(path).rows()] == [("a", 1), ("b", 2)]


def test_intact_files_and_torn_tails_warn_of_nothing(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    ResultStore(path).append("a", {"v": 1})
    with path.open("ab") as handle:  # a kill in the middle of a write is not damage
        handle.write(b'{"key": "b"')
    with caplog.at_level("WARNING"):
        store = ResultStore(path)
    assert store.damaged_lines == [] and caplog.text == ""


def test_numbered_rows_give_the_line_of_each_result_in_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append("a", {"v": 1})
    with path.open("ab") as handle:
        handle.write(b"garbage\n")
    store.append("b", {"v": 2})
    store = ResultStore(path)
    store.append("c", {"v": 3})
    assert [(n, r["key"]) for n, r in ResultStore(path).numbered_rows()] == [(1, "a"), (3, "b"), (4, "c")]
