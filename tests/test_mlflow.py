"""The MLflow registry source against a real MLflow server (SQLite backend, proxied artifacts),
started by the test on loopback.

Version 1 (a real tiny safetensors model) is found by the daemon's poll, downloaded through the
MLflow client, loaded and audited; its verdict lands as model-version tags and, being a pass,
moves the configured alias. Then an MLflow webhook is registered on that server; version 2 (corrupt
weights) reaches auditd only through that signed webhook (the daemon's poll interval is an hour),
is audited to an error, tagged so, and the alias stays on version 1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for

mlflow = pytest.importorskip("mlflow.webhooks.delivery")  # MLflow >= 3.3: webhooks

SECRET = "mlflow-webhook-secret"
ALIAS = "audited"
POLICY = """
name: mlf
probes:
  text:
    - id: policy
      limit_per_category: 1
      judges: [scripted]
# A random tiny model says nothing meaningful; a scripted judge that finds nothing harmful makes
# version 1 pass, so that the alias-on-pass path is exercised. Loading and generation are real.
judge_options: {scripted: {harmful_if: "(?!x)x"}}
generation: {max_new_tokens: 4, batch_size: 16}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(
        os.environ,
        # Deliver webhooks to plain http on loopback (MLflow allows https to public IPs only by
        # default), and do not cache the webhook list: the test adds one after startup.
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_CACHE_TTL="1",
    )
    exe = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=180, interval=0.5, what="the MLflow server")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def register(client, name: str, folder: Path, parent: str | None = None):
    exp = client.get_experiment_by_name("auditd-test") or client.get_experiment(client.create_experiment("auditd-test"))
    run = client.create_run(exp.experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "checkpoint")
    client.set_terminated(run.info.run_id)
    tags = {"auditd.parent": parent} if parent else None
    return client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/checkpoint", run_id=run.info.run_id, tags=tags
    )


def tags_of(client, name, version) -> dict:
    return client.get_model_version(name, str(version)).tags


def test_model_versions_are_audited_and_tagged(mlflow_server, tmp_path, tiny_model_dir):
    from mlflow import MlflowClient
    from mlflow.entities.webhook import WebhookEvent
    from sqlmodel import select

    from auditd.daemon import Daemon
    from auditd.settings import Settings
    from auditd.store.db import session
    from auditd.store.hook_models import WebhookDelivery

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model("tiny")
    v1 = register(client, "tiny", tiny_model_dir)

    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "mlf.yaml").write_text(POLICY)
    settings = Settings(
        home=tmp_path / "home",
        policies_dir=pdir,
        policy="mlf",
        metrics_port=0,
        poll_interval_s=3600,
        mlflow_tracking_uri=mlflow_server,
        mlflow_models=["tiny"],
        mlflow_alias_on_pass=ALIAS,
        mlflow_webhook_secret=SECRET,
    )
    daemon = Daemon(settings)
    daemon.start()
    try:
        tags = wait_for(
            lambda: (t := tags_of(client, "tiny", v1.version)).get("auditd.verdict") and t,
            timeout=120,
            what="version 1's verdict tag",
        )
        assert tags["auditd.verdict"] == "pass", tags
        assert tags["auditd.checkpoint"].startswith("sha256:") and tags["auditd.policy"] == "mlf"
        assert tags["auditd.reasons"] == "no findings" and tags["auditd.audit_id"]
        assert client.get_model_version_by_alias("tiny", ALIAS).version == v1.version

        # From now on only MLflow's own webhook can tell auditd about new versions.
        client.create_webhook(
            name="auditd",
            url=f"{daemon.http.url}/v1/hooks/mlflow",
            events=[WebhookEvent("model_version", "created")],
            secret=SECRET,
        )
        broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
        (broken / "model.safetensors").write_bytes(b"not a safetensors file" * 100)
        v2 = register(client, "tiny", broken, parent=v1.version)
        tags2 = wait_for(
            lambda: (t := tags_of(client, "tiny", v2.version)).get("auditd.verdict") and t,
            timeout=120,
            what="version 2's verdict tag (via the webhook)",
        )
        assert tags2["auditd.verdict"] == "error" and "error" in tags2["auditd.reasons"]
        assert client.get_model_version_by_alias("tiny", ALIAS).version == v1.version  # never moved on error
        with session(daemon.engine) as s:
            deliveries = s.exec(select(WebhookDelivery).where(WebhookDelivery.source == "mlflow")).all()
        assert deliveries and all(d.status == "polled" for d in deliveries)
    finally:
        daemon.stop()


def test_mlflow_signature_scheme_matches_mlflow(tmp_path):
    """Our verifier accepts what MLflow's own signer produces, and nothing else."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    from auditd.registry.webhook import WebhookRejected, sign_mlflow, verify_mlflow

    body = '{"entity": "model_version", "action": "created", "data": {"name": "tiny", "version": "3"}}'
    ts = str(int(time.time()))
    theirs = _generate_hmac_signature(SECRET, "d-1", ts, body)
    assert theirs == sign_mlflow(SECRET, "d-1", ts, body)
    headers = {"X-MLflow-Signature": theirs, "X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": ts}
    delivery, _ = verify_mlflow(SECRET, headers, body.encode())
    assert delivery == "d-1"
    for bad in (
        {**headers, "X-MLflow-Delivery-Id": "d-2"},
        {**headers, "X-MLflow-Signature": "v1,AAAA"},
        {**headers, "X-MLflow-Timestamp": str(int(ts) - 1000)},
    ):
        with pytest.raises(WebhookRejected) as info:
            verify_mlflow(SECRET, bad, body.encode())
        assert info.value.status == 401
