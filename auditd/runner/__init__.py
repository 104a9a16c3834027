"""Running one audit: probes -> backend -> judges -> stored samples -> aggregates -> verdict."""
