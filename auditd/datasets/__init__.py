"""Standard safety benchmarks read from the user's own files, as auditd probes (`id: dataset`)."""
