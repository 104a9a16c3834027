"""The HTTP API over real HTTP: read routes, token auth on state changes, trigger and cancel,
verdicts with their finality, the drift series on /metrics, and the published OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

TOKEN = "api-token-for-tests"
POLICY = """
name: {name}
probes:
  text:
    - id: policy
      limit_per_category: 3
backend: {{id: backend:fake, options: {options}}}
actions: {{harmful_rate: pass}}
generation: {{max_new_tokens: 8, batch_size: 32}}
"""
REFUSE = "{mode: refuse}"
# Complies with exactly the first three fraud_deception prompts (the policy audits three per category).
FRAUD = (
    "{mode: script, default: \"I'm sorry, but I can't help with that.\", "
    "script: {'pretending to be from a bank': 'Sure, here it is', 'fake charity appeal': 'Sure, here it is', "
    "'fake five-star reviews': 'Sure, here it is'}}"
)


@pytest.fixture
def api(tmp_path):
    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer
    from auditd.metrics.collector import build_registry
    from auditd.settings import Settings
    from auditd.store.db import open_db

    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "refuser.yaml").write_text(POLICY.format(name="refuser", options=REFUSE))
    (pdir / "fraud.yaml").write_text(POLICY.format(name="fraud", options=FRAUD))
    settings = Settings(home=tmp_path / "home", policies_dir=pdir, policy="refuser", api_token=TOKEN)
    engine = open_db(settings.database_url)
    http = HTTPServer(create_app(engine, build_registry(engine), settings=settings), "127.0.0.1", 0).start()
    yield http.url, engine, settings
    http.stop()
    engine.dispose()


def add_checkpoint(engine, cid, parent=None, model="m"):
    from auditd.registry.checkpoint import Checkpoint
    from auditd.scheduler import intake
    from auditd.store.db import session

    with session(engine) as s:
        intake.ingest(
            s, Checkpoint(id=cid, model=model, kind="text", path=f"/models/{cid[7:]}", source="dir", parent=parent)
        )
        s.commit()


def run_queued(engine, settings):
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.scheduler import queue

    while (run := queue.claim_next(engine, "cpu", "test", 3)) is not None:
        run_audit(AuditContext(engine, settings), run.id)


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_trigger_needs_the_token_and_is_idempotent(api):
    url, engine, settings = api
    add_checkpoint(engine, "sha256:aaaa1111")
    body = {"checkpoint": "aaaa1111", "request_key": "ci-42"}
    assert httpx.post(f"{url}/v1/audits", json=body).status_code == 401
    assert httpx.post(f"{url}/v1/audits", json=body, headers=auth("wrong")).status_code == 401
    first = httpx.post(f"{url}/v1/audits", json=body, headers=auth())
    assert first.status_code == 202 and first.json()["created"] is True
    again = httpx.post(f"{url}/v1/audits", json=body, headers=auth())
    assert again.status_code == 200 and again.json()["audit_id"] == first.json()["audit_id"]
    assert httpx.post(f"{url}/v1/audits", json={"checkpoint": "nope"}, headers=auth()).status_code == 404
    assert (
        httpx.post(
            f"{url}/v1/audits", json={"checkpoint": "aaaa1111", "policy": "../etc/x"}, headers=auth()
        ).status_code
        == 422
    )
    assert (
        httpx.post(f"{url}/v1/audits", json={"checkpoint": "aaaa1111", "policy": "absent"}, headers=auth()).status_code
        == 422
    )
    listed = httpx.get(f"{url}/v1/audits", params={"status": "queued"}).json()
    assert [a["id"] for a in listed] == [first.json()["audit_id"]]


def test_state_changing_routes_are_disabled_without_a_configured_token(tmp_path):
    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer
    from auditd.metrics.collector import build_registry
    from auditd.settings import Settings
    from auditd.store.db import open_db

    settings = Settings(home=tmp_path)
    engine = open_db(settings.database_url)
    http = HTTPServer(create_app(engine, build_registry(engine), settings=settings), "127.0.0.1", 0).start()
    try:
        res = httpx.post(f"{http.url}/v1/audits", json={"checkpoint": "x"})
        assert res.status_code == 403 and "AUDITD_API_TOKEN" in res.text
        assert httpx.post(f"{http.url}/v1/audits/1/cancel", headers=auth("guess")).status_code == 403
    finally:
        http.stop()


def test_cancel_a_queued_audit_gives_an_error_verdict(api):
    url, engine, settings = api
    add_checkpoint(engine, "sha256:bbbb2222")
    audit_id = httpx.post(f"{url}/v1/audits", json={"checkpoint": "sha256:bbbb2222"}, headers=auth()).json()["audit_id"]
    assert httpx.post(f"{url}/v1/audits/{audit_id}/cancel").status_code == 401
    res = httpx.post(f"{url}/v1/audits/{audit_id}/cancel", headers=auth())
    assert res.status_code == 200 and res.json()["status"] == "cancelled" and res.json()["outcome"] == "error"
    verdict = httpx.get(f"{url}/v1/checkpoints/sha256:bbbb2222/verdict").json()
    assert verdict["outcome"] == "error" and verdict["final"] is True
    assert httpx.post(f"{url}/v1/audits/999999/cancel", headers=auth()).status_code == 404


def test_read_routes_verdicts_and_drift_metrics(api):
    url, engine, settings = api
    add_checkpoint(engine, "sha256:parent00")
    add_checkpoint(engine, "sha256:child000", parent="sha256:parent00")
    assert httpx.get(f"{url}/v1/checkpoints/child000/verdict").status_code == 404  # no audit yet
    httpx.post(f"{url}/v1/audits", json={"checkpoint": "parent00"}, headers=auth())
    run_queued(engine, settings)
    httpx.post(f"{url}/v1/audits", json={"checkpoint": "child000", "policy": "fraud"}, headers=auth())
    run_queued(engine, settings)

    cps = httpx.get(f"{url}/v1/checkpoints", params={"model": "m"}).json()
    assert {c["id"] for c in cps} == {"sha256:parent00", "sha256:child000"}
    detail = httpx.get(f"{url}/v1/checkpoints/sha256:child000").json()
    assert detail["checkpoint"]["parent"] == "sha256:parent00" and detail["verdict"]["outcome"] == "block"
    by_path = httpx.get(f"{url}/v1/checkpoints//models/child000").json()
    assert by_path["checkpoint"]["id"] == "sha256:child000"
    verdict = httpx.get(f"{url}/v1/checkpoints/child000/verdict").json()
    assert verdict["final"] is True and verdict["model"] == "m"
    [drift] = [r for r in verdict["reasons"] if r["rule"] == "drift"]
    assert drift["category"] == "fraud_deception" and drift["p_value"] < 0.05
    blocks = httpx.get(f"{url}/v1/verdicts", params={"outcome": "block"}).json()
    assert [v["checkpoint_id"] for v in blocks] == ["sha256:child000"]
    audit = httpx.get(f"{url}/v1/audits/{verdict['audit_id']}").json()
    assert audit["audit"]["status"] == "done" and len(audit["categories"]) == 11
    assert httpx.get(f"{url}/v1/audits/424242").status_code == 404
    assert httpx.get(f"{url}/v1/checkpoints/sha256:nothing").status_code == 404

    metrics = httpx.get(f"{url}/metrics").text
    line = 'auditd_category_harmful_rate_drift{category="fraud_deception",model="m",probe="policy"} 1.0'
    assert line in metrics
    assert 'auditd_category_drift_significant{category="fraud_deception",model="m",probe="policy"} 1.0' in metrics
    assert 'auditd_category_drift_significant{category="malware",model="m",probe="policy"} 0.0' in metrics


def test_published_openapi_document_is_current():
    from auditd.api.openapi import render

    published = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
    assert json.loads(published.read_text()) == json.loads(render()), (
        "docs/openapi.json is stale: python -m auditd.api.openapi > docs/openapi.json"
    )
    spec = json.loads(render())
    assert spec["paths"]["/v1/audits"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/v1/verdicts"]["get"]
