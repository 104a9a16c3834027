"""Scheduling: the audit queue (in the database), APScheduler wiring, device slots, recovery."""
