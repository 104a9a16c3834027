"""A text-to-image checkpoint end to end through the daemon: a tiny random SD pipeline dropped into
the watched registry is audited with CLIP judges on a random-init open_clip model, to stored
images, scores, verdict and /metrics; the HTML report shows the thumbnails; an interrupted image
probe resumes without regenerating or duplicating samples."""

from __future__ import annotations

import json
import shutil
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from typer.testing import CliRunner

from auditd.categories import T2I_BENIGN, T2I_CATEGORIES
from auditd.daemon import Daemon
from auditd.settings import Settings
from auditd.store.db import session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, JudgeScoreRow, ProbeRun, Sample
from tests.conftest import wait_for
from tests.t2i_support import one_torch_thread, resume_audit, run_one_audit, tiny_clip, tiny_sd  # noqa: F401

# Shrunk for the CPU: 1 prompt per unsafe category and 3 benign ones, 2 seeds each, 3 denoising
# steps at 32x32 (the tiny pipeline's native size).
POLICY = """
name: t2i-test
probes:
  t2i:
    - id: t2i.unsafe
      limit_per_category: 1
      judges: [clip, concept]
    - id: t2i.benign
      limit_per_category: 3
judge_options:
  clip: {{model: "local-dir:{clip}", pretrained: null}}
  concept: {{model: "local-dir:{clip}", pretrained: null}}
t2i_backend: {{id: "backend:diffusers", options: {{dtype: float32}}}}
images: {{n_per_prompt: 2, seed: 3, steps: 3, guidance: 5.0, height: 32, width: 32, batch_size: {batch}}}
"""
N_SAMPLES = 7 * 1 * 2 + 3 * 2


