"""The process executor's cost: wall time per audit in a supervised child process (the default)
against the same audit run inline in the calling process, side by side in one run.

Both run real audits of the same tiny random Llama (backend:hf, refusal judge, SQLite store,
queue claim, verdict), alternating inline and process audits so that machine load hits both
alike. Inline audits run in this process, where torch and transformers are imported once (as a
long-lived inline daemon would); a process audit pays a fresh interpreter, its imports and the
resource limits every time: that difference is the executor's overhead per audit.

    python bench/bench_executor.py                 # 4 audits each
    python bench/bench_executor.py --audits 8 --backend fake   # no model: the bare per-audit cost
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

POLICY = """\
name: bench-executor
probes:
  text:
    - id: policy
      limit_per_category: 1
    - id: overrefusal
      limit_per_category: 4
generation: {{max_new_tokens: 8, batch_size: 8}}
budget: {{audit_timeout_s: 600}}
{backend}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audits", type=int, default=4, help="audits per executor")
    ap.add_argument("--backend", choices=("hf", "fake"), default="hf")
    args = ap.parse_args()

    from auditd.registry.checkpoint import Checkpoint
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.runner.supervisor import run_in_child
    from auditd.scheduler import intake, queue
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.testing import make_tiny_llama

    work = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    model = make_tiny_llama(work / "tiny")
    backend = 'backend: {id: "backend:fake", options: {mode: comply}}' if args.backend == "fake" else ""
    policy = work / "policy.yaml"
    policy.write_text(POLICY.format(backend=backend))
    settings = Settings(home=work / "home", policy=str(policy))
    engine = open_db(settings.database_url)
    ctx = AuditContext(engine, settings)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id="sha256:bench", model="tiny", kind="text", path=str(model), source="bench"))
        s.commit()

    def one(executor: str, i: int) -> float:
        run, _ = queue.enqueue(engine, "sha256:bench", request_key=f"{executor}:{i}", policy=str(policy))
        queue.claim(engine, run.id, queue.worker_id())
        t0 = time.perf_counter()
        outcome = run_audit(ctx, run.id) if executor == "inline" else run_in_child(ctx, run.id, "cpu")
        elapsed = time.perf_counter() - t0
        assert outcome in ("pass", "warn", "block"), f"{executor} audit {run.id} ended {outcome}"
        return elapsed

    one("inline", -1)  # warm-up: imports torch/transformers in this process, as a running daemon has
    times: dict[str, list[float]] = {"inline": [], "process": []}
    for i in range(args.audits):
        for executor in ("inline", "process"):
            times[executor].append(one(executor, i))
    inline, process = statistics.median(times["inline"]), statistics.median(times["process"])
    print(f"backend {args.backend}, {args.audits} audits each (26 samples), median wall time per audit:")
    print(f"  inline   {inline:6.2f} s   ({', '.join(f'{t:.2f}' for t in times['inline'])})")
    print(f"  process  {process:6.2f} s   ({', '.join(f'{t:.2f}' for t in times['process'])})")
    print(f"  overhead {process - inline:+6.2f} s per audit; process / inline = {process / inline:.2f}x")


if __name__ == "__main__":
    main()
