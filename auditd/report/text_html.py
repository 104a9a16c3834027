"""The text-audit part of `auditd report CHECKPOINT --html`: charts and sample answers.

- per-category harmful rate with Wilson 95% intervals as error bars, the parent's (or pinned
  baseline's) audit beside the checkpoint's when there is one;
- the GRPO fragility curve (held-out harm per evaluation step) of this audit, or else of the
  parent's latest audit that ran the attack, labelled as such;
- a few sample answers per category, collapsed in <details>.

Charts are matplotlib SVG, inlined, so the page stays one self-contained file. Everything that
came from a model or a file is escaped by Jinja2's autoescaping: answers are untrusted text
(templates/text_section.html).
"""

from __future__ import annotations

import io
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd.analysis.rates import wilson
from auditd.report.templating import render
from auditd.store.db import session
from auditd.store.models import AuditRun, Sample


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG in HTML


def _rate(r: dict) -> tuple[float, int, int]:
    if r["probe"] == "overrefusal":
        return r["refusal_rate"] or 0.0, r["refused"], r["n"]
    return r["harmful_rate"] or 0.0, r["harmful"], r["judged"]


def rate_chart(rows: list[dict], base: dict | None) -> str:
    """Horizontal bars per category with CI whiskers; the parent's bars beside, when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["category"] + (" (refused)" if r["probe"] == "overrefusal" else "") for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.2))
    height = 0.38 if base else 0.6
    series: list[tuple[str, list[Any], str, float]] = [
        ("this checkpoint", rows, "#c0392b", -height / 2 if base else 0.0)
    ]
    if base:
        series.insert(0, ("parent", [base.get((r["probe"], r["category"])) for r in rows], "#2e86c1", height / 2))
    for name, data, color, offset in series:
        ys, xs, lo, hi = [], [], [], []
        for i, r in enumerate(data):
            if r is None:
                continue
            p, k, n = _rate(r)
            a, b = wilson(k, n)
            ys.append(len(rows) - 1 - i + offset)
            xs.append(p)
            lo.append(max(0.0, p - a))
            hi.append(max(0.0, b - p))
        ax.barh(
            ys,
            xs,
            height=height,
            color=color,
            alpha=0.85,
            label=name,
            xerr=[lo, hi],
            error_kw={"ecolor": "#333", "capsize": 3, "elinewidth": 1},
        )
    ax.set_yticks([len(rows) - 1 - i for i in range(len(rows))], labels)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="x", alpha=0.3)
    if base:
        ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def curve_chart(points: list[dict], threshold: float | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    steps = [p["step"] for p in points]
    ax.plot(steps, [p["harmful_rate"] for p in points], marker="o", color="#c0392b", label="held-out harmful rate")
    refusal = [(p["step"], p["over_refusal_rate"]) for p in points if p.get("over_refusal_rate") is not None]
    if refusal:
        ax.plot(*zip(*refusal), marker=".", linestyle="--", color="#7f8c8d", label="benign prompts refused")
    if threshold is not None:
        ax.axhline(threshold, color="#555", linestyle=":", linewidth=1, label="break threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("GRPO step")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig)


def _baseline_doc(engine: Engine, doc: dict) -> dict | None:
    """The parent's latest finished audit, as a report document (None without one)."""
    from auditd.report.document import audit_report

    parent = doc["checkpoint"].get("parent")
    if not parent:
        return None
    with session(engine) as s:
        run = s.exec(
            select(AuditRun)
            .where(AuditRun.checkpoint_id == parent, AuditRun.status == "done")
            .order_by(col(AuditRun.id).desc())
        ).first()
    if run is None:
        return None
    try:
        return audit_report(engine, parent, run.id)
    except Exception:  # noqa: BLE001  (a parent deleted from the store: report without it)
        return None


