"""The iterable every reader returns, collecting the samples it had to skip."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from medseg_agent.vocabulary.sample import Sample

from .sample import SkippedSample

Item = Sample | SkippedSample


class Dataset:
    """An iterable of :class:`Sample` that records every entry it could not use in ``skipped``.

    ``produce`` is called anew for each pass and yields ``Sample`` or ``SkippedSample`` items; the
    latter never reach the caller but land in :attr:`skipped` (reset at the start of each pass, so it
    always describes the latest pass). ``split`` filters samples by :attr:`Sample.split`.

    ``len()`` is exact after one complete pass. Before that it is the number of indexed entries when
    the reader could count them cheaply (entries that turn out unreadable, mismatched or empty are
    then skipped, so the final count can be lower); readers that cannot count without loading
    everything (volumes) raise ``TypeError`` until a pass has been made.
    """

    def __init__(
        self,
        name: str,
        produce: Callable[[], Iterable[Item]],
        *,
        source: str = "",
        format: str = "",
        split: str | None = None,
        length_hint: int | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.format = format
        self.split = split
        self.skipped: list[SkippedSample] = []
        self._produce = produce
        self._length_hint = length_hint
        self._exact_len: int | None = None

    def __iter__(self) -> Iterator[Sample]:
        skipped: list[SkippedSample] = []
        self.skipped = skipped
        count = 0
        for item in self._produce():
            if isinstance(item, SkippedSample):
                skipped.append(item)
                continue
            if self.split is not None and item.split != self.split:
                continue
            count += 1
            yield item
        self._exact_len = count

    def __len__(self) -> int:
        if self._exact_len is not None:
            return self._exact_len
        if self._length_hint is not None:
            return self._length_hint
        raise TypeError(f"length of dataset {self.name!r} is unknown until it has been iterated once")

    @property
    def complete(self) -> bool:
        """Whether a full pass has been made (so ``skipped`` and ``len`` are final)."""
        return self._exact_len is not None

    def load(self) -> list[Sample]:
        """Read everything (one full pass) and return the samples as a list."""
        return list(iter(self))

    def __repr__(self) -> str:
        n = self._exact_len if self._exact_len is not None else self._length_hint
        return (
            f"Dataset(name={self.name!r}, format={self.format!r}, source={self.source!r}, "
            f"len={n if n is not None else '?'}, skipped={len(self.skipped)})"
        )
