from auditd.cli import app

app(prog_name="auditd")
