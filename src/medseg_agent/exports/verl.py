"""verl data: multi-turn SFT Parquet and RL Parquet.

SFT (``verl.utils.dataset.multiturn_sft_dataset.MultiTurnSFTDataset``): ``messages`` with string
contents holding one ``<image>`` token per image, and ``images`` in order (``{"bytes", "path"}``,
what verl's ``process_image`` reads). The system prompt already lists the tool schemas, so there is
no ``tools`` column (the chat template would list them twice).

RL (``verl.utils.dataset.rl_dataset.RLHFDataset`` + the project's agent loop), one row per sample,
built by :func:`medseg_agent.training.verl.dataset.rl_row`, the same rows ``medseg-agent train
rl-data`` writes, so the agent loop, its tools and the reward function read them: ``data_source``,
``agent_name``, ``prompt`` (system + first user turn with ``<image>``), ``images`` (the first view),
``reward_model.ground_truth`` (the mask as COCO RLE, with the target) and ``extra_info`` with
``index``, ``sample_id``, ``dataset``, ``split``, ``tools_kwargs`` (the full-resolution image inline
and the ground truth, for the episode the tools run); this export adds ``modality`` and ``target`` to
``extra_info``. The RL stage's agent loop speaks the ``medsam`` protocol only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg_agent.exports.common import ConversationParquetWriter, ExportItem, FormatNotApplicable, ParquetRows
from medseg_agent.exports.hf_datasets import metadata_features
from medseg_agent.io.masks import decode_rle
from medseg_agent.protocols.conversation import to_sharegpt
from medseg_agent.vocabulary.sample import Sample


def _string_messages() -> Any:
    from datasets import List, Value

    return List({"role": Value("string"), "content": Value("string")})


def sft_features() -> Any:
    from datasets import Features, Image, List

    return Features({"messages": _string_messages(), "images": List(Image()), **metadata_features()})


def VerlSFTWriter(out: Path, name: str) -> ConversationParquetWriter:
    return ConversationParquetWriter(out, name, ".verl_sft.parquet", sft_features(), to_sharegpt)


class VerlRLWriter:
    """One row per sample: RL starts from the first view; the trajectories themselves are not used."""

    def __init__(self, out: Path, name: str) -> None:
        self._rows = ParquetRows(out / f"{name}.verl_rl.parquet")
        self._seen: set[str] = set()

    def add(self, item: ExportItem) -> None:
        from medseg_agent.training.verl.dataset import rl_row

        if item.sample.key in self._seen:
            return
        self._seen.add(item.sample.key)
        record = item.record
        if record.protocol != "medsam":
            raise FormatNotApplicable(
                f"{item.trajectory_id}: the verl RL export needs trajectories of the medsam protocol (the "
                f"RL agent loop's), got {record.protocol!r}; export the SFT formats only, or generate "
                "with --protocol medsam"
            )
        if record.gt_mask_rle is None:
            raise ValueError(f"{item.trajectory_id}: the record has no ground-truth mask for the RL reward")
        stored = item.sample
        sample = Sample(
            image=item.image,
            mask=decode_rle(record.gt_mask_rle),
            target=record.target,
            modality=stored.modality,
            dataset=stored.dataset,
            sample_id=stored.sample_id,
            spacing=record.spacing,
            split=stored.split,
        )
        row = rl_row(sample, item.index, split=stored.split, view_longest_side=max(record.view_size))
        row["extra_info"] |= {"modality": stored.modality, "target": record.target}
        self._rows.add(row)

    def close(self) -> tuple[Path, int]:
        return self._rows.close()

    def abort(self) -> None:
        self._rows.abort()
