"""Registry sources: where checkpoints come from (a local folder, MLflow, webhooks)."""
