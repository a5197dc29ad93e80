"""The kernel fast path's programs and maps (``gwlb-reference --datapath kernel``): the BPF programs of
``reference/bpf/fastpath.bpf.c``, loaded through :mod:`gwlbsim.linuxio.bpfobj` and attached with tcx (a
bpf_link per device, no qdisc), so the hooks' own ``tc qdisc add dev gwi-X ingress`` and a user's tc rules on
the tunnel devices keep working.

The layouts below mirror the C structures; :func:`flow_key` computes a key exactly as the program does, so the
Python datapath can take a flow out of the kernel's map when it learns that flow itself.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from pathlib import Path

from gwlbsim.linuxio.bpfobj import BpfObject, Link, Unavailable
from gwlbsim.wire.flowkey import V6_OFFSET, InnerError, flow_of
from gwlbsim.wire.geneve import GENEVE_PORT
from gwlbsim.wire.outer import addr4

SOURCE = Path(__file__).parent / "bpf" / "fastpath.bpf.c"

#: counter indexes of enum counter in the program
COUNTERS = ("in_fast", "in_fast_bytes", "in_passed", "out_fast", "out_fast_bytes", "out_passed",
            "in_redirect_failed", "out_redirect_failed")

_FLOW_KEY = struct.Struct("=QBB2s2s2x16s16s")  # eni, proto, family, lo port, hi port, lo addr, hi addr (network order)
_FLOW_VAL = struct.Struct("=40s4s4s2s2x4xQ")  # header, gwlb addr, own addr, gwlb port, last seen (ns)
_TUNNEL_VAL = struct.Struct("=IIQQQQQ")  # gwi, gwo ifindex, last seen (ns), packets and bytes in, out (per CPU)
_NEXTHOP_VAL = struct.Struct("=I6s6sQ")  # ifindex, source MAC, destination MAC, next refresh (ns)
_CONFIG_VAL = struct.Struct("=HB5x")  # option class, UDP checksum on
_SLOT = struct.Struct("=I4xQ")  # a device slot: ifindex, ENI

#: the programs' direct-mapped table of tunnel devices (by ifindex modulo this)
DEVICE_SLOTS = 65536

#: what the kernel carried for a tunnel: packets in, bytes in, packets out, bytes out (inner)
Carried = tuple[int, int, int, int]
NONE_CARRIED: Carried = (0, 0, 0, 0)


class KernelPath(BpfObject):
    """The loaded programs and their maps."""

    def __init__(self, option_class: int, udp_checksum: bool, max_flows: int = 1_000_000) -> None:
        """``max_flows``: the flow map's entries (an LRU map: all allocated at load, about 177 bytes each)."""
        super().__init__(SOURCE, ("geneve_in", "tunnel_out"),
                         ("flows", "tunnels", "devices", "device_slots", "own_addrs", "nexthops", "config",
                          "counters"),
                         {"flows": max_flows})
        self.update("config", struct.pack("=I", 0), _CONFIG_VAL.pack(option_class, int(udp_checksum)))

    def attach_path(self, ifindex: int, ingress: bool, where: str) -> Link:
        """Attach the ingress program (GENEVE in) or the egress one (tunnel devices) to a device via tcx."""
        return self.attach("geneve_in" if ingress else "tunnel_out", ifindex, ingress, where)

    # ------------------------------------------------------------------------------------------------ maps

    def tunnel_ready(self, eni_id: int, gwi: int, gwo: int) -> None:
        """Traffic of ``eni_id`` may take the fast path both ways (its tunnel is created, hooks done)."""
        for dev in (gwi, gwo):
            self.update("devices", struct.pack("=I", dev), struct.pack("=Q", eni_id))
            slot, holder = self._slot(dev)
            if holder == 0:  # free: the programs find the device there, unhashed
                self.update("device_slots", slot, _SLOT.pack(dev, eni_id))
        self.open_tunnel(eni_id, gwi, gwo)

    def open_tunnel(self, eni_id: int, gwi: int, gwo: int) -> None:
        """The programs carry the tunnel's packets (both ways), counting afresh."""
        self.percpu_update("tunnels", struct.pack("=Q", eni_id), _TUNNEL_VAL.pack(gwi, gwo, 0, 0, 0, 0, 0))

    def close_tunnel(self, eni_id: int) -> tuple[float | None, Carried] | None:
        """The programs leave the tunnel's packets to the Python datapath from now on, both ways (its devices and
        the flows the kernel learnt stay, for what is already on its way); what :meth:`tunnel_state` said at
        that moment, or None if it was not open."""
        raw = self.percpu_take("tunnels", struct.pack("=Q", eni_id), _TUNNEL_VAL.size)
        return None if raw is None else _summed(raw)

    def tunnel_gone(self, eni_id: int, gwi: int, gwo: int) -> None:
        self.delete("tunnels", struct.pack("=Q", eni_id))
        for dev in (gwi, gwo):
            self.delete("devices", struct.pack("=I", dev))
            slot, holder = self._slot(dev)
            if holder == dev:
                self.update("device_slots", slot, bytes(_SLOT.size))
        self.delete_many("flows", [k for k, _v in self.items("flows", _FLOW_KEY.size, _FLOW_VAL.size)
                                   if struct.unpack_from("=Q", k)[0] == eni_id])

    def _slot(self, dev: int) -> tuple[bytes, int]:
        """The key of device ``dev``'s slot in the direct-mapped table, and the device that holds it (0: none)."""
        slot = struct.pack("=I", dev % DEVICE_SLOTS)
        held = self.lookup("device_slots", slot, _SLOT.size)
        return slot, _SLOT.unpack(held)[0] if held is not None else 0

    def tunnel_state(self, eni_id: int) -> tuple[float | None, Carried] | None:
        """When the fast path last carried a packet of the tunnel (CLOCK_MONOTONIC seconds, None: never) and
        what it carried (packets in, bytes in, packets out, bytes out); None for a tunnel it does not have."""
        raw = self.percpu_lookup("tunnels", struct.pack("=Q", eni_id), _TUNNEL_VAL.size)
        return None if raw is None else _summed(raw)

    def own_addresses(self, added: Iterable[str], gone: Iterable[str]) -> None:
        """Datagrams to ``added`` are the socket's to receive (their flows may be learnt here); those to ``gone``
        no longer are (and the flows learnt from them are taken out)."""
        for addr in added:
            self.update("own_addrs", addr4(addr), b"\x01")
        old = {addr4(addr) for addr in gone}
        for packed in old:
            self.delete("own_addrs", packed)
        if old:
            self.delete_many("flows", [k for k, v in self.items("flows", _FLOW_KEY.size, _FLOW_VAL.size)
                                       if _FLOW_VAL.unpack(v)[2] in old])

    def set_nexthop(self, gwlb: str, ifindex: int, src_mac: bytes, dst_mac: bytes) -> None:
        self.update("nexthops", addr4(gwlb), _NEXTHOP_VAL.pack(ifindex, src_mac, dst_mac, 0))

    def forget_flow(self, eni_id: int, pkt: bytes | bytearray | memoryview, start: int, end: int) -> None:
        """The Python datapath learnt this packet's flow itself: the kernel's copy may be stale, drop it."""
        k = flow_key(eni_id, pkt, start, end)
        if k is not None:
            self.delete("flows", k)

    def flow(self, eni_id: int, pkt: bytes | bytearray | memoryview, start: int,
             end: int) -> tuple[bytes, tuple[str, int, str, int], float] | None:
        """The kernel's copy of the flow of ``pkt[start:end]``: (GENEVE header, (GWLB's address and port, our
        address and GENEVE port), when its latest packet came in (CLOCK_MONOTONIC seconds)), or None."""
        k = flow_key(eni_id, pkt, start, end)
        raw = self.lookup("flows", k, _FLOW_VAL.size) if k is not None else None
        if raw is None:
            return None
        header, gwlb, own, port, seen = _FLOW_VAL.unpack(raw)
        return (header, (socket.inet_ntoa(gwlb), int.from_bytes(port, "big"), socket.inet_ntoa(own), GENEVE_PORT),
                seen / 1e9)

    def expire_flows(self, older_than: float) -> int:
        """Remove flows whose last packet from GWLB is older than ``older_than`` (CLOCK_MONOTONIC seconds);
        returns how many remain."""
        left = 0
        limit = int(older_than * 1e9)
        old: list[bytes] = []
        for k, v in self.items("flows", _FLOW_KEY.size, _FLOW_VAL.size):
            if _FLOW_VAL.unpack(v)[4] < limit:
                old.append(k)
            else:
                left += 1
        self.delete_many("flows", old)
        return left

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed."""
        entry = struct.Struct(f"={len(COUNTERS)}Q")  # the map's one entry: every counter
        copies = [entry.unpack(c) for c in self.percpu_lookup("counters", struct.pack("=I", 0), entry.size) or []]
        return {name: sum(c[i] for c in copies) for i, name in enumerate(COUNTERS)}


def _summed(raw: list[bytes]) -> tuple[float | None, Carried]:
    """A tunnel's per-CPU copies as one: the latest time (seconds, None: never), the sums of the counts."""
    copies = [_TUNNEL_VAL.unpack(c) for c in raw]
    ns = max(c[2] for c in copies)
    counts = [sum(c[i] for c in copies) for i in range(3, 7)]
    return (ns / 1e9 if ns else None), (counts[0], counts[1], counts[2], counts[3])


