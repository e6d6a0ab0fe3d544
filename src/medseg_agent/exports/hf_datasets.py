"""Hugging Face ``datasets`` Parquet in the conversational format TRL's ``SFTTrainer`` takes for
Qwen2.5-VL / Qwen3-VL: ``messages`` (content as lists of parts, ``{"type": "image"}`` placeholders
in USER turns only) and ``images`` (one per placeholder, in order, decoded to PIL on load).

Load with ``datasets.load_dataset("parquet", data_files=".../<name>.hf.parquet", split="train")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg_agent.exports.common import ConversationParquetWriter
from medseg_agent.protocols.conversation import to_hf


def metadata_features() -> dict[str, Any]:
    from datasets import Value

    return {
        "trajectory_id": Value("string"),
        "sample_id": Value("string"),
        "dataset": Value("string"),
        "modality": Value("string"),
        "target": Value("string"),
        "final_iou": Value("float64"),
        "final_dice": Value("float64"),
        "num_turns": Value("int32"),
    }


def hf_features() -> Any:
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "messages": List({"role": Value("string"), "content": List(part)}),
            "images": List(Image()),
            **metadata_features(),
        }
    )


def HFWriter(out: Path, name: str) -> ConversationParquetWriter:
    return ConversationParquetWriter(out, name, ".hf.parquet", hf_features(), to_hf)
