"""`backend:vllm` — offline batched generation with vLLM on a GPU machine (optional extra).

vLLM cannot be installed on CPU-only machines (it pins its own CUDA torch), so this module imports
it only inside `VLLMBackend.__init__`; everywhere else `auditd` runs without it. A vLLM *server*
is covered by `backend:openai` instead.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from auditd.backends.base import BackendError, Chat, GenerationParams, LocalCheckpoint
from auditd.backends.loading import check_loadable


class VLLMBackend:
    """Wraps `vllm.LLM.chat`; `engine_kwargs` go to `vllm.LLM` (e.g. tensor_parallel_size, dtype)."""

    id = "vllm"
    local_checkpoint = LocalCheckpoint(frozenset())

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise BackendError("vllm is not installed: pip install 'auditd[vllm]' on a GPU machine") from None
        if engine_kwargs.pop("trust_remote_code", False):
            raise BackendError("backend:vllm never trusts remote code; remove trust_remote_code")
        allow_pickle = bool(engine_kwargs.pop("allow_pickle", False))
        if Path(model).exists():
            check_loadable(model, allow_pickle=allow_pickle)
        if not allow_pickle and not model.lower().endswith(".gguf"):
            engine_kwargs.setdefault("load_format", "safetensors")  # never fall back to *.bin pickles
        self.model = model
        self._sampling_params = SamplingParams
        try:
            self.llm = LLM(model=model, trust_remote_code=False, **engine_kwargs)
        except Exception as e:  # vLLM raises many types on load (OSError, ValueError, RuntimeError)
            raise BackendError(f"vllm cannot load {model}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e

    def _sampling(self, params: GenerationParams) -> Any:
        return self._sampling_params(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            seed=params.seed,
        )

    def generate(self, chats: list[Chat], params: GenerationParams) -> list[str]:
        if not chats:
            return []
        sampling = self._sampling(params)
        try:  # vLLM schedules its own batches (continuous batching); params.batch_size is not used
            outs = self.llm.chat(chats, sampling, add_generation_prompt=True, use_tqdm=False)
        except Exception as e:
            raise BackendError(f"vllm generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        return [o.outputs[0].text.strip() for o in outs]

    def complete(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Raw prompts (HarmBench, WildGuard formats) through `LLM.generate`; vLLM adds the BOS."""
        if not prompts:
            return []
        sampling = self._sampling(params)
        try:
            outs = self.llm.generate(list(prompts), sampling, use_tqdm=False)
        except Exception as e:
            raise BackendError(f"vllm generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        return [o.outputs[0].text.strip() for o in outs]

    def next_token_logprobs(self, prompts: list[str], tokens: list[str], batch_size: int = 8) -> list[dict[str, float]]:
        """Next-token logprobs of the vocabulary entries `tokens`, from vLLM's top-20 (ShieldGemma)."""
        if not prompts:
            return []
        vocab = self.llm.get_tokenizer().get_vocab()
        missing = [t for t in tokens if t not in vocab]
        if missing:
            raise BackendError(f"tokenizer of {self.model} has no vocabulary entry {missing[0]!r}")
        sampling = self._sampling_params(max_tokens=1, temperature=0.0, logprobs=20)
        try:
            outs = self.llm.generate(list(prompts), sampling, use_tqdm=False)
        except Exception as e:
            raise BackendError(f"vllm scoring failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        result = []
        for o in outs:
            top = o.outputs[0].logprobs[0]  # token id -> Logprob
            result.append({t: top[vocab[t]].logprob for t in tokens if vocab[t] in top})
        return result

    def close(self) -> None:
        self.llm = None
        gc.collect()
