"""LLaMA-Factory: ShareGPT-style multimodal JSON (``messages`` + ``images``) and its
``dataset_info.json`` entry.

Messages use role/content tags with ``<image>`` tokens (one per image, in order); the system prompt
is the first message (LLaMA-Factory reads it through ``tags.system_tag``). Image paths are relative
to the export folder, which is the ``dataset_dir`` to give LLaMA-Factory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg_agent.exports.common import ExportItem
from medseg_agent.io.atomic import atomic_write_json
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
        info_path = self.out / DATASET_INFO
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info[self.name] = dataset_info_entry(self.file_name)
        atomic_write_json(info_path, info)
        return path, len(self.rows)
