"""Statistics: rates with confidence intervals and tests of the difference between two audits."""