def test_tiny_pipeline_audited_through_the_daemon_to_scores_metrics_and_html(tiny_sd, tiny_clip, tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    policy = tmp_path / "t2i.yaml"
    policy.write_text(POLICY.format(clip=tiny_clip, batch=8))
    home = tmp_path / "home"
    settings = Settings(
        home=home, registry_dir=registry, policy=str(policy), metrics_port=0, poll_interval_s=1, registry_settle_s=0
    )
    daemon = Daemon(settings)
    daemon.start()
    try:
        staging = tmp_path / "staging"
        shutil.copytree(tiny_sd, staging)
        staging.rename(registry / "tiny-sd")  # appears whole: never seen half-copied

        def finished():
            with session(daemon.engine) as s:
                rows = s.exec(select(AuditRun)).all()
            return rows if rows and all(a.status not in ("queued", "running") for a in rows) else None

        [audit] = wait_for(finished, 240, interval=0.5, what="the t2i audit")
        body = httpx.get(f"{daemon.http.url}/metrics").text
    finally:
        daemon.stop()

    assert audit.status == "done", audit.error
    assert audit.outcome in ("pass", "warn", "block") and audit.attempts == 1
    with session(daemon.engine) as s:
        cp = s.get(CheckpointRow, audit.checkpoint_id)
        samples = s.exec(select(Sample).where(Sample.audit_id == audit.id).order_by(Sample.id)).all()
        results = s.exec(select(CategoryResult).where(CategoryResult.audit_id == audit.id)).all()
        scores = s.exec(select(JudgeScoreRow)).all()
        runs = {r.probe_id: r for r in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id))}
    assert (cp.kind, cp.model) == ("t2i", "tiny-sd")

    # Every (prompt, seed) is one sample whose output is a stored, content-addressed image.
    assert len(samples) == N_SAMPLES
    assert {s.variant for s in samples} == {"s0", "s1"}
    from auditd.store.images import ImageStore

    store = ImageStore(home)
    for smp in samples:
        assert store.path(smp.output).is_file() and store.thumb_path(smp.output).is_file()
        assert smp.harmful is not None and not smp.judge_error
    by_item = {}
    for smp in samples:
        by_item.setdefault((smp.probe_id, smp.item_index), set()).add(smp.output)
    assert all(len(outs) == 2 for outs in by_item.values())  # two seeds, two different images

    # Both judges scored each unsafe-probe image; the first (clip) decides, with all 7 probabilities kept.
    by_sample: dict[int, dict] = {}
    for sc in scores:
        by_sample.setdefault(sc.sample_id, {})[sc.judge] = sc
    for smp in samples:
        judged = by_sample[smp.id]
        assert set(judged) == ({"clip", "concept"} if smp.probe_id == "t2i.unsafe" else {"clip"})
        clip = judged["clip"]
        probs = json.loads(clip.raw)
        assert set(probs) == set(T2I_CATEGORIES)
        assert smp.harmful == clip.harmful == any(p >= 0.5 for p in probs.values())
        assert smp.score == pytest.approx(clip.score)

    # Per-category results agree with the samples; the calibration used is reported with them.
    rates = {(r.probe_id, r.category): r for r in results}
    assert set(rates) == {("t2i.unsafe", c) for c in T2I_CATEGORIES} | {("t2i.benign", T2I_BENIGN)}
    for (probe, cat), r in rates.items():
        mine = [s for s in samples if s.probe_id == probe and s.category == cat]
        assert r.n == len(mine) and r.n_harmful == sum(s.harmful for s in mine)
    cal = runs["t2i.unsafe"].summary["calibration"]
    assert [c["judge"] for c in cal] == ["clip", "concept"]
    assert all(c["source"] == "default" and c["model"] == f"local-dir:{tiny_clip}" for c in cal)
    assert runs["t2i.unsafe"].summary["images"]["n_per_prompt"] == 2

    # The verdict went back into the registry folder; /metrics carries the per-category series.
    written = json.loads((registry / "tiny-sd" / "auditd-verdict.json").read_text())
    assert written["outcome"] == audit.outcome and written["checkpoint"] == cp.id
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    harm = {
        (s.labels["probe"], s.labels["category"]): s.value
        for s in fams["auditd_category_harmful_rate"].samples
        if s.labels["model"] == "tiny-sd"
    }
    assert harm == {k: r.harmful_rate for k, r in rates.items()}
    counts = {(s.labels["probe"], s.labels["category"]): s.value for s in fams["auditd_category_samples"].samples}
    assert counts[("t2i.unsafe", "t2i_violence")] == 2

    # `auditd report --html`: a grid of thumbnails per category, flagged ones framed red.
    out = tmp_path / "report.html"
    res = CliRunner().invoke(
        __import__("auditd.cli", fromlist=["app"]).app, ["report", cp.id[:20], "--home", str(home), "--html", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "clip judge: CLIP local-dir:" in res.output and "thresholds default" in res.output
    page = out.read_text()
    assert page.count("<img ") == N_SAMPLES and page.count("data:image/png;base64,") == N_SAMPLES
    assert all(f"<h3>{c} " in page for c in (*T2I_CATEGORIES, T2I_BENIGN))
    assert page.count('class="cell unsafe"') == sum(s.harmful for s in samples)
    assert "Image judge thresholds" in page and "default" in page


def test_interrupted_image_probe_resumes_without_duplicates(tiny_sd, tiny_clip, tmp_path):
    policy = tmp_path / "t2i.yaml"
    policy.write_text(POLICY.format(clip=tiny_clip, batch=4).replace("judges: [clip, concept]", "judges: [clip]"))
    stop = threading.Event()

    def progress(probe, done, total):
        if done >= 4:  # the first batch is stored: stop like a daemon shutdown would
            stop.set()

    engine, settings, audit_id, outcome = run_one_audit(tmp_path / "home", policy, tiny_sd, progress, stop)
    assert outcome is None  # interrupted: the audit stays queued
    with session(engine) as s:
        assert s.get(AuditRun, audit_id).status == "queued"
        first = {(x.probe_id, x.item_index, x.variant): (x.id, x.output) for x in s.exec(select(Sample))}
    assert len(first) == 4

    from auditd.runner.audit import AuditContext

    outcome = resume_audit(engine, AuditContext(engine, settings), audit_id)
    assert outcome in ("pass", "warn", "block")
    with session(engine) as s:
        rows = s.exec(select(Sample)).all()
    assert len(rows) == N_SAMPLES == len({(x.probe_id, x.item_index, x.variant) for x in rows})
    again = {(x.probe_id, x.item_index, x.variant): (x.id, x.output) for x in rows}
    assert all(again[k] == v for k, v in first.items())  # kept, not regenerated
