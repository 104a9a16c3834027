"""The `auditd` command line. Imports stay light at module level so `auditd --help` is instant."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import typer
from rich.console import Console

from auditd.cli.common import err, fail, load_settings

app = typer.Typer(help="auditd: audits every new AI checkpoint for safety regressions.", no_args_is_help=True)
probes_app = typer.Typer(help="Probe definitions.")
policy_app = typer.Typer(help="Policies.")
db_app = typer.Typer(help="Database maintenance.")
app.add_typer(probes_app, name="probes")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
console = Console()

EXIT = {"pass": 0, "warn": 0, "block": 1, "error": 2}

HomeOpt = typer.Option(None, "--home", help="State folder (AUDITD_HOME).")
DbOpt = typer.Option(None, "--db", help="Database URL (AUDITD_DB_URL).")
PolicyOpt = typer.Option(None, "--policy", help="Policy name or YAML path (AUDITD_POLICY).")


@app.command()
def run(
    registry: Path | None = typer.Option(None, "--registry", help="Folder to watch (AUDITD_REGISTRY_DIR)."),
    home: Path | None = HomeOpt,
    db: str | None = DbOpt,
    policy: str | None = PolicyOpt,
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port"),
    poll: float | None = typer.Option(None, "--poll", help="Seconds between registry polls."),
):
    """Run the daemon: watch the registry, audit new checkpoints, serve /metrics."""
    from auditd.daemon import Daemon
    from auditd.logs import setup_logging
    from auditd.policy.load import PolicyError

    settings = load_settings(registry=registry, home=home, db=db, policy=policy, host=host, port=port, poll=poll)
    setup_logging(settings.log_level, json_lines=True)
    try:
        daemon = Daemon(settings)
    except PolicyError as exc:
        fail(str(exc))
    daemon.run_forever()


@app.command()
def audit(
    path: Path = typer.Argument(..., help="Checkpoint folder (HF layout) or .gguf file."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: folder name)."),
    parent: str | None = typer.Option(None, "--parent", help="Parent checkpoint id or path, for drift."),
    home: Path | None = HomeOpt,
    db: str | None = DbOpt,
    policy: str | None = PolicyOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Audit one checkpoint now (exit code: 0 pass/warn, 1 block, 2 error)."""
    from auditd.cli.render import ProbeProgress, category_table, print_verdict, progress_bar
    from auditd.logs import setup_logging
    from auditd.registry.checkpoint import Checkpoint
    from auditd.registry.digest import content_digest
    from auditd.report.document import NotFound, audit_report, find_checkpoint
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.scheduler import intake, queue
    from auditd.store.db import open_db, session

    settings = load_settings(home=home, db=db, policy=policy)
    setup_logging("WARNING", json_lines=False)
    if not path.exists():
        fail(f"{path}: no such file or folder")
    engine = open_db(settings.database_url)
    parent_id = None
    if parent:
        try:
            parent_id = find_checkpoint(engine, parent).id
        except NotFound as exc:
            fail(str(exc))
    location = path.resolve()
    from auditd.registry.contain import ContainmentError

    try:  # nothing outside PATH is read: a link leading out of it is refused
        digest = content_digest(location, root=location)
    except ContainmentError as exc:
        fail(str(exc))
    from auditd.registry.dir import detect_kind

    kind = detect_kind(location) if location.is_dir() else "text"
    cp = Checkpoint(
        id=digest, model=model or location.name, kind=kind, path=str(location), source="cli", parent=parent_id
    )
    with session(engine) as s:
        intake.ingest(s, cp)
        s.commit()
    run, _ = queue.enqueue(
        engine, digest, request_key=f"cli:{uuid.uuid4()}", policy=settings.policy, priority=10, device=settings.device
    )
    assert run.id is not None  # stored by enqueue
    if queue.claim(engine, run.id, queue.worker_id()) is None:
        fail(f"audit {run.id} is already being run elsewhere")
    from contextlib import nullcontext

    from auditd.cli.progress_lines import PlainProgress

    plain = not err.is_terminal  # CI, systemd, a pipe: plain lines, never a silent 20-minute audit
    with nullcontext() if plain else progress_bar(err) as bar:
        # Says when stored work of earlier audits of this checkpoint is reused ("reused 41 of 41 ...").
        ctx = AuditContext(
            engine,
            settings,
            progress=PlainProgress(sys.stderr) if bar is None else ProbeProgress(bar),
            notice=lambda msg: err.print(msg, markup=False),
        )
        outcome = run_audit(ctx, run.id)
    doc = audit_report(engine, digest, run.id)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        console.print(category_table(doc))
        print_verdict(console, doc)
    raise typer.Exit(EXIT.get(outcome or "error", 2))


