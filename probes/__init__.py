"""auditd's probe definitions: one module per family, prompts written by us in data/."""
