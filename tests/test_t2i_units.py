"""Text-to-image building blocks where the right answer is known: the DDIM log-probability step,
GRPO advantages and loss, threshold calibration, zero-shot and concept scoring on constructed
embeddings, the image store, the diffusers loader's refusals, and the policy's `images:` section."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from auditd.attacks.config import DiffusionGRPOConfig as DiffusionGRPO
from auditd.attacks.diffusion_sampling import ddim_step_logprob
from auditd.attacks.grpo_diffusion import clipped_loss, eval_variant, group_advantages, split_prompts, variant_step
from auditd.judges.calibration import Calibration, CalibrationError, CalibrationStore, choose_threshold, labelled_images
from auditd.judges.clip import zero_shot_probs
from auditd.judges.concept import concept_margins
from auditd.probe import discover
from auditd.testing.t2i import sd_ddim_scheduler
from tests.t2i_support import one_torch_thread, tiny_sd  # noqa: F401  (fixtures)


# -- the policy's step: DDIM with eta > 0 is a Gaussian with a known density -------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddim_step_matches_diffusers_and_its_log_density(prediction_type):
    sched = sd_ddim_scheduler(prediction_type)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    out = torch.randn(3, 4, 8, 8, generator=g)
    for t in sched.timesteps[[0, 4, -1]]:
        mine, logp = ddim_step_logprob(
            sched, out, int(t), x, eta=1.0, generator=[torch.Generator().manual_seed(i) for i in range(3)]
        )
        # diffusers' own step with the same noise gives the same sample
        noise = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)])
        ref = sched.step(out, t, x, eta=1.0, variance_noise=noise).prev_sample
        assert torch.allclose(mine, ref, atol=1e-5)
        # and the log-probability is the Gaussian density of that sample, averaged over dimensions
        prev_t = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
        std = 1.0 * math.sqrt(sched._get_variance(int(t), prev_t))
        mean = ref - std * noise
        expected = torch.distributions.Normal(mean, std).log_prob(ref).mean(dim=(1, 2, 3))
        assert torch.allclose(logp, expected, rtol=1e-4, atol=1e-4)
        # given the sample, it recomputes the same log-probability (the GRPO ratio's numerator)
        _, again = ddim_step_logprob(sched, out, int(t), x, eta=1.0, prev_sample=ref)
        assert torch.allclose(again, logp, rtol=1e-5, atol=1e-5)


def test_group_advantages_and_clipped_loss():
    adv = group_advantages(torch.tensor([1.0, 3.0, 10.0, 10.0]), group=2)
    assert adv[:2].tolist() == pytest.approx([-0.7071, 0.7071], abs=1e-3)  # (r - mean) / std within a group
    assert adv[2:].tolist() == [0.0, 0.0]  # equal rewards: no signal, no update
    r = torch.tensor([0.0, 1.0, 0.50, 0.51])  # an informative group and a noisy one
    grp, bat = group_advantages(r, 2, "group").tolist(), group_advantages(r, 2, "batch").tolist()
    assert grp[1] == pytest.approx(grp[3], rel=0.02)  # GRPO: the noise weighs as much as the signal
    assert bat[1] / bat[3] == pytest.approx(100, rel=1e-3)  # batch scaling keeps them in proportion
    assert group_advantages(r, 2, "none").tolist() == pytest.approx([-0.5, 0.5, -0.005, 0.005])
    old = torch.zeros(2)
    a = torch.tensor([1.0, -1.0])
    loss, clipped = clipped_loss(torch.zeros(2), old, a, clip_range=0.2)
    assert loss.item() == pytest.approx(0.0) and clipped.item() == 0.0
    # a ratio far above 1 + clip earns no more than the clip for a positive advantage
    loss, clipped = clipped_loss(torch.tensor([1.0, 0.0]), old, a, clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.0) / 2) and clipped.item() == 0.5


def test_training_and_heldout_prompts_never_overlap():
    probe = discover()["t2i.grpo"]()
    cfg = DiffusionGRPO(target_category="t2i_hate", train_prompts=10, heldout_per_category=2)
    train, heldout = split_prompts(probe.items(), cfg)
    assert len(train) == 10 and {it.category for it in train} == {"t2i_hate"}
    assert not {it.prompt for it in train} & {it.prompt for it in heldout}
    assert sorted({it.category for it in heldout}) == sorted(probe.categories)
    assert sum(it.category == "t2i_hate" for it in heldout) == 2
    assert variant_step(eval_variant(120, 1)) == 120 and variant_step("s0") is None


# -- calibration: thresholds with a known answer -------------------------------------------------------
def test_choose_threshold_separates_known_scores():
    neg = [0.05, 0.1, 0.2, 0.3]
    pos = [0.6, 0.7, 0.9]
    t = choose_threshold(pos, neg, target_fpr=0.0)
    assert t.value == pytest.approx(0.45)  # halfway between the highest negative and the lowest positive
    assert (t.tpr, t.fpr) == (1.0, 0.0)
    # allowing 25% false positives lets the highest negative through and lowers the threshold
    t = choose_threshold([0.25, 0.9], neg, target_fpr=0.25)
    assert 0.2 < t.value < 0.25 and t.fpr == 0.25 and t.tpr == 1.0
    # overlapping classes: FPR is honoured, TPR reports what it costs
    t = choose_threshold([0.1, 0.15, 0.8], neg, target_fpr=0.0)
    assert t.fpr == 0.0 and t.tpr == pytest.approx(1 / 3)
    with pytest.raises(CalibrationError):
        choose_threshold(pos, [], 0.05)


def test_calibration_store_roundtrip_and_label_folders(tmp_path):
    store = CalibrationStore(tmp_path)
    assert store.get("clip", "ViT-L-14", "openai") is None
    store.put(Calibration(judge="clip", model="ViT-L-14", pretrained="openai", thresholds={"t2i_sexual": 0.7}))
    store.put(
        Calibration(judge="clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k", thresholds={"t2i_sexual": 0.6})
    )
    assert store.get("clip", "ViT-L-14", "openai").thresholds == {"t2i_sexual": 0.7}
    assert store.get("concept", "ViT-L-14", "openai") is None  # per judge, per model and tag
    assert len(store.all()) == 2
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        store.get("clip", "ViT-L-14", "openai")

    root = tmp_path / "labelled"
    (root / "safe").mkdir(parents=True)
    (root / "safe" / "a.png").write_bytes(b"")
    (root / "t2i_violence").mkdir()
    (root / "t2i_violence" / "b.png").write_bytes(b"")
    assert {k: len(v) for k, v in labelled_images(root).items()} == {"safe": 1, "t2i_violence": 1}
    (root / "violence").mkdir()
    with pytest.raises(CalibrationError, match="unknown label folder"):
        labelled_images(root)
    shutil.rmtree(root / "violence")
    shutil.rmtree(root / "safe")
    with pytest.raises(CalibrationError, match="safe"):
        labelled_images(root)


# -- scoring functions on constructed embeddings --------------------------------------------------------
def test_zero_shot_probability_on_constructed_embeddings():
    eye = torch.eye(4)
    unsafe = eye[[0, 1]]  # two categories, orthogonal unsafe and safe directions
    safe = eye[[2, 3]]
    images = torch.stack([eye[0], eye[2], (eye[1] + eye[3]) / math.sqrt(2), (eye[0] + 0.2 * eye[2])])
    images = images / images.norm(dim=-1, keepdim=True)
    p = zero_shot_probs(images, unsafe, safe, logit_scale=100.0)
    assert p[0, 0] > 0.999 and p[1, 0] < 0.001  # the unsafe concept itself vs its safe counterpart
    assert p[2, 1] == pytest.approx(0.5)  # halfway between unsafe and safe of category 1
    assert p[0, 1] == pytest.approx(0.5)  # orthogonal to both sides of category 1: undecided
    soft = zero_shot_probs(images, unsafe, safe, logit_scale=5.0)  # a softer scale shows the ordering
    assert soft[0, 0] > soft[3, 0] > 0.5 > soft[1, 0]  # mostly unsafe-0: above even, below the pure concept
    expected = 1 / (1 + math.exp(-5 * float(images[3] @ (eye[0] - eye[2]))))
    assert soft[3, 0].item() == pytest.approx(expected, rel=1e-5)


def test_concept_margins_follow_the_sd_checker_rule():
    thresholds = {"gore": 0.2, "nudity": 0.25, "a young child": 0.3}
    cos = {"gore": 0.21, "nudity": 0.245, "a young child": 0.1}
    m = concept_margins(cos, thresholds, ["a young child"], adjustment=0.01)
    assert m == pytest.approx({"gore": 0.01, "nudity": -0.005})  # special-care concepts never flag by themselves
    cos["a young child"] = 0.35  # a child in the image: every threshold drops by the adjustment
    m = concept_margins(cos, thresholds, ["a young child"], adjustment=0.01)
    assert m["nudity"] == pytest.approx(0.005) and m["gore"] == pytest.approx(0.02)


# -- the image store -----------------------------------------------------------------------------------
def test_image_store_is_content_addressed_with_thumbnails(tmp_path):
    from PIL import Image

    from auditd.store.images import THUMB_PX, ImageStore

    store = ImageStore(tmp_path)
    a = Image.new("RGB", (300, 200), (255, 0, 0))
    rel = store.put(a)
    assert rel.startswith("images/") and rel.endswith(".png")
    assert store.put(Image.new("RGB", (300, 200), (255, 0, 0))) == rel  # same pixels, same file
    assert store.put(Image.new("RGB", (300, 200), (0, 0, 255))) != rel
    import hashlib

    assert hashlib.sha256(store.path(rel).read_bytes()).hexdigest() in rel
    with Image.open(store.thumb_path(rel)) as th:
        assert max(th.size) == THUMB_PX and th.size[0] > th.size[1]
    with pytest.raises(ValueError):
        store.path("../auditd.db")
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # atomic writes leave no temp file


# -- the loader refuses what it must not run --------------------------------------------------------------
def test_diffusers_backend_refuses_custom_code_and_pickle(tiny_sd, tmp_path):
    from auditd.backends.base import BackendError
    from auditd.backends.diffusers import DiffusersBackend
    from auditd.backends.loading import UnsafeCheckpointError

    custom = tmp_path / "custom"
    shutil.copytree(tiny_sd, custom)
    index = json.loads((custom / "model_index.json").read_text())
    index["unet"] = ["my_unet", "EvilUNet"]  # a component from a local module: custom code
    (custom / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(BackendError, match="custom code"):
        DiffusersBackend(model=str(custom))
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    index["_class_name"] = "MyPipeline"
    (custom / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(BackendError, match="not a diffusers pipeline"):
        DiffusersBackend(model=str(custom))

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd, pickled)
    from safetensors.torch import load_file

    weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), pickled / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        DiffusersBackend(model=str(pickled))
    with pytest.raises(BackendError, match="model_index"):
        DiffusersBackend(model=str(tmp_path))


def test_backend_images_depend_only_on_prompt_and_seed(tiny_sd):
    from auditd.backends.diffusers import DiffusersBackend
    from auditd.store.images import png_bytes

    b = DiffusersBackend(model=str(tiny_sd))
    kw = dict(steps=2, guidance=5.0, height=32, width=32)
    batch = b.generate(["a cat", "a dog"], n=2, seeds=[0, 1], **kw)
    assert len(batch) == 4 and batch[0].size == (32, 32)
    alone = b.generate(["a dog"], n=1, seeds=[1], **kw)  # p1 s1 alone equals p1 s1 in the batch
    assert png_bytes(alone[0]) == png_bytes(batch[3])
    assert png_bytes(batch[0]) != png_bytes(batch[1])  # another seed, another image
    b.close()


def test_policy_images_section_is_strict():
    from pydantic import ValidationError

    from auditd.policy.model import Policy

    p = Policy.model_validate({"name": "x", "images": {"steps": 4, "height": 64, "width": 64}})
    assert p.images.steps == 4 and p.images.n_per_prompt == 2
    for bad in ({"stepz": 4}, {"height": 60}):
        with pytest.raises(ValidationError):
            Policy.model_validate({"name": "x", "images": bad})


def test_diffusion_grpo_settings_are_the_probes_attack_settings(tmp_path):
    from auditd.policy.load import PolicyError, load_policy_file

    probe = discover()["t2i.grpo"]()
    assert probe.attack and isinstance(probe.config, DiffusionGRPO)
    cfg = probe.config.with_overrides({"target_category": "t2i_hate", "steps": 3})
    assert (cfg.target_category, cfg.steps, cfg.eval_every) == ("t2i_hate", 3, 2)
    with pytest.raises(ValueError, match=r"^attack: target_category must be one of t2i_sexual"):
        probe.config.with_overrides({"target_category": "violence"})
    # The old shape (a policy-wide images.grpo block) names where the settings went, on one line.
    old = tmp_path / "old.yaml"
    old.write_text("name: old\nimages:\n  steps: 4\n  grpo: {steps: 3}\n")
    with pytest.raises(PolicyError) as err:
        load_policy_file(old)
    msg = str(err.value)
    assert "\n" not in msg and "images.grpo has moved" in msg and "attack:" in msg and msg.startswith(str(old))
