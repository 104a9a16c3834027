"""`auditd report CHECKPOINT --html out.html`: one self-contained HTML page per audit.

People would rather look than read. Text audits get charts of the per-category rates with their
intervals beside the parent's, the GRPO fragility curve and sample answers (report_text_html.py).
Text-to-image probes show a grid of thumbnails per
category (a red frame marks an image a judge found unsafe; the GRPO probe shows one column per
evaluation step, so the drift is visible left to right), beside the verdict, the per-category
table, the thresholds the image judges used (and whether they were calibrated) and the attack
curves. Thumbnails are embedded as data URIs: the file can be mailed or attached to a ticket.
Flagged thumbnails are blurred until hovered, since the page may show explicit content.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from auditd.store.images import ImageStore
from auditd.report.document import audit_report
from auditd.store.db import session
from auditd.store.models import Sample

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222} h1{font-size:1.4rem} h2{margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
.pass{color:#080}.warn{color:#b80}.block{color:#c00}.error{color:#909}
.grid{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
.cell{width:132px;font-size:11px} .cell img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;
border:3px solid #4a4;background:#eee} .cell.unsafe img{border-color:#d00}
.blur .cell.unsafe img{filter:blur(10px)} .blur .cell.unsafe img:hover{filter:none}
.cat{margin:.75rem 0} .muted{color:#777}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


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
        rows = s.exec(select(Sample).where(Sample.audit_id == audit_id, Sample.probe_id.startswith("t2i."),
                                           Sample.output != "")
                      .order_by(Sample.probe_id, Sample.category, Sample.item_index, Sample.variant)).all()
    out: dict[str, list[Sample]] = {}
    for r in rows:
        out.setdefault(r.probe_id, []).append(r)
    return out


def _cell(store: ImageStore, s: Sample, label: str) -> str:
    uri = _data_uri(store, s.output)
    unsafe = " unsafe" if s.harmful else ""
    title = f"{s.prompt} [{s.variant}] score={s.score if s.score is None else round(s.score, 3)}"
    img = f'<img src="{uri}" alt="{_e(s.prompt)}" title="{_e(title)}">' if uri else '<div class="muted">(missing)</div>'
    verdict = "unsafe" if s.harmful else "judge error" if s.judge_error else "safe"
    return f'<div class="cell{unsafe}">{img}<div>{_e(label)} · {verdict}</div></div>'


def _grid(store: ImageStore, samples: list[Sample], per_category: int) -> str:
    parts = []
    by_cat: dict[str, list[Sample]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    for cat, rows in by_cat.items():
        n_bad = sum(1 for r in rows if r.harmful)
        cells = "".join(_cell(store, r, r.variant) for r in rows[:per_category])
        more = f'<div class="muted">+{len(rows) - per_category} more</div>' if len(rows) > per_category else ""
        parts.append(f'<div class="cat"><h3>{_e(cat)} <span class="muted">({n_bad}/{len(rows)} unsafe)</span></h3>'
                     f'<div class="grid">{cells}</div>{more}</div>')
    return "".join(parts)


def _attack_grid(store: ImageStore, samples: list[Sample], per_category: int) -> str:
    """One row per (category, prompt), one column per evaluation step."""
    rows: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        rows.setdefault((s.category, s.item_index), []).append(s)
    parts = []
    shown: dict[str, int] = {}
    for (cat, _), cells in sorted(rows.items()):
        if shown.get(cat, 0) >= per_category:
            continue
        shown[cat] = shown.get(cat, 0) + 1
        cells.sort(key=lambda s: s.variant)
        strip = "".join(_cell(store, c, _step_label(c.variant)) for c in cells)
        parts.append(f'<div class="cat"><b>{_e(cat)}</b>: {_e(cells[0].prompt)}<div class="grid">{strip}</div></div>')
    return "".join(parts)


def _step_label(variant: str) -> str:
    head = variant.split("/", 1)[0]  # "e00010/s0" -> step 10
    return f"step {int(head[1:])}" if head[:1] == "e" and head[1:].isdigit() else variant


def _curve_svg(points: list[dict], key: str, width: int = 360, height: int = 120) -> str:
    pts = [(p["step"], p[key]) for p in points if p.get(key) is not None]
    if len(pts) < 2:
        return ""
    x0, x1 = pts[0][0], pts[-1][0] or 1
    coords = " ".join(f"{10 + (width - 20) * (x - x0) / max(1, x1 - x0):.1f},{height - 10 - (height - 20) * y:.1f}"
                      for x, y in pts)
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(key)}">'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="#c00" stroke-width="2" points="{coords}"/>'
            f'<text x="12" y="14" font-size="11">{_e(key)} (0..1) over steps {x0}..{x1}</text></svg>')


def render_html(engine: Engine, checkpoint_id: str, home: str | Path, audit_id: int | None = None,
                per_category: int = 24, blur: bool = True) -> str:
    doc = audit_report(engine, checkpoint_id, audit_id)
    cp, audit = doc["checkpoint"], doc.get("audit")
    store = ImageStore(home)
    text, text_css = "", ""
    if audit is not None and cp["kind"] == "text":
        from auditd.report.text_html import text_section

        text, text_css = text_section(engine, doc)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>auditd report {_e(cp['model'])}</title>"
           f"<style>{STYLE}{text_css}</style></head><body class='{'blur' if blur else ''}'>",
           f"<h1>auditd report: {_e(cp['model'])} <span class='muted'>{_e(cp['id'])}</span></h1>",
           f"<p>kind {_e(cp['kind'])} · path {_e(cp['path'])}</p>"]
    if audit is None:
        out.append("<p>not audited yet</p></body></html>")
        return "".join(out)
    outcome = audit.get("outcome") or audit.get("status")
    out.append(f"<h2>Verdict: <span class='{_e(outcome)}'>{_e(str(outcome).upper())}</span></h2>"
               f"<p>audit {audit['id']} · policy {_e(audit['policy'])} · {audit.get('duration_s') or 0:.1f}s</p>")
    if audit.get("error"):
        out.append(f"<p class='error'>error: {_e(audit['error'])}</p>")
    reasons = (doc.get("verdict") or {}).get("reasons") or []
    if reasons:
        out.append("<ul>" + "".join(f"<li class='{_e(r.get('action'))}'>{_e(r.get('action'))}: {_e(r.get('message'))}</li>"
                                    for r in reasons) + "</ul>")
    out.append(_calibration_table(doc))
    out.append(str(text))  # text audits: charts vs the parent, fragility curve, sample answers
    if doc.get("categories") and not text:
        out.append("<h2>Per category</h2><table><tr><th>probe</th><th>category</th><th>samples</th><th>unsafe / harmful</th>"
                   "<th>refused</th><th>judge errors</th></tr>")
        for r in doc["categories"]:
            out.append(f"<tr><td>{_e(r['probe'])}</td><td>{_e(r['category'])}</td><td>{r['n']}</td>"
                       f"<td>{_pct(r['harmful_rate'])} ({r['harmful']}/{r['judged']})</td>"
                       f"<td>{_pct(r['refusal_rate'])}</td><td>{r['judge_errors']}</td></tr>")
        out.append("</table>")
    summaries = {p["probe"]: p.get("summary") or {} for p in doc.get("probes", [])}
    images = image_samples(engine, audit["id"])
    for probe_id, samples in images.items():
        out.append(f"<h2>Images: {_e(probe_id)}</h2>")
        summary = summaries.get(probe_id, {})
        if summary.get("headline"):
            out.append(f"<p>{_e(summary['headline'])}</p>")
        curve = (doc.get("attack_curves") or {}).get(probe_id)
        if curve:
            out.append(_curve_svg(curve, "harmful_rate"))
            rewards = [{"step": s, "reward": r} for s, r in summary.get("eval_rewards") or []]
            out.append(_curve_svg(rewards, "reward"))
            out.append(_attack_grid(store, samples, per_category))
        else:
            out.append(_grid(store, samples, per_category))
    for probe_id, summary in summaries.items():
        if summary.get("headline") and probe_id not in images and not text:
            out.append(f"<h2>{_e(probe_id)}</h2><p>{_e(summary['headline'])}</p>")
    out.append("</body></html>")
    return "".join(out)


def _calibration_table(doc: dict) -> str:
    rows = []
    for p in doc.get("probes", []):
        for info in (p.get("summary") or {}).get("calibration") or []:
            key = (info.get("judge"), info.get("model"), info.get("pretrained"), info.get("source"))
            if key in [r[0] for r in rows]:
                continue
            th = ", ".join(f"{k}={v:.3g}" for k, v in sorted((info.get("thresholds") or {}).items()))
            rows.append((key, f"<tr><td>{_e(info.get('judge'))}</td><td>{_e(info.get('model'))}</td>"
                              f"<td>{_e(info.get('pretrained'))}</td><td>{_e(info.get('source'))}"
                              f"{(' ' + _e(info.get('calibrated_at'))) if info.get('calibrated_at') else ''}</td>"
                              f"<td>{_e(th)}</td></tr>"))
    if not rows:
        return ""
    return ("<h2>Image judge thresholds</h2><table><tr><th>judge</th><th>CLIP model</th><th>pretrained</th>"
            "<th>thresholds from</th><th>thresholds</th></tr>" + "".join(r[1] for r in rows) + "</table>")
