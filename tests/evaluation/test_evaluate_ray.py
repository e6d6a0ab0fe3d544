"""The same evaluation on Ray actors (a private local Ray instance with 2 CPUs)."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
from evalfixtures import disc_samples

from medseg_agent.environment.episode import EpisodeConfig
from medseg_agent.evaluation.evaluate import EvalSpec, run_evaluation
from medseg_agent.policies.registry import build_policy
from medseg_agent.tools.registry import build_tool

with warnings.catch_warnings():  # Ray's own imports warn about its deprecated module names
    warnings.simplefilter("ignore", DeprecationWarning)
    ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_actors_fill_the_same_store_and_resume(tmp_path):
    samples = disc_samples(5)
    spec = EvalSpec(
        make_tool=partial(build_tool, "classic"),
        make_policy=partial(build_policy, "clicker", stop_iou=0.9),
        episode=EpisodeConfig(max_turns=3, view_longest_side=64),
        describe={"policy": "clicker", "tool": "classic"},
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store, _ = run_evaluation(samples[:3], spec, tmp_path, workers=2, ray_address="local", show_progress=False)
        assert sorted(store.keys) == [f"synthetic/disc-{i}" for i in range(3)]
        store, _ = run_evaluation(samples, spec, tmp_path, workers=2, ray_address="local", show_progress=False)
    finally:
        ray.shutdown()
    rows = list(store.rows())
    assert sorted(r["key"] for r in rows[:3]) == [f"synthetic/disc-{i}" for i in range(3)]
    assert len(rows) == 5 and all(r["record"]["tool"] == "classic" for r in rows)
    # Same episodes as a local run, metric for metric.
    local, _ = run_evaluation(samples, spec, tmp_path / "local", show_progress=False)
    expected = {r["key"]: r["record"]["final_metrics"] for r in local.rows()}
    assert {r["key"]: r["record"]["final_metrics"] for r in rows} == expected
    assert all(m["iou"] > 0 for m in expected.values())
