"""Loading a vision-language checkpoint (processor + model) for the hf policy, SFT and GRPO, with one error.

There is no model hub on the machines this toolkit targets, so a checkpoint is a local folder (or a hub id
already in the local cache). transformers answers a missing folder with an ``OSError`` about repository
ids and an empty one with a list of processor classes, minutes into a job; here both name the folder and
what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, naming the folder, who wanted it and why."""


def checkpoint_reference(model: str | Path, who: str) -> str:
    """The name to give ``from_pretrained``: an existing folder as an absolute path, else a hub id. A name
    that is written as a path (``/``, ``./``, ``~``) but does not exist is refused before anything loads."""
    text = str(model)
    if not text.strip():
        raise CheckpointError(f"{who}: no checkpoint given (a folder saved with save_pretrained)")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{who}: checkpoint {path} is a file; give the folder that holds config.json")
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        raise CheckpointError(f"{who}: checkpoint folder {path} does not exist")
    return text


def load_vision_language_checkpoint(
    model: str | Path, who: str, *, processor_options: dict[str, Any] | None = None, dtype: Any = "auto"
) -> tuple[Any, Any]:
    """(processor, model) of an image-text-to-text checkpoint, loading errors raised as :class:`CheckpointError`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name = checkpoint_reference(model, who)
    try:
        processor = AutoProcessor.from_pretrained(name, **(processor_options or {}))
        network = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:  # KeyError: a config.json whose model_type is unknown
        raise CheckpointError(f"{who}: cannot load a vision-language checkpoint from {name}: {exc}") from None
    return processor, network
