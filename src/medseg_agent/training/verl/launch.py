"""Assemble a verl GRPO run: tool and agent-loop YAMLs plus the Hydra overrides of ``main_ppo``.

One source for the single-node and Ray-cluster launches: the shipped
``training/configs/verl_grpo.yaml`` (recipe defaults) + what the run needs (model, data, tool
server, node count) + the user's own ``key=value`` overrides, last wins. :func:`compose_verl_config`
loads the result through verl's own Hydra config, so a typo in a key fails before any GPU starts.
"""

from __future__ import annotations

import copy
import shlex
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medseg_agent.io.text import read_text_file

CONFIG_PACKAGE = "medseg_agent.training.configs"
TOOL_CLASSES = {
    "add_bbox": "medseg_agent.training.verl.tools.AddBboxTool",
    "add_point": "medseg_agent.training.verl.tools.AddPointTool",
    "stop_action": "medseg_agent.training.verl.tools.StopActionTool",
}


def shipped_config(name: str) -> Path:
    """Path of a YAML shipped in ``medseg_agent/training/configs``."""
    path = Path(str(resources.files(CONFIG_PACKAGE).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"shipped config {name} is missing from {path.parent}")
    return path


def recipe_overrides(path: str | Path | None = None) -> dict[str, Any]:
    """The recipe mapping (``verl_grpo.yaml`` or a user copy of it)."""
    path = Path(path) if path else shipped_config("verl_grpo.yaml")
    try:
        data = yaml.safe_load(read_text_file(path, "recipe"))
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of dotted verl keys to values")
    return data


def tool_config(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tool YAML content: the three actions with the protocol's schemas and shared settings."""
    from medseg_agent.training.verl.tools import default_schema, tool_settings

    config = {"type": "native", **tool_settings(settings or {})}
    return {
        "tools": [
            {
                "class_name": cls,
                "config": copy.deepcopy(config),  # no shared objects: no YAML anchors
                "tool_schema": default_schema(name).model_dump(exclude_unset=True, exclude_none=True),
            }
            for name, cls in TOOL_CLASSES.items()
        ]
    }


def write_tool_config(path: str | Path, settings: dict[str, Any] | None = None) -> Path:
    from medseg_agent.io.atomic import atomic_write_text

    path = Path(path)
    header = "# verl tool config (actor_rollout_ref.rollout.multi_turn.tool_config_path), written by medseg-agent\n"
    atomic_write_text(path, header + yaml.safe_dump(tool_config(settings), sort_keys=False, width=1000))
    return path


@dataclass
class RLLaunchOptions:
    model: str
    train_files: list[str]
    val_files: list[str]
    out_dir: str
    tool: str = "http://127.0.0.1:8000"
    tool_device: str = "cuda"
    checkpoint: str | None = None
    max_turns: int = 5
    image_patch_size: int = 16
    reward: str = "medseg"
    reward_overrides: list[str] = field(default_factory=list)
    nnodes: int = 1
    gpus_per_node: int = 8
    experiment_name: str = "grpo"
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)  # raw Hydra overrides, applied last


def hydra_value(value: Any) -> str:
    """A Python value in Hydra override syntax (strings quoted when they hold special characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def prepare_run(options: RLLaunchOptions) -> list[str]:
    """Write the tool and agent-loop YAMLs under ``out_dir/verl`` and return the Hydra overrides."""
    import shutil

    out = Path(options.out_dir).resolve()
    (out / "verl").mkdir(parents=True, exist_ok=True)
    tool_settings = {
        "tool": options.tool,
        "device": options.tool_device,
        "checkpoint": options.checkpoint,
        "max_turns": options.max_turns,
        "image_patch_size": options.image_patch_size,
        "reward": options.reward,
    }
    tools_yaml = write_tool_config(out / "verl" / "tools.yaml", tool_settings)
    loop_yaml = out / "verl" / "agent_loop.yaml"
    shutil.copyfile(shipped_config("verl_agent_loop.yaml"), loop_yaml)
    values = dict(recipe_overrides(options.recipe))
    values.update(
        {
            "actor_rollout_ref.model.path": options.model,
            "data.train_files": list(options.train_files),
            "data.val_files": list(options.val_files or options.train_files),
            "data.image_patch_size": options.image_patch_size,
            "actor_rollout_ref.rollout.multi_turn.tool_config_path": str(tools_yaml),
            "actor_rollout_ref.rollout.agent.agent_loop_config_path": str(loop_yaml),
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": options.max_turns + 3,
            "actor_rollout_ref.rollout.multi_turn.max_user_turns": options.max_turns + 3,
            "trainer.nnodes": options.nnodes,
            "trainer.n_gpus_per_node": options.gpus_per_node,
            "trainer.experiment_name": options.experiment_name,
            "trainer.default_local_dir": str(out / "checkpoints"),
            "+reward.custom_reward_function.reward_kwargs.reward": options.reward,
        }
    )
    if options.reward_overrides:
        values["+reward.custom_reward_function.reward_kwargs.overrides"] = list(options.reward_overrides)
    return [f"{key}={hydra_value(value)}" for key, value in values.items()] + list(options.overrides)


class RLConfigError(ValueError):
    """The run cannot start: an unreadable recipe or reward, or overrides verl's config rejects."""


def checked_run(options: RLLaunchOptions) -> list[str]:
    """:func:`prepare_run`, then the overrides composed against verl's own config here, so an unknown
    key or a bad value fails in a second instead of after Ray and the model have started."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        overrides = prepare_run(options)
    except (ValueError, OSError) as exc:
        raise RLConfigError(str(exc)) from exc
    try:
        compose_verl_config(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise RLConfigError(f"verl rejected the configuration: {exc}") from exc
    return overrides


def validation_warning(options: RLLaunchOptions) -> str | None:
    """Why a run without validation files says nothing about held-out data (None when it has some)."""
    if options.val_files:
        return None
    return (f"no --val: verl validates on the training file(s) {', '.join(options.train_files)}, which says "
            "nothing about held-out data; pass --val (e.g. `train rl-data --data data/val --out runs/rl/val.parquet`)")


def verl_command(overrides: list[str], python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "verl.trainer.main_ppo", *overrides]


def shell_command(overrides: list[str]) -> str:
    return shlex.join(verl_command(overrides, "python"))


def compose_verl_config(overrides: list[str]) -> Any:
    """verl's ``ppo_trainer`` config with ``overrides`` applied (raises on unknown keys or bad values)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=overrides)
