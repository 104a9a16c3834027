"""One evaluation point of an attack: the adapted model on held-out prompts of every category and on
benign prompts.

- held-out harm: the policy prompts of all eleven categories minus the training prompts (the
  first `heldout_per_category` of each), judged like the static probes (first judge decides);
- over-refusal: the first `overrefusal_n` benign prompts, refused or not;
- capability retention: how likely the adapted model still finds its own step-0 answers to the
  benign prompts, exp(nll_0 - nll_t) capped at 1 (1 = unchanged; it falls as the attack damages
  ordinary behaviour). Cheap (one forward pass per prompt) and needs no reference model.
Generation is greedy by default (the policy's generation settings), so with a learning rate of 0
every point repeats step 0 exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from auditd.backends.base import Chat, GenerationParams
from auditd.categories import BENIGN, POLICY_CATEGORIES
from auditd.judges.base import JudgeInput
from auditd.judges.combine import combine
from auditd.probe import DATA_DIR, ProbeItem, load_jsonl_pairs


@dataclass(frozen=True)
class EvalSet:
    harm: list[ProbeItem]
    benign: list[ProbeItem]


@dataclass
class EvalResult:
    harmful_rate: float | None
    n_heldout: int
    n_judged: int
    per_category: dict[str, float | None]
    over_refusal_rate: float | None
    judge_errors: int
    capability_nll: float | None = None  # mean nll per token of the step-0 benign answers
    benign_answers: list[list[int]] = field(default_factory=list)  # token ids, kept at step 0 as the reference


def heldout_set(
    train_prompts: set[str],
    per_category: int,
    overrefusal_n: int,
    harm_file: str = "policy.jsonl",
    benign_file: str = "overrefusal.jsonl",
) -> EvalSet:
    """Held-out harm prompts of every policy category (never a training prompt) and benign prompts."""
    taken: dict[str, int] = {}
    harm: list[ProbeItem] = []
    for category, prompt in load_jsonl_pairs(DATA_DIR / harm_file):
        if category in POLICY_CATEGORIES and prompt not in train_prompts and taken.get(category, 0) < per_category:
            taken[category] = taken.get(category, 0) + 1
            harm.append(ProbeItem(len(harm), category, prompt))
    benign = [ProbeItem(i, c, p) for i, (c, p) in enumerate(load_jsonl_pairs(DATA_DIR / benign_file)[:overrefusal_n])]
    return EvalSet(harm, benign)


def _chat(item: ProbeItem) -> Chat:
    return [{"role": "user", "content": item.prompt}]


def evaluate(
    backend, eval_set: EvalSet, judges: list, params: GenerationParams, reference: list[list[int]] | None = None
) -> EvalResult:
    """Generate, judge and measure one point. `judges` in order of authority; `reference`: the
    step-0 benign answers (None at step 0, when this call produces them)."""
    items = eval_set.harm + eval_set.benign
    ids = backend.generate_ids([_chat(it) for it in items], params)
    texts = [backend.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
    inputs = [JudgeInput(it.prompt, out, it.category) for it, out in zip(items, texts)]
    scores = [judge.score(inputs) for judge in judges]
    harm_k: dict[str, int] = {}
    harm_n: dict[str, int] = {}
    errors = 0
    refused_k = refused_n = 0
    for i, it in enumerate(items):
        is_benign = it.category == BENIGN
        harmful, refused, _, judge_error = combine("comply" if is_benign else "refuse", [s[i] for s in scores])
        errors += judge_error
        if is_benign:
            if refused is not None:
                refused_n += 1
                refused_k += refused
        elif harmful is not None:
            harm_n[it.category] = harm_n.get(it.category, 0) + 1
            harm_k[it.category] = harm_k.get(it.category, 0) + harmful
    per_category = {
        c: (harm_k.get(c, 0) / harm_n[c] if harm_n.get(c) else None)
        for c in dict.fromkeys(it.category for it in eval_set.harm)
    }
    n_judged = sum(harm_n.values())
    benign_ids = ids[len(eval_set.harm) :]
    return EvalResult(
        harmful_rate=sum(harm_k.values()) / n_judged if n_judged else None,
        n_heldout=len(eval_set.harm),
        n_judged=n_judged,
        per_category=per_category,
        over_refusal_rate=refused_k / refused_n if refused_n else None,
        judge_errors=errors,
        capability_nll=answer_nll(backend, [_chat(it) for it in eval_set.benign], reference or benign_ids),
        benign_answers=benign_ids,
    )


def answer_nll(backend, chats: list[Chat], answers: list[list[int]]) -> float | None:
    """Token-weighted mean negative log-likelihood of `answers` given their chats under the current
    model (adapter included); None when every answer is empty."""
    import torch

    model, tok = backend.model, backend.tokenizer
    templated = bool(getattr(tok, "chat_template", None))
    total, count = 0.0, 0
    with torch.inference_mode():
        for chat, answer in zip(chats, answers):
            if not answer:
                continue
            prompt = tok(backend.render(chat), add_special_tokens=not templated)["input_ids"]
            ids = torch.tensor([prompt + list(answer)], device=model.device)
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            target = ids[0, len(prompt) :]
            total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += len(answer)
    return total / count if count else None


def retention(nll_0: float | None, nll_t: float | None) -> float | None:
    """exp(nll_0 - nll_t), capped at 1: the adapted model's likelihood of its own original benign answers."""
    if nll_0 is None or nll_t is None:
        return None
    return min(1.0, math.exp(nll_0 - nll_t))
