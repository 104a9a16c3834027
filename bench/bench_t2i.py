"""Text-to-image speed: static-probe images/s and diffusion GRPO steps/s on this machine.

    python bench/bench_t2i.py                 # the tiny pipeline, on the CPU (and the GPU when present)
    python bench/bench_t2i.py --threads 2     # torch intra-op threads (default 1; see docs/t2i.md)
    python bench/bench_t2i.py --grpo-steps 6  # fewer/more attack steps to time

Static probes: a real audit through `auditd.runner` (SQLite via open_db, queue, claim, the t2i
runner, image store, CLIP judge, verdict) of the tiny random SD pipeline (auditd.testing.t2i) with
probe `t2i.unsafe`, 2 prompts per category x 2 seeds = 28 images, at 32x32 with 4 and with 25
denoising steps. images/s counts whole-audit wall time; the AuditRun row splits it into
generation (backend:diffusers), judging (judge:clip on a tiny random open_clip) and the rest
(image store, database, verdict: auditd's own overhead). Pipeline loading is outside.
Diffusion GRPO: `t2i.grpo` through the same runner (the x0-prediction tiny pipeline and the colour
CLIP of the tests); steps/s is over the training steps only
(sample G images per prompt with log-probabilities, CLIP reward, recompute and update the LoRA),
an evaluation point's seconds are reported apart. Nothing is downloaded; nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
import warnings
from pathlib import Path

STATIC_POLICY = """
name: bench-t2i
probes:
  t2i:
    - id: t2i.unsafe
      limit_per_category: 2
judge_options:
  clip: {{model: "local-dir:{clip}", pretrained: null}}
t2i_backend: {{id: "backend:diffusers", options: {{device: {device}}}}}
images: {{n_per_prompt: 2, steps: {steps}, guidance: 5.0, height: 32, width: 32, batch_size: {batch}}}
"""

GRPO_POLICY = """
name: bench-grpo
probes:
  t2i:
    - id: t2i.grpo
judge_options:
  clip: {{model: "local-dir:{clip}", pretrained: null}}
t2i_backend: {{id: "backend:diffusers", options: {{device: {device}}}}}
images:
  height: {hw}
  width: {hw}
  batch_size: 32
  grpo: {{steps: {steps}, sample_steps: 4, num_generations: {g}, prompts_per_step: {pps}, minibatches: 1,
          eval_every: 1000, heldout_per_category: 1, learning_rate: 0.01, target_modules: [{targets}]}}
"""


def run(home: Path, policy_text: str, pipeline: Path, device: str):
    from sqlmodel import select

    from auditd.registry.checkpoint import Checkpoint
    from auditd.registry.digest import content_digest
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.scheduler import intake, queue
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun, ProbeRun, Sample

    home.mkdir(parents=True, exist_ok=True)
    policy = home / "policy.yaml"
    policy.write_text(policy_text)
    settings = Settings(home=home, policy=str(policy), device=device)
    engine = open_db(settings.database_url)
    digest = content_digest(pipeline)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id=digest, model="bench", kind="t2i", path=str(pipeline), source="bench"))
        s.commit()
    audit, _ = queue.enqueue(engine, digest, request_key=f"bench:{uuid.uuid4()}", policy=str(policy), device=device)
    queue.claim(engine, audit.id, queue.worker_id())
    t0 = time.monotonic()
    run_audit(AuditContext(engine, settings), audit.id)
    wall = time.monotonic() - t0
    with session(engine) as s:
        a = s.get(AuditRun, audit.id)
        n = len(s.exec(select(Sample.id).where(Sample.audit_id == audit.id)).all())
        summaries = {p.probe_id: p.summary for p in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id))}
    return a, n, wall, summaries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grpo-steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="images per pipeline call in the static probe")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from auditd.testing.t2i import make_color_clip, make_tiny_clip, make_tiny_sd

    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    root = Path(tempfile.mkdtemp(prefix="auditd-bench-t2i-"))
    sd = make_tiny_sd(root / "sd")
    sd_x0 = make_tiny_sd(root / "sd-x0", prediction_type="sample", norm_num_groups=1)
    clip = make_tiny_clip(root / "clip")
    color = make_color_clip(root / "color-clip")
    print(f"torch {torch.__version__}, {args.threads} thread(s), devices: {', '.join(devices)}")
    print("\nstatic probe t2i.unsafe (28 images of 32x32, tiny SD + tiny CLIP, whole audit):")
    print(
        f"{'device':>6} {'steps':>5} {'images':>6} {'wall s':>7} {'images/s':>8} {'generate':>8} {'judge':>6} "
        f"{'other':>6}"
    )
    for device in devices:
        for steps in (4, 25):
            a, n, wall, _ = run(
                root / f"static-{device}-{steps}",
                STATIC_POLICY.format(clip=clip, steps=steps, batch=args.batch, device=device),
                sd,
                device,
            )
            other = (a.duration_s or wall) - a.generate_s - a.judge_s
            print(
                f"{device:>6} {steps:>5} {n:>6} {wall:>7.2f} {n / wall:>8.2f} {a.generate_s:>7.2f}s "
                f"{a.judge_s:>5.2f}s {other:>5.2f}s"
            )
    print(
        f"\ndiffusion GRPO t2i.grpo ({args.grpo_steps} steps, prompts x G images per step, 4 denoising steps, "
        "all trained; evaluation at step 0 and the end):"
    )
    print(
        f"{'device':>6} {'size':>5} {'prompts':>7} {'G':>3} {'LoRA on':>9} {'train s':>8} {'steps/s':>8} "
        f"{'images/s':>8} {'eval point s':>12}"
    )
    # The tests' setting (8x8, 4 x 32 images, LoRA on conv_out) and the default LoRA on attention at 32x32.
    for device in devices:
        for hw, pps, g, targets in ((8, 4, 32, "conv_out"), (32, 2, 8, "to_q, to_k, to_v, to_out.0")):
            a, n, wall, sm = run(
                root / f"grpo-{device}-{hw}",
                GRPO_POLICY.format(
                    clip=color, device=device, hw=hw, g=g, pps=pps, targets=targets, steps=args.grpo_steps
                ),
                sd_x0,
                device,
            )
            s = sm.get("t2i.grpo") or {}
            # wall_s of the attack minus its two evaluation points ~ training time; an evaluation
            # point's cost is its share of generate_s + judge_s (17 images of 10+7 prompts).
            eval_s = (a.generate_s + a.judge_s) / 2
            train_s = max(1e-9, (s.get("wall_s") or wall) - 2 * eval_s)
            imgs = args.grpo_steps * pps * g
            where = "conv_out" if targets == "conv_out" else "attention"
            print(
                f"{device:>6} {hw:>3}px {pps:>7} {g:>3} {where:>9} {train_s:>8.2f} {args.grpo_steps / train_s:>8.3f} "
                f"{imgs / train_s:>8.1f} {eval_s:>12.2f}"
            )


if __name__ == "__main__":
    main()
