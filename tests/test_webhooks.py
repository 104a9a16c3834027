"""Webhooks over real HTTP (uvicorn on loopback): the generic signed registry hook and the Hugging
Face Hub hook. Forged, replayed, stale, oversized and out-of-bounds requests are rejected (4xx),
logged, and change nothing; a valid event delivered twice schedules exactly one audit."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time

import httpx
import pytest
from sqlmodel import func, select

from auditd.registry.webhook import HF_SECRET_HEADER, sign_generic
from tests.conftest import wait_for

SECRET = "s3cret-for-tests"
HF_SECRET = "hub-secret"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer
    from auditd.metrics.collector import build_registry
    from auditd.settings import Settings
    from auditd.store.db import open_db

    registry = tmp_path / "registry"
    shutil.copytree(tiny_model_dir, registry / "m1")
    cache = tmp_path / "hf-cache"  # a Hugging Face cache holding one snapshot, as if downloaded before
    shutil.copytree(tiny_model_dir, cache / "models--acme--tiny" / "snapshots" / SHA)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text(SHA)
    settings = Settings(
        home=tmp_path / "home",
        registry_dir=registry,
        webhook_secret=SECRET,
        hf_webhook_secret=HF_SECRET,
        hf_cache_dir=cache,
        webhook_max_body_bytes=4096,
    )
    engine = open_db(settings.database_url)
    http = HTTPServer(create_app(engine, build_registry(engine), settings=settings), "127.0.0.1", 0).start()
    yield http.url, engine, registry
    http.stop()
    engine.dispose()


def counts(engine) -> tuple[int, int]:
    from auditd.store.db import session
    from auditd.store.hook_models import WebhookDelivery
    from auditd.store.models import AuditRun

    with session(engine) as s:
        return (
            s.exec(select(func.count()).select_from(WebhookDelivery)).one(),
            s.exec(select(func.count()).select_from(AuditRun)).one(),
        )


def event(registry, event_id="evt-1", **extra) -> bytes:
    return json.dumps({"event_id": event_id, "model": "m", "path": str(registry / "m1"), **extra}).encode()


def post(url, body: bytes, headers: dict, path="/v1/hooks/registry") -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"content-type": "application/json", **headers}, timeout=30)


def test_valid_event_delivered_twice_schedules_exactly_one_audit(server):
    from auditd.store.db import session
    from auditd.store.models import AuditRun

    url, engine, registry = server
    body = event(registry)
    first = post(url, body, sign_generic(SECRET, body))
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    wait_for(lambda: counts(engine)[1] == 1, timeout=30, what="the audit to be queued")
    time.sleep(1.1)  # a sender's retry comes later, with a new timestamp and signature
    again = post(url, body, sign_generic(SECRET, body))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["audit_id"] is not None
    with session(engine) as s:
        audits = s.exec(select(AuditRun)).all()
    assert [a.request_key for a in audits] == ["event:evt-1"]
    assert counts(engine) == (1, 1)


def test_rejected_webhooks_change_nothing_and_are_logged(server, caplog):
    url, engine, registry = server
    body = event(registry)
    valid = sign_generic(SECRET, body)
    assert post(url, body, valid).status_code == 202
    wait_for(lambda: counts(engine) == (1, 1), timeout=30, what="the valid event")
    before = counts(engine)
    caplog.set_level(logging.WARNING, logger="auditd.api.routes_hooks")

    cases = {
        "replayed": (body, valid, 409),
        "forged": (event(registry, "evt-2"), sign_generic("not-the-secret", event(registry, "evt-2")), 401),
        "tampered": (event(registry, "evt-3"), sign_generic(SECRET, event(registry, "evt-X")), 401),
        "stale": (
            event(registry, "evt-4"),
            sign_generic(SECRET, event(registry, "evt-4"), int(time.time()) - 301),
            401,
        ),
        "future": (
            event(registry, "evt-5"),
            sign_generic(SECRET, event(registry, "evt-5"), int(time.time()) + 400),
            401,
        ),
        "unsigned": (event(registry, "evt-6"), {}, 401),
        "oversized": (event(registry, "evt-7", metadata={"pad": "x" * 5000}), None, 413),
        "outside roots": (
            b := json.dumps({"event_id": "evt-8", "model": "m", "path": "/etc"}).encode(),
            sign_generic(SECRET, b),
            422,
        ),
        "escaping roots": (
            b2 := json.dumps({"event_id": "evt-9", "model": "m", "path": str(registry / ".." / "home")}).encode(),
            sign_generic(SECRET, b2),
            422,
        ),
        "bad payload": (
            b3 := json.dumps({"event_id": "evt 10!", "model": "m", "path": "x"}).encode(),
            sign_generic(SECRET, b3),
            422,
        ),
        "not json": (b"{nope", sign_generic(SECRET, b"{nope"), 400),
    }
    for name, (payload, headers, status) in cases.items():
        if headers is None:
            headers = sign_generic(SECRET, payload)
        res = post(url, payload, headers)
        assert res.status_code == status, (name, res.status_code, res.text)
    assert counts(engine) == before
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == len(cases)


def test_oversized_body_without_content_length_is_cut_off(server):
    url, engine, registry = server
    before = counts(engine)

    def chunks():
        for _ in range(10):
            yield b"x" * 1024

    res = httpx.post(
        url + "/v1/hooks/registry", content=chunks(), headers=sign_generic(SECRET, b"irrelevant"), timeout=30
    )
    assert res.status_code == 413
    assert counts(engine) == before


def test_generic_webhook_is_disabled_without_a_secret(tmp_path):
    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer
    from auditd.metrics.collector import build_registry
    from auditd.settings import Settings
    from auditd.store.db import open_db

    settings = Settings(home=tmp_path)
    engine = open_db(settings.database_url)
    http = HTTPServer(create_app(engine, build_registry(engine), settings=settings), "127.0.0.1", 0).start()
    try:
        body = b'{"event_id": "e", "model": "m", "path": "/tmp"}'
        assert post(http.url, body, sign_generic("anything", body)).status_code == 403
        assert post(http.url, b"{}", {HF_SECRET_HEADER: "x"}, "/v1/hooks/huggingface").status_code == 403
    finally:
        http.stop()


def hub_payload(repo="acme/tiny", sha=SHA, repo_type="model", scope="repo.content", action="update") -> bytes:
    return json.dumps(
        {
            "event": {"action": action, "scope": scope},
            "repo": {"type": repo_type, "name": repo, "id": "abc", "private": False, "headSha": sha},
            "webhook": {"id": "wh1", "version": 3},
        }
    ).encode()


def test_hugging_face_hub_webhook_hands_over_a_local_snapshot(server):
    from auditd.registry.digest import content_digest
    from auditd.store.db import session
    from auditd.store.hook_models import WebhookDelivery
    from auditd.store.models import AuditRun, CheckpointRow

    url, engine, registry = server
    hub = "/v1/hooks/huggingface"
    assert post(url, hub_payload(), {HF_SECRET_HEADER: "wrong"}, hub).status_code == 401
    assert post(url, hub_payload(), {}, hub).status_code == 401
    assert counts(engine) == (0, 0)
    ignored = post(url, hub_payload(repo_type="dataset"), {HF_SECRET_HEADER: HF_SECRET}, hub)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    assert post(url, hub_payload(sha="main"), {HF_SECRET_HEADER: HF_SECRET}, hub).status_code == 422

    res = post(url, hub_payload(), {HF_SECRET_HEADER: HF_SECRET}, hub)
    assert res.status_code == 202, res.text
    wait_for(lambda: counts(engine)[1] == 1, timeout=30, what="the hub event's audit")
    again = post(url, hub_payload(), {HF_SECRET_HEADER: HF_SECRET}, hub)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    with session(engine) as s:
        cp = s.exec(select(CheckpointRow)).one()
        audit = s.exec(select(AuditRun)).one()
        delivery = s.exec(select(WebhookDelivery)).one()
    snapshot = registry.parent / "hf-cache" / "models--acme--tiny" / "snapshots" / SHA
    assert cp.model == "acme/tiny" and cp.source == "huggingface" and cp.path == str(snapshot)
    assert cp.id == content_digest(snapshot) and cp.meta["revision"] == SHA
    assert audit.checkpoint_id == cp.id and audit.request_key == f"event:hf:acme/tiny@{SHA}"
    assert delivery.status == "scheduled" and delivery.audit_id == audit.id


def test_hub_revision_missing_locally_is_recorded_as_error_not_scheduled(server):
    from auditd.store.db import session
    from auditd.store.hook_models import WebhookDelivery

    url, engine, _ = server
    other = hashlib.sha1(b"other").hexdigest()
    res = post(url, hub_payload(sha=other), {HF_SECRET_HEADER: HF_SECRET}, "/v1/hooks/huggingface")
    assert res.status_code == 202

    def errored():
        with session(engine) as s:
            return s.exec(select(WebhookDelivery).where(WebhookDelivery.status == "error")).first()

    row = wait_for(errored, timeout=30, what="the failed hand-over")
    assert row.error and counts(engine)[1] == 0


def test_migration_creates_the_tables_and_accepted_deliveries_resume(tmp_path, tiny_model_dir):
    """open_db on a fresh file creates the webhook tables; a delivery accepted before a crash
    (never handed over) is handed over at the next start."""
    import sqlalchemy as sa

    from auditd.registry.webhook import record_delivery
    from auditd.scheduler.intake import resume_deliveries
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.hook_models import WebhookDelivery

    registry = tmp_path / "registry"
    shutil.copytree(tiny_model_dir, registry / "m1")
    settings = Settings(home=tmp_path / "home", registry_dir=registry)
    engine = open_db(settings.database_url)
    assert {"webhook_deliveries", "category_drift"} <= set(sa.inspect(engine).get_table_names())
    payload = json.loads(event(registry, "evt-crash"))
    row, new = record_delivery(engine, "registry", "evt-crash", "sig", payload)
    assert new and counts(engine) == (1, 0)
    assert resume_deliveries(engine, settings) == 1
    with session(engine) as s:
        assert s.get(WebhookDelivery, row.id).status == "scheduled"
    assert counts(engine) == (1, 1)
    assert resume_deliveries(engine, settings) == 0


def test_concurrent_deliveries_of_one_event_schedule_one_audit(server):
    """A sender's retries can overlap the first delivery: the unique (source, event id) decides."""
    from concurrent.futures import ThreadPoolExecutor

    url, engine, registry = server
    body = event(registry, "evt-race")
    signed = [sign_generic(SECRET, body, int(time.time()) - i) for i in range(8)]  # 8 distinct signatures
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda h: post(url, body, h).status_code, signed))
    assert statuses == [200] * 7 + [202]
    wait_for(lambda: counts(engine)[1] == 1, timeout=30, what="the one audit")
    time.sleep(0.5)
    assert counts(engine) == (1, 1)