def flow_key(eni_id: int, pkt: bytes | bytearray | memoryview, start: int, end: int) -> bytes | None:
    """The fast path's key for the flow of the IP packet ``pkt[start:end]`` (None: one it does not handle: a
    fragment, IPv6 with extension headers, TCP or UDP without its ports)."""
    try:
        ft, l4 = flow_of(pkt, start, end)
    except InnerError:
        return None
    v6 = ft.src >= V6_OFFSET
    if l4 < 0 or (ft.proto in (6, 17) and l4 + 4 > end) or (v6 and l4 != start + 40):
        return None
    a, b = (ft.src, ft.sport), (ft.dst, ft.dport)
    (lo, lo_port), (hi, hi_port) = (a, b) if a <= b else (b, a)
    if v6:
        lo_addr, hi_addr = (lo - V6_OFFSET).to_bytes(16, "big"), (hi - V6_OFFSET).to_bytes(16, "big")
    else:
        lo_addr, hi_addr = lo.to_bytes(4, "big") + bytes(12), hi.to_bytes(4, "big") + bytes(12)
    return _FLOW_KEY.pack(eni_id, ft.proto, 6 if v6 else 4, lo_port.to_bytes(2, "big"), hi_port.to_bytes(2, "big"),
                          lo_addr, hi_addr)


def available() -> str | None:
    """Why the kernel path cannot run here, or None when it can (checked by loading it)."""
    try:
        KernelPath(0x0108, True, 1024).close()
    except (Unavailable, OSError) as e:
        return str(e)
    return None
