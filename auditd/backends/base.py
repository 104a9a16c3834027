"""The interfaces backends implement: text generation, image generation, trainable weights.

The runner and the attacks recognise a backend by these Protocols (`isinstance` on the runtime
checkable ones), never by its plugin id: a third-party backend that implements `TrainableBackend`
can be attacked like backend:hf. A backend class that loads the audited checkpoint's own files
says so with `local_checkpoint = LocalCheckpoint(...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "user" | "system" | "assistant", "content": str}
Chat = list[Message]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy: audits must be repeatable
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8  # prompts per forward pass (hf) or requests in flight (openai)


@runtime_checkable
class TextBackend(Protocol):
    """Turns chats into completions; one output per chat, same order."""

    id: str

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]: ...

    def close(self) -> None: ...


@runtime_checkable
class Closable(Protocol):
    """A backend or judge that holds a model or a connection and releases it in close()."""

    def close(self) -> None: ...


class BackendError(RuntimeError):
    """A backend could not load or generate; the audit ends in error, never pass."""


@runtime_checkable
class PromptCompletion(Protocol):
    """Takes raw prompts, no chat template: judges whose published format is a text prompt
    (HarmBench, WildGuard) need it."""

    def complete(self, prompts: list[str], params: GenerationParams) -> list[str]: ...


@runtime_checkable
class NextTokenScoring(Protocol):
    """Scores the next token of raw prompts (ShieldGemma reads P(Yes) against P(No))."""

    def next_token_logprobs(self, prompts: list[str], tokens: list[str], batch_size: int = 8) -> list[dict[str, float]]:
        """Per prompt, {token: log-probability of it being the next token} for the vocabulary entries
        `tokens`; a token the backend could not score is absent (never filled in)."""
        ...


@runtime_checkable
class CompletionBackend(TextBackend, PromptCompletion, NextTokenScoring, Protocol):
    """A text backend that also takes raw prompts (hf, openai, vllm)."""


@runtime_checkable
class TrainableBackend(TextBackend, Protocol):
    """A text backend whose weights are local and trainable (the text GRPO attack): a transformers
    causal LM and its tokenizer, and generation that returns token ids (backend:hf)."""

    model: Any  # a transformers PreTrainedModel (peft attaches the attack's LoRA to it)
    tokenizer: Any

    def generate_ids(
        self, chats: list[Chat], params: GenerationParams, *, min_new_tokens: int | None = None
    ) -> list[list[int]]: ...


@runtime_checkable
class TokenGeneration(Protocol):
    """Generation on token ids (backend:hf): the runner's packing and early stop work on ids, so a
    continued answer extends exactly the tokens its prefix produced."""

    def encode_chats(self, chats: list[Chat]) -> list[list[int]]: ...

    def generate_tokens(
        self, ids: list[list[int]], params: GenerationParams, *, min_new_tokens: int | None = None
    ) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...


class StreamUnsupported(Exception):
    """This model or generation config cannot stream; raised before any row is returned."""


@dataclass
class Finished:
    """One prompt's answer from a stream, as it finishes."""

    index: int  # position in the caller's list of prompts
    tokens: list[int]  # new tokens, without the stop token
    decided: str | None  # why `decide` stopped it early, or None (stop token or max_new_tokens)


@runtime_checkable
class StreamingGeneration(TokenGeneration, Protocol):
    """Continuous batching (backend:hf): answers come back as they finish; `decide(index, tokens)`,
    asked from `decide_from` tokens on every `decide_every`, may stop one early; `tick` is called
    every few seconds (the runner's cancel and deadline check)."""

    def generate_stream(
        self,
        ids: list[list[int]],
        params: GenerationParams,
        *,
        decide: Callable[[int, list[int]], str | None] | None = None,
        decide_from: int = 24,
        decide_every: int = 8,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[Finished]: ...


@runtime_checkable
class ImageBackend(Protocol):
    """Turns prompts into images (PIL), `n` per prompt, prompt-major, at the given seeds."""

    id: str
    modality: Literal["image"]

    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        seeds: list[int] | None = None,
        steps: int = 25,
        guidance: float = 7.5,
        height: int = 512,
        width: int = 512,
        negative_prompt: str | None = None,
    ) -> list[Any]: ...

    def close(self) -> None: ...


@runtime_checkable
class TrainableImageBackend(ImageBackend, Protocol):
    """An image backend whose diffusers pipeline is local and trainable (the diffusion GRPO attack)."""

    pipe: Any  # a diffusers pipeline with a UNet (peft attaches the attack's LoRA to it); None once closed


@dataclass(frozen=True)
class LocalCheckpoint:
    """Declared on a backend class that loads the audited checkpoint's own files (hf, vllm,
    diffusers), as `local_checkpoint = LocalCheckpoint(...)`. The runner then snapshots and checks
    those files, passes the snapshot as the `model` option and fills in the options named here
    from its settings: "device", "allow_pickle", "max_prompt_chars". A backend without it talks
    to a server that serves the checkpoint."""

    options: frozenset[str] = frozenset()


def local_checkpoint_of(backend_class: object) -> LocalCheckpoint | None:
    """What a backend plugin (a class; a plain factory declares nothing) says about its files."""
    if not isinstance(backend_class, type):
        return None
    declared = next((vars(c)["local_checkpoint"] for c in backend_class.__mro__ if "local_checkpoint" in vars(c)), None)
    return declared if isinstance(declared, LocalCheckpoint) else None


def backend_id(backend: object) -> str:
    """The backend's id for messages; the class name when it declares none."""
    found = getattr(backend, "id", None)
    return found if isinstance(found, str) else type(backend).__name__
