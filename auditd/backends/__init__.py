"""Generation backends: one interface (`TextBackend`) over transformers, OpenAI-compatible servers and vLLM."""
