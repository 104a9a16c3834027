"""The HTTP API (FastAPI): health, metrics, and (see docs/api.md) checkpoints, audits, webhooks."""
