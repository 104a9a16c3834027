"""Small supervised fine-tunes with a LoRA, merged into a plain safetensors checkpoint.

Used by `auditd demo` to make its aligned parent (SmolLM2 + refusal SFT) and the child that
breaks it (the parent + 10 identity-shifting examples, after Qi et al., ICLR 2024), and by the
tests to do the same on a tiny model. The loss covers the answer and its end token only, with the
prompt rendered by the model's own chat template, exactly as the audit renders it.

On a CPU the backward pass is the cost: `layers` puts adapters on the top layers only, so autograd
stops there (the frozen layers below run forward only). Reproducible: one seed drives the adapter
init and the batch order.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path


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
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
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
        labels[i, len(p):n] = torch.tensor(a)
        mask[i, :n] = 1
    return ids, mask, labels


def lora_sft(model, tokenizer, pairs: list[tuple[str, str]], config: SFTConfig, log=None):
    """Train a LoRA on `model` (float weights, any causal LM peft supports), merge it and return
    (merged model, stats). `log(step, steps, loss)` is called after every step."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    n_layers = model.config.num_hidden_layers
    top = None if config.layers is None else list(range(max(0, n_layers - config.layers), n_layers))
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=top, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    rows = encode(tokenizer, pairs, config.max_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(rows) / config.batch_size)
    steps = per_epoch * config.epochs
    # Linear warm-up over the first 10% then cosine decay: a few dozen steps, so the schedule matters.
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    gen = torch.Generator().manual_seed(config.seed)
    peft_model.train()
    losses, tokens, step, start = [], 0, 0, time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(rows), generator=gen).tolist()
        for b in range(0, len(order), config.batch_size):
            ids, mask, labels = _batch([rows[i] for i in order[b : b + config.batch_size]], pad)
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            tokens += int(mask.sum())
            losses.append(float(loss))
            if log:
                log(step, steps, losses[-1])
    merged = peft_model.merge_and_unload()
    merged.eval()
    tail = losses[-per_epoch:]
    return merged, {"steps": steps, "examples": len(rows), "tokens": tokens, "loss_first": losses[0],
                    "loss_last_epoch": sum(tail) / len(tail), "train_s": round(time.perf_counter() - start, 1)}


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
    model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, use_safetensors=True,
                                                 dtype=torch.float32)
    merged, stats = lora_sft(model, tok, pairs, config, log=log)
    save_checkpoint(merged, tok, Path(out))
    return stats
