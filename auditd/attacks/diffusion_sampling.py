"""Stochastic DDIM sampling with a log-probability per denoising step (the policy of diffusion GRPO).

With eta > 0 a DDIM step is a Gaussian: x_{t-1} ~ N(mean(x_t, model output), std_t^2 I), where
    x0_hat, eps_hat = from the model output (epsilon, sample or v-prediction)
    std_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    mean  = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - std_t^2) * eps_hat
exactly as diffusers' DDIMScheduler.step computes it, so its log-density is known. GRPO samples
trajectories keeping every x_t and log-probability, then recomputes the log-probability of the
same transitions under the current LoRA to form the ratio (DDPO, Black et al. 2023; the same step
as Flow-GRPO / DanceGRPO use for DDPM-family models). Log-probabilities are averaged over latent
dimensions, as DDPO does, so one clip range fits every resolution.

Supported: UNet2DConditionModel pipelines conditioned on text embeddings only (SD 1.x / 2.x) with a
DDPM-family schedule (any scheduler config that has betas; sampling always uses DDIM on it).
Flow-matching models (SD3, FLUX) need an SDE conversion (Flow-GRPO) and SDXL needs its extra
conditioning; both are refused with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class UnsupportedPipeline(ValueError):
    pass


def ddim_scheduler_for(pipe) -> Any:
    """A DDIMScheduler on the pipeline's own noise schedule; refuses flow-matching models."""
    from diffusers import DDIMScheduler

    config = dict(pipe.scheduler.config)
    name = type(pipe.scheduler).__name__
    if "FlowMatch" in name or config.get("use_flow_sigmas") or "beta_start" not in config:
        raise UnsupportedPipeline(
            f"{name}: flow-matching models need Flow-GRPO's SDE sampler, which auditd does "
            "not implement yet; only DDPM-family (SD 1.x/2.x) pipelines are supported"
        )
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise UnsupportedPipeline(f"unknown prediction type {config.get('prediction_type')!r}")
    return DDIMScheduler.from_config(config)


def check_supported(pipe) -> None:
    unet = getattr(pipe, "unet", None)
    if unet is None or not hasattr(pipe, "encode_prompt"):
        raise UnsupportedPipeline(f"{type(pipe).__name__}: diffusion GRPO needs a UNet pipeline (SD 1.x/2.x)")
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise UnsupportedPipeline(f"{type(pipe).__name__}: UNets with extra conditioning (SDXL) are not supported yet")
    ddim_scheduler_for(pipe)


def ddim_step_logprob(scheduler, model_output, timestep: int, sample, eta: float, prev_sample=None, generator=None):
    """One DDIM step with eta > 0: (x_{t-1}, log p(x_{t-1} | x_t) per batch item).

    Samples x_{t-1} (drawing noise from `generator`, a list of per-item generators) unless
    `prev_sample` is given, in which case only its log-probability is computed (with gradients
    through the model output)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    prev_t = int(timestep) - step
    ac = scheduler.alphas_cumprod.to(sample.device, dtype=torch.float32)
    a_t = ac[int(timestep)]
    a_prev = ac[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod.to(sample.device, torch.float32)
    b_t = 1 - a_t
    out, x = model_output.float(), sample.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0, eps = (x - b_t.sqrt() * out) / a_t.sqrt(), out
    elif kind == "sample":
        x0 = out
        eps = (x - a_t.sqrt() * x0) / b_t.sqrt()
    elif kind == "v_prediction":
        x0 = a_t.sqrt() * x - b_t.sqrt() * out
        eps = a_t.sqrt() * out + b_t.sqrt() * x
    else:
        raise UnsupportedPipeline(f"unknown prediction type {kind!r}")
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = (eta * variance.clamp(min=0).sqrt()).clamp(min=1e-12)
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    if prev_sample is None:
        noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        prev_sample = mean + std * noise
    prev = prev_sample.detach().float()
    logp = -((prev - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return prev_sample.to(sample.dtype), logp.mean(dim=tuple(range(1, logp.ndim)))


def encode_prompts(pipe, prompts: list[str], negative_prompt: str | None = None):
    """(cond, uncond) text embeddings for classifier-free guidance."""
    import torch

    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(
            prompts, pipe.unet.device, 1, True, negative_prompt=[negative_prompt or ""] * len(prompts)
        )
    return cond, uncond


def guided_output(unet, latents, t, cond, uncond, guidance: float):
    import contextlib

    import torch

    # A half-precision UNet with a float32 LoRA runs under autocast, as diffusers' LoRA training does.
    half = latents.dtype in (torch.float16, torch.bfloat16)
    ctx = torch.autocast(latents.device.type, dtype=latents.dtype) if half else contextlib.nullcontext()
    with ctx:
        both = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    u, c = both.chunk(2)
    return u.float() + guidance * (c.float() - u.float())


@dataclass
class Trajectory:
    latents: list  # x_T ... x_0 (len steps + 1), each [B, C, h, w]
    log_probs: Any  # [steps, B] log p of each transition under the sampling policy
    timesteps: list[int]


def initial_noise(pipe, generators: list, height: int, width: int):
    """x_T for a batch: one standard-normal latent per generator."""
    from diffusers.utils.torch_utils import randn_tensor

    unet = pipe.unet
    shape = (len(generators), unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return randn_tensor(shape, generator=generators, device=unet.device, dtype=unet.dtype)


def sample_with_logprob(
    pipe,
    scheduler,
    cond,
    uncond,
    generators: list,
    steps: int,
    guidance: float,
    eta: float,
    height: int,
    width: int,
    init_latents=None,
) -> Trajectory:
    """Sample a batch (one generator per image) keeping latents and per-step log-probabilities.
    `init_latents` (x_T) is drawn from the generators unless given."""
    import torch

    unet = pipe.unet
    scheduler.set_timesteps(steps, device=unet.device)
    if init_latents is None:
        init_latents = initial_noise(pipe, generators, height, width)
    latents = init_latents.to(unet.device, unet.dtype) * scheduler.init_noise_sigma
    all_latents, log_probs = [latents], []
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = guided_output(unet, scheduler.scale_model_input(latents, t), t, cond, uncond, guidance)
            latents, logp = ddim_step_logprob(scheduler, out, int(t), latents, eta, generator=generators)
            all_latents.append(latents)
            log_probs.append(logp)
    return Trajectory(all_latents, torch.stack(log_probs), [int(t) for t in scheduler.timesteps])


def transition_logprob(pipe, scheduler, traj: Trajectory, j: int, cond, uncond, guidance: float, eta: float):
    """log p(x_{j+1} | x_j) under the current weights, with gradients (the GRPO ratio's numerator)."""
    t = traj.timesteps[j]
    x = traj.latents[j]
    out = guided_output(pipe.unet, scheduler.scale_model_input(x, t), t, cond, uncond, guidance)
    _, logp = ddim_step_logprob(scheduler, out, t, x, eta, prev_sample=traj.latents[j + 1])
    return logp


def decode(pipe, latents) -> list:
    """PIL images from final latents."""
    import torch

    with torch.no_grad():
        image = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type="pil")
