"""`python -m auditd ...`: the same command line as the `auditd` script."""

from auditd.cli import main

main()
