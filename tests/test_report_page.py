"""The HTML page of `auditd report --html` on a store filled by hand with hostile strings.

Everything on the page that came from a model, a file or a registry (model name, path, category,
probe id, prompts, verdict reasons, errors, calibration sources, headlines) is untrusted: each
field here carries markup, and the page must show it as text. Fast (no model, no browser): the
real renderer over a real SQLite store and image store; test_report_html.py covers a real audit in
Chromium.
"""

from __future__ import annotations

import re

import pytest

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&"


def hostile(tag: str) -> str:
    return f"{tag}{HOSTILE}"


@pytest.fixture
def store(tmp_path):
    from PIL import Image

    from auditd.store.attack_models import AttackPoint
    from auditd.store.db import open_db, session
    from auditd.store.images import ImageStore
    from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, ProbeRun, Sample, Verdict

    home = tmp_path / "home"
    images = ImageStore(home)
    red, green = (
        images.put(Image.new("RGB", (64, 64), (200, 0, 0))),
        images.put(Image.new("RGB", (64, 64), (0, 200, 0))),
    )
    engine = open_db(f"sqlite:///{tmp_path / 'auditd.db'}")
    with session(engine) as s:
        s.add(
            CheckpointRow(
                id="sha256:" + "a" * 64, model=hostile("model"), kind="t2i", source="dir", path=hostile("/registry/")
            )
        )
        s.add(CheckpointRow(id="sha256:" + "b" * 64, model=hostile("fresh"), kind="t2i", source="dir", path="/r/b"))
        s.commit()
        audit = AuditRun(
            checkpoint_id="sha256:" + "a" * 64,
            policy=hostile("policy"),
            status="done",
            outcome="block",
            error=hostile("error"),
            duration_s=12.5,
        )
        s.add(audit)
        s.commit()
        aid = audit.id
        s.add(
            Verdict(
                audit_id=aid,
                checkpoint_id=audit.checkpoint_id,
                outcome="block",
                policy="p",
                reasons=[
                    {"action": "block", "message": hostile("reason"), "rule": "max_rate"},
                    {"action": hostile("act"), "message": "m"},
                ],
            )
        )
        s.add(
            CategoryResult(
                audit_id=aid,
                probe_id="t2i.unsafe",
                category=hostile("cat"),
                n=3,
                n_judged=3,
                n_harmful=1,
                n_refused=0,
                harmful_rate=1 / 3,
                refusal_rate=0.0,
            )
        )
        calibration = [
            {
                "judge": hostile("judge"),
                "model": "ViT-B-32",
                "pretrained": hostile("pre"),
                "source": hostile("src"),
                "calibrated_at": hostile("when"),
                "thresholds": {"t2i_violence": 0.25},
            },
            {
                "judge": "judge:concept",
                "model": "ViT-B-32",
                "pretrained": None,
                "source": "default",
                "thresholds": {"a": 0.5, "b": 0.125},
            },
        ]
        s.add(
            ProbeRun(
                audit_id=aid,
                probe_id="t2i.unsafe",
                status="done",
                n_items=3,
                summary={"headline": hostile("headline"), "calibration": calibration},
            )
        )
        s.add(
            ProbeRun(
                audit_id=aid,
                probe_id="t2i.grpo",
                status="done",
                n_items=2,
                summary={"headline": "broke at step 2", "eval_rewards": [[0, 0.1], [2, 0.7]]},
            )
        )
        s.add(ProbeRun(audit_id=aid, probe_id=hostile("other"), status="done", summary={"headline": hostile("solo")}))
        for i, (cat, out, harmful) in enumerate(
            [
                (hostile("cat"), red, True),
                (hostile("cat"), green, False),
                ("t2i_violence", "images/00/missing.png", None),
            ]
        ):
            s.add(
                Sample(
                    audit_id=aid,
                    probe_id="t2i.unsafe",
                    item_index=i,
                    variant=f"s{i}",
                    category=cat,
                    prompt=hostile(f"prompt{i}"),
                    output=out,
                    harmful=harmful,
                    score=0.123456 if harmful else None,
                    judge_error=harmful is None,
                )
            )
        for step, out in ((0, green), (2, red)):
            s.add(
                Sample(
                    audit_id=aid,
                    probe_id="t2i.grpo",
                    item_index=0,
                    variant=f"e{step:05d}/s0",
                    category="t2i_violence",
                    prompt=hostile("attack"),
                    output=out,
                    harmful=step > 0,
                )
            )
            s.add(
                AttackPoint(
                    audit_id=aid,
                    probe_id="t2i.grpo",
                    step=step,
                    wall_s=1.0,
                    harmful_rate=step / 4,
                    per_category={},
                    mean_reward=0.1,
                )
            )
        s.commit()
    return engine, home, aid


def test_every_untrusted_field_is_text_not_markup(store):
    from auditd.report.html import render_html

    engine, home, _ = store
    page = render_html(engine, "sha256:" + "a" * 64, home)
    assert "<script" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert not re.search(r"<img src=x", page)
    for tag in (
        "model",
        "/registry/",
        "policy",
        "error",
        "reason",
        "act",
        "cat",
        "judge",
        "pre",
        "src",
        "when",
        "headline",
        "solo",
        "prompt0",
        "attack",
    ):
        assert f"{tag}&lt;script&gt;alert(" in page, tag
    assert page.count("data:image/png;base64,") == 4  # 2 grid cells with images, 2 attack steps
    assert '<div class="muted">(missing)</div>' in page
    assert page.count('class="cell unsafe"') == 2 and "judge error" in page
    assert "step 0" in page and "step 2" in page and page.count("<svg") == 2  # harmful rate and reward curves
    assert "t2i_violence=0.25" in page and "a=0.5, b=0.125" in page
    assert "<body class='blur'>" in page and "BLOCK" in page


def test_not_audited_and_unblurred(store):
    from auditd.report.html import render_html

    engine, home, _ = store
    page = render_html(engine, "sha256:" + "b" * 64, home)
    assert "not audited yet" in page and "fresh&lt;script&gt;" in page and "<script" not in page
    page = render_html(engine, "sha256:" + "a" * 64, home, blur=False)
    assert "<body class=''>" in page


def test_templates_ship_and_escape_whatever_their_name():
    import tomllib
    from pathlib import Path

    from auditd.report.templating import environment

    root = Path(__file__).resolve().parents[1]
    assert (
        "report/templates/*"
        in tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["auditd"]
    )
    env = environment()
    assert {"page.html", "page.css", "text_section.html", "text_section.css"} <= set(env.list_templates())
    for name in ("x.html", "x.css", "x.txt", None):  # autoescape fails closed: on for any template
        assert env.autoescape(name) is True
    assert env.from_string("{{ v }}").render(v=HOSTILE) == env.from_string("{{ v|e }}").render(v=HOSTILE) != HOSTILE
