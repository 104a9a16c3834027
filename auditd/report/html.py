"""`auditd report CHECKPOINT --html out.html`: one self-contained HTML page per audit.

People would rather look than read. Text audits get charts of the per-category rates with their
intervals beside the parent's, the GRPO fragility curve and sample answers (text_html.py). Text-to-
image probes show a grid of thumbnails per category (a red frame marks an image a judge found
unsafe; the GRPO probe shows one column per evaluation step, so the drift is visible left to right),
beside the verdict, the per-category table, the thresholds the image judges used (and whether they
were calibrated) and the attack curves. Thumbnails are embedded as data URIs: the file can be mailed
or attached to a ticket. Flagged thumbnails are blurred until hovered, since the page may show
explicit content. The markup is in templates/page.html (autoescaped: see templating.py); this module
gathers the data.
"""

from __future__ import annotations

import base64
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd.report.document import audit_report
from auditd.report.templating import render
from auditd.store.db import session
from auditd.store.images import ImageStore
from auditd.store.models import Sample


def _data_uri(store: ImageStore, rel: str) -> str | None:
    try:
        path = store.thumb_path(rel)
        if not path.is_file():
            path = store.path(rel)
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_samples(engine: Engine, audit_id: int) -> dict[str, list[Sample]]:
    """Stored image samples of an audit's t2i probes, by probe."""
    with session(engine) as s:
        rows = s.exec(
            select(Sample)
            .where(Sample.audit_id == audit_id, Sample.probe_id.startswith("t2i."), Sample.output != "")
            .order_by(Sample.probe_id, Sample.category, col(Sample.item_index), Sample.variant)
        ).all()
    out: dict[str, list[Sample]] = {}
    for r in rows:
        out.setdefault(r.probe_id, []).append(r)
    return out


def _cell(store: ImageStore, s: Sample, label: str) -> dict:
    score = s.score if s.score is None else round(s.score, 3)
    return {
        "uri": _data_uri(store, s.output),
        "unsafe": bool(s.harmful),
        "prompt": s.prompt,
        "label": label,
        "title": f"{s.prompt} [{s.variant}] score={score}",
        "verdict": "unsafe" if s.harmful else "judge error" if s.judge_error else "safe",
    }


def _grid(store: ImageStore, samples: list[Sample], per_category: int) -> list[dict]:
    by_cat: dict[str, list[Sample]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    return [
        {
            "category": cat,
            "unsafe": sum(1 for r in rows if r.harmful),
            "total": len(rows),
            "cells": [_cell(store, r, r.variant) for r in rows[:per_category]],
            "more": max(0, len(rows) - per_category),
        }
        for cat, rows in by_cat.items()
    ]


def _attack_grid(store: ImageStore, samples: list[Sample], per_category: int) -> list[dict]:
    """One row per (category, prompt), one column per evaluation step."""
    rows: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        rows.setdefault((s.category, s.item_index), []).append(s)
    out = []
    shown: dict[str, int] = {}
    for (cat, _), cells in sorted(rows.items()):
        if shown.get(cat, 0) >= per_category:
            continue
        shown[cat] = shown.get(cat, 0) + 1
        cells.sort(key=lambda s: s.variant)
        out.append(
            {
                "category": cat,
                "prompt": cells[0].prompt,
                "cells": [_cell(store, c, _step_label(c.variant)) for c in cells],
            }
        )
    return out


def _step_label(variant: str) -> str:
    head = variant.split("/", 1)[0]  # "e00010/s0" -> step 10
    return f"step {int(head[1:])}" if head[:1] == "e" and head[1:].isdigit() else variant


def _curve(points: list[dict], key: str, width: int = 360, height: int = 120) -> dict | None:
    """What the template draws as a polyline of `key` over steps (None: fewer than two points)."""
    pts = [(p["step"], p[key]) for p in points if p.get(key) is not None]
    if len(pts) < 2:
        return None
    x0, x1 = pts[0][0], pts[-1][0] or 1
    coords = " ".join(
        f"{10 + (width - 20) * (x - x0) / max(1, x1 - x0):.1f},{height - 10 - (height - 20) * y:.1f}" for x, y in pts
    )
    return {"key": key, "width": width, "height": height, "points": coords, "x0": x0, "x1": x1}


def render_html(
    engine: Engine,
    checkpoint_id: str,
    home: str | Path,
    audit_id: int | None = None,
    per_category: int = 24,
    blur: bool = True,
) -> str:
    doc = audit_report(engine, checkpoint_id, audit_id)
    cp, audit = doc["checkpoint"], doc.get("audit")
    if audit is None:
        return render("page.html", cp=cp, audit=None, blur=blur, text_css="")
    store = ImageStore(home)
    text, text_css = "", ""
    if cp["kind"] == "text":
        from auditd.report.text_html import text_section

        text, text_css = text_section(engine, doc)
    summaries = {p["probe"]: p.get("summary") or {} for p in doc.get("probes", [])}
    image_probes = []
    images = image_samples(engine, audit["id"])
    for probe_id, samples in images.items():
        summary = summaries.get(probe_id, {})
        curve = (doc.get("attack_curves") or {}).get(probe_id)
        group = {"probe": probe_id, "headline": summary.get("headline"), "attack": bool(curve)}
        if curve:
            rewards = [{"step": s, "reward": r} for s, r in summary.get("eval_rewards") or []]
            group.update(
                rate_svg=_curve(curve, "harmful_rate"),
                reward_svg=_curve(rewards, "reward"),
                rows=_attack_grid(store, samples, per_category),
            )
        else:
            group["categories"] = _grid(store, samples, per_category)
        image_probes.append(group)
    reasons = [
        {"action": r.get("action"), "message": r.get("message")}
        for r in (doc.get("verdict") or {}).get("reasons") or []
    ]
    return render(
        "page.html",
        cp=cp,
        audit=audit,
        blur=blur,
        text=text,
        text_css=text_css,
        outcome=audit.get("outcome") or audit.get("status"),
        reasons=reasons,
        calibration=_calibration_rows(doc),
        categories=[] if text else doc.get("categories") or [],
        image_probes=image_probes,
        headlines=[]
        if text
        else [
            {"probe": p, "headline": s["headline"]}
            for p, s in summaries.items()
            if s.get("headline") and p not in images
        ],
    )


def _calibration_rows(doc: dict) -> list[dict]:
    """One row per image judge and CLIP model whose thresholds the audit's probes used."""
    rows: dict[tuple, dict] = {}
    for p in doc.get("probes", []):
        for info in (p.get("summary") or {}).get("calibration") or []:
            key = (info.get("judge"), info.get("model"), info.get("pretrained"), info.get("source"))
            if key in rows:
                continue
            th = ", ".join(f"{k}={v:.3g}" for k, v in sorted((info.get("thresholds") or {}).items()))
            rows[key] = {
                "judge": key[0],
                "model": key[1],
                "pretrained": key[2],
                "source": key[3],
                "calibrated_at": info.get("calibrated_at"),
                "thresholds": th,
            }
    return list(rows.values())
