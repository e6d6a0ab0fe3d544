"""Expert trajectories at dataset scale: several distinct trajectories per sample, resumable.

One job per sample: the image is encoded once, the expert plays seeded episodes until
``per_sample`` distinct trajectories exist (distinct = different action sequences) or the attempts
run out, and the sample's records are appended to ``trajectories.jsonl`` as one line (atomic,
:class:`medseg_agent.runs.store.ResultStore`). A killed run restarts at the first sample not stored:
no duplicate, no lost record. The image each record was made on is written beside it
(``images/<sample>.png``) so exports can replay every view without the original dataset.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import TrajectoryRecord, record_from_dict
from medseg_agent.experts import defaults
from medseg_agent.experts.expert import ExpertPolicy
from medseg_agent.io.atomic import atomic_write_bytes
from medseg_agent.policies.runner import run_episode
from medseg_agent.runs.parallel import run_jobs
from medseg_agent.runs.settings import remember_settings
from medseg_agent.runs.store import ResultStore
from medseg_agent.tools.base import SegmentationTool, ToolSession
from medseg_agent.vocabulary.actions import action_to_dict
from medseg_agent.vocabulary.sample import Sample

STORE_NAME = "trajectories.jsonl"
CONFIG_NAME = "generation.json"
SUMMARY_NAME = "summary.json"
IMAGES_DIR = "images"


@dataclass
class GenerationConfig:
    """Everything that decides the trajectories; stored in ``generation.json`` so a resumed run
    cannot silently mix settings."""

    mode: str = "hybrid"
    protocol: str = "medsam"
    per_sample: int = 1
    max_turns: int | None = None  # None: 5 (hybrid) or 20 (clicks)
    view_longest_side: int | None = 512
    reasoning: bool | None = None  # None: on for the ibis protocol (it asks for <think>), off for medsam
    seed: int = 0
    attempts_per_trajectory: int = 3  # attempts allowed per wanted trajectory before giving up on more
    expert: dict[str, Any] = field(default_factory=dict)  # delta, epsilon, tau, max_tries, box_jitter, ...

    @property
    def turns(self) -> int:
        return self.max_turns or defaults.MAX_TURNS[self.mode]

    @property
    def think(self) -> bool:
        return self.protocol == "ibis" if self.reasoning is None else self.reasoning

    def episode_config(self) -> EpisodeConfig:
        return EpisodeConfig(
            max_turns=self.turns, protocol=self.protocol, view_longest_side=self.view_longest_side
        )

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting, before any sample is read."""
        from medseg_agent.protocols import PROTOCOLS

        if self.mode not in defaults.MODES:
            raise ValueError(f"--mode must be one of {', '.join(defaults.MODES)}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        self.build_expert()  # the expert checks its own thresholds

    def build_expert(self) -> ExpertPolicy:
        return ExpertPolicy(self.mode, reasoning=self.think, **self.expert)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resolved"] = {"max_turns": self.turns, "reasoning": self.think, "tau": self.build_expert().tau}
        return data


def sample_key(sample: Sample) -> str:
    return f"{sample.dataset}/{sample.sample_id}"


def file_stem(key: str) -> str:
    """A file name for a sample key: readable, and unique through a short checksum."""
    safe = re.sub(r"[^A-Za-z0-9+.-]+", "_", key).strip("_")[:80]
    return f"{safe}-{zlib.crc32(key.encode()):08x}"


def trajectory_seed(base: int, key: str, attempt: int) -> int:
    """Seed of one attempt: stable across runs, machines and worker counts."""
    return int(np.random.SeedSequence([base, zlib.crc32(key.encode()), attempt]).generate_state(1)[0])


def trajectory_signature(record: TrajectoryRecord) -> str:
    """Two trajectories are the same when their action sequences are (model coordinates)."""
    actions = [None if turn.action is None else action_to_dict(turn.action, exact=True) for turn in record.turns]
    return json.dumps(actions, sort_keys=True)


def run_expert_episode(
    env: SegmentationEnv,
    expert: ExpertPolicy,
    sample: Sample,
    *,
    seed: int = 0,
    session: ToolSession | None = None,
) -> TrajectoryRecord:
    """One expert episode (look-ahead on the episode's session), with what the expert decided kept in
    ``record.meta`` (beside the seed, which every episode keeps)."""
    record = run_episode(env, expert, sample, seed=seed, session=session)
    record.meta["expert"] = expert.episode_info
    return record


def generate_for_sample(
    tool: SegmentationTool, sample: Sample, config: GenerationConfig
) -> list[TrajectoryRecord]:
    """Up to ``config.per_sample`` distinct expert trajectories for ``sample`` (one image encode)."""
    env = SegmentationEnv(tool, config.episode_config())
    expert = config.build_expert()
    session = tool.set_image(sample.image)
    key = sample_key(sample)
    records: list[TrajectoryRecord] = []
    seen: set[str] = set()
    for attempt in range(config.per_sample * config.attempts_per_trajectory):
        if len(records) == config.per_sample:
            break
        record = run_expert_episode(
            env, expert, sample, seed=trajectory_seed(config.seed, key, attempt), session=session
        )
        signature = trajectory_signature(record)
        if signature in seen:
            continue
        seen.add(signature)
        record.meta["attempt"] = attempt
        records.append(record)
    return records


# -- the resumable dataset run -----------------------------------------------------------------
def _work(out: Path, config: GenerationConfig, tool: SegmentationTool, sample: Sample) -> dict[str, Any]:
    key = sample_key(sample)
    image_rel = f"{IMAGES_DIR}/{file_stem(key)}.png"
    atomic_write_bytes(out / image_rel, png_bytes(sample.image))
    records = generate_for_sample(tool, sample, config)
    return {
        "sample_id": sample.sample_id,
        "dataset": sample.dataset,
        "modality": sample.modality,
        "target": sample.target,
        "split": sample.split,
        "image": image_rel,
        "trajectories": [record.model_dump(mode="json") for record in records],
    }


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an RGB uint8 image, so replayed views match the live ones exactly."""
    import cv2

    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return buffer.tobytes()


def check_config(out: Path, config: GenerationConfig, tool_id: dict[str, Any]) -> None:
    """Refuse to resume a run made with other settings; write the settings on a fresh run."""
    remember_settings(out / CONFIG_NAME, {"tool": tool_id, **config.to_dict()})


def generate_dataset(
    samples: Iterable[Sample],
    out: str | Path,
    config: GenerationConfig,
    *,
    tool_factory: Callable[[], SegmentationTool],
    tool_id: dict[str, Any],
    workers: int = 1,
    show_progress: bool = True,
) -> int:
    """Generate trajectories for every sample not yet in ``out``; returns how many samples ran.

    ``tool_factory`` builds the tool once per worker (a picklable top-level callable when
    ``workers > 1``); ``tool_id`` (e.g. ``{"name": "sam2", "checkpoint": ...}``) is stored with the
    settings so a resume with another tool is refused.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, config, tool_id)
    jobs: dict[str, Sample] = {}
    for sample in samples:
        key = sample_key(sample)
        if key in jobs:
            raise ValueError(f"two samples share the id {key!r}: sample ids must be unique within a dataset")
        jobs[key] = sample
    return run_jobs(
        jobs.items(),
        tool_factory,
        partial(_work, out, config),
        ResultStore(out / STORE_NAME),
        workers=workers,
        description=f"expert trajectories ({config.mode})",
        show_progress=show_progress,
    )


@dataclass
class StoredSample:
    """One line of ``trajectories.jsonl``: the sample and its records."""

    key: str
    sample_id: str
    dataset: str
    modality: str
    target: str
    split: str
    image_path: Path
    records: list[TrajectoryRecord]


def load_generation(folder: str | Path) -> list[StoredSample]:
    """Read a generation folder back (records validated, image paths resolved)."""
    folder = Path(folder)
    path = folder / STORE_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{folder} holds no {STORE_NAME}: run `medseg-agent trajectories generate` first"
        )
    out = []
    for line, row in ResultStore(path).numbered_rows():
        try:
            records = [
                record_from_dict(data, f"{path} line {line} trajectory {i}")
                for i, data in enumerate(row["trajectories"])
            ]
            out.append(
                StoredSample(
                    key=row["key"],
                    sample_id=row["sample_id"],
                    dataset=row["dataset"],
                    modality=row["modality"],
                    target=row["target"],
                    split=row.get("split", ""),
                    image_path=folder / row["image"],
                    records=records,
                )
            )
        except KeyError as exc:
            raise ValueError(f"{path} line {line}: missing field {exc.args[0]!r}") from None
    return out
