"""How much of the host's CPU went to work this process did not start, over a stretch of time.

A check that asks for zero loss cannot lay a loss at an appliance's door when the host was busy with other
work meanwhile (another test run, a build): the appliance may simply not have been given the CPU. This measures
that other work from the kernel's own accounting, not from guesses:

* the host's busy time, from ``/proc/stat`` (user, nice, system and steal: what tasks and the hypervisor took;
  interrupt and softirq time is left out, as it cannot be laid at a task's door and includes the traffic's own
  packet processing);
* minus the CPU time of this process and of every process it started, directly or not (the harness and the
  appliances under test), and of every process in the appliances' network namespaces (one a container runtime
  started there), from ``/proc/<pid>/stat``.

What is left is what other processes took. A process of ours that ends during the stretch has its time in it
counted as other work (it is no longer readable): small, and on the side of excusing, never of blaming.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: /proc reports CPU time in these ticks
TICK_SECONDS = 1.0 / os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def host_busy_seconds(proc: Path = PROC) -> float:
    """CPU time, over all CPUs, that tasks and the hypervisor (steal) took since boot, in seconds."""
    fields = (proc / "stat").read_text().split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"{proc / 'stat'}: no 'cpu' line first")
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + steal) * TICK_SECONDS


def _stat(pid: int, proc: Path) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, or None once it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(rest[1]), (int(rest[11]) + int(rest[12])) * TICK_SECONDS


def _netns(pid: int, proc: Path) -> int | None:
    """The inode of a process's network namespace, or None (gone, or not ours to look at)."""
    try:
        return os.stat(proc / str(pid) / "ns" / "net").st_ino
    except OSError:
        return None


def family_seconds(root: int, proc: Path = PROC, namespaces: frozenset[int] = frozenset()) -> dict[int, float]:
    """CPU seconds, by pid (each covering its threads), of root and of every live process descended from it, and
    of every process in one of the network ``namespaces`` (by inode: an appliance a container runtime started
    there is no descendant of ours) with its descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (s := _stat(int(entry.name), proc)) is not None:
            stats[int(entry.name)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    if namespaces:
        todo += [pid for pid in stats if _netns(pid, proc) in namespaces]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in found:
            found[pid] = stats[pid][1]
            todo.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True)
class OtherWork:
    seconds: float  #: wall time of the stretch
    cpus: float  #: CPUs' worth of other processes' work over it, on average (1.0: one CPU all the time)


class OtherWorkMeter:
    """Measures other processes' share of the host between start() and stop()."""

    def __init__(self, root: int | None = None, proc: Path = PROC, namespaces: Iterable[Path] = ()) -> None:
        """``namespaces``: network namespaces (their files, as under /run/netns) whose processes are ours too."""
        self.root = os.getpid() if root is None else root
        self.proc = proc
        self.namespaces = frozenset(os.stat(ns).st_ino for ns in namespaces)
        self._start: tuple[float, float, dict[int, float]] | None = None

    def _sample(self) -> tuple[float, float, dict[int, float]]:
        return time.monotonic(), host_busy_seconds(self.proc), family_seconds(self.root, self.proc, self.namespaces)

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> OtherWork:
        if self._start is None:
            raise RuntimeError("OtherWorkMeter.stop() before start()")
        t0, busy0, ours0 = self._start
        t1, busy1, ours1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        # a process of ours started meanwhile counts whole; one that ended meanwhile is not seen at the end
        ours = sum(s - ours0.get(pid, 0.0) for pid, s in ours1.items())
        other = max(0.0, (busy1 - busy0) - ours)
        return OtherWork(seconds=wall, cpus=other / wall)
