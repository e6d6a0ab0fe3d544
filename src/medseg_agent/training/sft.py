"""Stage 1: supervised fine-tuning of a Qwen-VL agent on expert trajectories, with TRL's SFTTrainer.

Input rows are the conversational export of trajectory records: ``messages`` (system, user turns with
``{"type": "image"}`` placeholders, assistant replies) and ``images`` (the views in order), as written
by the exports or by :func:`sft_rows_from_records`. Loss is on the assistant replies only: TRL's own
assistant mask needs transformers >= 5.18 for vision data, so :class:`AssistantOnlyCollator` masks
everything outside ``<|im_start|>assistant ... <|im_end|>`` itself (Qwen chat layout).

Options: full fine-tuning or LoRA (PEFT), vision tower frozen or not, resume from the last
checkpoint in ``output_dir`` after a kill, merge the LoRA adapter into a plain checkpoint so the
``hf`` policy and verl load the result like any model.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.models.checkpoint import checkpoint_reference, load_vision_language_checkpoint
from medseg_agent.training.schedule import check_schedule

VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model")
# Projections of the language model (Qwen2/2.5/3-VL, Llama-style); the vision tower is left out.
LANGUAGE_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class SFTDataError(ValueError):
    """An SFT dataset that cannot be trained on, naming the file/row/field and what was expected."""


@dataclass
class SFTOptions:
    """Everything ``medseg-agent train sft`` exposes. Defaults follow the reference recipes
    (IBISAgent: LoRA rank 8, vision tower frozen; lr 1e-5 for full fine-tuning)."""

    model: str
    data: str
    output_dir: str
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    freeze_vision: bool = True
    assistant_only: bool = True
    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 1
    grad_accum: int = 8
    max_length: int | None = None  # None: no truncation (image tokens must never be cut)
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    gradient_checkpointing: bool = True
    bf16: bool | None = None  # None: on when CUDA supports it
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    resume: bool = True
    merge_lora: bool = True
    report_to: str = "none"
    use_cpu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more SFTConfig fields, passed through

    def __post_init__(self) -> None:
        check_schedule(self.learning_rate, self.epochs, self.max_steps)


@dataclass
class SFTResult:
    output_dir: Path
    losses: list[float]
    steps: int
    trainable_parameters: int
    total_parameters: int
    resumed_from: str | None


# -- data ---------------------------------------------------------------------------------------
def _image_placeholders(messages: Sequence[dict[str, Any]]) -> int:
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return count


def validate_sft_rows(dataset: Any, source: str, check_rows: int = 50) -> None:
    """Check the columns and that each row's image placeholders match its images (first rows)."""
    columns = set(dataset.column_names)
    missing = {"messages", "images"} - columns
    if missing:
        raise SFTDataError(
            f"{source}: missing column(s) {sorted(missing)}; expected conversational rows with 'messages' "
            f"(chat messages, images as {{'type': 'image'}} parts in user turns) and 'images'; got {sorted(columns)}"
        )
    for i in range(min(check_rows, len(dataset))):
        problem = _row_problem(dataset[i])
        if problem is not None:
            raise SFTDataError(f"{source}: row {i}: {problem}")


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why one conversational row cannot be trained on (None when it can): rows people bring from other
    tools are checked here, not met as a TypeError inside the chat template."""
    messages, images = row["messages"], row["images"]
    if not isinstance(messages, list) or not messages:
        return f"'messages' must be a non-empty list of chat messages, got {_shown(messages)}"
    if images is not None and not isinstance(images, list):
        return f"'images' must be a list of images, got {_shown(images)}"
    for j, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{j}] must be an object with a text 'role', got {_shown(message)}"
        content = message.get("content")
        parts = isinstance(content, list) and all(isinstance(part, dict) for part in content)
        if content is not None and not isinstance(content, str) and not parts:
            return (
                f"messages[{j}].content must be text or a list of parts such as {{'type': 'text', 'text': ...}} "
                f"and {{'type': 'image'}}, got {_shown(content)}"
            )
        if message["role"] == "tool" and _image_placeholders([message]):
            return (
                "an image inside a 'tool' message; put overlays in user turns (TRL counts placeholders in user "
                "turns only)"
            )
    placeholders, count = _image_placeholders(messages), len(images or [])
    if placeholders != count:
        return (
            f"{placeholders} image placeholder(s) in 'messages' but {count} image(s) in 'images'; every image must "
            "have exactly one {'type': 'image'} part in a user turn"
        )
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def load_sft_dataset(path: str | Path) -> Any:
    """A ``datasets.Dataset`` from the HF export (``<name>.hf.parquet`` or its folder), other parquet or
    JSON(L) files with the same columns, or a ``save_to_disk`` folder."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise SFTDataError(f"SFT data {path} does not exist")
    # save_to_disk folders have state.json (a Dataset) or dataset_dict.json; an export folder's
    # dataset_info.json is LLaMA-Factory's, not a datasets folder.
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            if "train" not in dataset:
                raise SFTDataError(f"{path}: a DatasetDict without a 'train' split (has {list(dataset)})")
            dataset = dataset["train"]
    else:
        files = [path]
        if path.is_dir():  # an export folder: its TRL file (<name>.hf.parquet), else every parquet file
            files = sorted(path.rglob("*.hf.parquet")) or sorted(path.rglob("*.parquet"))
        if not files:
            files = sorted(path.rglob("*.jsonl")) + sorted(path.rglob("*.json"))
        if not files:
            raise SFTDataError(f"{path}: no .parquet, .jsonl or .json files and not a save_to_disk folder")
        empty = [f for f in files if f.stat().st_size == 0]
        if empty:
            raise SFTDataError(f"{empty[0]}: the file is empty; SFT needs at least one row")
        kind = "parquet" if files[0].suffix == ".parquet" else "json"
        try:
            dataset = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
        except datasets.exceptions.DatasetGenerationError as exc:  # the reader's own error is its cause
            raise SFTDataError(f"{path}: cannot read the {kind} rows: {exc.__cause__ or exc}") from None
    validate_sft_rows(dataset, str(path))
    return dataset


