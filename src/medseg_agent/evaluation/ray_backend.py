"""Run evaluation jobs on Ray actors: many GPUs or nodes, same records as a local run.

The Ray twin of :func:`medseg_agent.runs.parallel.run_jobs` (same arguments: ``setup`` builds a
worker's state once, ``work(state, job)`` runs one job), so the evaluator plugs it in for
``--ray-address`` without this module knowing what a job is. Each actor builds its own tool and policy
once and runs the jobs sent to it; results come back to this process, which alone appends them to
the :class:`ResultStore`, so a killed driver resumes exactly like a local run. ``address`` is passed
to ``ray.init`` (``auto`` joins the cluster this machine belongs to, ``ray://host:10001`` a remote
one); ``local`` starts a private instance. Every node needs medseg-agent installed (same version)
and the tool's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from medseg_agent.runs.parallel import progress_bar
from medseg_agent.runs.store import ResultStore


class JobActor:
    """Holds one worker's state (tool, policy, environment) for the life of the actor."""

    def __init__(self, setup: Callable[[], Any], work: Callable[[Any, Any], dict[str, Any]]) -> None:
        self.state = setup()
        self.work = work

    def run(self, key: str, job: Any) -> tuple[str, dict[str, Any]]:
        return key, self.work(self.state, job)


def run_jobs_on_ray(
    jobs: Sequence[tuple[str, Any]],
    setup: Callable[[], Any],
    work: Callable[[Any, Any], dict[str, Any]],
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
    """Run ``work(state, job)`` for every job not yet in ``store`` on ``workers`` Ray actors, each with
    its own ``state = setup()``; return how many ran."""
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
        actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(JobActor)
        actors = [actor_class.remote(setup, work) for _ in range(min(workers, len(pending)))]
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
