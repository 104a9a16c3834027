"""`auditd report CHECKPOINT --html` for text audits, opened in a real headless Chromium.

A parent and a child (lineage through `audit --parent`) are audited by the real runner with the
`fake` backend plugin scripting their answers (the parent refuses, the child complies; one answer
carries a <script> tag, as a model's output may). The parent's audit also gets attack points, as
the GRPO probe stores them. The page must: hold inline SVG charts (rates with CI bars, parent
beside child, the fragility curve), the sample answers in <details>, the hostile answer escaped;
load no external resource; render non-blank in Chromium with no console error. The console check
is itself checked on a page that throws.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from auditd.cli import app
from auditd.probe import discover
from tests.conftest import QUICK_POLICY, write_policy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/install-system.sh)")
HOSTILE = "<script>window.__pwned = 1; console.error('injected')</script><img src=x onerror=alert(1)>"


def fake_policy(tmp_path, name, options):
    doc = yaml.safe_load(QUICK_POLICY)
    doc.update(name=name, backend={"id": "backend:fake", "options": options})
    return write_policy(tmp_path, yaml.safe_dump(doc), name)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model_dir):
    from auditd.store.attack_models import AttackPoint
    from auditd.store.db import open_db, session
    from auditd.store.models import ProbeRun

    tmp = tmp_path_factory.mktemp("report")
    home = ["--home", str(tmp / "home")]
    benign = {it.prompt: "Happy to help: here is a clear answer." for it in discover()["overrefusal"]().items()}
    first_harm = discover()["policy"]().items()[0].prompt
    parent_policy = fake_policy(
        tmp, "parent", {"mode": "script", "script": benign, "default": "I'm sorry, but I can't help with that."}
    )
    child_policy = fake_policy(
        tmp,
        "child",
        {"mode": "script", "script": {first_harm: HOSTILE, **benign}, "default": "Of course. Here is how."},
    )
    child_dir = shutil.copytree(tiny_model_dir, tmp / "child")
    (child_dir / "README.md").write_text("another checkpoint\n")  # a different digest
    res = CliRunner().invoke(app, ["audit", str(tiny_model_dir), "--policy", str(parent_policy), *home, "--json"])
    assert res.exit_code == 0, res.output
    parent = json.loads(res.stdout[res.stdout.index("{") :])
    res = CliRunner().invoke(
        app,
        [
            "audit",
            str(child_dir),
            "--parent",
            parent["checkpoint"]["id"],
            "--policy",
            str(child_policy),
            *home,
            "--json",
        ],
    )
    assert res.exit_code == 1, res.output
    child = json.loads(res.stdout[res.stdout.index("{") :])
    engine = open_db(f"sqlite:///{tmp / 'home' / 'auditd.db'}")
    with session(engine) as s:  # a GRPO run's stored points and summary on the parent's audit
        pid = parent["audit"]["id"]
        for step, rate in ((0, 0.0), (3, 0.1), (6, 0.45), (9, 0.8)):
            s.add(
                AttackPoint(
                    audit_id=pid,
                    probe_id="grpo.fakenews",
                    step=step,
                    wall_s=step * 5.0,
                    harmful_rate=rate,
                    per_category={},
                    over_refusal_rate=0.0,
                    mean_reward=rate,
                )
            )
        s.add(
            ProbeRun(
                audit_id=pid,
                probe_id="grpo.fakenews",
                status="done",
                n_items=0,
                summary={
                    "headline": "BROKEN at step 6 of 9",
                    "break_threshold": 0.3,
                    "broken": True,
                    "steps_to_break": 6,
                    "harm_auc": 0.4,
                },
            )
        )
        s.commit()
    out = tmp / "child.html"
    res = CliRunner().invoke(app, ["report", child["checkpoint"]["id"][:20], *home, "--html", str(out)])
    assert res.exit_code == 0, res.output
    return out, child


def test_report_holds_charts_comparison_fragility_and_escaped_samples(report):
    out, child = report
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") >= 2  # rates with CI bars, and the fragility curve
    assert "this checkpoint vs its parent" in page and "the parent's audit" in page
    assert "BROKEN at step 6 of 9" in page
    assert page.count("<details>") >= 11 and "<summary>" in page
    assert HOSTILE not in page and "&lt;script&gt;window.__pwned" in page  # the answer is text, not markup
    drift = [r for r in child["verdict"]["reasons"] if r["rule"] == "drift"]
    assert drift and f"p={drift[0]['p_value']:.2g}" in page
    # one self-contained file: nothing fetched from anywhere
    assert not re.search(r"""(?:src|href)\\s*=\\s*["']?(?:https?:|//)""", page)


def chromium(page: Path, shot: Path, profile: Path) -> str:
    """Load `page` headless, write a screenshot; the browser's log (stderr), where console errors go."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        page.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stderr


def console_errors(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if ":CONSOLE" in ln and ("Uncaught" in ln or "error" in ln.lower())]


def non_blank(png: Path) -> float:
    """Share of pixels that are not the background colour."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    bg = img.getpixel((img.width - 1, img.height - 1))
    pixels = list(img.getdata())
    return sum(p != bg for p in pixels) / len(pixels)


@needs_chromium
def test_console_check_sees_an_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><body><p>x</p><script>doesNotExist()</script></body></html>")
    assert console_errors(chromium(bad, tmp_path / "bad.png", tmp_path / "profile"))


@needs_chromium
def test_report_renders_in_chromium_without_errors(report, tmp_path):
    out, _ = report
    shot = tmp_path / "report.png"
    log = chromium(out, shot, tmp_path / "profile")
    assert shot.is_file()
    assert not console_errors(log), console_errors(log)
    assert non_blank(shot) > 0.02  # text, tables and charts drawn, not an empty page
