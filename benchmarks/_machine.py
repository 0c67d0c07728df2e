"""What the benchmarks say about the machine they ran on: how much of it other work took meanwhile.

Every benchmark prints ratios measured in one run; on a shared machine those ratios are only as good as the load
was even, so each one reports the CPU time other processes (and the hypervisor, as steal) took while it ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class CpuMonitor:
    """CPU time that other processes (and steal) took since construction, from /proc/stat (Linux). Our own time
    includes finished child processes, so benchmarks that measure in children read right too."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system | irq softirq steal
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        return busy, fields[7] if len(fields) > 7 else 0, mine, time.monotonic()

    def report(self) -> tuple[str, float]:
        now, start = self._read(), self.start
        if now is None or start is None:
            return "CPU load of other processes: unknown (no /proc/stat)", 0.0
        tick = os.sysconf("SC_CLK_TCK")
        busy = (now[0] - start[0]) / tick
        steal = (now[1] - start[1]) / tick
        own = now[2] - start[2]
        capacity = (now[3] - start[3]) * (os.cpu_count() or 1)
        other = max(0.0, busy - own)
        share = other / capacity if capacity else 0.0
        return (f"other processes and steal took {other:.0f} of {capacity:.0f} CPU-seconds ({share:.0%}; steal "
                f"{steal:.0f}s)" + (": the machine was shared, absolute numbers are low" if share > 0.1 else ""),
                share)
