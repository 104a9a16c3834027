"""Running one text-to-image probe: prompts -> images on disk -> CLIP judges -> stored samples.

Called by `AuditRunner._run_probe` for probes with modality "t2i". Every (prompt, seed) pair is
one sample keyed (audit, probe, item, variant "s<j>"), so N images per prompt are N samples and a
resumed audit regenerates only the pairs it has not stored. Images go to the content-addressed
store (`auditd.store.images`); samples keep the path relative to the auditd home. With
`keep_outputs: false` the images are judged from a private temporary folder and deleted.
The diffusion GRPO probe (class attribute `grpo = True`) branches to `auditd.attacks.grpo_diffusion`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from sqlmodel import select

from auditd.judges.base import JudgeInput
from auditd.judges.calibration import CalibrationStore
from auditd.probe import ProbeItem
from auditd.store.db import session
from auditd.store.models import ProbeRun, Sample

log = logging.getLogger(__name__)


def image_judges(runner, judges: dict, judge_ids: list[str]) -> list[dict]:
    """Check the judges can read images, give them the device and calibration; their threshold info."""
    from auditd.runner.audit import AuditFailed

    store = CalibrationStore(runner.ctx.settings.home)
    infos = []
    for j in judge_ids:
        judge = judges[j]
        if getattr(judge, "modality", "text") != "image":
            raise AuditFailed(f"judge {j!r} cannot judge images; use an image judge (clip, concept)")
        try:
            judge.prepare(device=runner.ctx.settings.device, calibration_store=store)
        except Exception as exc:  # uncalibrated with require_calibration, unreadable store: fail closed
            raise AuditFailed(str(exc)) from None
        infos.append(judge.calibration_info())
    return infos


def open_probe_run(runner, probe_id: str, n_items: int) -> tuple[dict | None, set]:
    """(summary if the probe already finished, else None; the (item, variant) keys already stored)."""
    with session(runner.ctx.engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == runner.audit_id, ProbeRun.probe_id == probe_id)).first()
        if run is not None and run.status == "done":
            return run.summary, set()
        if run is None:
            s.add(ProbeRun(audit_id=runner.audit_id, probe_id=probe_id, n_items=n_items))
            s.commit()
        done = set(s.exec(select(Sample.item_index, Sample.variant).where(
            Sample.audit_id == runner.audit_id, Sample.probe_id == probe_id)).all())
    return None, done


def merge_summary(runner, probe_id: str, extra: dict) -> dict:
    with session(runner.ctx.engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == runner.audit_id, ProbeRun.probe_id == probe_id)).one()
        run.summary = {**(run.summary or {}), **extra}
        s.add(run)
        s.commit()
        return run.summary


def run_image_probe(runner, policy, plan, probe, backend, judges: dict) -> dict:
    if getattr(probe, "grpo", False):
        from auditd.attacks.grpo_diffusion import run_diffusion_grpo

        return run_diffusion_grpo(runner, policy, plan, probe, backend, judges)
    from auditd.runner.audit import AuditFailed, select_items

    if getattr(backend, "modality", None) != "image":
        raise AuditFailed(f"probe {plan.id}: the t2i backend must be an image backend (backend:diffusers)")
    cfg = policy.images
    judge_ids = plan.judges or list(probe.judges)
    calibration = image_judges(runner, judges, judge_ids)
    items = select_items(probe, plan)
    pairs = [ProbeItem(it.index, it.category, it.prompt, variant=f"s{j}", system=None)
             for it in items for j in range(cfg.n_per_prompt)]
    finished, done = open_probe_run(runner, plan.id, len(pairs))
    if finished is not None:
        return finished
    todo = [p for p in pairs if (p.index, p.variant) not in done]
    n_done = len(pairs) - len(todo)
    runner._progress(plan.id, n_done, len(pairs))
    store = _image_store(runner, policy)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            runner._checkpoint_gate()
            batch = todo[start:start + cfg.batch_size]
            seeds = [cfg.seed + int(p.variant[1:]) for p in batch]
            t0 = time.monotonic()
            images = backend.generate([p.prompt for p in batch], n=1, seeds=seeds, steps=cfg.steps,
                                      guidance=cfg.guidance, height=cfg.height, width=cfg.width,
                                      negative_prompt=cfg.negative_prompt)
            if len(images) != len(batch):
                raise AuditFailed(f"backend returned {len(images)} images for {len(batch)} prompts")
            rels = [store.put(im) for im in images]
            t1 = time.monotonic()
            inputs = [JudgeInput(p.prompt, str(store.path(rel)), p.category) for p, rel in zip(batch, rels)]
            scores = {j: judges[j].score(inputs) for j in judge_ids}
            t2 = time.monotonic()
            runner._store_batch(policy, plan.id, probe.expect, judge_ids, batch, rels, scores, t1 - t0, t2 - t1)
            n_done += len(batch)
            runner._progress(plan.id, n_done, len(pairs))
    finally:
        if not policy.keep_outputs:
            shutil.rmtree(store.home, ignore_errors=True)
    runner._close_probe(probe, plan.id)
    settings = {k: getattr(cfg, k) for k in ("n_per_prompt", "seed", "steps", "guidance", "height", "width")}
    return merge_summary(runner, plan.id, {"calibration": calibration, "images": settings})


def _image_store(runner, policy):
    from auditd.store.images import ImageStore

    home = Path(runner.ctx.settings.home)
    if policy.keep_outputs:
        return ImageStore(home)
    # Not kept: a private scratch home that is removed after judging.
    home.joinpath("work").mkdir(parents=True, exist_ok=True)
    return ImageStore(tempfile.mkdtemp(prefix="t2i-", dir=home / "work"))
