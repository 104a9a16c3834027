"""Policies: which probes run, with which judges and budgets, and how results become a verdict."""
