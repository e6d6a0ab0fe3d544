"""A local Hugging Face vision-language checkpoint as a policy (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...).

Loads with ``AutoProcessor`` + ``AutoModelForImageTextToText`` (a fine-tuned agent, a base model, or
a PEFT adapter folder holding the processor files too, when peft is installed), renders the
conversation with the checkpoint's own chat template and decodes greedily or by sampling. bf16 on
GPU, fp32 on CPU unless ``dtype`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg_agent.environment.episode import Observation
from medseg_agent.io.text import read_text_file
from medseg_agent.models.checkpoint import checkpoint_reference, load_vision_language_checkpoint
from medseg_agent.policies.base import EpisodeContext, PolicyReply
from medseg_agent.policies.chat import ChatPolicy, reply_from
from medseg_agent.protocols.conversation import Conversation, to_hf

DTYPES = ("auto", "bfloat16", "float16", "float32")


class HFPolicy(ChatPolicy):
    """A transformers checkpoint folder driving the tool.

    Args:
        model_path: checkpoint folder (``save_pretrained`` output) or a hub id already in the local cache.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``bfloat16``, ``float16`` or ``float32``.
        do_sample: sample instead of greedy decoding (seeded per episode and turn).
        temperature, top_p: sampling parameters (ignored when greedy).
        max_new_tokens: longest reply.
        max_history_images: images kept per prompt (first view included); None keeps all.
        native_tools: pass the tool schemas to the chat template (``tools=``); the model still answers
            in Hermes ``<tool_call>`` text, so this needs the medsam protocol.
        chat_template: a Jinja template (file path or the template text) replacing the checkpoint's,
            e.g. to give a Qwen2.5-VL checkpoint a template that renders tools.
    """

    name = "hf"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 512,
        max_history_images: int | None = None,
        native_tools: bool = False,
        chat_template: str | Path | None = None,
    ) -> None:
        super().__init__(max_history_images=max_history_images, native_tools=native_tools)
        import torch
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model_path = checkpoint_reference(model_path, "hf policy")
        self.device = _resolve_device(device, torch)
        self.dtype = _resolve_dtype(dtype, self.device, torch)
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self._torch = torch
        self.processor, self.model = load_vision_language_checkpoint(self.model_path, "hf policy", dtype=self.dtype)
        self.model.to(self.device).eval()
        if chat_template is not None:
            template = Path(chat_template)
            self.processor.chat_template = (
                read_text_file(template, "chat template") if template.is_file() else str(chat_template)
            )
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"hf policy: {self.model_path} has no chat template; pass chat_template=")
        if native_tools and not self._template_renders_tools():
            raise ValueError(
                f"hf policy: the chat template of {self.model_path} ignores tools= (stock Qwen2.5-VL does); "
                "use text tool calls (native_tools=False) or pass a chat_template that renders tools"
            )

    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        if self.native_tools and context.protocol.name != "medsam":
            raise ValueError(
                "hf policy: native tool calls are read from Hermes <tool_call> text, which only the medsam "
                f"protocol parses; got protocol {context.protocol.name!r}"
            )
        super().reset(context, observation)

    def prompt_text(self, conversation: Conversation) -> str:
        """The exact prompt string the model is given (chat template applied, generation prompt on)."""
        messages, _ = to_hf(conversation)
        return self.processor.apply_chat_template(
            messages, tools=self.tools(), add_generation_prompt=True, tokenize=False
        )

    def generate(self, conversation: Conversation) -> PolicyReply:
        from PIL import Image

        torch = self._torch
        _, images = to_hf(conversation)
        inputs = self.processor(
            text=[self.prompt_text(conversation)],
            images=[Image.fromarray(image) for image in images] or None,
            return_tensors="pt",
        ).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            options.update(temperature=self.temperature, top_p=self.top_p)
            torch.manual_seed(self.turn_seed)
        else:  # checkpoints may ship sampling defaults; greedy must not warn about them
            options.update(temperature=None, top_p=None, top_k=None)
        tokenizer = self.processor.tokenizer
        if tokenizer.pad_token_id is not None:
            options["pad_token_id"] = tokenizer.pad_token_id
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[0, prompt_length:]
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        return reply_from(text, prompt_tokens=int(prompt_length), completion_tokens=int(new_tokens.numel()))

    def _template_renders_tools(self) -> bool:
        probe = [{"role": "user", "content": [{"type": "text", "text": "probe"}]}]
        schema = [{"type": "function", "function": {"name": "probe_tool_xyz", "parameters": {"type": "object"}}}]
        rendered = self.processor.apply_chat_template(probe, tools=schema, tokenize=False)
        return "probe_tool_xyz" in rendered


def _resolve_device(device: str, torch: Any) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"hf policy: device {device!r} requested but CUDA is not available; use --device cpu")
    return device


def _resolve_dtype(dtype: str, device: str, torch: Any) -> Any:
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)
