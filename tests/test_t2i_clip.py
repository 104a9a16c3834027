"""The CLIP image judges on real open_clip models built locally, where the right answer is known:
a CLIP whose vision tower was set by hand (unsafe-for-violence = red), and images optimised until a
random CLIP sees them as a chosen concept. Calibration must rank and threshold them correctly."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from auditd.judges.base import JudgeInput
from auditd.judges.calibration import CalibrationStore, calibrate
from auditd.judges.clip import ClipJudge
from auditd.judges.concept import ConceptJudge
from auditd.judges.image_base import UncalibratedError
from auditd.testing.t2i import CLIP_MEAN, CLIP_STD, redness
from tests.t2i_support import color_clip, one_torch_thread, tiny_clip  # noqa: F401  (fixtures)

RED = "t2i_violence"


def solid(rgb, size=32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def reddish(r: float) -> Image.Image:
    """A grey image shifted so that its redness is about `r`."""
    d = int(round(r * 255 * 2 / 3))
    return solid((128 + d, 128 - d // 2, 128 - d // 2))


def save(images, folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"{i}.png"
        im.save(p)
        paths.append(p)
    return paths


def test_color_clip_ranks_images_by_the_known_concept(color_clip, tmp_path):
    judge = ClipJudge(model=f"local-dir:{color_clip}", pretrained=None)
    shades = [-0.3, -0.1, -0.03, 0.03, 0.1, 0.3]
    images = [reddish(r) for r in shades]
    assert [round(redness(im), 2) for im in images] == pytest.approx(shades, abs=0.01)
    p = judge.unsafe_probs(images)[:, judge.categories.index(RED)].tolist()
    assert p == sorted(p) and p[0] < 0.2 and p[-1] > 0.8  # monotone in redness, as constructed
    # through files and score(): violence fires exactly for the red side at the default 0.5
    paths = save(images, tmp_path / "imgs")
    scores = judge.score([JudgeInput("a prompt", str(path), RED) for path in paths])
    assert [RED in s.categories for s in scores] == [r > 0 for r in shades]
    assert [s.score for s in scores] == pytest.approx(p, abs=1e-5)  # score = the item's own category
    assert all(json.loads(s.raw)[RED] == pytest.approx(s.score, abs=1e-4) for s in scores)


def test_calibration_thresholds_separate_known_images_and_are_used_from_the_store(color_clip, tiny_clip, tmp_path):
    labelled = tmp_path / "labelled"
    save([reddish(r) for r in (0.08, 0.12, 0.2, 0.3)], labelled / RED)
    save([reddish(r) for r in (-0.2, -0.1, -0.04, 0.0)] + [solid((40, 200, 60))], labelled / "safe")
    policy = tmp_path / "p.yaml"
    policy.write_text(f"name: cal\njudge_options:\n  clip: {{model: 'local-dir:{color_clip}', pretrained: null}}\n")
    home = tmp_path / "home"
    from auditd.cli import app

    res = CliRunner().invoke(
        app,
        [
            "calibrate",
            str(labelled),
            "--judge",
            "clip",
            "--policy",
            str(policy),
            "--home",
            str(home),
            "--target-fpr",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    cal = CalibrationStore(home).get("clip", f"local-dir:{color_clip}", None)
    assert cal is not None and cal.target_fpr == 0.0
    st = cal.stats[RED]
    assert st["tpr"] == 1.0 and st["fpr"] == 0.0 and (st["n_pos"], st["n_neg"]) == (4, 5)
    fresh = ClipJudge(model=f"local-dir:{color_clip}", pretrained=None)
    probs = fresh.unsafe_probs([reddish(0.0), reddish(0.08)])[:, fresh.categories.index(RED)]
    assert probs[0] < cal.thresholds[RED] < probs[1]  # between the highest safe and the lowest unsafe

    # A judge built fresh picks the calibration up for its model+tag and decides with it.
    judge = ClipJudge(model=f"local-dir:{color_clip}", pretrained=None)
    assert judge.calibration_info()["source"] == "default"
    judge.prepare(calibration_store=CalibrationStore(home))
    info = judge.calibration_info()
    assert info["source"] == "calibrated" and info["thresholds"][RED] == cal.thresholds[RED]
    test = save([reddish(0.015), reddish(0.25), reddish(-0.15)], tmp_path / "test")
    flags = [RED in s.categories for s in judge.score([JudgeInput("p", str(t), RED) for t in test])]
    assert flags == [False, True, False]  # 0.015 is red-ish but below the calibrated line (0.5 would flag it)
    # Another CLIP has no calibration: defaults, and fail-closed when calibration is required.
    other = ClipJudge(model=f"local-dir:{tiny_clip}", pretrained=None, require_calibration=True)
    with pytest.raises(UncalibratedError, match="requires a calibration"):
        other.prepare(calibration_store=CalibrationStore(home))
    # Thresholds set in the policy win over the stored calibration.
    pinned = ClipJudge(model=f"local-dir:{color_clip}", pretrained=None, thresholds={RED: 0.99})
    pinned.prepare(calibration_store=CalibrationStore(home))
    assert pinned.calibration_info()["source"] == "policy" and pinned.thresholds[RED] == 0.99


def optimise_towards(encoder, direction, steps: int = 150, seed: int = 0) -> Image.Image:
    """Pixels optimised until the CLIP image embedding points along `direction` (then quantised to PNG)."""
    model = encoder.load()
    g = torch.Generator().manual_seed(seed)
    logits = (0.1 * torch.randn(1, 3, 32, 32, generator=g)).requires_grad_(True)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(steps):
        emb = model.encode_image((torch.sigmoid(logits) - mean) / std)
        loss = -torch.nn.functional.cosine_similarity(emb, direction[None], dim=-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pixels = (torch.sigmoid(logits)[0].permute(1, 2, 0).detach().numpy() * 255).round().astype("uint8")
    return Image.fromarray(pixels)


def test_random_clip_judges_see_images_built_to_match_a_concept(tiny_clip, tmp_path):
    clip = ClipJudge(model=f"local-dir:{tiny_clip}", pretrained=None)
    unsafe, safe = clip.concept_embeddings()
    cats = clip.categories
    targets = ["t2i_sexual", "t2i_hate", "t2i_illegal_activity"]
    built = {}
    for c in targets:
        k = cats.index(c)
        built[c] = optimise_towards(clip.encoder, unsafe[k] - safe[k], seed=k)  # "unsafe-c, not safe-c"
    probs = clip.unsafe_probs(list(built.values()))
    for i, c in enumerate(targets):
        column = probs[:, cats.index(c)]  # thresholds are per category, so rank images within a category
        assert int(column.argmax()) == i and column[i] > 0.5  # the image built for c is the most c-like

    # The concept judge: images built to match the concept "gore" (rather than the other concepts)
    # are more gore-like than random images, and a calibration on such images flags held-out ones
    # of the same concept, not random ones. (Random text towers make concept texts ~0.95 similar,
    # so which concept is nearest in absolute terms means nothing; per-concept thresholds do.)
    concept = ConceptJudge(model=f"local-dir:{tiny_clip}", pretrained=None)
    emb = concept.encoder.encode_texts(concept.names)
    k = concept.names.index("gore")
    gore = emb[k] - torch.cat([emb[:k], emb[k + 1 :]]).mean(0)
    positives = [optimise_towards(concept.encoder, gore, steps=80, seed=s) for s in range(4)]
    g = torch.Generator().manual_seed(7)
    randoms = [Image.fromarray((torch.rand(32, 32, 3, generator=g).numpy() * 255).astype("uint8")) for _ in range(8)]
    _, pos_rows = concept.signals(positives)
    _, rand_rows = concept.signals(randoms)
    assert min(r[k] for r in pos_rows) > max(r[k] for r in rand_rows)
    cal = calibrate(concept, {"t2i_shocking": positives[:3], "safe": randoms[:6]}, target_fpr=0.0)
    assert cal.stats["gore"]["tpr"] == 1.0 and cal.stats["gore"]["fpr"] == 0.0
    assert set(cal.thresholds) == set(concept.defaults) - {"a young child", "a little girl", "a little boy"}
    store = CalibrationStore(tmp_path)
    store.put(cal)
    concept.prepare(calibration_store=store)
    held_out = save([positives[3], randoms[6], randoms[7]], tmp_path / "held")
    scores = concept.score([JudgeInput("p", str(p), "t2i_shocking") for p in held_out])
    assert "t2i_shocking" in scores[0].categories
    assert not any("t2i_shocking" in s.categories for s in scores[1:])


def test_unreadable_images_are_judge_errors_not_scores(color_clip, tmp_path):
    judge = ClipJudge(model=f"local-dir:{color_clip}", pretrained=None)
    good = save([reddish(0.2)], tmp_path / "ok")[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    scores = judge.score(
        [
            JudgeInput("p", str(good), RED),
            JudgeInput("p", str(broken), RED),
            JudgeInput("p", str(tmp_path / "missing.png"), RED),
        ]
    )
    assert scores[0].error is None and scores[0].harmful is True
    assert all(s.error and s.harmful is None and s.score is None for s in scores[1:])


def test_a_clip_that_cannot_load_fails_with_one_line(tmp_path):
    from auditd.judges.clip_model import ClipLoadError

    judge = ClipJudge(model=f"local-dir:{tmp_path}", pretrained=None)
    img = save([solid((0, 0, 0))], tmp_path / "x")[0]
    with pytest.raises(ClipLoadError, match="cannot load CLIP model") as exc:
        judge.score([JudgeInput("p", str(img), RED)])
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="unknown threshold"):
        ClipJudge(thresholds={"violence": 0.5})


def test_image_judges_are_plugins_and_import_nothing_heavy():
    import subprocess
    import sys

    from auditd import plugins

    assert plugins.resolve("judge:clip") is ClipJudge and plugins.resolve("judge:concept") is ConceptJudge
    code = (
        "import sys, auditd.judges.clip, auditd.judges.concept, auditd.judges.calibration, auditd.store.images, "
        "auditd.runner.t2i, auditd.report.html; heavy = [m for m in ('torch', 'open_clip', 'diffusers') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
