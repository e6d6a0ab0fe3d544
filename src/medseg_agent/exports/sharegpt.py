"""LLaMA-Factory: ShareGPT-style multimodal JSON (``messages`` + ``images``) and its
``dataset_info.json`` entry.

Messages use role/content tags with ``<image>`` tokens (one per image, in order); the system prompt
is the first message (LLaMA-Factory reads it through ``tags.system_tag``). Image paths are relative
to the export folder, which is the ``dataset_dir`` to give LLaMA-Factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg_agent.exports.common import ExportItem
from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.io.text import read_json_object
from medseg_agent.protocols.conversation import to_sharegpt

DATASET_INFO = "dataset_info.json"


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


class ShareGPTWriter:
    def __init__(self, out: Path, name: str) -> None:
        self.out, self.name = out, name
        # Read before any work: a damaged list of the folder's other datasets stops the export at once.
        self.info = read_json_object(out / DATASET_INFO, "LLaMA-Factory dataset list") or {}
        self.file_name = f"{name}.sharegpt.json"
        self.rows: list[dict[str, Any]] = []

    def add(self, item: ExportItem) -> None:
        messages, _ = to_sharegpt(item.conversation)
        self.rows.append({"messages": messages, "images": [image.path for image in item.images]})

    def abort(self) -> None:
        """Nothing is written before :meth:`close`."""

    def close(self) -> tuple[Path, int]:
        path = self.out / self.file_name
        atomic_write_json(path, self.rows)
        self.info[self.name] = dataset_info_entry(self.file_name)
        atomic_write_json(self.out / DATASET_INFO, self.info)
        return path, len(self.rows)
