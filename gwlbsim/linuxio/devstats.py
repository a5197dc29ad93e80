"""What the kernel counts for the network devices of the calling thread's network namespace."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

#: per network namespace: the file shows the devices of the namespace of whoever reads it
PROC_NET_DEV = Path("/proc/net/dev")


def receive_drops(path: Path = PROC_NET_DEV) -> dict[str, int]:
    """Packets each device dropped on the way in, by device name: the kernel's ``rx_dropped`` (plus
    ``rx_missed_errors``, which devices without a ring of their own do not use): for a TUN device, packets handed
    into its receive path that the kernel dropped there (its CPU's backlog full, the device down) and writes it
    refused. Empty when the file cannot be read (no figures, rather than a status that fails)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    drops = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) >= 4:
            drops[name.strip()] = int(values[3])  # receive: bytes, packets, errs, drop, ...
    return drops


class GoneDevicesDrops:
    """What devices that are gone (a retired tunnel's gwi-) had dropped on the way in, kept past them.

    A status lists the live devices' drops and adds :attr:`total`; a driver takes devices out of its table and
    calls :meth:`add` with their names (while they still exist), both while holding :attr:`lock`, so that a
    status counts each device's drops once: with the device, or in the total, never neither nor both."""

    def __init__(self, path: Path = PROC_NET_DEV) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.path = path

    def add(self, names: Iterable[str]) -> None:
        """Keep what the devices ``names`` dropped (called with :attr:`lock` held, before they are deleted)."""
        names = list(names)
        if names:
            dropped = receive_drops(self.path)
            self.total += sum(dropped.get(name, 0) for name in names)
