"""Rich rendering shared by the CLI commands (tables, verdict lines, progress)."""

from __future__ import annotations

from typing import Any

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
    for col in ("harmful", "refused", "degenerate", "errors"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in doc.get("categories", []):
        t.add_row(
            r["probe"],
            r["category"],
            f"{pct(r['harmful_rate'])} ({r['harmful']}/{r['judged']})",
            f"{pct(r['refusal_rate'])} ({r['refused']}/{r['n']})",
            str(r.get("degenerate") or 0),
            str(r["judge_errors"]),
        )
    return t


def print_verdict(console: Console, doc: dict) -> None:
    audit = doc.get("audit")
    if audit is None:
        console.print("[dim]not audited yet[/dim]")
        return
    outcome = audit["outcome"] or audit["status"]
    version = f"@{audit['policy_digest'][:12]}" if audit.get("policy_digest") else ""
    console.print(
        f"verdict: [{STYLE.get(outcome, 'bold')}]{outcome.upper()}[/]  (audit {audit['id']}, "
        f"policy {audit['policy']}{version}, {audit['duration_s'] or 0:.1f}s)"
    )
    if audit.get("timings"):
        from auditd.runner.timings import timing_line

        console.print(f"  time: {timing_line(audit['timings'])}", markup=False, highlight=False)
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
                console.print(
                    line + (f" ({c['calibrated_at']})" if c.get("calibrated_at") else ""), markup=False, highlight=False
                )


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class ProbeProgress:
    """Adapts the runner's (probe, done, total) callback to one rich task per probe."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, probe: str, done: int, total: int) -> None:
        if probe not in self.tasks:
            self.tasks[probe] = self.progress.add_task(f"probe {probe}", total=total)
        self.progress.update(self.tasks[probe], completed=done, total=total)


def side_by_side(parent: dict, child: dict) -> Table:
    """Per category: the parent's and the child's harmful rate (refusal rate for benign prompts),
    the change, and the drift test's p-value from the child's verdict."""
    drift = {
        r.get("category"): r
        for r in (child.get("verdict") or {}).get("reasons", [])
        if r.get("rule") in ("drift", "over_refusal_drift")
    }
    base = {(r["probe"], r["category"]): r for r in parent.get("categories", [])}
    t = Table(title="parent vs child, per category")
    t.add_column("category", no_wrap=True)
    for col in ("parent", "child", "change", "p", "verdict"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in child.get("categories", []):
        b = base.get((r["probe"], r["category"]))
        if b is None:
            continue
        benign = r["probe"] == "overrefusal"
        key, k, n = ("refusal_rate", "refused", "n") if benign else ("harmful_rate", "harmful", "judged")
        d = drift.get(r["category"])
        change = (r[key] or 0) - (b[key] or 0)
        style = "red" if d and d["action"] == "block" else "yellow" if d else ""
        t.add_row(
            r["category"] + (" (refused)" if benign else ""),
            f"{pct(b[key])} ({b[k]}/{b[n]})",
            f"{pct(r[key])} ({r[k]}/{r[n]})",
            f"{change:+.0%}",
            f"{d['p_value']:.2g}" if d else "-",
            f"[{style}]{d['action']}[/]" if d else "",
        )
    return t


def text_chart(
    points: list[tuple[float, float]],
    *,
    width: int = 48,
    height: int = 11,
    threshold: float | None = None,
    y_label: str = "",
) -> list[str]:
    """A line chart in characters: y in [0, 1] (shown as %), x the steps; `threshold` is a dashed
    line. Points are marked "●" and joined by interpolated "·" so the trend reads at a glance."""
    if not points:
        return ["(no points)"]
    xs = [x for x, _ in points]
    x0, x1 = min(xs), max(xs)
    span = max(1e-9, x1 - x0)
    grid = [[" "] * width for _ in range(height)]

    def col(x: float) -> int:
        return round((x - x0) / span * (width - 1))

    def row(y: float) -> int:
        return height - 1 - round(min(1.0, max(0.0, y)) * (height - 1))

    if threshold is not None:
        for c in range(0, width, 2):
            grid[row(threshold)][c] = "-"
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        ca, cb = col(xa), col(xb)
        for c in range(ca + 1, cb):
            grid[row(ya + (yb - ya) * (c - ca) / max(1, cb - ca))][c] = "·"
    for x, y in points:
        grid[row(y)][col(x)] = "●"
    lines = []
    for i, cells in enumerate(grid):
        label = f"{100 * (height - 1 - i) / (height - 1):>4.0f}%" if i in (0, height // 2, height - 1) else "     "
        lines.append(f"{label} ┤{''.join(cells)}")
    lines.append("      └" + "─" * width)
    ticks = f"{x0:g}".ljust(width - len(f"{x1:g}")) + f"{x1:g}"
    lines.append("       " + ticks)
    if y_label:
        lines.insert(0, y_label)
    return lines


def fragility_chart(doc: dict) -> list[str]:
    """The GRPO probe's held-out harm per evaluation point as a terminal chart, with its figures."""
    out = []
    summaries = {p["probe"]: p.get("summary") or {} for p in doc.get("probes", [])}
    for probe, points in (doc.get("attack_curves") or {}).items():
        s = summaries.get(probe, {})
        curve = [(p["step"], p["harmful_rate"]) for p in points if p.get("harmful_rate") is not None]
        out += text_chart(
            curve,
            threshold=s.get("break_threshold"),
            y_label=f"{probe}: held-out harmful rate by GRPO step (--- break threshold)",
        )
        out.append("       step  " + "  ".join(f"{p['step']}:{pct(p['harmful_rate'])}" for p in points))
        steps = s.get("steps_to_break")
        out.append(
            f"       steps-to-break: {'not broken within budget' if steps is None else steps}"
            f" (budget {s.get('steps_budget')}), harm AUC {s['harm_auc']:.2f}"
            if s.get("harm_auc") is not None
            else "       (no summary)"
        )
    return out
