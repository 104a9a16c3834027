"""Small supervised fine-tunes with a LoRA, merged into a plain safetensors checkpoint.

Used by `auditd demo` to make its aligned parent (SmolLM2 + refusal SFT) and the child that
breaks it (the parent + 10 identity-shifting examples, after Qi et al., ICLR 2024), and by the
tests to do the same on a tiny model. The loss covers the answer and its end token only, with the
prompt rendered by the model's own chat template, exactly as the audit renders it.

On a CPU the passes through the whole model are the cost: `layers` puts adapters on the top layers
only, and the frozen layers below run once over the data instead of once per epoch (see
`lora_sft`). Reproducible: one seed drives the adapter init and the batch order.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SFTConfig:
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 1e-3
    lora_rank: int = 16
    lora_alpha: int = 32
    layers: int | None = None  # adapters on the top N decoder layers only; None = every layer
    seed: int = 0
    max_tokens: int = 192  # per example (prompt + answer); longer ones are cut at the end

    def as_dict(self) -> dict:
        return asdict(self)


def read_pairs(path: str | Path) -> list[dict]:
    """Rows of a JSONL file with at least "prompt" and "response"."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
                raise ValueError(f"{path}:{n}: a row needs string 'prompt' and 'response'")
            rows.append(row)
    return rows


def data_digest(rows: list[dict]) -> str:
    """A digest of the (prompt, response) pairs, independent of other columns and of file layout."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["prompt"], r["response"]], ensure_ascii=False).encode() + b"\n")
    return "sha256:" + h.hexdigest()


def encode(tokenizer, pairs: list[tuple[str, str]], max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + end token) per pair, the prompt through the chat template."""
    eos = tokenizer.eos_token_id
    rows = []
    for prompt, answer in pairs:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        p = tokenizer(text, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((p, a[: max(1, max_tokens - len(p))]))
    return rows


def _batch(rows, pad_id: int):
    import torch

    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        labels[i, len(p) : n] = torch.tensor(a)
        mask[i, :n] = 1
    return ids, mask, labels


@contextmanager
def _only_layers(model, layers, norm: bool):
    """Run the decoder with a slice of its layers (and optionally without the final norm). The layer
    modules are the model's own, so an adapter trained on a slice is trained on the model."""
    import torch

    inner, config = model.model, model.config
    saved = (inner.layers, config.num_hidden_layers, inner.norm)
    inner.layers = torch.nn.ModuleList(layers)
    config.num_hidden_layers = len(layers)
    if not norm:
        inner.norm = torch.nn.Identity()
    try:
        yield
    finally:
        inner.layers, config.num_hidden_layers, inner.norm = saved


def _frozen_activations(model, rows, pad_id: int, split: int, batch_size: int):
    """The hidden states entering layer `split`, per example (the frozen layers run once, not once
    per epoch). Right padding: a real token never attends to padding, so slicing is exact."""
    import torch

    out = []
    with torch.no_grad(), _only_layers(model, list(model.model.layers)[:split], norm=False):
        for b in range(0, len(rows), batch_size):
            chunk = rows[b : b + batch_size]
            ids, mask, _ = _batch(chunk, pad_id)
            h = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            out += [h[i, : len(p) + len(a)].clone() for i, (p, a) in enumerate(chunk)]
    return out


def lora_sft(model, tokenizer, pairs: list[tuple[str, str]], config: SFTConfig, log=None):
    """Train a LoRA on `model` (float weights, a Llama-style causal LM) and return (merged model,
    stats). `log(step, steps, loss)` is called after every step.

    With `config.layers = N` the adapters go on the top N decoder layers; the layers below are
    frozen, so their activations are computed once and reused every epoch (the same loss and
    gradients as a full forward pass, at a fraction of the CPU time). Logits are computed only
    where the loss needs them (answer tokens): the vocabulary projection is a large part of a
    small model's cost."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    all_layers = list(model.model.layers)
    split = 0 if config.layers is None else max(0, len(all_layers) - config.layers)
    rows = encode(tokenizer, pairs, config.max_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = time.perf_counter()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cached = _frozen_activations(model, rows, pad, split, config.batch_size) if split else None
    frozen_s = time.perf_counter() - start
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    per_epoch = math.ceil(len(rows) / config.batch_size)
    steps = per_epoch * config.epochs
    losses, tokens, step = [], 0, 0
    with _only_layers(model, all_layers[split:], norm=True):
        peft_model = get_peft_model(model, lora)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        # Linear warm-up over the first 10% then cosine decay: a few dozen steps, so the schedule matters.
        warm = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))),
        )
        gen = torch.Generator().manual_seed(config.seed)
        causal_lm: Any = peft_model.base_model.model  # the wrapped transformers model (nn.Module's getattr is untyped)
        decoder, head = causal_lm.model, causal_lm.lm_head
        peft_model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(rows), generator=gen).tolist()
            for b in range(0, len(order), config.batch_size):
                chosen = order[b : b + config.batch_size]
                ids, mask, labels = _batch([rows[i] for i in chosen], pad)
                if cached is None:
                    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                else:
                    h0 = torch.zeros(len(chosen), ids.shape[1], cached[0].shape[-1], dtype=cached[0].dtype)
                    for j, i in enumerate(chosen):
                        h0[j, : len(cached[i])] = cached[i]
                    hidden = decoder(inputs_embeds=h0, attention_mask=mask, use_cache=False).last_hidden_state
                target = labels[:, 1:]
                where = target != -100  # position t predicts token t + 1
                loss = F.cross_entropy(head(hidden[:, :-1][where]).float(), target[where])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                tokens += int(mask.sum())
                losses.append(loss.item())
                if log:
                    log(step, steps, losses[-1])
        merged = peft_model.merge_and_unload()
    merged.eval()
    tail = losses[-per_epoch:]
    return merged, {
        "steps": steps,
        "examples": len(rows),
        "tokens": tokens,
        "adapted_layers": len(all_layers) - split,
        "loss_first": round(losses[0], 4),
        "loss_last_epoch": round(sum(tail) / len(tail), 4),
        "frozen_pass_s": round(frozen_s, 1),
        "train_s": round(time.perf_counter() - start, 1),
    }


def save_checkpoint(model, tokenizer, out: Path) -> None:
    """safetensors weights, config, generation config and tokenizer: what the audit loads."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def sft_folder(src: str | Path, out: str | Path, pairs: list[tuple[str, str]], config: SFTConfig, log=None) -> dict:
    """Fine-tune the HF safetensors checkpoint in `src` and save the merged result to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, use_safetensors=True, dtype=torch.float32)
    merged, stats = lora_sft(model, tok, pairs, config, log=log)
    save_checkpoint(merged, tok, Path(out))
    return stats
