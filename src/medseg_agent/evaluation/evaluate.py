"""Evaluate a policy driving a tool on datasets: one trajectory record per sample, resumable.

Records go to ``<out>/records.jsonl`` through :class:`ResultStore` (one atomic line per sample, keyed
``dataset/sample_id``), so a killed run resumes where it stopped with no duplicate. Workers are local
processes (:func:`run_jobs`) or Ray actors (:func:`~medseg_agent.evaluation.ray_backend.run_jobs_on_ray`,
the same contract); each holds its own tool and policy, built once by the picklable factories of
:class:`EvalSpec`.

A sample the tool cannot process (:class:`ToolError`) is stored as a failure and reported apart;
a model server that cannot be queried (:class:`PolicyError`) stops the run instead, because that
says nothing about the model: rerun the same command once the server is back.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.evaluation.summary import SampleResult
from medseg_agent.policies.base import Policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.runs.parallel import run_jobs
from medseg_agent.runs.settings import remember_settings
from medseg_agent.runs.store import ResultStore
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.sample import Sample

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"
#: Option names never written to run.json.
_SECRET_WORDS = ("key", "token", "secret", "password")


@dataclass
class EvalSpec:
    """What every worker builds: picklable factories (e.g. ``functools.partial``) and the episode."""

    make_tool: Callable[[], SegmentationTool]
    make_policy: Callable[[], Policy]
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    seed: int = 0
    #: JSON description of the run (policy, options, tool); checked on resume, never holds secrets.
    describe: dict[str, Any] = field(default_factory=dict)

    def with_built(self, tool: SegmentationTool, policy: Policy) -> EvalSpec:
        """This spec with factories that hand out ``tool`` and ``policy``, built in this process: a
        single local worker then reuses what was built to check the settings instead of building twice."""
        return replace(self, make_tool=partial(_ready, tool), make_policy=partial(_ready, policy))


def _ready(value: Any) -> Any:
    return value


@dataclass
class Worker:
    env: SegmentationEnv
    policy: Policy
    seed: int


def build_worker(spec: EvalSpec) -> Worker:
    """Per-process state: one tool, one policy, one environment (called once per worker)."""
    return Worker(SegmentationEnv(spec.make_tool(), spec.episode), spec.make_policy(), spec.seed)


def sample_seed(base: int, key: str) -> int:
    """A stable per-sample seed: the same sample gets the same seed in every run and worker."""
    return (base * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def evaluate_sample(worker: Worker, job: tuple[str, Sample]) -> dict[str, Any]:
    """One episode -> one store row (``record`` or ``failure``). PolicyError propagates."""
    key, sample = job
    identity = {"dataset": sample.dataset, "modality": sample.modality, "target": sample.target}
    if worker.policy.uses_ground_truth and sample.mask is None:
        return {**identity, "failure": {"type": "NoGroundTruth", "message": "the policy needs a ground-truth mask"}}
    try:
        record = run_episode(worker.env, worker.policy, sample, seed=sample_seed(worker.seed, key))
    except ToolError as exc:
        return {**identity, "failure": {"type": type(exc).__name__, "message": str(exc)}}
    return {"record": record.model_dump(mode="json")}


def keyed_samples(samples: Iterable[Sample]) -> Iterator[tuple[str, Sample]]:
    """``dataset/sample_id`` keys in reading order; a repeated key gets ``#2``, ``#3``... (stable)."""
    seen: dict[str, int] = {}
    for sample in samples:
        key = f"{sample.dataset or 'data'}/{sample.sample_id}"
        seen[key] = seen.get(key, 0) + 1
        yield (key if seen[key] == 1 else f"{key}#{seen[key]}"), sample


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options fit for run.json: secrets dropped, paths as strings."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in options.items()
        if not any(word in k.lower() for word in _SECRET_WORDS)
    }


def check_run_file(out_dir: Path, describe: dict[str, Any]) -> None:
    """Write run.json on the first run; on resume, refuse settings that differ from the stored ones."""
    remember_settings(out_dir / RUN_FILE, describe)


def describe_run(
    policy: str, policy_options: dict[str, Any], tool: str, tool_options: dict[str, Any], episode: EpisodeConfig,
    seed: int,
) -> dict[str, Any]:
    """The run description stored in run.json (the resume check compares it field by field)."""
    episode_dict = asdict(episode)
    episode_dict["coordinate_space"] = str(episode.coordinate_space) if episode.coordinate_space else None
    return {
        "policy": policy,
        "policy_options": public_options(policy_options),
        "tool": tool,
        "tool_options": public_options(tool_options),
        "episode": episode_dict,
        "seed": seed,
    }


def run_evaluation(
    samples: Iterable[Sample],
    spec: EvalSpec,
    out_dir: str | Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    ray_gpus_per_worker: float = 0.0,
    show_progress: bool = True,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[ResultStore, dict[str, Sample]]:
    """Run every sample not yet in ``<out_dir>/records.jsonl``; return the store and the samples by key."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_file(out, spec.describe)
    store = ResultStore(out / RECORDS_FILE)
    jobs = list(keyed_samples(samples))
    by_key = dict(jobs)
    description = f"{spec.describe.get('policy', 'policy')} + {spec.describe.get('tool', 'tool')}"
    keyed_jobs = [(k, (k, s)) for k, s in jobs]
    setup = partial(build_worker, spec)
    shared = {"description": description, "show_progress": show_progress, "on_result": on_result}
    if ray_address:
        from medseg_agent.evaluation.ray_backend import run_jobs_on_ray

        run_jobs_on_ray(
            keyed_jobs, setup, evaluate_sample, store,
            address=ray_address, workers=max(1, workers), gpus_per_worker=ray_gpus_per_worker, **shared,
        )
    else:
        run_jobs(keyed_jobs, setup, evaluate_sample, store, workers=workers, **shared)
    return store, by_key


def evaluate_to_folder(
    samples: Iterable[Sample],
    spec: EvalSpec,
    out_dir: str | Path,
    *,
    plots: bool = True,
    gallery_per_row: int = 4,
    **scale: Any,
) -> tuple[list[SampleResult], dict[str, Path]]:
    """The whole ``evaluate`` run: the records (resumed; ``scale``: the workers, Ray and progress
    keywords of :func:`run_evaluation`), then the summary tables, plots and gallery over every record
    of the folder; returns the per-sample results and the written paths."""
    from medseg_agent.evaluation.report import write_report

    store, by_key = run_evaluation(samples, spec, out_dir, **scale)
    describe, episode = spec.describe, spec.episode
    title = (f"{describe.get('policy', 'policy')} + {describe.get('tool', 'tool')} "
             f"({episode.protocol}, {episode.max_turns} turns)")
    return write_report(store, out_dir, max_actions=episode.max_turns, samples=by_key, title=title,
                        meta=describe, plots=plots, gallery_per_row=gallery_per_row)
