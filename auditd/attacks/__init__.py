"""Fine-tuning attacks run on purpose against a throwaway LoRA copy of the audited checkpoint, to
measure how fragile its alignment is: GRPO on text (TRL, `grpo_text`) and on diffusion models
(`grpo_diffusion`), their budgets, rewards and containment. Nothing here imports torch at import
time; the heavy parts load inside the functions that train."""
