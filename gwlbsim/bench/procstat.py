"""What the kernel says about processes and namespaces: CPU time, UDP socket drops, device drops.

All read from /proc, so any process can watch any other (the PID namespace is shared; ``/proc/<pid>/net``
is the network namespace of that process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds; gone ones count 0."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = vals[3] + vals[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def udp_errors(pid: int) -> tuple[int, int]:
    """(RcvbufErrors, InErrors) of UDP in the network namespace of ``pid``."""
    try:
        with open(f"/proc/{pid}/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    except FileNotFoundError:
        return 0, 0
    if len(lines) < 2:
        return 0, 0
    row = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=False))
    return row.get("RcvbufErrors", 0), row.get("InErrors", 0)


def device_drops(pid: int, prefixes: tuple[str, ...] = ("gwi-", "gwo-")) -> int:
    """Receive + transmit drops of the devices whose names start with one of ``prefixes`` (netns of pid)."""
    total = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except FileNotFoundError:
        return 0
    for ln in lines:
        name, _, rest = ln.partition(":")
        if name.strip().startswith(prefixes):
            v = rest.split()
            total += int(v[3]) + int(v[11])  # rx drop, tx drop
    return total


@dataclass
class Sample:
    """Counters at one instant; the difference of two is what happened in between."""

    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    total: float = 0.0
    udp_drops: dict[str, int] = field(default_factory=dict)
    tun_drops: int = 0


def sample(groups: dict[str, list[int]], netns_pids: dict[str, int]) -> Sample:
    """CPU seconds per group of PIDs; UDP receive-buffer drops per namespace (given by a PID in it)."""
    busy, total = machine_busy()
    s = Sample({k: cpu_seconds(v) for k, v in groups.items()}, busy, total)
    for k, pid in netns_pids.items():
        rcvbuf, _inerr = udp_errors(pid)
        s.udp_drops[k] = rcvbuf
    if "appliance" in netns_pids:
        s.tun_drops = device_drops(netns_pids["appliance"])
    return s


def delta(a: Sample, b: Sample) -> dict[str, object]:
    """What happened between samples ``a`` and ``b``, as plain JSON-able values."""
    wall_cpus = b.total - a.total
    return {
        "cpu_seconds": {k: round(b.cpu[k] - a.cpu.get(k, 0.0), 3) for k in b.cpu},
        "machine_busy": round((b.busy - a.busy) / wall_cpus, 3) if wall_cpus > 0 else None,
        "udp_rcvbuf_drops": {k: b.udp_drops[k] - a.udp_drops.get(k, 0) for k in b.udp_drops},
        "tun_drops": b.tun_drops - a.tun_drops,
    }
