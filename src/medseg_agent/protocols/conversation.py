"""One conversation model, rendered for each consumer: OpenAI chat, HF/TRL chat templates, ShareGPT.

Inference (openai/hf policies), the SFT exports and the RL data all build their messages here, so a
model is trained on exactly the conversation it will see at test time: system prompt, first user turn
with the image and target, then for every action an assistant reply and a user turn with the new
overlay (or the error text).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from medseg_agent.protocols.base import ActionProtocol
from medseg_agent.vocabulary.actions import CoordinateSpace

IMAGE_TOKEN = "<image>"


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    text: str
    image: np.ndarray | None = None  # RGB uint8; user turns only


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        protocol: ActionProtocol,
        target: str,
        image: np.ndarray,
        space: CoordinateSpace | None = None,
    ) -> Conversation:
        return cls(
            [
                Message("system", protocol.system_prompt(space)),
                Message("user", protocol.first_user_text(target), image),
            ]
        )

    def add_assistant(self, text: str) -> None:
        self.messages.append(Message("assistant", text))

    def add_user(self, text: str, image: np.ndarray | None = None) -> None:
        self.messages.append(Message("user", text, image))

    def images(self) -> list[np.ndarray]:
        return [m.image for m in self.messages if m.image is not None]

    def trimmed(self, max_images: int | None) -> Conversation:
        """Keep the system prompt, the first user turn and the last turns so that at most
        ``max_images`` images remain: long episodes must fit the model's context."""
        if max_images is None or len(self.images()) <= max_images:
            return self
        head, rest = self.messages[:2], self.messages[2:]
        budget = max_images - 1
        keep: list[Message] = []
        for message in reversed(rest):
            if message.image is not None:
                if budget == 0:
                    break
                budget -= 1
            keep.append(message)
        keep.reverse()
        while keep and keep[0].role != "assistant":  # history resumes at an assistant reply
            keep.pop(0)
        return Conversation(head + keep)


def png_data_url(image: np.ndarray) -> str:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode image as PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def to_openai(conversation: Conversation) -> list[dict[str, Any]]:
    """OpenAI chat-completions messages; images as base64 PNG data URLs before the text."""
    out: list[dict[str, Any]] = []
    for m in conversation.messages:
        if m.image is None:
            out.append({"role": m.role, "content": m.text})
        else:
            out.append(
                {
                    "role": m.role,
                    "content": [
                        {"type": "image_url", "image_url": {"url": png_data_url(m.image)}},
                        {"type": "text", "text": m.text},
                    ],
                }
            )
    return out


def to_hf(conversation: Conversation) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """HF chat-template / TRL messages with ``{"type": "image"}`` placeholders, plus the images in
    order. Every message uses the list-of-parts content form, as Qwen-VL processors expect."""
    messages = []
    for m in conversation.messages:
        parts: list[dict[str, Any]] = []
        if m.image is not None:
            parts.append({"type": "image"})
        parts.append({"type": "text", "text": m.text})
        messages.append({"role": m.role, "content": parts})
    return messages, conversation.images()


def to_sharegpt(conversation: Conversation) -> tuple[list[dict[str, str]], list[np.ndarray]]:
    """LLaMA-Factory ShareGPT-style ``messages`` with ``<image>`` tokens, plus the images in order."""
    messages = []
    for m in conversation.messages:
        content = f"{IMAGE_TOKEN}{m.text}" if m.image is not None else m.text
        messages.append({"role": m.role, "content": content})
    return messages, conversation.images()
