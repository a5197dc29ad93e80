"""What the kernel counts for the network devices of the calling thread's network namespace."""

from __future__ import annotations

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
