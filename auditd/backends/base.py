"""The generation interface every text backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Message = dict[str, str]  # {"role": "user" | "system" | "assistant", "content": str}
Chat = list[Message]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy: audits must be repeatable
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8  # prompts per forward pass (hf) or requests in flight (openai)


class TextBackend(Protocol):
    """Turns chats into completions; one output per chat, same order."""

    id: str

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]: ...

    def close(self) -> None: ...


class BackendError(RuntimeError):
    """A backend could not load or generate; the audit ends in error, never pass."""


class CompletionBackend(TextBackend, Protocol):
    """A backend that also takes raw prompts (hf, openai, vllm): judges whose published format is a
    text prompt, not a chat (HarmBench, WildGuard, ShieldGemma), use these."""

    def complete(self, prompts: list[str], params: GenerationParams) -> list[str]: ...

    def next_token_logprobs(self, prompts: list[str], tokens: list[str], batch_size: int = 8) -> list[dict[str, float]]:
        """Per prompt, {token: log-probability of it being the next token} for the vocabulary entries
        `tokens`; a token the backend could not score is absent (never filled in)."""
        ...
