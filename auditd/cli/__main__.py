"""`python -m auditd.cli ...`: the same command line as the `auditd` script."""

from auditd.cli.main import main

main()
