"""A real Prometheus server (Debian package `prometheus`) on loopback scrapes a running auditd and
evaluates grafana/prometheus/rules.yml: a category that spikes significantly makes AuditdCategorySpike
go pending and then firing; a rise past the threshold that is within sampling noise does not.

Audits are fed through the store, as the runner leaves them (checkpoint with lineage parent, finished
audit runs, per-category results), and decided by the real policy code (`evaluate`), which stores the
drift and its significance; auditd's collector reads all of it from the database at scrape time."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from auditd.categories import POLICY_CATEGORIES
from auditd.daemon import Daemon
from auditd.policy.baseline import evaluate
from auditd.policy.load import load_policy_file
from auditd.settings import Settings
from auditd.store.db import session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, Verdict, utcnow
from tests.conftest import QUICK_POLICY, wait_for, write_policy

RULES = Path(__file__).resolve().parent.parent / "grafana" / "prometheus" / "rules.yml"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    not PROMETHEUS, reason="prometheus server not installed (Debian package prometheus; .ci/install-system.sh)"
)

# The shipped rules wait `for: 5m`..`30m` and a production Prometheus evaluates every 30 s: far too long
# for a test. The test loads a copy of rules.yml in which only every `for:` is cut to FOR_S, and runs
# Prometheus with scrape and evaluation intervals of 1 s. Every expression, threshold and label is the
# shipped one.
FOR_S = 5
SPIKED = "fraud_deception"
N = 30  # prompts per category, as in HEx-PHI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_rules(dest) -> None:
    doc = yaml.safe_load(RULES.read_text())
    shortened = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{FOR_S}s"
                shortened += 1
    assert shortened, "rules.yml has no `for:` left to shorten: update this test"
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def auditd(tmp_path):
    settings = Settings(home=tmp_path / "home", policy=str(write_policy(tmp_path, QUICK_POLICY)), metrics_port=0)
    d = Daemon(settings)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def prometheus(tmp_path, auditd):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    fast_rules(folder / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": "auditd", "static_configs": [{"targets": [f"{auditd.http.host}:{auditd.http.port}"]}]}
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(folder / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=folder,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}: {(folder / 'prometheus.log').read_text()}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, interval=0.1, what="prometheus to be ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, promql: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def alerts(url: str, name: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()
    assert r["status"] == "success", r
    return [a for a in r["data"]["alerts"] if a["labels"]["alertname"] == name]


def feed(engine, policy, model: str, base: dict[str, tuple[int, int]], child: dict[str, tuple[int, int]]) -> None:
    """Two finished audits of `model`: v1 (the parent) then v2, with (harmful, judged) counts per
    category of the `policy` probe, each decided by the policy against its baseline like the runner does."""
    finished = utcnow() - timedelta(minutes=10)
    with session(engine) as s:
        parent = CheckpointRow(id=f"sha256:{model}-v1", model=model, kind="text", source="test", path=f"/m/{model}/v1")
        cp = CheckpointRow(
            id=f"sha256:{model}-v2", model=model, kind="text", source="test", path=f"/m/{model}/v2", parent_id=parent.id
        )
        for checkpoint, counts in ((parent, base), (cp, child)):
            finished += timedelta(minutes=5)
            audit = AuditRun(
                checkpoint_id=checkpoint.id,
                policy=policy.name,
                status="done",
                attempts=1,
                started_at=finished - timedelta(seconds=60),
                finished_at=finished,
                duration_s=60.0,
            )
            s.add(checkpoint)
            s.flush()  # no ORM relationship orders the inserts: the checkpoint row must exist first
            s.add(audit)
            s.flush()
            for category, (k, n) in counts.items():
                s.add(
                    CategoryResult(
                        audit_id=audit.id,
                        probe_id="policy",
                        category=category,
                        n=n,
                        n_judged=n,
                        n_harmful=k,
                        n_refused=n - k,
                        harmful_rate=k / n,
                        refusal_rate=(n - k) / n,
                    )
                )
            s.flush()
            decision = evaluate(s, policy, audit.id, checkpoint, summaries={})
            audit.outcome = decision.outcome
            s.add(
                Verdict(
                    audit_id=audit.id,
                    checkpoint_id=checkpoint.id,
                    outcome=decision.outcome,
                    policy=policy.name,
                    reasons=decision.reasons,
                )
            )
        s.commit()


def test_category_spike_alert_goes_pending_then_firing_and_noise_stays_silent(auditd, prometheus, tmp_path):
    # Prometheus scrapes the running auditd.
    wait_for(
        lambda: [r for r in query(prometheus, 'up{job="auditd"}') if r["value"][1] == "1"],
        30,
        interval=0.2,
        what='up{job="auditd"} == 1',
    )
    assert not alerts(prometheus, "AuditdCategorySpike")

    policy = load_policy_file(tmp_path / "test.yaml")
    steady = {c: (1, N) for c in POLICY_CATEGORIES}
    # alpha: one category spikes, 1/30 -> 20/30 (z-test p ~ 1e-7): significant.
    feed(auditd.engine, policy, "alpha", steady, {**steady, SPIKED: (20, N)})
    # beta: the same category rises 0/10 -> 2/10 on few samples: +20 points, past the rule's 10-point
    # threshold, but p ~ 0.07, within noise at alpha 0.05. It must never alert.
    quiet = {c: (0, 10) for c in POLICY_CATEGORIES}
    feed(auditd.engine, policy, "beta", quiet, {**quiet, SPIKED: (2, 10)})
    fed_at = time.time()

    seen: dict[str, float] = {}
    beta_alerts: list[dict] = []

    def spike_firing():
        for a in alerts(prometheus, "AuditdCategorySpike"):
            if a["labels"]["model"] == "beta":
                beta_alerts.append(a)
            seen.setdefault(a["state"], time.time())
        return "firing" in seen

    wait_for(spike_firing, 60, interval=0.2, what="AuditdCategorySpike to fire")
    pending_s, firing_s = seen["pending"] - fed_at, seen["firing"] - fed_at
    print(
        f"\nAuditdCategorySpike (for: {FOR_S}s, scrape/eval 1 s): pending after {pending_s:.1f} s, "
        f"firing after {firing_s:.1f} s"
    )
    assert "pending" in seen and seen["pending"] < seen["firing"], "the alert must be pending before firing"
    assert seen["firing"] - seen["pending"] >= FOR_S - 1.5  # `for:` held it pending (less one poll/eval step)

    spikes = alerts(prometheus, "AuditdCategorySpike")
    assert [a["labels"]["model"] for a in spikes] == ["alpha"], f"only the significant spike may alert: {spikes}"
    spike = spikes[0]
    assert spike["state"] == "firing"
    assert {k: spike["labels"][k] for k in ("model", "probe", "category", "severity", "job")} == {
        "model": "alpha",
        "probe": "policy",
        "category": SPIKED,
        "severity": "critical",
        "job": "auditd",
    }
    assert abs(float(spike["value"]) - (20 - 1) / N) < 1e-9  # the drift, 63 points
    assert "alpha" in spike["annotations"]["summary"] and SPIKED in spike["annotations"]["summary"]

    # A few more evaluations: the within-noise rise has had as long as the spike and still never alerted.
    time.sleep(3)
    assert not beta_alerts and [a["labels"]["model"] for a in alerts(prometheus, "AuditdCategorySpike")] == ["alpha"]
    # ...and not because its series were missing: the drift is there, past 0.10, only not significant.
    sel = f'{{model="beta",probe="policy",category="{SPIKED}"}}'
    [drift] = query(prometheus, f"auditd_category_harmful_rate_drift{sel}")
    [significant] = query(prometheus, f"auditd_category_drift_significant{sel}")
    assert abs(float(drift["value"][1]) - 0.2) < 1e-9 and significant["value"][1] == "0"
    # The recording rule keeps only significant drift: alpha's spike, nothing of beta.
    kept = query(prometheus, "model_probe_category:auditd_category_harmful_rate_drift:significant")
    assert [(r["metric"]["model"], r["metric"]["category"]) for r in kept] == [("alpha", SPIKED)]
    # The rule itself, as /api/v1/rules reports it.
    rules = httpx.get(f"{prometheus}/api/v1/rules", params={"type": "alert"}, timeout=5).json()["data"]["groups"]
    [rule] = [r for g in rules for r in g["rules"] if r["name"] == "AuditdCategorySpike"]
    assert rule["state"] == "firing" and rule["health"] == "ok" and rule["duration"] == FOR_S
