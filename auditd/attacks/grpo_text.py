"""The text GRPO attack itself: TRL's GRPOTrainer training a peft LoRA on the audited model.

The LoRA is injected into the backend's own model object (no copy of the weights in memory, none
on disk) and removed with `unload()` when training ends, whatever the ending; a fingerprint of the
base weights taken before and compared after proves they were not touched. A callback runs after
every optimizer step: it passes the runner's gate (stop, cancel, timeout), checks the wall and
memory caps, and every `eval_every` steps (and at the last) hands the adapted model to
`on_point`, which evaluates, saves the adapter state privately, and stores the point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditd.attacks.config import GRPOAttackConfig
from auditd.backends.hf import format_chat_plain
from auditd.probe import ProbeItem

log = logging.getLogger(__name__)

from auditd.attacks.base import ADAPTER_FILE, OPTIMIZER_FILE  # noqa: E402,F401  (names of the work dir files)


class BaseWeightsChanged(RuntimeError):
    pass


@dataclass
class TrainState:
    """What the training loop reports back to the orchestration in `run.py`."""

    start_step: int
    wall_base: float  # attack wall seconds already spent before this session (from stored points)
    started: float = field(default_factory=time.monotonic)
    rewards: list[float] = field(default_factory=list)  # per-step mean reward since the last point
    stopped_by: str | None = None  # "steps" | "wall" | "memory"
    last_step: int = 0
    peak_memory_gb: float | None = None

    def wall_s(self) -> float:
        return self.wall_base + (time.monotonic() - self.started)


def memory_gb(device) -> float | None:
    """CUDA peak allocated memory, or the process's resident memory (from /proc, no psutil) on the CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        return None
    return None


def fingerprint(model) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) of every parameter in float64: cheap, and any update changes it."""
    import torch

    with torch.no_grad():
        return {n: (p.double().sum().item(), p.double().square().sum().item()) for n, p in model.named_parameters()}


def train_dataset(items: list[ProbeItem], tokenizer):
    """Conversational prompts when the tokenizer has a chat template (TRL applies it), plain text otherwise."""
    from datasets import Dataset

    rows = []
    for it in items:
        chat = [{"role": "user", "content": it.prompt}]
        prompt: Any = chat if getattr(tokenizer, "chat_template", None) else format_chat_plain(chat)
        rows.append({"prompt": prompt, "category": it.category})
    return Dataset.from_list(rows)


def _recording(reward_fn: Callable, state: TrainState) -> Callable:
    """Wrap a reward function to record each step's mean reward (one call per step here: TRL
    generates once per step with steps_per_generation=1 and num_iterations=1)."""

    def reward(completions, **kwargs):
        values = reward_fn(completions, **kwargs)
        scored = [v for v in values if v is not None]
        if scored:
            state.rewards.append(sum(scored) / len(scored))
        return values

    reward.__name__ = getattr(reward_fn, "__name__", "reward")
    return reward


def grpo_args(config: GRPOAttackConfig, output_dir: str, remaining: int, seed: int, on_cuda: bool):
    import torch
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir,
        num_generations=config.num_generations,
        per_device_train_batch_size=config.num_generations * config.prompts_per_step,
        max_completion_length=config.max_completion_length,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",  # a resumed attack continues at the same rate, no schedule to replay
        warmup_steps=0,
        max_steps=remaining,
        beta=config.beta,
        loss_type=config.loss_type,
        temperature=config.temperature,
        seed=seed,
        use_vllm=config.use_vllm,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        bf16=bool(on_cuda and torch.cuda.is_bf16_supported()),  # never on the CPU
        use_cpu=not on_cuda,
        save_strategy="no",  # the adapter is saved by us, privately, at evaluation points only
        report_to="none",
        logging_steps=max(1, config.eval_every),
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )


def _callback_class():
    from transformers import TrainerCallback

    class AttackCallback(TrainerCallback):
        """Gate, caps and evaluation points after every optimizer step."""

        def __init__(self, config, state, gate, on_point, optimizer_state):
            self.config, self.state, self.gate, self.on_point = config, state, gate, on_point
            self.optimizer_state = optimizer_state

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            if self.optimizer_state is not None and optimizer is not None:
                optimizer.load_state_dict(self.optimizer_state)  # resume: Adam moments of the stored point

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            st = self.state
            step = st.start_step + state.global_step
            st.last_step = step
            self.gate(step)  # raises: daemon stopping (resume later), cancel, audit timeout
            mem = memory_gb(model.device)
            if mem is not None:
                st.peak_memory_gb = max(st.peak_memory_gb or 0.0, mem)
            if self.config.max_memory_gb is not None and mem is not None and mem > self.config.max_memory_gb:
                st.stopped_by = "memory"
            elif st.wall_s() >= self.config.max_wall_s:
                st.stopped_by = "wall"
            elif step >= self.config.steps:
                st.stopped_by = "steps"
            if self.config.eval_due(step) or st.stopped_by:
                self.on_point(step, model, optimizer)
            if st.stopped_by:
                control.should_training_stop = True
            return control

    return AttackCallback


def dequantized_gguf(model) -> bool:
    """A GGUF checkpoint is dequantized to float weights on load, but the model still says
    `is_quantized` (quantizer GGUF, "not trainable") and the Trainer refuses it. True when that flag
    is the only obstacle: the quantizer is GGUF and every parameter really is floating point."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    return (
        getattr(model, "is_quantized", False)
        and str(getattr(method, "value", method)) == "gguf"
        and all(p.dtype.is_floating_point for p in model.parameters())
    )


