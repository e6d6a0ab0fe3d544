"""Run evaluation jobs on Ray actors: many GPUs or nodes, same records as a local run.

Each actor builds its own tool and policy once (:func:`build_worker`) and runs samples sent to it;
results come back to this process, which alone appends them to the :class:`ResultStore`, so a
killed driver resumes exactly like a local run. ``address`` is passed to ``ray.init`` (``auto``
joins the cluster this machine belongs to, ``ray://host:10001`` a remote one); ``local`` starts a
private instance. Every node needs medseg-agent installed (same version) and the tool's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from medseg_agent.evaluation.evaluate import EvalSpec, build_worker, evaluate_sample
from medseg_agent.runs.parallel import progress_bar
from medseg_agent.runs.store import ResultStore


class EvalActor:
    """Holds one worker's tool, policy and environment for the life of the actor."""

    def __init__(self, spec: EvalSpec) -> None:
        self.worker = build_worker(spec)

    def run(self, key: str, job: Any) -> tuple[str, dict[str, Any]]:
        return key, evaluate_sample(self.worker, job)


def run_on_ray(
    jobs: Sequence[tuple[str, Any]],
    spec: EvalSpec,
    store: ResultStore,
    *,
    address: str,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    description: str = "running",
    show_progress: bool = True,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    init_options: dict[str, Any] | None = None,
) -> int:
    """Run every job not yet in ``store`` on ``workers`` Ray actors; return how many ran."""
    try:
        import ray
    except ModuleNotFoundError:
        raise RuntimeError("--ray-address needs Ray: pip install 'ray>=2.40'") from None
    pending = [(key, job) for key, job in jobs if key not in store]
    if not pending:
        return 0
    started_here = not ray.is_initialized()
    if started_here:
        options = {"log_to_driver": False, **(init_options or {})}
        ray.init(address=None if address == "local" else address, **options)
    try:
        actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(EvalActor)
        actors = [actor_class.remote(spec) for _ in range(min(workers, len(pending)))]
        queue = list(reversed(pending))
        running: dict[Any, Any] = {}

        def submit(actor: Any) -> None:
            key, job = queue.pop()
            running[actor.run.remote(key, job)] = actor

        with progress_bar(disable=not show_progress) as progress:
            task = progress.add_task(f"{description} (ray)", total=len(pending))
            for actor in actors:
                if queue:
                    submit(actor)
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    actor = running.pop(ref)
                    key, row = ray.get(ref)  # re-raises a worker's PolicyError here
                    store.append(key, row)
                    if on_result:
                        on_result(key, row)
                    progress.advance(task)
                    if queue:
                        submit(actor)
    finally:
        if started_here:
            ray.shutdown()
    return len(pending)