@app.command()
def status(home: Path | None = HomeOpt, db: str | None = DbOpt):
    """Queue, running audits, and the latest verdict of each model."""
    from rich.table import Table
    from sqlmodel import col, func, select

    from auditd.cli.render import STYLE
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun, CheckpointRow

    engine = open_db(load_settings(home=home, db=db).database_url)
    with session(engine) as s:
        counts = dict(s.exec(select(AuditRun.status, func.count()).group_by(AuditRun.status)).all())
        rows = s.exec(
            select(AuditRun, CheckpointRow)
            .join(CheckpointRow, col(CheckpointRow.id) == AuditRun.checkpoint_id)
            .order_by(col(AuditRun.id).desc())
            .limit(20)
        ).all()
    console.print("audits: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else "no audits yet")
    t = Table("audit", "model", "checkpoint", "status", "outcome", "attempts", "duration", "placement")
    for a, cp in rows:
        t.add_row(
            str(a.id),
            cp.model,
            cp.id[:19],
            a.status,
            f"[{STYLE.get(a.outcome or '', '')}]{a.outcome or '-'}[/]",
            str(a.attempts),
            f"{a.duration_s:.1f}s" if a.duration_s else "-",
            a.placement or "-",
        )
    console.print(t)
    from auditd.cli.status import print_stale

    print_stale(console, engine, load_settings(home=home, db=db))


@app.command("config")
def show_config(
    home: Path | None = HomeOpt,
    db: str | None = DbOpt,
    policy: str | None = PolicyOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the values as one JSON object."),
):
    """The effective settings (config file < environment < options), secrets redacted."""
    from rich.markup import escape
    from rich.table import Table

    settings = load_settings(home=home, db=db, policy=policy)
    values = settings.redacted()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    t = Table("setting", "", "meaning")
    for name, field in type(settings).model_fields.items():
        t.add_row(
            f"AUDITD_{name.upper()}",
            "set" if name in settings.model_fields_set else "default",
            escape(field.description or ""),
        )
        t.add_row("", "", f"[bold]{escape(json.dumps(values[name]))}[/]")  # values in full, never cut
    console.print(t)


@app.command()
def report(
    checkpoint: str = typer.Argument(..., help="Checkpoint id, id prefix, or path."),
    home: Path | None = HomeOpt,
    db: str | None = DbOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Also write a self-contained HTML report (charts "
        "vs the parent and sample answers for text audits, thumbnail grids "
        "for text-to-image audits).",
    ),
):
    """Per-category results and verdict of a checkpoint's latest audit."""
    from auditd.cli.render import category_table, print_verdict
    from auditd.report.document import NotFound, audit_report, find_checkpoint
    from auditd.store.db import open_db

    settings = load_settings(home=home, db=db)
    engine = open_db(settings.database_url)
    try:
        cp = find_checkpoint(engine, checkpoint)
    except NotFound as exc:
        fail(str(exc))
    doc = audit_report(engine, cp.id)
    if html is not None:
        from auditd.report.html import render_html

        html.write_text(render_html(engine, cp.id, settings.home), encoding="utf-8")
        err.print(f"wrote {html}")
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    console.print(category_table(doc))
    print_verdict(console, doc)


@app.command()
def gate(
    checkpoint: str = typer.Argument(..., help="Checkpoint id, id prefix, or path (matched by content)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the verdict is final."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds to wait at most (with --wait)."),
    interval: float = typer.Option(5.0, "--interval", help="Seconds between checks (with --wait)."),
    home: Path | None = HomeOpt,
    db: str | None = DbOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """CI/CD gate on a checkpoint's verdict: exit 0 pass/warn, 1 block, 2 error, unknown or timeout."""
    from auditd.cli.gate import wait_for_gate
    from auditd.store.db import open_db

    engine = open_db(load_settings(home=home, db=db).database_url)
    result = wait_for_gate(engine, checkpoint, wait, timeout, interval)
    code = result.exit_code
    if as_json:
        print(
            json.dumps(
                {
                    "state": result.state,
                    "outcome": result.outcome,
                    "exit_code": code,
                    "checkpoint": result.checkpoint_id,
                    "model": result.model,
                    "audit_id": result.audit_id,
                    "policy": result.policy,
                    "reasons": result.reasons,
                    "message": result.message,
                },
                default=str,
            )
        )
        raise typer.Exit(code)
    label = (result.outcome or "error").upper() if result.state == "final" else result.state.upper()
    style = {0: "green", 1: "red"}.get(code, "bold red")
    console.print(
        f"[{style}]{label}[/] {result.checkpoint_id or checkpoint}"
        + (f" (model {result.model}, audit {result.audit_id}, policy {result.policy})" if result.audit_id else "")
    )
    for r in result.reasons:
        if r.get("action") != "pass":
            console.print(f"  {r.get('action')}: {r.get('rule')}: {r.get('message')}", markup=False, highlight=False)
    if result.message:
        (err if code else console).print(result.message, markup=False)
    if result.outcome == "warn" and result.state == "final":
        err.print("[yellow]warning:[/] passed with warnings (see above)")
    raise typer.Exit(code)


@probes_app.command("list")
def probes_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Every probe auditd ships (and plugins add), with its goal and size."""
    from rich.table import Table

    from auditd.cli.probe_info import probe_info
    from auditd.probe import discover

    rows = [probe_info(cls(), samples=0) for _, cls in sorted(discover().items())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table("id", "modality", "categories", "items", "judges", "goal")
    for r in rows:
        t.add_row(
            r["id"], r["modality"], str(len(r["categories"])), str(r["n_items"]), ",".join(r["judges"]), r["goal"]
        )
    console.print(t)
    console.print(
        "Benchmark files (HarmBench, AdvBench, StrongREJECT, XSTest, SORRY-Bench, JailbreakBench, HEx-PHI, "
        "Do-Not-Answer, SimpleSafetyTests, I2P) run as `id: dataset` in a policy: see docs/datasets.md."
    )


@probes_app.command("show")
def probes_show(
    probe_id: str | None = typer.Argument(None, help="Probe id (with --policy: a planned id, e.g. dataset.x)."),
    policy: Path | None = typer.Option(None, "--policy", help="The probes a policy file plans, data sets included."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """What a probe asks: categories with counts, variants, source, licence and three sample prompts."""
    from auditd.cli.probe_info import probe_info
    from auditd.datasets.formats import DatasetError
    from auditd.policy.load import PolicyError, load_policy_file
    from auditd.probe.build import build_probe

    try:
        if policy is not None:
            plans = [p for ps in load_policy_file(policy).probes.values() for p in ps]
            if probe_id is not None:
                plans = [p for p in plans if p.id == probe_id]
                if not plans:
                    fail(f"{policy} plans no probe {probe_id!r}")
            probes = [build_probe(p) for p in plans]
        elif probe_id is not None:
            from auditd import plugins

            probes = [plugins.resolve(f"probe:{probe_id}")()]
        else:
            fail("name a probe id, or a policy with --policy")
        infos = [probe_info(p) for p in probes]
        if policy is not None:
            for info, plan in zip(infos, plans):
                info["limit_per_category"] = plan.limit_per_category
    except (PolicyError, DatasetError, LookupError, ValueError) as exc:
        fail(" ".join(str(exc).split()))
    if as_json:
        print(json.dumps(infos if policy is not None else infos[0], indent=2))
        return
    for info in infos:
        _print_probe(info)


def _print_probe(info: dict) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{info['id']}[/] ({info['modality']}, expects {info['expect']}; judges "
        f"{', '.join(info['judges'])}): {info['goal']}",
        highlight=False,
    )
    console.print(
        f"  source: {info['source']}  licence: {info['licence']}  items: {info['n_items']}",
        markup=False,
        highlight=False,
    )
    t = Table("category", "items")
    for cat, n in info["categories"].items():
        t.add_row(cat, str(n))
    console.print(t)
    if info.get("unmapped"):
        console.print(
            "  unmapped labels (audited under their own name): "
            + ", ".join(f"{k} ({n})" for k, n in sorted(info["unmapped"].items())),
            markup=False,
        )
    if info["variants"]:
        console.print("  variants: " + ", ".join(info["variants"]), markup=False, highlight=False)
    for prompt in info["samples"]:
        console.print("  - " + " ".join(prompt.split())[:200], markup=False, highlight=False)


@policy_app.command("check")
def policy_check(file: Path = typer.Argument(..., help="Policy YAML file.")):
    """Validate a policy file (schema and plugin ids); errors name file, line and field."""
    from auditd.policy.load import PolicyError, load_policy_file

    try:
        p = load_policy_file(file)
    except PolicyError as exc:
        fail(str(exc))
    console.print(
        f"[green]ok[/] {file}: policy {p.name!r}, " + ", ".join(f"{k}: {len(v)} probes" for k, v in p.probes.items())
    )


@db_app.command("upgrade")
def db_upgrade(home: Path | None = HomeOpt, db: str | None = DbOpt):
    """Apply database migrations (alembic) up to the latest schema."""
    from auditd.store.db import upgrade

    url = load_settings(home=home, db=db).database_url
    upgrade(url)
    console.print("[green]database at the latest schema[/]")


@app.command()
def demo(
    registry: Path = typer.Option(Path("demo-registry"), "--registry", help="Demo registry folder to create."),
    home: Path | None = HomeOpt,
    port: int = typer.Option(9464, "--port", help="Port for /metrics (0: any free port)."),
    serve: bool = typer.Option(False, "--serve", help="Keep the daemon running after the audit."),
    grpo: bool = typer.Option(
        False,
        "--grpo",
        help="Also measure the aligned parent's fragility with the GRPO "
        "probe (one fake-news prompt; minutes on a CPU).",
    ),
    variants: bool = typer.Option(False, "--variants", help="Also run the jailbreak variants of the policy prompts."),
):
    """Make an aligned SmolLM2-135M parent and a child that breaks it (trained once, cached), and
    audit both through the daemon: parent pass, child blocked on drift."""
    from auditd.cli.demo import run_demo

    if grpo and variants:
        fail("choose one of --grpo and --variants")
    raise typer.Exit(run_demo(console, err, registry, home, port, serve, grpo=grpo, variants=variants))


from auditd.cli.judges import judges_app as _judges_app  # noqa: E402  (light: typer and rich only)
from auditd.cli.t2i import calibrate as _calibrate  # noqa: E402  (light: typer only)

app.add_typer(_judges_app, name="judges")

app.command("calibrate")(_calibrate)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
