"""`backend:hf` — local generation with transformers (safetensors folders and GGUF files).

The model loads in `__init__`, so a checkpoint that cannot be loaded fails the audit at once with
a `BackendError`, before any probe runs. Only local paths are accepted (no hub downloads at audit
time), and every path passes `loading.check_loadable` first. `generate` batches with left
padding: prompts are sorted by length into batches of `params.batch_size` (less padding) and
outputs are returned in the callers' order. `generate_stream` is continuous batching
(auditd.backends.hf_stream), what the runner's packing uses: bench/bench_audit.py measures both.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from auditd.backends.base import BackendError, Chat, Finished, GenerationParams, LocalCheckpoint, StreamUnsupported
from auditd.backends.chat_template import render_chat
from auditd.backends.hf_stream import Stream, check_cache_support, run_parallel, shards_of, unsupported_config
from auditd.backends.loading import CheckpointError, check_loadable
from auditd.sanitize import sanitize

DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_model_path(model: str, gguf_file: str | None) -> tuple[Path, str | None]:
    """(folder, gguf file name or None): a path to a .gguf file is split; a folder holding a single
    *.gguf and no safetensors selects it."""
    p = Path(model).expanduser()
    if not p.exists():
        raise BackendError(f"model path not found: {p} (backend:hf loads local paths only)")
    if p.is_file():
        if not p.name.lower().endswith(".gguf"):
            raise BackendError(f"model path {p} is a file but not a .gguf; pass the model folder")
        if gguf_file not in (None, p.name):
            raise BackendError(f"model path {p} is a .gguf file but gguf_file={gguf_file!r} names another")
        return p.parent, p.name
    if gguf_file is None and not any(p.glob("*.safetensors")):
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return p, ggufs[0].name
        if len(ggufs) > 1:
            names = ", ".join(g.name for g in ggufs)
            raise BackendError(f"several .gguf files in {p} ({names}); choose one with gguf_file")
    return p, gguf_file


def format_chat_plain(chat: Chat) -> str:
    """The fallback prompt for tokenizers without a chat template."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in chat]
    return "\n".join(lines) + "\nAssistant:"