def sft_rows_from_records(records: Iterable[tuple[Any, np.ndarray]]) -> list[dict[str, Any]]:
    """Rows from (TrajectoryRecord, full-resolution image) pairs, through the same replay the exports
    use: the exact conversation the policy saw, overlays re-rendered from the record."""
    from PIL import Image

    from medseg_agent.environment.replay import conversation_from_record
    from medseg_agent.protocols.conversation import to_hf

    rows = []
    for record, image in records:
        messages, images = to_hf(conversation_from_record(record, image))
        rows.append({"messages": messages, "images": [Image.fromarray(view) for view in images]})
    return rows


def _as_pil(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict) and image.get("bytes") is not None:
        return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
    if isinstance(image, dict) and image.get("path"):
        return Image.open(image["path"]).convert("RGB")
    if isinstance(image, str | Path):
        return Image.open(image).convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    raise SFTDataError(f"unsupported image entry of type {type(image).__name__}; expected PIL, bytes dict or path")


# -- collation ----------------------------------------------------------------------------------
def assistant_spans_mask(input_ids: Any, start: Sequence[int], end: int) -> Any:
    """Bool mask (same shape as ``input_ids``) of assistant tokens: after each ``start`` sequence
    (``<|im_start|>assistant``) up to and including the next ``end`` token (``<|im_end|>``), so the
    model also learns to end its turn."""
    import torch

    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    n = len(start)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        i = 0
        while i <= len(ids) - n:
            if ids[i : i + n] == list(start):
                j = i + n
                while j < len(ids) and ids[j] != end:
                    j += 1
                mask[row, i + n : min(j + 1, len(ids))] = True
                i = j + 1
            else:
                i += 1
    return mask


class AssistantOnlyCollator:
    """TRL's vision-language collator, with images decoded from any stored form and, optionally,
    the loss restricted to assistant replies."""

    def __init__(self, processor: Any, max_length: int | None, assistant_only: bool) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner = DataCollatorForVisionLanguageModeling(processor=processor, max_length=max_length)
        self.assistant_only = assistant_only
        tokenizer = processor.tokenizer
        self.start = tokenizer.encode("<|im_start|>assistant", add_special_tokens=False)
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if assistant_only and (self.end is None or self.end == tokenizer.unk_token_id or len(self.start) < 2):
            raise SFTDataError(
                "assistant-only loss needs the Qwen chat layout (<|im_start|>assistant ... <|im_end|>); this "
                "tokenizer has no <|im_end|> token: train with assistant_only=False (--all-tokens)"
            )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        prepared = [
            {"messages": ex["messages"], "images": [_as_pil(im) for im in ex["images"] or []]} for ex in examples
        ]
        batch = self.inner(prepared)
        if self.assistant_only:
            keep = assistant_spans_mask(batch["input_ids"], self.start, self.end)
            batch["labels"][~keep] = -100
        return batch


