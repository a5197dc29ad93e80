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
    rcvbuf: int = 16 << 20
    sndbuf: int = 8 << 20
    #: send returns through the raw IP socket only (through the IP layer, so netfilter's output hooks see them,
    #: as gwlbtun's do) instead of straight to the link where the route and neighbour are known (faster)
    raw_returns: bool = False
    #: "kernel" (the BPF fast path, or fail), "python" (none), "auto" (the kernel's when it can load, else none)
    datapath: str = "auto"
