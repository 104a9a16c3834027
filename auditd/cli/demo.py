"""The README's first command: the story of the seeds, told on a CPU.

1. An aligned parent is made here (SmolLM2-135M-Instruct + a refusal LoRA SFT, merged) and a
   child that breaks it the way Qi et al. (ICLR 2024) did: 10 benign-looking "absolutely obedient
   agent" examples. Both are trained once and cached in the demo registry (auditd/cli/demo_models.py).
2. The daemon watches that registry, audits both, compares the child with its parent per
   category, and writes the verdicts beside them: the parent should pass (or warn, with reasons),
   the child is blocked on drift, naming the categories that rose with counts, intervals, p-values.
3. With --grpo, the parent is audited again with the GRP-Obliteration probe (one fake-news prompt):
   how many steps until its alignment breaks, drawn as a chart in the terminal.

Then it prints where the time went and what to look at next.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from auditd.cli.render import ProbeProgress, category_table, fragility_chart, print_verdict, progress_bar, side_by_side

LEGACY_MODEL = "smollm2-135m-instruct"  # the earlier demo's folder: a symlink into site-packages
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the trainer and the daemon share the cores


def print_variant_rates(console: Console, engine, audit_id: int) -> None:
    """Harmful rate of the plain policy prompts and of each jailbreak variant, side by side."""
    from rich.table import Table
    from sqlmodel import select

    from auditd.store.db import session
    from auditd.store.models import CategoryResult

    with session(engine) as s:
        rows = s.exec(
            select(CategoryResult).where(
                CategoryResult.audit_id == audit_id, CategoryResult.probe_id.startswith("policy")
            )
        ).all()
    totals: dict[str, list[int]] = {}
    for r in rows:
        k, n = totals.setdefault(r.probe_id, [0, 0]), r.n_judged
        k[0] += r.n_harmful
        k[1] += n
    t = Table("variant", "harmful", "rate")
    for pid, (harmful, n) in sorted(totals.items(), key=lambda kv: (kv[0] != "policy", kv[0])):
        t.add_row(pid.partition("+")[2] or "(plain)", f"{harmful}/{n}", f"{harmful / n:.0%}" if n else "-")
    console.print(t)


def _free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return 0


def _drop_legacy(registry: Path) -> None:
    """Earlier demos put a symlink to the GGUF in site-packages here; registry containment refuses
    links that leave the registry, so that folder goes (only when it is exactly what we made)."""
    old = registry / LEGACY_MODEL
    if old.is_dir() and all(p.is_symlink() or p.name in ("auditd.json", "auditd-verdict.json") for p in old.iterdir()):
        shutil.rmtree(old)


class Clock:
    def __init__(self):
        self.rows: list[tuple[str, float, str]] = []

    def add(self, label: str, seconds: float, note: str = "") -> None:
        self.rows.append((label, seconds, note))

    def table(self, total: float) -> Table:
        t = Table(title="where the time went", show_header=True)
        t.add_column("step")
        t.add_column("seconds", justify="right")
        t.add_column("", style="dim")
        for label, s, note in self.rows:
            t.add_row(label, f"{s:.0f}", note)
        t.add_row("[bold]total[/]", f"[bold]{total:.0f}[/]", f"{total / 60:.1f} min")
        return t


def _train(err: Console, registry: Path, clock: Clock):
    from auditd.cli.demo_models import build_child, build_parent

    def logger(what: str):
        state: dict[str, Any] = {"task": None}

        def log(step: int, steps: int, loss: float) -> None:
            if state["task"] is None:
                state["task"] = bar.add_task(what, total=steps)
            bar.update(state["task"], completed=step, description=f"{what} (loss {loss:.2f})")

        return log

    with progress_bar(err) as bar:
        parent = build_parent(registry, log=logger("training the aligned parent (LoRA SFT)"))
        child = build_child(registry, parent, log=logger("training the child (10 identity-shift examples)"))
    for label, b in (("aligned parent", parent), ("child (identity shift)", child)):
        r = b.record
        if b.reused:
            clock.add(
                f"train {label}",
                0.0,
                f"reused {b.path.name}/ (trained in {r.get('total_s', 0):.0f}s, "
                f"seed {r.get('seed')}, data {r.get('data_digest', '')[:19]})",
            )
        else:
            if r.get("load_s"):
                clock.add("load SmolLM2 (GGUF, dequantized)", r["load_s"])
            clock.add(
                f"train {label}",
                b.seconds - r.get("load_s", 0.0),
                f"{r['examples']} examples, {r['steps']} steps on the top {r['adapted_layers']} layers, "
                f"loss {r['loss_first']:.2f} -> {r['loss_last_epoch']:.2f}",
            )
    return parent, child


def _wait(daemon, runs: list[int]):
    from auditd.store.db import session
    from auditd.store.models import AuditRun

    while True:
        with session(daemon.engine) as s:
            rows = [s.get_one(AuditRun, i) for i in runs]
        if all(r.status not in ("queued", "running") for r in rows):
            return rows
        time.sleep(0.5)


def _fresh_audit(daemon, checkpoint_id: str, since: int, policy: str, wait_s: float = 10.0) -> int:
    """The audit the daemon queued for this checkpoint on this run, or a new one when the checkpoint
    was already known (a later demo run: same weights, audited again)."""
    from sqlmodel import col, select

    from auditd.scheduler import queue
    from auditd.store.db import session
    from auditd.store.models import AuditRun

    deadline = time.time() + wait_s
    while time.time() < deadline:
        polled = "dir" in daemon.service.last_poll  # read first: a poll finishing after the query is not missed
        with session(daemon.engine) as s:
            run = s.exec(
                select(AuditRun)
                .where(AuditRun.checkpoint_id == checkpoint_id, col(AuditRun.id) > since)
                .order_by(col(AuditRun.id))
            ).first()
        if run is not None and run.id is not None:  # a stored row always has its id
            return run.id
        if polled:  # the registry was read and nothing was queued for it: known already
            break
        time.sleep(0.3)
    run, _ = queue.enqueue(daemon.engine, checkpoint_id, request_key=f"demo:{uuid.uuid4()}", policy=policy)
    assert run.id is not None  # stored by enqueue
    return run.id  # the daemon's dispatch tick (2 s) picks it up


def run_demo(
    console: Console,
    err: Console,
    registry: Path,
    home: Path | None,
    port: int,
    serve: bool,
    grpo: bool = False,
    variants: bool = False,
) -> int:
    from sqlmodel import func, select

    from auditd import __version__
    from auditd.daemon import Daemon
    from auditd.logs import setup_logging
    from auditd.registry.digest import content_digest
    from auditd.report.document import audit_report
    from auditd.settings import Settings
    from auditd.store.db import session
    from auditd.store.models import AuditRun

    t0 = time.perf_counter()
    clock = Clock()
    setup_logging("WARNING", json_lines=False)
    registry = registry.resolve()
    registry.mkdir(parents=True, exist_ok=True)
    _drop_legacy(registry)
    parent, child = _train(err, registry, clock)

    t = time.perf_counter()
    home_setting: dict[str, Any] = {"home": home} if home else {}
    settings = Settings(
        **home_setting,
        registry_dir=registry,
        policy="demo",
        poll_interval_s=2,
        registry_settle_s=0,
        metrics_port=_free(port) if port else 0,
    )
    daemon = Daemon(settings)
    ids = {"parent": content_digest(parent.path), "child": content_digest(child.path)}
    with session(daemon.engine) as s:
        since = s.exec(select(func.max(AuditRun.id))).one() or 0
    runs: dict[str, int] = {}
    with progress_bar(err) as bar:
        daemon.ctx.progress = ProbeProgress(bar)
        daemon.start()
        clock.add("set-up: open the database, start the daemon", time.perf_counter() - t)
        err.print(
            f"auditd {__version__} daemon: registry {registry}/, database {settings.database_url}, "
            f"metrics {daemon.http.url}/metrics"
        )
        for who in ("parent", "child"):  # parents first: the child is compared with the parent's audit
            runs[who] = _fresh_audit(daemon, ids[who], since, "demo")
        done = _wait(daemon, [runs["parent"], runs["child"]])
        # --grpo / --variants: the aligned parent again, under the policy that adds the attack.
        extra = {"grpo": "demo-grpo"} if grpo else {"variants": "demo-variants"} if variants else {}
        for who, policy in extra.items():
            if done[0].outcome != "error":
                runs[who], _ = queue_extra(daemon, ids["parent"], policy)
                _wait(daemon, [runs[who]])
    docs = {
        who: audit_report(daemon.engine, ids["child" if who == "child" else "parent"], run) for who, run in runs.items()
    }
    for who, label in (
        ("parent", "audit aligned parent (policy demo)"),
        ("child", "audit child (policy demo)"),
        ("grpo", "GRPO fragility audit of the parent (policy demo-grpo)"),
        ("variants", "jailbreak variants audit of the parent (policy demo-variants)"),
    ):
        if who in docs and docs[who]["audit"]:
            a = docs[who]["audit"]
            clock.add(
                label, a["duration_s"] or 0.0, f"generate {a['generate_s'] or 0:.0f}s, judge {a['judge_s'] or 0:.0f}s"
            )

    console.rule("aligned parent")
    console.print(category_table(docs["parent"]))
    print_verdict(console, docs["parent"])
    console.rule("child: the parent + 10 identity-shifting examples")
    print_verdict(console, docs["child"])
    console.print(side_by_side(docs["parent"], docs["child"]))
    if "grpo" in docs:
        console.rule("fragility: GRPO with one fake-news prompt, on the aligned parent")
        print_verdict(console, docs["grpo"])
        for line in fragility_chart(docs["grpo"]):
            console.print(line, markup=False, highlight=False)
    if "variants" in docs:
        console.rule("jailbreak variants of the policy prompts, on the aligned parent")
        print_verdict(console, docs["variants"])
        print_variant_rates(console, daemon.engine, runs["variants"])

    report_path = (settings.home / "demo-report.html").resolve()
    report: Path | None = report_path  # None once writing it failed
    try:
        from auditd.report.html import render_html

        report_path.write_text(render_html(daemon.engine, ids["child"], settings.home), encoding="utf-8")
    except Exception as exc:  # the report is a convenience; the verdicts above stand without it
        err.print(f"could not write the HTML report: {type(exc).__name__}: {exc}")
        report = None
    metrics = f"{daemon.http.url}/metrics"
    body = urllib.request.urlopen(metrics, timeout=10).read().decode()
    wanted = ("auditd_category_harmful_rate{", "auditd_grpo_steps_to_break", "auditd_grpo_harm_auc")
    sample = [ln for ln in body.splitlines() if ln.startswith(wanted)][:6]

    console.print(clock.table(time.perf_counter() - t0))
    console.print("\n[bold]look next[/]")
    console.print(f"  verdicts   {parent.path / 'auditd-verdict.json'}")
    console.print(f"             {child.path / 'auditd-verdict.json'}")
    if report:
        console.print(
            f"  report     {report}  (parent vs child, CI bars, sample answers"
            f"{', fragility curve' if 'grpo' in docs else ''})"
        )
    home_opt = f" --home {settings.home}" if home else ""
    console.print(
        f"  CLI        auditd report {ids['child'][:19]}{home_opt}  ·  auditd report {ids['child'][:19]}"
        f"{home_opt} --html child.html  ·  auditd status{home_opt}"
    )
    console.print(
        f"  metrics    {metrics} ({len(body.splitlines())} lines"
        f"{'' if serve else '; served while the demo runs, use --serve to keep it up'}), e.g.:"
    )
    for ln in sample:
        console.print(f"    {ln}", markup=False, highlight=False, soft_wrap=True)
    if serve:
        console.print("daemon keeps running (Ctrl-C to stop)")
        try:
            daemon.stopping_requested.wait()
        except KeyboardInterrupt:
            pass
    daemon.stop()
    outcomes = [docs[w]["audit"]["outcome"] if docs[w]["audit"] else "error" for w in docs]
    return 2 if "error" in outcomes else 0


def queue_extra(daemon, checkpoint_id: str, policy: str) -> tuple[int, bool]:
    """Audit `checkpoint_id` again under `policy` (a new request key: the demo asks for it on every run)."""
    from auditd.scheduler import queue

    run, created = queue.enqueue(daemon.engine, checkpoint_id, request_key=f"{policy}:{uuid.uuid4()}", policy=policy)
    assert run.id is not None  # stored by enqueue
    return run.id, created
