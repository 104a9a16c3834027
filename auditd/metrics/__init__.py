"""Prometheus metrics: a collector over the database, read at scrape time (see docs/metrics.md)."""
