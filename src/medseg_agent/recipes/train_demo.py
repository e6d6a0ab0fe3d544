"""The two-stage recipe end to end on one machine, small enough to watch it learn: ``train demo``.

Stages, each a call into the library the commands use, each kept on disk and skipped when finished:

1. **data**: synthetic scans (:mod:`medseg_agent.data.synthetic`), train / val / test by image;
2. **expert**: expert trajectories on the train split (``trajectories generate``) and their
   conversational export (``trajectories export``, the ``hf`` format);
3. **sft**: a small Qwen-VL built from a config (:func:`medseg_agent.models.tiny_qwen.build_tiny_qwen_vl`)
   trained from scratch with TRL's SFTTrainer (``train sft``);
4. **rl**: multi-turn GRPO with TRL's ``environment_factory``: the project's environment, the
   ``classic`` tool and a reward preset or YAML (``train grpo``); every ``rl_eval_every`` steps a
   checkpoint, each scored on the validation split afterwards (the learning curve);
5. **evaluation** (always): base, SFT and SFT + RL models with the ``hf`` policy on the test split,
   plus reference rows (expert, box-only, clicker), then the ablation table and the curve plot
   (:mod:`medseg_agent.recipes.train_demo_report`).

Layout of ``out``: ``data/``, ``expert/``, ``export/`` and ``reference/`` are shared by all seeds;
``seed-<n>/`` holds ``base/``, ``sft/``, ``rl/``, ``eval/`` and that seed's table. A stage writes
``stage.json`` (its settings and time) when it finishes; a rerun skips it, and a rerun with other
settings for a finished stage is refused (use another ``--out``).

The token layout is one across the stages: the demo model's chat template renders TRL's tool replies
as the same user turns (overlay + text) that the SFT rows and the ``hf`` policy use, and its system
prompt is the medsam protocol's, tool listing included (see :mod:`medseg_agent.models.chat_template`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

from medseg_agent.environment.episode import EpisodeConfig
from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.models.tiny_qwen import ARCHS
from medseg_agent.runs.settings import SettingsMismatch, as_stored, check_same_settings, read_settings
from medseg_agent.vocabulary.sample import Sample

STAGES = ("expert", "sft", "rl")
STAGE_FILE = "stage.json"
MODEL_ROWS = ("base", "sft", "rl")
REFERENCE_ROWS = ("expert", "box-only", "clicker")


class DemoError(RuntimeError):
    """A demo run that cannot go on: a missing input stage, settings that differ from a finished stage."""


@dataclass(frozen=True)
class DemoModel:
    """The agent: a Qwen3-VL built from this config (recorded in every output)."""

    arch: str = "qwen3_vl"
    hidden_size: int = 192
    num_layers: int = 4
    mlp_ratio: int = 3
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vocab_size: int = 2000


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyper-parameters of a run; ``PRESETS`` holds the measured ``demo`` and a ``smoke`` size."""

    train_images: int = 600
    val_images: int = 24
    test_images: int = 100
    data_seed: int = 0
    view: int = 128  # longest side of the image the model sees (16 image tokens with Qwen3-VL patches)
    max_turns: int = 5
    trajectories_per_image: int = 1
    model: DemoModel = field(default_factory=DemoModel)
    sft_epochs: float = 3.0
    sft_lr: float = 1e-3
    sft_batch: int = 8
    rl_steps: int = 20
    rl_lr: float = 1e-4
    rl_generations: int = 4
    rl_prompts: int = 2  # prompts per optimizer step (each with rl_generations rollouts)
    rl_temperature: float = 1.0
    rl_max_completion: int = 384
    rl_eval_every: int = 5  # checkpoint (and validation point) every N steps
    eval_max_new_tokens: int = 48

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, DemoSettings] = {
    "demo": DemoSettings(),
    # every stage in seconds: for tests and for checking an installation
    "smoke": DemoSettings(
        train_images=4,
        val_images=1,
        test_images=2,
        view=64,
        max_turns=2,
        model=DemoModel(
            hidden_size=32, num_layers=1, mlp_ratio=2, vision_depth=1, vision_hidden_size=32, vocab_size=700
        ),
        sft_epochs=1.0,
        sft_batch=2,
        rl_steps=2,
        rl_generations=2,
        rl_prompts=1,
        rl_max_completion=64,
        rl_eval_every=2,
        eval_max_new_tokens=16,
    ),
}