class HFBackend:
    """Generates with a local transformers model; `.model` and `.tokenizer` are public (the GRPO attack
    reuses them) and `.stats` accumulates generated tokens, seconds and prompts."""

    id = "hf"
    local_checkpoint = LocalCheckpoint(frozenset({"device", "allow_pickle", "max_prompt_chars"}))

    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        allow_pickle: bool = False,
        max_memory: str | None = None,
        max_prompt_chars: int = 200_000,
        stream_workers: int | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        folder, gguf = resolve_model_path(model, gguf_file)
        self.path = folder / gguf if gguf else folder
        self.device = device
        self.max_prompt_chars = max_prompt_chars
        if stream_workers is not None and not 1 <= stream_workers <= 256:
            raise BackendError(f"stream_workers must be between 1 and 256, got {stream_workers}")
        self.stream_workers = stream_workers
        self.stats: dict[str, Any] = {"generated_tokens": 0, "generate_seconds": 0.0, "prompts": 0}
        check_loadable(folder, allow_pickle=allow_pickle, gguf_file=gguf)
        self.model, self.tokenizer = self._load(folder, gguf, device, dtype, allow_pickle, max_memory)

    def _load(self, folder: Path, gguf: str | None, device: str, dtype: str, allow_pickle: bool, max_memory):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
        if gguf:
            common["gguf_file"] = gguf
        kwargs: dict[str, Any] = dict(common, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
        if not gguf:
            kwargs["use_safetensors"] = None if allow_pickle else True
        if device == "auto":  # accelerate places layers on the GPUs, then the CPU
            kwargs["device_map"] = "auto"
            if max_memory:
                budget = {i: max_memory for i in range(torch.cuda.device_count())}
                kwargs["max_memory"] = budget | {"cpu": max_memory}
        elif max_memory:
            raise BackendError(f"max_memory applies only with device='auto' (got device={device!r})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **common)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            if "device_map" not in kwargs:
                model.to(device)  # type: ignore[arg-type]  # transformers types the wrapped to() as unbound
        except CheckpointError:
            raise
        except Exception as e:  # OSError, ValueError, safetensors and torch errors alike
            msg = sanitize(" ".join(str(e).split()))[:300]
            raise BackendError(f"cannot load model {self.path}: {type(e).__name__}: {msg}") from e
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise BackendError(f"tokenizer of {self.path} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    # -- prompts -----------------------------------------------------------------------------------

    def render(self, chat: Chat) -> str:
        """The prompt text a chat becomes: the tokenizer's chat template, or the plain format."""
        if getattr(self.tokenizer, "chat_template", None):  # untrusted: sandboxed, output capped
            return render_chat(self.tokenizer, chat, self.max_prompt_chars)
        text = format_chat_plain(chat)
        if len(text) > self.max_prompt_chars:
            raise BackendError(f"prompt exceeds {self.max_prompt_chars:,} characters (max_prompt_chars)")
        return text

    def _encode(self, chats: list[Chat]) -> list[list[int]]:
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        texts = [self.render(c) for c in chats]
        # A chat template writes its own special tokens; the plain format takes the tokenizer's.
        return self.tokenizer(texts, add_special_tokens=not templated)["input_ids"]

    # -- generation --------------------------------------------------------------------------------

    def _generation_config(self, params: GenerationParams, min_new_tokens: int | None):
        import copy

        gc_ = copy.deepcopy(self.model.generation_config)
        gc_.max_new_tokens = params.max_new_tokens
        gc_.max_length = None
        gc_.min_new_tokens = min_new_tokens
        gc_.pad_token_id = self.tokenizer.pad_token_id
        if gc_.eos_token_id is None:
            gc_.eos_token_id = self.tokenizer.eos_token_id
        gc_.num_return_sequences = 1
        if params.temperature == 0:
            gc_.do_sample, gc_.temperature, gc_.top_p, gc_.top_k = False, None, None, None
        else:
            gc_.do_sample, gc_.temperature, gc_.top_p, gc_.top_k = True, params.temperature, params.top_p, None
        return gc_

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        for t in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id):
            if t is not None:
                ids.add(t)
        return ids

    def generate(self, chats: list[Chat], params: GenerationParams, *, min_new_tokens: int | None = None) -> list[str]:
        """One completion per chat, in order. `min_new_tokens` (benches only) forces equal lengths."""
        ids = self.generate_ids(chats, params, min_new_tokens=min_new_tokens)
        return [self.decode(row) for row in ids]

    def generate_ids(
        self, chats: list[Chat], params: GenerationParams, *, min_new_tokens: int | None = None
    ) -> list[list[int]]:
        """The new token ids per chat, in order, cut before the first eos/pad token."""
        if not chats:
            return []
        self._check_open(params)
        return self._generate_encoded(self._encode(chats), params, min_new_tokens)

    # Token-level interface: the runner's packing and early stop (auditd.runner.packing) work on ids,
    # so a continued answer extends exactly the tokens its prefix produced.
    def encode_chats(self, chats: list[Chat]) -> list[list[int]]:
        return self._encode(chats)

    def generate_tokens(
        self, ids: list[list[int]], params: GenerationParams, *, min_new_tokens: int | None = None
    ) -> list[list[int]]:
        """New token ids after each prompt's ids, in order, cut before the first eos/pad token."""
        if not ids:
            return []
        self._check_open(params)
        return self._generate_encoded(ids, params, min_new_tokens)

    def decoders(self) -> int:
        """Decoders `generate_stream` runs at once: on a CPU one single-threaded decoder per torch
        thread (hf_stream.run_parallel), unless `stream_workers` says; one on a GPU."""
        import torch

        if self.stream_workers:
            return self.stream_workers
        return torch.get_num_threads() if self.model is not None and self.model.device.type == "cpu" else 1

    def generate_stream(
        self,
        ids: list[list[int]],
        params: GenerationParams,
        *,
        decide: Callable[[int, list[int]], str | None] | None = None,
        decide_from: int = 24,
        decide_every: int = 8,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[Finished]:
        """Continuous batching (auditd.backends.hf_stream): each prompt's new tokens as it finishes,
        `decide(index, tokens)` asked from `decide_from` tokens on, every `decide_every`. Raises
        StreamUnsupported, before any row, where this model or its generation config needs `generate`."""
        self._check_open(params)
        config = self._generation_config(params, None)
        if (field := unsupported_config(config)) is not None:
            raise StreamUnsupported(f"generation config sets {field}")

        options: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            batch_size=params.batch_size,
            stops=self._stop_ids(),
            pad_id=self.tokenizer.pad_token_id,
            temperature=params.temperature,
            top_p=params.top_p,
            suppress=list(config.suppress_tokens or []),
            begin_suppress=list(config.begin_suppress_tokens or []),
            decide=decide,
            decide_from=decide_from,
            decide_every=decide_every,
        )
        check_cache_support(self.model)
        parts = shards_of(ids, max(1, min(self.decoders(), len(ids) // 4)))  # a decoder needs a few rows
        stream: Iterator[Finished]
        if len(parts) <= 1:
            stream = iter(Stream(self.model, ids, seed=params.seed, tick=tick, **options))
        else:
            halt = threading.Event()
            streams = [
                Stream(self.model, [ids[i] for i in part], seed=params.seed + k, labels=part, halt=halt, **options)
                for k, part in enumerate(parts)
            ]
            stream = run_parallel(streams, halt, tick)
        start = time.perf_counter()
        try:
            for row in stream:
                self.stats["generated_tokens"] += len(row.tokens)
                self.stats["prompts"] += 1
                yield row
        except BackendError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            msg = " ".join(str(e).split())[:300]
            raise BackendError(f"generation failed on {self.path}: {type(e).__name__}: {msg}") from e
        finally:
            self.stats["generate_seconds"] += time.perf_counter() - start

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def complete(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Raw-prompt completion for judges with a published text format (HarmBench, WildGuard): the
        text is tokenized as is, with the tokenizer's own BOS, and no chat template is applied."""
        if not prompts:
            return []
        self._check_open(params)
        ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        rows = self._generate_encoded(ids, params, None)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]

    def next_token_logprobs(self, prompts: list[str], tokens: list[str], batch_size: int = 8) -> list[dict[str, float]]:
        """Log-probabilities of the next token after each raw prompt, for the vocabulary entries
        `tokens` (ShieldGemma reads P("Yes") this way). A token missing from the vocabulary is a
        BackendError: scoring another token instead would be a silent default."""
        import torch

        if not prompts:
            return []
        self._check_open(GenerationParams(batch_size=batch_size))
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in tokens if t not in vocab]
        if missing:
            raise BackendError(f"tokenizer of {self.path} has no vocabulary entry {missing[0]!r}")
        token_ids = [vocab[t] for t in tokens]
        ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        out: list[dict[str, float]] = []
        with torch.inference_mode():
            for b in range(0, len(ids), batch_size):
                enc = self.tokenizer.pad({"input_ids": ids[b : b + batch_size]}, padding=True, return_tensors="pt")
                mask = enc["attention_mask"]
                # Left padding: positions must count real tokens only, or padded rows score differently.
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                try:
                    logits = self.model(
                        input_ids=enc["input_ids"].to(self.model.device),
                        attention_mask=mask.to(self.model.device),
                        position_ids=positions.to(self.model.device),
                    ).logits
                except (RuntimeError, ValueError, IndexError) as e:
                    msg = " ".join(str(e).split())[:300]
                    raise BackendError(f"forward pass failed on {self.path}: {type(e).__name__}: {msg}") from e
                logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)[:, token_ids].tolist()
                out += [dict(zip(tokens, row)) for row in logprobs]
        return out

    def _check_open(self, params: GenerationParams) -> None:
        if params.batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {params.batch_size}")
        if self.model is None:
            raise BackendError(f"backend for {self.path} is closed")

    def _generate_encoded(
        self, ids: list[list[int]], params: GenerationParams, min_new_tokens: int | None
    ) -> list[list[int]]:
        import torch

        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        outputs: list[list[int]] = [[] for _ in ids]
        config = self._generation_config(params, min_new_tokens)
        stops = self._stop_ids()
        device = self.model.device
        start = time.perf_counter()
        # Seed a forked RNG so sampling is repeatable without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else None), torch.inference_mode():
            torch.manual_seed(params.seed)
            for b in range(0, len(order), params.batch_size):
                batch = order[b : b + params.batch_size]
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, padding=True, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                try:
                    out = self.model.generate(**enc, generation_config=config)
                except (RuntimeError, ValueError, IndexError) as e:
                    msg = " ".join(str(e).split())[:300]
                    raise BackendError(f"generation failed on {self.path}: {type(e).__name__}: {msg}") from e
                for i, row in zip(batch, out[:, enc["input_ids"].shape[1] :].tolist()):
                    useful = next((k for k, t in enumerate(row) if t in stops), len(row))
                    if min_new_tokens:
                        useful = max(useful, min(min_new_tokens, len(row)))
                    outputs[i] = row[:useful]
        self.stats["generated_tokens"] += sum(len(o) for o in outputs)
        self.stats["generate_seconds"] += time.perf_counter() - start
        self.stats["prompts"] += len(ids)
        return outputs

    def close(self) -> None:
        self.model = None
        gc.collect()
        if self.device != "cpu":
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
