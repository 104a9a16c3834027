"""Without a terminal, progress is plain lines: every N seconds or items, and when a probe completes."""

from __future__ import annotations

import io

from auditd.cli.progress_lines import PlainProgress


def test_lines_every_n_items_seconds_and_at_each_probe_end():
    now = [0.0]
    out = io.StringIO()
    p = PlainProgress(out, every_s=10, every_items=5, clock=lambda: now[0])
    p("policy", 0, 8)
    p("policy", 3, 8)
    assert out.getvalue() == ""  # nothing worth a line yet
    p("policy", 6, 8)  # 5 items since the last line
    now[0] = 12.0
    p("backdoor", 1, 20)  # 10 s since the last line
    p("policy", 8, 8)  # a probe completes
    lines = out.getvalue().splitlines()
    assert lines == [
        "progress: probe policy 6/8 (75%); all probes 6/8; 0 s elapsed",
        "progress: probe backdoor 1/20 (5%); all probes 7/28; 12 s elapsed",
        "progress: probe policy 8/8 (100%); all probes 9/28; 12 s elapsed",
    ]
    p("policy", 8, 8)  # a repeated report of a finished probe adds nothing
    assert len(out.getvalue().splitlines()) == 3
