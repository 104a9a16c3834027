"""auditd: audits every new AI checkpoint for safety regressions before it ships."""

__version__ = "0.1.0"