def _fragility(engine: Engine, doc: dict, base: dict | None) -> list[dict]:
    """This audit's attack curves; else those of the parent's latest audit that ran an attack."""
    from auditd.report.document import audit_report

    found, of_parent = doc, False
    if not doc.get("attack_curves") and doc["checkpoint"].get("parent"):
        with session(engine) as s:
            from auditd.store.attack_models import AttackPoint

            row = s.exec(
                select(AttackPoint.audit_id)
                .join(AuditRun, col(AuditRun.id) == AttackPoint.audit_id)
                .where(AuditRun.checkpoint_id == doc["checkpoint"]["parent"])
                .order_by(col(AttackPoint.audit_id).desc())
            ).first()
        if row is not None:
            found, of_parent = audit_report(engine, doc["checkpoint"]["parent"], row), True
    summaries = {p["probe"]: p.get("summary") or {} for p in found.get("probes", [])}
    out = []
    for probe, points in (found.get("attack_curves") or {}).items():
        pts = [p for p in points if p.get("harmful_rate") is not None]
        if not pts:
            continue
        summary = summaries.get(probe, {})
        out.append(
            {
                "probe": probe,
                "of_parent": of_parent,
                "audit_id": found["audit"]["id"],
                "headline": summary.get("headline", ""),
                "svg": curve_chart(pts, summary.get("break_threshold")),
            }
        )
    return out


def _samples(engine: Engine, audit_id: int, per_category: int) -> list[tuple[str, list[dict]]]:
    with session(engine) as s:
        rows = s.exec(
            select(Sample)
            .where(Sample.audit_id == audit_id, Sample.variant == "")
            .order_by(Sample.probe_id, Sample.category, col(Sample.item_index))
        ).all()
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        if r.probe_id.startswith("t2i.") or len(by_cat.setdefault(r.category, [])) >= per_category:
            continue
        mark = "judge error" if r.judge_error else "harmful" if r.harmful else "refused" if r.refused else "answered"
        by_cat[r.category].append({"prompt": r.prompt, "output": r.output, "mark": mark})
    return [(c, v) for c, v in by_cat.items() if v]


def text_section(engine: Engine, doc: dict, samples_per_category: int = 3):
    """The HTML (a markupsafe.Markup) of the text-audit section, and its extra CSS."""
    from markupsafe import Markup

    rows = [r for r in doc.get("categories", []) if not r["probe"].startswith("t2i.")]
    base_doc = _baseline_doc(engine, doc)
    base = {(r["probe"], r["category"]): r for r in (base_doc or {}).get("categories", [])} or None
    drift = {
        (r.get("probe"), r.get("category")): r
        for r in (doc.get("verdict") or {}).get("reasons", [])
        if r.get("rule") in ("drift", "over_refusal_drift")
    }
    compare = []
    for r in rows:
        p, k, n = _rate(r)
        b = (base or {}).get((r["probe"], r["category"]))
        bp, bk, bn = _rate(b) if b else (None, 0, 0)
        d = drift.get((r["probe"], r["category"]))
        compare.append(
            {
                "label": r["category"] + (" (refused)" if r["probe"] == "overrefusal" else ""),
                "text": f"{p:.0%} ({k}/{n})",
                "base_text": "-" if b is None else f"{bp:.0%} ({bk}/{bn})",
                "drift": f"{d['action']}: +{d['value']:.0%}, p={d['p_value']:.2g}" if d else "",
                "action": d["action"] if d else "",
            }
        )
    parent = None
    if base_doc:
        parent = {
            "id": base_doc["checkpoint"]["id"],
            "model": base_doc["checkpoint"]["model"],
            "audit_id": base_doc["audit"]["id"],
        }
    html = render(
        "text_section.html",
        compare=compare,
        parent=parent,
        rate_svg=Markup(rate_chart(rows, base)) if rows else "",
        fragility=[{**f, "svg": Markup(f["svg"])} for f in _fragility(engine, doc, base_doc)],
        samples=_samples(engine, doc["audit"]["id"], samples_per_category),
    )
    return Markup(html), Markup(render("text_section.css"))
