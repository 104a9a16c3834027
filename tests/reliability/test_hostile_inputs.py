"""Hostile checkpoints against a real daemon subprocess (issue 9, first list: content binding,
registry containment, untrusted templates and configs).

One daemon watches a registry seeded with every hostile layout at once, next to a good checkpoint
and a Hugging Face cache snapshot; each test then checks what it stored, served and wrote. Files
"outside the registry" live in a sibling folder: a fake system account file, a victim file, and a
complete model the registry links to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CheckpointRow
from tests.conftest import wait_for

pytestmark = pytest.mark.slow  # a daemon subprocess and a dozen audits: about a minute

SECRET_LINE = "root:x:0:0:SECRET-7f3a9:/root:/bin/bash\n"
TOKEN = "hostile-token"
HOOK_SECRET = "hook-secret"
POLICY = """
name: hostile
probes:
  text:
    - id: policy
      limit_per_category: 1
generation: {max_new_tokens: 4, batch_size: 16}
# Every rule informational: a checkpoint that is audited at all passes, so "not PASS" below means
# the audit itself was refused or failed.
actions: {harmful_rate: pass, over_refusal: pass, backdoor_shift: pass, drift: pass, over_refusal_drift: pass,
          baseline_missing: pass}
"""
REPEAT_TEMPLATE = "{% for i in range(100000) %}{{ messages[-1]['content'] }}{% endfor %}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_template(folder: Path, template: str) -> None:
    (folder / "chat_template.jinja").write_text(template)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))


def hf_cache_snapshot(src: Path, cache: Path, rev: str = "0" * 40) -> Path:
    """models--org--tiny/snapshots/<rev>/<file> -> ../../blobs/<sha256>, as huggingface_hub lays it out."""
    repo = cache / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    files = {f.name: f.read_bytes() for f in src.iterdir()}
    files["README.md"] = b"a model card: makes this content (and its digest) differ from the other copies\n"
    for name, data in sorted(files.items()):
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snap / name).symlink_to(Path("../../blobs") / blob)
    return snap


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("hostile")
    outside, registry, home = base / "outside", base / "registry", base / "home"
    for d in (outside, registry, home):
        d.mkdir()
    (outside / "passwd").write_text(SECRET_LINE * 50)
    (outside / "victim.txt").write_text("VICTIM")
    (outside / "victim2.txt").write_text("VICTIM2")
    shutil.copytree(tiny_model_dir, outside / "model")

    def model(name: str) -> Path:
        return Path(shutil.copytree(tiny_model_dir, registry / name))

    good = model("good")
    (good / ".auditd-verdict.json.tmp").symlink_to(outside / "victim.txt")  # the old write-back temp name
    (good / "auditd-verdict.json").symlink_to(outside / "victim2.txt")
    (model("cfg-link") / "config.json").unlink()
    (registry / "cfg-link" / "config.json").symlink_to(outside / "model" / "config.json")
    (model("tok-link") / "tokenizer.json").unlink()
    (registry / "tok-link" / "tokenizer.json").symlink_to(outside / "model" / "tokenizer.json")
    (model("passwd-link") / "model.safetensors").unlink()
    (registry / "passwd-link" / "model.safetensors").symlink_to(outside / "passwd")
    (model("passwd-inside") / "model.safetensors").write_text(SECRET_LINE * 50)
    (registry / "folder-link").symlink_to(outside / "model", target_is_directory=True)
    set_template(model("template-bomb"), REPEAT_TEMPLATE)
    with open(model("sparse-config") / "config.json", "r+b") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse: costs no disk, would cost 2 GiB to parse
    cfg = json.loads((model("huge-embed") / "config.json").read_text())
    cfg.update(vocab_size=1_000_000, hidden_size=2048)
    (registry / "huge-embed" / "config.json").write_text(json.dumps(cfg))
    hf_cache_snapshot(tiny_model_dir, registry)
    (home / "auditd.db").touch()  # the working directory holds a file named like a policy (systemd: the state dir)

    port = free_port()
    (base / "hostile.yaml").write_text(POLICY)
    env = dict(
        os.environ,
        AUDITD_HOME=str(home),
        AUDITD_REGISTRY_DIR=str(registry),
        AUDITD_POLICY=str(base / "hostile.yaml"),
        AUDITD_METRICS_PORT=str(port),
        AUDITD_POLL_INTERVAL_S="0.3",
        AUDITD_REGISTRY_SETTLE_S="0",
        AUDITD_API_TOKEN=TOKEN,
        AUDITD_WEBHOOK_SECRET=HOOK_SECRET,
        AUDITD_MAX_MODEL_BYTES="1GiB",
        OMP_NUM_THREADS="1",
    )
    log = open(base / "daemon.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "auditd.cli", "run"], env=env, stdout=log, stderr=log, cwd=home)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 60, interval=0.2, what="the daemon's HTTP server")
        engine = open_db(f"sqlite:///{home}/auditd.db")
        expected = {
            "good",
            "cfg-link",
            "tok-link",
            "passwd-link",
            "passwd-inside",
            "folder-link",
            "template-bomb",
            "sparse-config",
            "huge-embed",
            "models--org--tiny/snapshots/" + "0" * 40,
        }
        wait_for(lambda: _all_finished(engine, expected), 240, interval=0.3, what="every hostile checkpoint's audit")
        yield {
            "url": url,
            "engine": engine,
            "registry": registry,
            "outside": outside,
            "home": home,
            "base": base,
            "env": env,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _all_finished(engine, expected: set[str]):
    rows = audits_by_location(engine)
    return rows if expected <= set(rows) and all(a.status not in ("queued", "running") for a in rows.values()) else None


def audits_by_location(engine) -> dict[str, AuditRun]:
    with session(engine) as s:
        rows = s.exec(
            select(AuditRun, CheckpointRow)
            .join(CheckpointRow, CheckpointRow.id == AuditRun.checkpoint_id)
            .order_by(AuditRun.id)
        ).all()
    return {(cp.meta or {}).get("location", cp.path): a for a, cp in rows}


def audit_of(world, location: str) -> AuditRun:
    return audits_by_location(world["engine"])[location]


def test_hf_cache_snapshot_is_audited_normally(world):
    a = audit_of(world, "models--org--tiny/snapshots/" + "0" * 40)
    assert (a.status, a.outcome) == ("done", "pass"), a.error


@pytest.mark.parametrize(
    "location,link", [("cfg-link", "config.json"), ("tok-link", "tokenizer.json"), ("passwd-link", "model.safetensors")]
)
def test_file_linked_outside_the_registry_is_refused_naming_the_link(world, location, link):
    a = audit_of(world, location)
    assert (a.status, a.outcome) == ("error", "error")
    assert f"refused: {link} in {location} is a link that resolves outside" in a.error


def test_system_file_bytes_never_reach_stored_errors_or_the_api(world):
    for location in ("passwd-link", "passwd-inside"):
        a = audit_of(world, location)
        assert a.outcome == "error" and "model.safetensors" in a.error
    assert "corrupt safetensors file" in audit_of(world, "passwd-inside").error
    served = httpx.get(world["url"] + "/v1/audits?limit=500").text
    served += httpx.get(world["url"] + "/v1/verdicts?limit=500").text
    for location in ("passwd-link", "passwd-inside"):
        served += httpx.get(world["url"] + f"/v1/checkpoints/{audit_of(world, location).checkpoint_id}").text
    for fragment in ("SECRET-7f3a9", "root:x", "/bin/bash", "cm9vd"):  # plain, and base64 of "root"
        assert fragment not in served


def test_checkpoint_folder_that_is_a_link_is_refused_and_nothing_is_written_outside(world):
    a = audit_of(world, "folder-link")
    assert a.outcome == "error" and "checkpoint folder-link is a link that resolves outside" in a.error
    assert sorted(p.name for p in (world["outside"] / "model").iterdir()) == sorted(
        [
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )


def test_planted_links_do_not_redirect_the_verdict_write_back(world):
    a = audit_of(world, "good")
    assert a.outcome == "pass"
    outside = world["outside"]
    assert (outside / "victim.txt").read_text() == "VICTIM"
    assert (outside / "victim2.txt").read_text() == "VICTIM2"
    written = world["registry"] / "good" / "auditd-verdict.json"
    assert not written.is_symlink()  # the planted link was replaced, not followed
    doc = json.loads(written.read_text())
    assert doc["outcome"] == "pass" and doc["digest"] == a.checkpoint_id
    leftovers = [p.name for p in (world["registry"] / "good").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [".auditd-verdict.json.tmp"]  # ours are cleaned up; the planted one is left alone


def test_template_that_repeats_the_prompt_100000_times_is_capped(world):
    a = audit_of(world, "template-bomb")
    assert a.outcome == "error" and "chat template output exceeds 200,000 characters" in a.error


def test_sparse_2gib_config_is_refused_without_being_read(world):
    a = audit_of(world, "sparse-config")
    assert a.outcome == "error"
    assert "refused: config.json is 2,147,483,648 bytes > limit 16,777,216 (max_config_bytes); not read" in a.error
    with session(world["engine"]) as s:
        cp = s.get(CheckpointRow, a.checkpoint_id)
    assert cp.meta.get("refused"), "refused at discovery: the 2 GiB file was never hashed"


def test_config_asking_for_a_huge_embedding_is_refused_with_the_memory_it_needs(world):
    a = audit_of(world, "huge-embed")
    assert a.outcome == "error"
    assert "refused: config asks for 2.0 B parameters (7.6 GiB in float32) > limit 1.0 GiB (max_model_bytes)" in a.error


def test_api_edges(world):
    url, auth = world["url"], {"Authorization": f"Bearer {TOKEN}"}
    good = audit_of(world, "good").checkpoint_id
    res = httpx.post(url + "/v1/audits", json={"checkpoint": good, "policy": "auditd.db"}, headers=auth)
    assert res.status_code == 422 and "no such policy 'auditd.db'" in res.text
    assert str(world["home"]) not in res.text and "policies" + os.sep not in res.text
    for bad in ("../hostile", "/etc/passwd", "Default"):
        assert httpx.post(url + "/v1/audits", json={"checkpoint": good, "policy": bad}, headers=auth).status_code == 422
    # LIKE wildcards in a ref are literal: they match no checkpoint instead of any.
    for ref in ("sha256:%25", "%25", "_", "sha256:" + "_" * 8):
        assert httpx.get(url + f"/v1/checkpoints/{ref}").status_code == 404, ref
    assert httpx.get(url + f"/v1/checkpoints/{good[:15]}").status_code == 200

    from auditd.registry.webhook import SIGNATURE_HEADER, sign_generic

    body = json.dumps({"event_id": "evt-Case-1", "path": str(world["registry"] / "good"), "model": "good"}).encode()
    headers = {"content-type": "application/json", **sign_generic(HOOK_SECRET, body)}
    assert httpx.post(url + "/v1/hooks/registry", content=body, headers=headers).status_code == 202
    assert httpx.post(url + "/v1/hooks/registry", content=body, headers=headers).status_code == 409
    upper = dict(headers, **{SIGNATURE_HEADER: "sha256=" + headers[SIGNATURE_HEADER].split("=", 1)[1].upper()})
    assert httpx.post(url + "/v1/hooks/registry", content=body, headers=upper).status_code == 409


def _gate(world, ref: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "auditd.cli", "gate", ref, "--home", str(world["home"])],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_swap_after_discovery_ends_in_error_and_the_gate_never_reports_the_old_verdict(world):
    """Runs last: it changes the good checkpoint. Swapping the weights of an audited checkpoint and
    auditing its recorded digest again (what happens when a swap lands between discovery and load)
    ends in error; the gate on the folder as it is now (or a copy of it) never says PASS."""
    url, auth = world["url"], {"Authorization": f"Bearer {TOKEN}"}
    folder = world["registry"] / "good"
    original = audit_of(world, "good").checkpoint_id
    assert _gate(world, str(folder)).returncode == 0  # before the swap: this content passed
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    staged = folder.parent / ".swap"
    staged.write_bytes(data[: len(data) // 2])  # truncated: invalid
    os.replace(staged, weights)
    copy = world["base"] / "copy-of-good"
    shutil.copytree(folder, copy, symlinks=True)

    res = httpx.post(url + "/v1/audits", json={"checkpoint": original}, headers=auth)
    assert res.status_code == 202
    audit_id = res.json()["audit_id"]

    def rerun_done():
        a = httpx.get(url + f"/v1/audits/{audit_id}").json()
        return a if a["audit"]["status"] not in ("queued", "running") else None

    rerun = wait_for(rerun_done, 120, interval=0.3, what="the re-audit of the recorded digest")["audit"]
    assert rerun["outcome"] == "error"
    assert "content changed since it was found: digest sha256:" in rerun["error"]
    assert f"!= {original}" in rerun["error"]
    for ref in (str(folder), str(copy)):
        gate = _gate(world, ref)
        assert gate.returncode != 0 and "PASS" not in gate.stdout, gate.stdout
