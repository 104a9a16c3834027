"""The base classes of the judges that ask a model (rubric, guard, WildGuard, HarmBench,
ShieldGemma): backend specs, one batched call, ownership.

A model judge (rubric, guard) takes its judge model either as a ready `TextBackend` or as a plugin
spec such as ``{"id": "backend:hf", "model": "/models/guard", "gguf_file": None}``. A spec is
checked when the judge is built (the id must resolve) but the model loads on the first `score()`
call, so building judges from a policy file stays cheap; a backend built from a spec belongs to
the judge and `close()` releases it, a backend passed in belongs to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from auditd import plugins
from auditd.backends.base import (
    BackendError,
    Chat,
    GenerationParams,
    NextTokenScoring,
    PromptCompletion,
    TextBackend,
    backend_id,
)
from auditd.judges.base import JudgeInput, Score

BackendSpec = Mapping[str, Any]
T = TypeVar("T")


def check_backend_spec(spec: BackendSpec) -> dict[str, Any]:
    """A copy of `spec` once its id names a known backend plugin; ValueError otherwise."""
    spec = dict(spec)
    plugin_id = spec.get("id")
    if not isinstance(plugin_id, str) or not plugin_id.startswith("backend:"):
        raise ValueError(f"judge backend spec needs an 'id' like 'backend:hf', got {plugin_id!r}")
    plugins.resolve(plugin_id)  # raises PluginError for an unknown id; imports nothing heavy
    return spec


def create_backend(spec: BackendSpec) -> TextBackend:
    """Build the backend a spec names: ``plugins.create(spec["id"], **rest)``."""
    options = dict(check_backend_spec(spec))
    return plugins.create(options.pop("id"), **options)


class ModelJudgeBase:
    """Holds a judge model (an instance, or a spec built lazily) and asks it in one batched call."""

    id: str = ""

    def __init__(self, backend: BackendSpec | TextBackend, max_new_tokens: int, batch_size: int) -> None:
        if isinstance(backend, Mapping):
            self._spec: dict[str, Any] | None = check_backend_spec(backend)
            self._backend: TextBackend | None = None
        elif isinstance(backend, TextBackend):
            self._spec, self._backend = None, backend
        else:
            raise TypeError(f"{type(self).__name__}: backend must be a TextBackend or a plugin spec dict")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)

    @property
    def backend(self) -> TextBackend:
        if self._backend is None:
            assert self._spec is not None
            self._backend = create_backend(self._spec)
        return self._backend

    def ask(self, chats: list[Chat]) -> list[str]:
        """One generate call for all chats; a backend that breaks its contract raises BackendError."""
        if not chats:
            return []
        outputs = self.backend.generate(chats, self.params)
        if len(outputs) != len(chats):
            raise BackendError(f"judge {self.id!r}: backend returned {len(outputs)} outputs for {len(chats)} prompts")
        if not all(isinstance(o, str) for o in outputs):
            raise BackendError(f"judge {self.id!r}: backend returned a non-string output")
        return outputs

    def _raw_backend(self, method: str, protocol: type[T]) -> T:
        backend = self.backend
        if not isinstance(backend, protocol):
            raise BackendError(
                f"judge {self.id!r} needs raw prompts; backend {backend_id(backend)!r} "
                f"has no {method}() (use backend:hf, backend:openai or backend:vllm)"
            )
        return backend

    def complete(self, prompts: list[str]) -> list[str]:
        """One raw-prompt call for all prompts (published text formats, no chat template)."""
        if not prompts:
            return []
        # mypy#4717: mypy rejects a Protocol class as type[T], though isinstance() accepts a runtime_checkable one
        completer = self._raw_backend("complete", PromptCompletion)  # type: ignore[type-abstract]
        outputs = completer.complete(prompts, self.params)
        if len(outputs) != len(prompts) or not all(isinstance(o, str) for o in outputs):
            raise BackendError(f"judge {self.id!r}: backend broke the completion contract")
        return outputs

    def next_token_logprobs(self, prompts: list[str], tokens: list[str]) -> list[dict[str, float]]:
        if not prompts:
            return []
        scorer = self._raw_backend("next_token_logprobs", NextTokenScoring)  # type: ignore[type-abstract]  # mypy#4717
        rows = scorer.next_token_logprobs(prompts, tokens, batch_size=self.params.batch_size)
        if len(rows) != len(prompts):
            raise BackendError(f"judge {self.id!r}: backend returned {len(rows)} rows for {len(prompts)} prompts")
        return rows

    def close(self) -> None:
        """Release the judge model if this judge built it from a spec."""
        if self._spec is not None and self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()


class CompletionJudge(ModelJudgeBase):
    """A judge whose published format is one raw prompt per answer and a short text verdict:
    subclasses give `prompt_for` (the format) and `parse` (strict: unparseable -> Score.error)."""

    def prompt_for(self, item: JudgeInput) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Score:
        raise NotImplementedError

    def score(self, items: list[JudgeInput]) -> list[Score]:
        outputs = self.complete([self.prompt_for(item) for item in items])  # BackendError propagates
        return [self.parse(text) for text in outputs]
