"""Checkpoint loading and validation shared by the SAM-family backends (SAM, MedSAM, SAM 2).

Why not the packages' own loaders: ``segment_anything`` calls ``torch.load`` unguarded and
``load_state_dict`` strictly, so a wrong file surfaces as a bare ``RuntimeError`` with hundreds of
key names; ``sam2`` logs the missing keys and raises an empty ``RuntimeError()``. Here every
failure is a :class:`ToolError` that names the file, the model it was meant for and a few of the
offending keys, and that guesses what the file actually contains.

Checkpoints come from local files only: nothing here downloads weights. ``checkpoint=None`` means
randomly initialised weights from the official architecture, which is only useful for tests and
benchmarks and therefore has to be asked for explicitly with ``allow_random_weights=True``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from medseg_agent.vocabulary.errors import ToolError

ModelT = TypeVar("ModelT", bound=nn.Module)

#: Keys under which training scripts commonly nest the weights (SAM 2 / MedSAM2 use ``model``).
WRAPPER_KEYS: tuple[str, ...] = ("model", "state_dict", "model_state_dict", "module", "net")
#: Prefixes added by ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile``.
_STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: How many offending keys an error message lists.
_SHOWN = 5


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check it exists, so a typo fails at build time, not at first encode."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ToolError(f"invalid device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ToolError(f"device {device!r} requested but CUDA is not available in this environment")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ToolError(f"device {device!r} requested but MPS is not available in this environment")
    return resolved


def resolve_checkpoint(
    checkpoint: str | Path | None, *, allow_random_weights: bool, model_desc: str
) -> Path | None:
    """Return the checkpoint's local path, or ``None`` when random weights were explicitly allowed.

    A missing checkpoint is an error by default because a randomly initialised SAM silently
    produces garbage masks; forgetting ``--checkpoint`` must not look like a working tool.
    """
    if checkpoint is None or (isinstance(checkpoint, str) and not checkpoint.strip()):
        if allow_random_weights:
            return None
        raise ToolError(
            f"{model_desc} needs a checkpoint: pass checkpoint=<path to a local weights file>. "
            "Randomly initialised weights are only available with allow_random_weights=True "
            "(meant for tests and benchmarks, the masks are meaningless)"
        )
    text = str(checkpoint)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise ToolError(
            f"checkpoint {text!r} for {model_desc} is a URL; only local files are supported "
            "(download the weights yourself and pass the file path)"
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise ToolError(f"checkpoint file {path} for {model_desc} does not exist")
    if not path.is_file():
        raise ToolError(f"checkpoint {path} for {model_desc} is not a file")
    return path


def load_state_dict(path: Path, *, model_desc: str) -> dict[str, torch.Tensor]:
    """Read a weights file onto the CPU and unwrap it to a flat ``{name: tensor}`` state dict.

    ``weights_only=True`` refuses arbitrary pickled objects: a checkpoint is data, and loading it
    must not be able to run code.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ToolError(
            f"could not read checkpoint {path} (expected {model_desc} weights saved with torch.save): "
            f"{type(exc).__name__}: {_first_line(exc)}. The file may be truncated (an incomplete "
            "download) or not a PyTorch file; it is loaded with weights_only=True, so pickled "
            "Python objects other than tensors and plain containers are refused"
        ) from exc
    return unwrap_state_dict(obj, path=path, model_desc=model_desc)


def unwrap_state_dict(obj: Any, *, path: Path | str, model_desc: str) -> dict[str, torch.Tensor]:
    """Strip the common wrappers: ``{"model": sd, "optimizer": ..., "epoch": ...}`` and friends,
    and the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    for _ in range(3):  # wrappers are occasionally nested ({"state_dict": {"model": ...}})
        if not isinstance(obj, Mapping) or _is_tensor_mapping(obj):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ToolError(
            f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict "
            f"(a mapping of parameter names to tensors) for {model_desc}"
        )
    if not obj:
        raise ToolError(f"checkpoint {path} holds an empty state dict, expected {model_desc} weights")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ToolError(
            f"checkpoint {path} is not a state dict for {model_desc}: entries {_preview(not_tensors)} "
            f"are not tensors (looked inside the wrapper keys {', '.join(WRAPPER_KEYS)})"
        )
    state = {str(k): v for k, v in obj.items()}
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: Path | str, model_desc: str
) -> None:
    """Compare keys and shapes before loading, so the error lists what differs instead of the
    wall of text ``load_state_dict`` produces, and says what the file looks like instead."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {_preview(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {_preview(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {_preview(mismatched)})")
    guess = describe_state_dict(state_dict)
    hint = f" The file looks like {guess}." if guess else ""
    raise ToolError(
        f"checkpoint {path} does not match {model_desc}: {'; '.join(problems)}.{hint} "
        "Check that the model type / config matches the checkpoint"
    )


def load_weights(model: ModelT, state_dict: Mapping[str, torch.Tensor], *, path: Path | str,
                 model_desc: str) -> ModelT:
    """Validate, then load strictly: a partially loaded SAM would fail silently at prediction."""
    check_state_dict(model, state_dict, path=path, model_desc=model_desc)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. dtype that cannot be copied; keys/shapes were checked
        raise ToolError(f"could not load checkpoint {path} into {model_desc}: {_first_line(exc)}") from exc
    return model


def build_model(
    build: Callable[[], ModelT],
    checkpoint: str | Path | None,
    *,
    model_desc: str,
    allow_random_weights: bool,
    device: str | torch.device,
) -> tuple[ModelT, Path | None]:
    """Build an architecture (randomly initialised by ``build``) and fill it from ``checkpoint``.

    The file is read *before* the model is built so that a bad path or a truncated file fails in
    milliseconds rather than after seconds of random initialisation. Returns the model in eval
    mode on ``device`` and the checkpoint path actually used (``None`` for random weights).
    """
    target = resolve_device(device)
    path = resolve_checkpoint(checkpoint, allow_random_weights=allow_random_weights, model_desc=model_desc)
    state = load_state_dict(path, model_desc=model_desc) if path is not None else None
    model = build()
    if state is not None and path is not None:
        load_weights(model, state, path=path, model_desc=model_desc)
    return model.to(target).eval(), path


def describe_state_dict(state_dict: Mapping[str, Any]) -> str | None:
    """Best guess of which published model a state dict belongs to, for error messages."""
    keys = list(state_dict)
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        blocks = _count_indices(keys, r"image_encoder\.trunk\.blocks\.(\d+)\.")
        size = {12: "tiny", 16: "small", 24: "base_plus", 48: "large"}.get(blocks, "unknown size")
        return f"a SAM 2 (Hiera) image model, {size} ({blocks} trunk blocks)"
    if any(k.startswith("image_encoder.blocks.") for k in keys):
        blocks = _count_indices(keys, r"image_encoder\.blocks\.(\d+)\.")
        size = {12: "vit_b", 24: "vit_l", 32: "vit_h"}.get(blocks, "unknown size")
        return f"a SAM / MedSAM ViT image model, {size} ({blocks} encoder blocks)"
    return None


def _count_indices(keys: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def _is_tensor_mapping(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _preview(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