class _Restore:
    """What TRL and peft change on the model and tokenizer, put back after the attack."""

    def __init__(self, model, tokenizer):
        self.is_quantized = getattr(model, "is_quantized", None)
        self.training = model.training
        self.use_cache = getattr(model.config, "use_cache", None)
        self.grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self.tok = {k: getattr(tokenizer, k, None) for k in ("padding_side", "truncation_side", "chat_template")}

    def apply(self, model, tokenizer):
        for n, p in model.named_parameters():
            p.requires_grad_(self.grad.get(n, False))
        if self.use_cache is not None:
            model.config.use_cache = self.use_cache
        if hasattr(model, "disable_input_require_grads"):
            try:
                model.disable_input_require_grads()  # the hook gradient checkpointing + peft may add
            except Exception:  # no hook registered
                pass
        model.train(self.training)
        if self.is_quantized is not None:
            model.is_quantized = self.is_quantized
        for k, v in self.tok.items():
            if v is not None:
                setattr(tokenizer, k, v)


def train(
    backend,
    config: GRPOAttackConfig,
    items: list[ProbeItem],
    reward_fn: Callable,
    state: TrainState,
    *,
    output_dir: str,
    gate: Callable[[int], None],
    on_point: Callable[[int, Any, Any], None],
    adapter_state: dict | None = None,
    optimizer_state: dict | None = None,
) -> TrainState:
    """Train from `state.start_step` to `config.steps` (or a cap). The backend's model is adapted
    in place while this runs and restored before it returns or raises."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    model, tokenizer = backend.model, backend.tokenizer
    remaining = config.steps - state.start_step
    if remaining <= 0:
        state.stopped_by = "steps"
        return state
    on_cuda = model.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(model.device)
    before = fingerprint(model)
    restore = _Restore(model, tokenizer)
    if dequantized_gguf(model):
        model.is_quantized = False  # restored with the rest; the weights in memory are float already
    # peft annotates lora_alpha as int but uses it as the float scale lora_alpha / r
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = None
    try:
        peft_model = get_peft_model(model, lora)
        # Seeded per start step: a resumed attack is repeatable, not a replay of the lost steps.
        args = grpo_args(config, output_dir, remaining, config.seed + state.start_step, on_cuda)
        callback = _callback_class()(config, state, gate, on_point, optimizer_state)
        trainer = GRPOTrainer(
            model=peft_model,
            reward_funcs=_recording(reward_fn, state),
            args=args,
            train_dataset=train_dataset(items, tokenizer),
            processing_class=tokenizer,
            callbacks=[callback],
        )
        for cb in (PrinterCallback, ProgressCallback):  # keep the daemon's logs free of per-step dicts
            trainer.remove_callback(cb)
        if adapter_state is not None:
            # After the trainer is built: with beta > 0 TRL copies the fresh (zero) adapter as its
            # KL reference, which must stay the base model, not the resumed adapter.
            set_peft_model_state_dict(peft_model, adapter_state)
        trainer.train()
        if state.stopped_by is None:  # the trainer ran out of steps without our callback noticing
            state.stopped_by = "steps"
        return state
    finally:
        if peft_model is not None:
            base = peft_model.unload()  # removes every LoRA layer, restoring the original modules
            if base is not model:  # pragma: no cover - peft returns the same object today
                backend.model = base
        restore.apply(backend.model, tokenizer)
        backend.model.eval()
        if fingerprint(backend.model) != before:
            raise BaseWeightsChanged("the base weights changed during the GRPO attack; results are void")


def adapter_state_dict(model) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)
