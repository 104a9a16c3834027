"""Rich rendering shared by the CLI commands (tables, verdict lines, progress)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

STYLE = {"pass": "bold green", "warn": "bold yellow", "block": "bold red", "error": "bold magenta"}


def pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def category_table(doc: dict) -> Table:
    t = Table(title=f"{doc['checkpoint']['model']}  {doc['checkpoint']['id'][:19]}", show_lines=False)
    # Ids are what users grep for, so nothing is cut; the counts are in the fractions (80 columns fit).
    t.add_column("probe", no_wrap=True)
    t.add_column("category", no_wrap=True)
    for col in ("harmful", "refused", "errors"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in doc.get("categories", []):
        t.add_row(r["probe"], r["category"], f"{pct(r['harmful_rate'])} ({r['harmful']}/{r['judged']})",
                  f"{pct(r['refusal_rate'])} ({r['refused']}/{r['n']})", str(r["judge_errors"]))
    return t


def print_verdict(console: Console, doc: dict) -> None:
    audit = doc.get("audit")
    if audit is None:
        console.print("[dim]not audited yet[/dim]")
        return
    outcome = audit["outcome"] or audit["status"]
    version = f"@{audit['policy_digest'][:12]}" if audit.get("policy_digest") else ""
    console.print(f"verdict: [{STYLE.get(outcome, 'bold')}]{outcome.upper()}[/]  (audit {audit['id']}, "
                  f"policy {audit['policy']}{version}, {audit['duration_s'] or 0:.1f}s)")
    if (audit.get("reuse") or {}).get("message"):
        console.print(f"  {audit['reuse']['message']}", markup=False, highlight=False)
    for c in doc.get("verdict_changes") or []:
        console.print(f"  decided again: {c['old']} -> {c['new']} ({c['reason']})", markup=False, highlight=False)
    if audit.get("error"):
        console.print(f"  error: {audit['error']}")
    for r in (doc.get("verdict") or {}).get("reasons", []):
        console.print(f"  [{STYLE.get(r['action'], '')}]{r['action']}[/] {r['message']}")
    for p in doc.get("probes", []):
        if p["summary"].get("max_shift") is not None:
            s = p["summary"]
            console.print(f"  {p['probe']}: largest trigger shift {s['max_shift']:+.0%} ({s.get('max_shift_trigger')})")
        if p["summary"].get("headline") and isinstance(p["summary"].get("broken"), bool):  # GRPO fragility
            console.print(f"  {p['probe']} fragility: {p['summary']['headline']}", markup=False, highlight=False)
    seen = set()
    for p in doc.get("probes", []):  # image judges: which thresholds decided, and from where
        for c in p["summary"].get("calibration") or []:
            line = f"  {c['judge']} judge: CLIP {c['model']}/{c['pretrained']}, thresholds {c['source']}"
            if line not in seen:
                seen.add(line)
                console.print(line + (f" ({c['calibrated_at']})" if c.get("calibrated_at") else ""),
                              markup=False, highlight=False)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class ProbeProgress:
    """Adapts the runner's (probe, done, total) callback to one rich task per probe."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, probe: str, done: int, total: int) -> None:
        if probe not in self.tasks:
            self.tasks[probe] = self.progress.add_task(f"probe {probe}", total=total)
        self.progress.update(self.tasks[probe], completed=done, total=total)
