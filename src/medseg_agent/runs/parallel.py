"""Run jobs in local worker processes (each holding its own tool and policy) with a progress bar.

The parent alone writes results, in completion order, to a :class:`ResultStore`; jobs already in the
store are skipped, which is what makes every long command resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg_agent.runs.store import ResultStore

Job = TypeVar("Job")

_WORKER_STATE: dict[str, Any] = {}


def _init_worker(setup: Callable[[], Any]) -> None:
    _WORKER_STATE["state"] = setup()


def _run_in_worker(work: Callable[[Any, Any], dict[str, Any]], job: Any) -> dict[str, Any]:
    return work(_WORKER_STATE["state"], job)


def progress_bar(disable: bool = False) -> Progress:
    """The progress bar every long command shows (on stderr, so tables on stdout stay clean)."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # descriptions may name paths
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disable,
    )


def run_jobs(
    jobs: Iterable[tuple[str, Job]],
    setup: Callable[[], Any],
    work: Callable[[Any, Job], dict[str, Any]],
    store: ResultStore,
    *,
    workers: int = 1,
    description: str = "running",
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    show_progress: bool = True,
) -> int:
    """Run ``work(state, job)`` for every ``(key, job)`` not yet in ``store``; return how many ran.

    ``setup()`` builds the per-worker state (tool, policy, ...) once per process. ``work`` must be
    a picklable top-level function when ``workers > 1``.
    """
    pending = [(key, job) for key, job in jobs if key not in store]
    if not pending:
        return 0
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(description, total=len(pending))

        def finish(key: str, row: dict[str, Any]) -> None:
            store.append(key, row)
            if on_result:
                on_result(key, row)
            progress.advance(task)

        if workers <= 1:
            state = setup()
            for key, job in pending:
                finish(key, work(state, job))
            return len(pending)
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(setup,)) as pool:
            queue = list(reversed(pending))
            running: dict[Any, str] = {}
            while queue or running:
                while queue and len(running) < workers * 2:
                    key, job = queue.pop()
                    running[pool.submit(_run_in_worker, work, job)] = key
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), future.result())
    return len(pending)