def settings_with(base: DemoSettings, overrides: dict[str, Any]) -> DemoSettings:
    """``base`` with ``--set`` overrides (``sft_lr=3e-4``, ``model.hidden_size=256``); unknown keys raise."""
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    names = {f.name for f in fields(DemoSettings)}
    model_names = {f.name for f in fields(DemoModel)}
    for key, value in overrides.items():
        if key.startswith("model."):
            name = key.removeprefix("model.")
            if name not in model_names:
                choices = ", ".join(f"model.{n}" for n in sorted(model_names))
                raise ValueError(f"unknown model setting {key!r}; choose from {choices}")
            model[name] = _typed(key, value, getattr(base.model, name))
        elif key in names and key != "model":
            top[key] = _typed(key, value, getattr(base, key))
        else:
            raise ValueError(f"unknown demo setting {key!r}; choose from {', '.join(sorted(names - {'model'}))}")
    return replace(base, **top, model=replace(base.model, **model))


def _typed(key: str, value: Any, current: Any) -> Any:
    """``value`` as the type of the setting it replaces, validated strictly by pydantic (an int for a
    float setting is fine); a wrong type is an error naming the setting, not a failure deep inside
    the trainer."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(type(current)).validate_python(value, strict=True)
    except ValidationError:
        raise ValueError(f"setting {key}: expected {type(current).__name__} (like {current!r}), "
                         f"got {value!r} ({type(value).__name__})") from None


@dataclass
class DemoOptions:
    out: Path
    settings: DemoSettings = field(default_factory=DemoSettings)
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    from_model: Path | None = None  # the SFT model stage 2 starts from (reward sandbox); default: this run's
    base_model: Path | None = None  # the model stage 1 starts from; default: built from ``settings.model``
    reward: str = "medseg"
    reward_overrides: list[str] = field(default_factory=list)
    device: str = "cpu"
    references: bool = True
    workers: int = 1  # processes for the tool-only work (expert trajectories, reference rows); not a setting
    show_progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class DemoResult:
    seed_dir: Path
    rows: list[dict[str, Any]]
    timings: dict[str, float]
    tables: dict[str, Path]


# -- paths and stage bookkeeping ---------------------------------------------------------------
def seed_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def _finished(folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's record when it finished with ``settings``; None when it has not finished."""
    try:
        stored = read_settings(folder / STAGE_FILE)
        if stored is not None:
            check_same_settings(stored.get("settings"), as_stored(settings), folder)
    except SettingsMismatch as exc:
        raise DemoError(str(exc)) from None
    return stored


