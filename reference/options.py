"""The driver's options (everything the reference appliance's Linux side needs besides the core's Config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    """Everything the driver needs besides the core's :class:`gwlbsim.reference.core.Config`."""

    listen: str = "0.0.0.0"
    create_hook: list[str] | None = None
    destroy_hook: list[str] | None = None
    hook_timeout: float = 30.0
    health_port: int | None = None
    health_bind: str = "0.0.0.0"
    health_mode: str = "text"
    hexdump: bool = False
    batch: int = 64
    #: the GENEVE socket's receive buffer, sized by time, not by the most the kernel allows: at the Python
    #: datapath's capacity it holds about 10 ms of small packets (measured: p99 queueing 14 ms under a flood of
    #: 64-byte packets, 5 ms at 8500 bytes, no loss at its closed-loop rate); 16 MiB queued for seconds
    rcvbuf: int = 512 << 10
    sndbuf: int = 8 << 20
    #: send returns through the raw IP socket only (through the IP layer, so netfilter's output hooks see them,
    #: as gwlbtun's do) instead of straight to the link where the route and neighbour are known (faster)
    raw_returns: bool = False
    #: "kernel" (the BPF fast path, or fail), "python" (none), "auto" (the kernel's when it can load, else none)
    datapath: str = "auto"
