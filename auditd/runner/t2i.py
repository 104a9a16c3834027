"""Running one text-to-image probe: prompts -> images on disk -> CLIP judges -> stored samples.

Called by `AuditRunner._run_probe` for probes with modality "t2i". Every (prompt, seed) pair is
one sample keyed (audit, probe, item, variant "s<j>"), so N images per prompt are N samples and a
resumed audit regenerates only the pairs it has not stored. Images go to the content-addressed
store (`auditd.store.images`); samples keep the path relative to the auditd home. With
`keep_outputs: false` the images are judged from a private temporary folder and deleted.
The diffusion GRPO probe is an attack probe: the runner hands it to `auditd.attacks.run`.
It uses only the runner's probe interface (`auditd.runner.session.ProbeSession`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import Any, cast

from sqlmodel import select

from auditd.backends.base import ImageBackend
from auditd.judges.base import JudgeInput
from auditd.judges.calibration import CalibrationStore
from auditd.judges.image_base import prepare_image_judges
from auditd.probe import ProbeItem
from auditd.runner.errors import AuditFailed
from auditd.runner.items import select_items
from auditd.runner.session import ProbeSession
from auditd.store.db import session
from auditd.store.images import open_image_store
from auditd.store.models import ProbeRun

log = logging.getLogger(__name__)


def merge_summary(probe_session: ProbeSession, probe_id: str, extra: dict) -> dict:
    with session(probe_session.engine) as s:
        run = s.exec(
            select(ProbeRun).where(ProbeRun.audit_id == probe_session.audit_id, ProbeRun.probe_id == probe_id)
        ).one()
        run.summary = {**(run.summary or {}), **extra}
        s.add(run)
        s.commit()
        return run.summary


def run_image_probe(
    probe_session: ProbeSession, policy, plan, probe, load_backend: Callable[[], object], judges: dict
) -> dict:
    backend = load_backend()
    if not isinstance(backend, ImageBackend):
        raise AuditFailed(f"probe {plan.id}: the t2i backend must be an image backend (backend:diffusers)")
    cfg = policy.images
    judge_ids = plan.judges or list(probe.judges)
    settings = probe_session.settings
    calibration = prepare_image_judges(judges, judge_ids, settings.device, CalibrationStore(settings.home))
    items = select_items(probe, plan)
    pairs = [
        ProbeItem(it.index, it.category, it.prompt, variant=f"s{j}", system=None)
        for it in items
        for j in range(cfg.n_per_prompt)
    ]
    opened = probe_session.open_probe_run(plan.id, len(pairs))
    if opened.finished:
        return cast(dict[str, Any], opened.summary)  # a done run always has its summary (close_probe)
    todo = [p for p in pairs if (p.index, p.variant) not in opened.stored]
    n_done = len(pairs) - len(todo)
    probe_session.progress(plan.id, n_done, len(pairs))
    store = open_image_store(settings.home, policy.keep_outputs)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            probe_session.gate()
            batch = todo[start : start + cfg.batch_size]
            seeds = [cfg.seed + int(p.variant[1:]) for p in batch]
            t0 = time.monotonic()
            images = backend.generate(
                [p.prompt for p in batch],
                n=1,
                seeds=seeds,
                steps=cfg.steps,
                guidance=cfg.guidance,
                height=cfg.height,
                width=cfg.width,
                negative_prompt=cfg.negative_prompt,
            )
            if len(images) != len(batch):
                raise AuditFailed(f"backend returned {len(images)} images for {len(batch)} prompts")
            rels = [store.put(im) for im in images]
            t1 = time.monotonic()
            inputs = [JudgeInput(p.prompt, str(store.path(rel)), p.category) for p, rel in zip(batch, rels)]
            scores = {j: judges[j].score(inputs) for j in judge_ids}
            t2 = time.monotonic()
            probe_session.store_batch(policy, plan.id, probe.expect, judge_ids, batch, rels, scores, t1 - t0, t2 - t1)
            n_done += len(batch)
            probe_session.progress(plan.id, n_done, len(pairs))
    finally:
        if not policy.keep_outputs:
            shutil.rmtree(store.home, ignore_errors=True)
    probe_session.close_probe(probe, plan.id)
    sampling = {k: getattr(cfg, k) for k in ("n_per_prompt", "seed", "steps", "guidance", "height", "width")}
    return merge_summary(probe_session, plan.id, {"calibration": calibration, "images": sampling})