def _run_stage(
    name: str,
    folder: Path,
    settings: dict[str, Any],
    work: Callable[[], dict[str, Any] | None],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``work`` unless the stage finished with the same settings; returns the stage record."""
    done = _finished(folder, settings)
    if done is not None:
        log(f"{name}: done before ({done['seconds']:.0f} s), skipped")
        return done
    log(f"{name}: running")
    started = time.perf_counter()
    info = work() or {}
    record = {"settings": settings, "seconds": time.perf_counter() - started, **info}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / STAGE_FILE, json.loads(json.dumps(record, default=str)))
    log(f"{name}: finished in {record['seconds']:.0f} s")
    return record


# -- stages --------------------------------------------------------------------------------------
def ensure_data(out: Path, settings: DemoSettings, options: DemoOptions) -> Path:
    """Build (or reuse) the synthetic dataset shared by every seed."""
    from medseg_agent.data.synthetic import SyntheticConfig, build_synthetic_dataset, is_complete
    from medseg_agent.runs.parallel import progress_bar

    config = SyntheticConfig(
        train=settings.train_images, val=settings.val_images, test=settings.test_images, seed=settings.data_seed
    )
    folder = Path(out) / "data"
    if is_complete(folder, config):
        return folder
    options.log("data: building the synthetic scans")
    total = config.train + config.val + config.test
    with progress_bar(disable=not options.show_progress) as progress:
        task = progress.add_task("synthetic scans", total=total)
        build_synthetic_dataset(folder, config, force=True, on_image=lambda _: progress.advance(task))
    return folder


def split_samples(data: Path, split: str) -> list[Sample]:
    from medseg_agent.data.readers import open_dataset

    samples = list(open_dataset(data, split=split))
    if not samples:
        raise DemoError(f"{data} has no {split} samples")
    return samples


def episode_config(settings: DemoSettings) -> EpisodeConfig:
    return EpisodeConfig(max_turns=settings.max_turns, view_longest_side=settings.view)


def run_expert_stage(out: Path, data: Path, settings: DemoSettings, options: DemoOptions) -> Path:
    """Expert trajectories on the train split, exported for SFT (``hf`` format). Returns the export."""
    from medseg_agent.experts.generate import GenerationConfig, generate_dataset, load_generation
    from medseg_agent.experts.summary import summarize
    from medseg_agent.exports import write_exports
    from medseg_agent.tools.registry import build_tool

    config = GenerationConfig(
        max_turns=settings.max_turns,
        view_longest_side=settings.view,
        per_sample=settings.trajectories_per_image,
        seed=settings.data_seed,
    )
    expert_dir, export_dir = Path(out) / "expert", Path(out) / "export"

    def work() -> dict[str, Any]:
        generate_dataset(
            split_samples(data, "train"),
            expert_dir,
            config,
            tool_factory=partial(build_tool, "classic"),
            tool_id={"name": "classic"},
            workers=options.workers,
            show_progress=options.show_progress,
        )
        written = write_exports(expert_dir, export_dir, ["hf"])
        stats = summarize(load_generation(expert_dir))["overall"]
        return {"expert": stats, "export_rows": written["hf"][1]}

    record = _run_stage("expert trajectories", export_dir, {"generation": config.to_dict(), "data": str(data)}, work,
                        options.log)
    stats = record["expert"]
    options.log(
        f"expert: {stats['trajectories']} trajectories, {stats['mean_turns']:.2f} tool actions per episode "
        f"(+ stop), final Dice {stats['mean_final_dice']:.3f}"
    )
    return export_dir


def tokenizer_texts(data: Path) -> list[str]:
    """What the demo tokenizer learns merges from besides the protocol: the rendered chat layout and
    the train split's target texts (never the test split's)."""
    return prompt_texts(s.target for s in split_samples(data, "train"))


def prompt_texts(targets: Iterable[str]) -> list[str]:
    """The protocol's first user turn for each distinct target, repeated so that their phrases win
    the tokenizer's merges."""
    from medseg_agent.protocols import get_protocol

    protocol = get_protocol("medsam")
    return [protocol.first_user_text(t) for t in sorted(set(targets))] * 4


