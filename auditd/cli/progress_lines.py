"""Progress as plain lines, for when stderr is not a terminal (CI, systemd, a pipe).

A rich progress bar redraws one line in place, which a log file or a pipe cannot show; a long audit
would look silent. So without a terminal the runner's (probe, done, total) callback writes one line
every `every_s` seconds or `every_items` items, and one when a probe completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class PlainProgress:
    def __init__(
        self,
        stream: TextIO,
        every_s: float = 10.0,
        every_items: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream, self.every_s, self.every_items, self.clock = (
            stream,
            every_s,
            every_items,
            clock,
        )
        self.started = self.last_at = clock()
        self.last_done = 0
        self.probes: dict[str, tuple[int, int]] = {}

    def __call__(self, probe: str, done: int, total: int) -> None:
        before = self.probes.get(probe)
        self.probes[probe] = (done, total)
        now = self.clock()
        all_done = sum(d for d, _ in self.probes.values())
        finished = done >= total and (before is None or before[0] < total)
        if finished or now - self.last_at >= self.every_s or all_done - self.last_done >= self.every_items:
            self._line(probe, done, total, all_done, now)

    def _line(self, probe: str, done: int, total: int, all_done: int, now: float) -> None:
        all_total = sum(t for _, t in self.probes.values())
        share = f" ({done / total:.0%})" if total else ""
        self.stream.write(
            f"progress: probe {probe} {done}/{total}{share}; all probes {all_done}/{all_total}; "
            f"{now - self.started:.0f} s elapsed\n"
        )
        self.stream.flush()
        self.last_at, self.last_done = now, all_done
