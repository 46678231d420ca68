"""/proc readings of a process and of the machine: RSS, CPU seconds, listen-queue overflows,
and the `CpuMeter` that turns CPU seconds over a window into percentages."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE = 0  # CpuMeter key for the whole machine: busy CPU of all cores, whoever uses it


def proc_status_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return proc_status_kb(pid, "VmRSS") * 1024


def hwm_bytes(pid: int) -> int:
    return proc_status_kb(pid, "VmHWM") * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """Busy (non-idle, non-iowait) CPU seconds of all cores since boot, from /proc/stat. Over a
    window, busy - (our processes) is what the rest of the machine used meanwhile."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLK_TCK


def listen_overflows() -> int:
    """Host-wide TcpExt ListenOverflows: SYNs dropped because an accept queue was full (each
    costs the client a 1 s SYN retransmit)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", -1))
    return -1


@dataclass
class CpuMeter:
    """CPU seconds of several processes over a window."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def begin(self) -> None:
        self.wall = time.monotonic()
        self.start = {name: self._read(pid) for name, pid in self.pids.items()}

    def end(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for name, pid in self.pids.items():
            used = self._read(pid) - self.start[name]
            out[name] = {"cpu_s": round(used, 3), "cpu_pct": round(100 * used / wall, 1)}
        return out

    @staticmethod
    def _read(pid: int) -> float:
        if pid == MACHINE:
            return machine_busy_seconds()
        return self_cpu_seconds() if pid == os.getpid() else cpu_seconds(pid)