def build_base_model(folder: Path, data: Path, settings: DemoSettings, seed: int, log: Callable[[str], None]) -> Path:
    """The untrained agent: a Qwen-VL from ``settings.model`` with the protocol-layout chat template."""
    from medseg_agent.models.chat_template import qwen_vl_tool_template
    from medseg_agent.models.tiny_qwen import build_tiny_qwen_vl

    model = settings.model
    stage = {"model": asdict(model), "view": settings.view, "seed": seed, "data": str(data)}

    def work() -> dict[str, Any]:
        build_tiny_qwen_vl(
            folder,
            model.arch,  # type: ignore[arg-type]
            hidden_size=model.hidden_size,
            num_layers=model.num_layers,
            vocab_size=model.vocab_size,
            max_pixels=settings.view * settings.view,
            seed=seed,
            mlp_ratio=model.mlp_ratio,
            vision_depth=model.vision_depth,
            vision_hidden_size=model.vision_hidden_size,
            tokenizer_texts=tokenizer_texts(data),
            phrase_tokens=True,
            chat_template=qwen_vl_tool_template(list_tools=False, tool_replies="user"),
        )
        return {"parameters": count_parameters(folder)}

    record = _run_stage("base model", folder, stage, work, log)
    parameters = record["parameters"]
    log(f"base model: {parameters['total']:,} parameters ({parameters['vision']:,} in the vision tower)")
    return folder


def count_parameters(folder: Path) -> dict[str, int]:
    """Parameters of a saved checkpoint: total and vision tower (read from the safetensors headers)."""
    from safetensors import safe_open

    total = vision = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not dicts
                count = 1
                for size in handle.get_slice(name).get_shape():
                    count *= size
                total += count
                if ".visual." in f".{name}" or name.startswith("model.visual"):
                    vision += count
    return {"total": total, "vision": vision}