# -- model --------------------------------------------------------------------------------------
def freeze_vision_tower(model: Any) -> int:
    """Freeze every parameter under a vision module; returns how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(part in VISION_MODULE_NAMES for part in name.split(".")):
            param.requires_grad = False
            frozen += 1
    if frozen == 0:
        raise ValueError(f"no vision tower found to freeze (looked for modules named {VISION_MODULE_NAMES})")
    return frozen


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


class _LossRecorder:
    """Keeps every logged training loss (the test and the CLI summary read them)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        recorder = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
                if logs and "loss" in logs:
                    recorder.losses.append(float(logs["loss"]))

        self.losses: list[float] = []
        self.callback = Callback()


def sft_config_kwargs(options: SFTOptions, bf16_available: bool = False) -> dict[str, Any]:
    """``SFTConfig`` keywords for ``options``; ``options.extra`` (``--set KEY=VALUE``) comes last and
    overrides any of them, the ones the command sets itself included."""
    kwargs: dict[str, Any] = {
        "output_dir": str(options.output_dir),
        "learning_rate": options.learning_rate,
        "num_train_epochs": options.epochs,
        "max_steps": options.max_steps,
        "per_device_train_batch_size": options.batch_size,
        "gradient_accumulation_steps": options.grad_accum,
        "max_length": options.max_length,
        "warmup_ratio": options.warmup_ratio,
        "lr_scheduler_type": options.lr_scheduler,
        "gradient_checkpointing": options.gradient_checkpointing,
        "bf16": options.bf16 if options.bf16 is not None else bf16_available,
        "seed": options.seed,
        "logging_steps": options.logging_steps,
        "logging_first_step": True,  # a run shorter than logging_steps still reports a loss
        "save_steps": options.save_steps,
        "save_total_limit": options.save_total_limit,
        "report_to": options.report_to,
        "use_cpu": options.use_cpu,
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
    }
    import dataclasses

    from trl import SFTConfig

    unknown = sorted(set(options.extra) - {f.name for f in dataclasses.fields(SFTConfig)})
    if unknown:
        raise ValueError(f"--set {', '.join(unknown)}: not a field of TRL's SFTConfig (see its documentation)")
    return {**kwargs, **options.extra}


def loss_summary(losses: list[float], steps: int) -> str:
    """The loss line of the command's report, without "nan" when fewer losses were logged."""
    if not losses:
        return f"no loss logged in {steps} step(s) (resumed past the logging steps? --set logging_steps=1)"
    if len(losses) == 1:
        return f"loss {losses[0]:.4f} (logged once)"
    return f"loss {losses[0]:.4f} -> {losses[-1]:.4f} ({len(losses)} logged)"


def run_sft(options: SFTOptions, dataset: Any | None = None) -> SFTResult:
    """Train, save (merged when LoRA + ``merge_lora``) with the processor, and return the losses.

    ``dataset``: an in-memory ``datasets.Dataset`` instead of ``options.data``.
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    output_dir = Path(options.output_dir)
    checkpoint_reference(options.model, "train sft")  # a missing folder is named before the data is read
    data = dataset if dataset is not None else load_sft_dataset(options.data)
    if dataset is not None:
        validate_sft_rows(data, "dataset")
    processor, model = load_vision_language_checkpoint(options.model, "train sft")
    if options.freeze_vision:
        freeze_vision_tower(model)
    peft_config = None
    if options.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=options.lora_rank,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.lora_dropout,
            target_modules=LANGUAGE_LORA_TARGETS if options.freeze_vision else "all-linear",
            task_type="CAUSAL_LM",
        )
    config = SFTConfig(**sft_config_kwargs(options, bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())))
    collator = AssistantOnlyCollator(processor, options.max_length, options.assistant_only)
    recorder = _LossRecorder()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
        callbacks=[recorder.callback],
    )
    resume = _last_checkpoint(output_dir) if options.resume else None
    trainer.train(resume_from_checkpoint=resume)
    trained = trainer.model
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trained.parameters())
    final_dir = output_dir / "final"
    if options.lora and options.merge_lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(final_dir)
    processor.save_pretrained(final_dir)
    _write_summary(final_dir, options, recorder.losses, trainer.state.global_step, resume)
    return SFTResult(final_dir, recorder.losses, trainer.state.global_step, trainable, total, resume)


def _write_summary(folder: Path, options: SFTOptions, losses: list[float], steps: int, resumed: str | None) -> None:
    from medseg_agent.io.atomic import atomic_write_json

    atomic_write_json(
        folder / "medseg_sft.json",
        {"options": asdict(options), "losses": losses, "steps": steps, "resumed_from": resumed},
    )