def run_sft_stage(folder: Path, base: Path, export: Path, settings: DemoSettings, options: DemoOptions) -> Path:
    from medseg_agent.training.sft import SFTOptions, run_sft

    sft = SFTOptions(
        model=str(base),
        data=str(export),
        output_dir=str(folder),
        freeze_vision=False,  # from scratch: the vision tower must learn too
        learning_rate=settings.sft_lr,
        epochs=settings.sft_epochs,
        batch_size=settings.sft_batch,
        grad_accum=1,
        warmup_ratio=0.05,
        gradient_checkpointing=False,
        use_cpu=options.device == "cpu",
        seed=options.seed,
        logging_steps=5,
        save_steps=50,
        save_total_limit=1,
    )

    # on a GPU the collator (image processing) is the bottleneck: it runs in the tool-work processes;
    # how many does not change the batches, so it is not part of the stage's recorded settings
    loaders = options.workers if options.device != "cpu" else 0
    run_extra = {"disable_tqdm": not options.show_progress, "dataloader_num_workers": loaders}

    def work() -> dict[str, Any]:
        result = run_sft(replace(sft, extra={**sft.extra, **run_extra}))
        return {"steps": result.steps, "losses": result.losses}

    record = _run_stage("stage 1: SFT", folder, asdict(sft), work, options.log)
    losses = record.get("losses") or [float("nan")]
    options.log(f"SFT: {record['steps']} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return folder / "final"


def run_rl_stage(folder: Path, start: Path, data: Path, settings: DemoSettings, options: DemoOptions) -> Path:
    import datasets

    from medseg_agent.training.trl_grpo import GRPOOptions, grpo_rows, run_grpo

    grpo = GRPOOptions(
        model=str(start),
        output_dir=str(folder),
        tool="classic",
        reward=options.reward,
        reward_overrides=list(options.reward_overrides),
        max_turns=settings.max_turns,
        view_longest_side=settings.view,
        num_generations=settings.rl_generations,
        max_completion_length=settings.rl_max_completion,
        learning_rate=settings.rl_lr,
        batch_size=settings.rl_generations * settings.rl_prompts,
        max_steps=settings.rl_steps,
        temperature=settings.rl_temperature,
        chat_template=None,  # the model's own template (protocol layout)
        use_cpu=options.device == "cpu",
        gradient_checkpointing=False,
        save_steps=settings.rl_eval_every,
        seed=options.seed,
        extra={"save_only_model": False, "log_completions": False},
    )
    reward_text = _reward_description(options.reward)

    def work() -> dict[str, Any]:
        rows = grpo_rows(split_samples(data, "train"), settings.view, tool_listing=True)
        quiet = replace(grpo, extra={**grpo.extra, "disable_tqdm": not options.show_progress})
        result = run_grpo(quiet, datasets.Dataset.from_list(rows))
        return {"steps": result.steps, "logs": result.logs}

    stage = {**asdict(grpo), "reward_definition": reward_text}
    record = _run_stage(f"stage 2: GRPO ({options.reward})", folder, stage, work, options.log)
    rewards = [line["reward"] for line in record.get("logs", []) if "reward" in line] or [float("nan")]
    options.log(f"GRPO: {record['steps']} steps, rollout reward {rewards[0]:.3f} -> {rewards[-1]:.3f}")
    return folder / "final"


def _reward_description(reward: str) -> Any:
    """The reward's full definition (a YAML's content, not only its path: an edited file is another reward)."""
    from medseg_agent.rewards import resolve_reward, spec_to_dict

    return spec_to_dict(resolve_reward(reward))


def resolve_base(path: Path) -> Path:
    """The checkpoint ``--base-model`` names: a Qwen-VL that loads like a real one (config, processor)."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise DemoError(f"--base-model {path}: no model there (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type", "")
    if model_type not in ARCHS:
        raise DemoError(f"--base-model {path}: model_type {model_type!r} is not a Qwen-VL; expected one of "
                        f"{', '.join(ARCHS)}")
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise DemoError(f"--base-model {path}: no image processor saved with the model (preprocessor_config.json)")
    return path


def resolve_from(path: Path) -> Path:
    """A model folder from ``--from``: a checkpoint, a stage folder with ``final/`` or a seed folder."""
    path = Path(path)
    for candidate in (path, path / "final", path / "sft" / "final"):
        if (candidate / "config.json").is_file():
            return candidate
    raise DemoError(f"--from {path}: no model there (looked for config.json in it, in final/ and in sft/final/)")


# -- evaluation ----------------------------------------------------------------------------------
def evaluate_policy(
    name: str,
    out_dir: Path,
    samples: list[Sample],
    settings: DemoSettings,
    options: DemoOptions,
    model_path: Path | None = None,
    seed: int | None = None,
) -> list[Any]:
    """Episodes of one policy on ``samples`` (resumable records in ``out_dir``); returns the records.

    ``seed`` defaults to the run's; the reference rows pass the data seed, so every training seed
    shares one reference run."""
    seed = options.seed if seed is None else seed
    from medseg_agent.environment.record import record_from_dict
    from medseg_agent.evaluation.evaluate import EvalSpec, describe_run, run_evaluation
    from medseg_agent.policies.registry import build_policy
    from medseg_agent.tools.registry import build_tool

    if model_path is not None:
        policy_name = "hf"
        policy_options: dict[str, Any] = {
            "model_path": str(model_path),
            "device": options.device,
            "max_new_tokens": settings.eval_max_new_tokens,
        }
    else:
        policy_name = name
        policy_options = {"stop_iou": 0.9} if name == "clicker" else {}
    episode = episode_config(settings)
    tool = build_tool("classic")
    policy = build_policy(policy_name, **policy_options)
    spec = EvalSpec(
        make_tool=partial(_same, tool),
        make_policy=partial(_same, policy),
        episode=episode,
        seed=seed,
        describe=describe_run(policy_name, policy_options, "classic", {}, episode, seed),
    )
    # a model row runs in this process (one model on the device); the tool-only rows fan out
    workers = 1 if model_path is not None else options.workers
    store, _ = run_evaluation(samples, spec, out_dir, workers=workers, show_progress=options.show_progress)
    records = []
    for row in store.rows():
        if "record" not in row:
            raise DemoError(f"{out_dir}: sample {row.get('key')} failed: {row.get('failure')}")
        records.append(record_from_dict(row["record"], row["key"]))
    return records


def _same(value: Any) -> Any:
    return value


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the trainer checkpoints in ``folder``, by step."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / "config.json").is_file():
            found.append((int(suffix), path))
    return sorted(found)


# -- the run -------------------------------------------------------------------------------------
def run_demo(options: DemoOptions) -> DemoResult:
    """Every stage of one seed, then the evaluation and the tables."""
    from medseg_agent.recipes.train_demo_report import row_metrics, write_curve_plot, write_tables

    for stage in options.stages:
        if stage not in STAGES:
            raise DemoError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    start_model = resolve_from(options.from_model) if options.from_model is not None else None
    settings = options.settings
    out = Path(options.out)
    folder = seed_dir(out, options.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return value

    data = timed("data", lambda: ensure_data(out, settings, options))
    export = Path(out) / "export"
    if "expert" in options.stages:
        export = timed("expert", lambda: run_expert_stage(out, data, settings, options))
    models: dict[str, Path] = {}
    if start_model is not None:  # the reward sandbox: stage 2 from a given SFT model
        models["sft"] = start_model
    elif options.base_model is not None:
        models["base"] = resolve_base(options.base_model)
    else:
        models["base"] = timed(
            "base", lambda: build_base_model(folder / "base", data, settings, options.seed, options.log)
        )
    if options.from_model is None and "sft" in options.stages:
        if not (export / STAGE_FILE).is_file():
            raise DemoError(f"{export} holds no finished export: run the expert stage first (--stages expert,sft)")
        base = models["base"]
        models["sft"] = timed("sft", lambda: run_sft_stage(folder / "sft", base, export, settings, options))
    elif options.from_model is None and (folder / "sft" / "final" / "config.json").is_file():
        models["sft"] = folder / "sft" / "final"
    if "rl" in options.stages:
        if "sft" not in models:
            raise DemoError(f"stage rl needs an SFT model: run the sft stage, or pass --from (no {folder / 'sft'})")
        models["rl"] = timed("rl", lambda: run_rl_stage(folder / "rl", models["sft"], data, settings, options))
    elif (folder / "rl" / "final" / "config.json").is_file():
        models["rl"] = folder / "rl" / "final"

    test = split_samples(data, "test")
    rows = []
    for name in MODEL_ROWS:
        if name in models:
            records = timed(
                "evaluation",
                lambda name=name: evaluate_policy(name, folder / "eval" / name, test, settings, options, models[name]),
            )
            rows.append(row_metrics(name, records, options.reward))
            if name == "base" and options.base_model is not None:
                rows[-1]["title"] = f"base (given: {Path(options.base_model).name})"
    if options.references:
        for name in REFERENCE_ROWS:
            records = timed(
                "references", lambda name=name: evaluate_policy(
                    name, out / "reference" / name, test, settings, options, seed=settings.data_seed
                ),
            )
            rows.append(row_metrics(name, records, options.reward))
    curve = {}
    if "rl" in models and models["rl"].parent.is_dir():
        curve = timed("validation curve", lambda: validation_curve(folder, models, data, settings, options))
    timings["total"] = time.perf_counter() - started
    parameters = count_parameters(next(iter(models.values())))
    meta = {
        "seed": options.seed,
        "settings": settings.to_dict(),
        "reward": options.reward,
        "reward_overrides": options.reward_overrides,
        "device": options.device,
        "models": {k: str(v) for k, v in models.items()},
        "parameters": parameters,
        "timings_s": timings,  # this invocation: a finished stage that was skipped counts ~0 here
        "stage_seconds": stage_seconds(out, folder),  # each stage's own time, when it ran
        "expert": _expert_stats(export),
        "data": _data_stats(data),
    }
    tables = write_tables(rows, folder, meta)
    if curve:
        tables["curve"] = write_curve_plot({options.seed: curve}, folder / "grpo_curve.png")
    atomic_write_json(folder / "demo.json", {**meta, "rows": rows, "curve": curve})
    return DemoResult(folder, rows, timings, tables)


def stage_seconds(out: Path, folder: Path) -> dict[str, float]:
    """How long each finished stage took when it ran (kept in its ``stage.json``, so a resumed run
    still reports the real cost of the stages it skipped)."""
    places = {"expert": Path(out) / "export", "base": folder / "base", "sft": folder / "sft", "rl": folder / "rl"}
    found = {}
    for name, place in places.items():
        path = place / STAGE_FILE
        if path.is_file():
            found[name] = round(float(json.loads(path.read_text()).get("seconds", 0.0)), 1)
    return found


def _expert_stats(export: Path) -> dict[str, Any]:
    path = export / STAGE_FILE
    return json.loads(path.read_text()).get("expert", {}) if path.is_file() else {}


def _data_stats(data: Path) -> dict[str, Any]:
    from medseg_agent.data.synthetic import synthetic_info

    return synthetic_info(data)["summary"]


def validation_curve(
    folder: Path, models: dict[str, Path], data: Path, settings: DemoSettings, options: DemoOptions
) -> dict[str, Any]:
    """Training reward per GRPO step (TRL's logs) and validation Dice of the SFT start (step 0) and of
    every checkpoint (records kept in ``rl/val/``)."""
    from medseg_agent.recipes.train_demo_report import row_metrics

    val = split_samples(data, "val")
    points = [(0, models["sft"])] + checkpoints(folder / "rl")
    dice = []
    for step, path in points:
        records = evaluate_policy(f"val-{step}", folder / "rl" / "val" / f"step-{step}", val, settings, options, path)
        metrics = row_metrics("val", records, options.reward)
        dice.append({"step": step, "dice": metrics["dice"], "reward": metrics["reward"]})
    stage = json.loads((folder / "rl" / STAGE_FILE).read_text()) if (folder / "rl" / STAGE_FILE).is_file() else {}
    train = [
        {"step": line["step"], "reward": line["reward"], "dice": line.get("rewards/final_dice/mean")}
        for line in stage.get("logs", [])
        if "reward" in line
    ]
    return {"train": train, "val": dice}


def run_demo_seeds(options: DemoOptions, seeds: list[int]) -> dict[str, Any]:
    """``run_demo`` for each seed, then the mean +- spread table over seeds in ``options.out``."""
    from medseg_agent.recipes.train_demo_report import write_curve_plot, write_seed_tables

    results = {}
    curves = {}
    for seed in seeds:
        options.log(f"=== seed {seed} ===")
        result = run_demo(replace(options, seed=seed))
        results[seed] = result
        demo = json.loads((result.seed_dir / "demo.json").read_text())
        if demo.get("curve"):
            curves[seed] = demo["curve"]
    tables = write_seed_tables({s: r.rows for s, r in results.items()}, Path(options.out),
                               {s: r.timings for s, r in results.items()})
    if curves:
        tables["curve"] = write_curve_plot(curves, Path(options.out) / "grpo_curve.png")
    return {"results": results, "tables": tables}


@dataclass(frozen=True)
class DemoTable:
    """What ``train demo`` prints: the rows, the files written, a title, and whether rows carry spreads."""

    rows: list[dict[str, Any]]
    tables: dict[str, Path]
    title: str
    spread: bool


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a clear error for anything else (the CLI shows it as is)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    if min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: seeds are whole numbers from 0 (numpy refuses negative ones)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed given twice would train the same run twice")
    return seeds


def run_demo_table(options: DemoOptions, seeds: list[int]) -> DemoTable:
    """One seed: its own table; several: every seed, then mean +- spread over them."""
    from medseg_agent.recipes.train_demo_report import seed_rows

    if len(seeds) == 1:
        result = run_demo(replace(options, seed=seeds[0]))
        return DemoTable(result.rows, result.tables, f"seed {seeds[0]}", False)
    outcome = run_demo_seeds(options, seeds)
    rows = seed_rows({s: r.rows for s, r in outcome["results"].items()})
    seeds_text = ",".join(str(s) for s in seeds)
    return DemoTable(rows, outcome["tables"], f"mean ± spread over seeds {seeds_text}", True)
