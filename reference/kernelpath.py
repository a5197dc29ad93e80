"""The kernel fast path's loader and maps (``gwlb-reference --datapath kernel``): the BPF programs of
``reference/bpf/fastpath.bpf.c``, compiled with clang, loaded and attached through Debian's libbpf (ctypes).

Programs attach with tcx (a bpf_link per device, no qdisc), so the hooks' own ``tc qdisc add dev gwi-X
ingress`` and a user's tc rules on the tunnel devices keep working. libbpf 1.1 predates its tcx helpers:
:func:`bpf_link_create` is called with the kernel's attach types.

The layouts below mirror the C structures; :func:`flow_key` computes a key exactly as the program does, so the
Python datapath can take a flow out of the kernel's map when it learns that flow itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gwlbsim.wire.flowkey import V6_OFFSET, InnerError, flow_of
from gwlbsim.wire.geneve import GENEVE_PORT

SOURCE = Path(__file__).parent / "bpf" / "fastpath.bpf.c"
#: where scripts/setup leaves the compiled object (beside the source); else it is compiled into a cache
PREBUILT = SOURCE.with_suffix(".o")
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47  # enum bpf_attach_type, Linux 6.6 (newer than Debian's uapi headers)

#: counter indexes of enum counter in the program
COUNTERS = ("in_fast", "in_fast_bytes", "in_passed", "out_fast", "out_fast_bytes", "out_passed",
            "in_redirect_failed", "out_redirect_failed")

_FLOW_KEY = struct.Struct("=QBB2s2s2x16s16s")  # eni, proto, family, lo port, hi port, lo addr, hi addr (network order)
_FLOW_VAL = struct.Struct("=40s4s4s2s2x4xQ")  # header, gwlb addr, own addr, gwlb port, last seen (ns)
_TUNNEL_VAL = struct.Struct("=IIQ")  # gwi ifindex, gwo ifindex, last seen (ns)
_NEXTHOP_VAL = struct.Struct("=I6s6s2x")  # ifindex, source MAC, destination MAC
_CONFIG_VAL = struct.Struct("=HB5x")  # option class, UDP checksum on


class Unavailable(RuntimeError):
    """The kernel path cannot run here; the message says why."""


def compiled_object() -> Path:
    """The compiled program: the one scripts/setup built, else one compiled now into a cache (by the source's
    hash), which needs clang and libbpf's headers."""
    if PREBUILT.exists() and PREBUILT.stat().st_mtime >= SOURCE.stat().st_mtime:
        return PREBUILT
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gwlbsim"
    out = cache / f"fastpath-{digest}.bpf.o"
    if out.exists():
        return out
    clang = shutil.which("clang")
    if clang is None:
        raise Unavailable("clang is not installed (scripts/setup installs it), so the BPF program cannot be built")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise Unavailable("libbpf's headers are missing (Debian: libbpf-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".o", delete=False) as tmp:
        pass
    res = subprocess.run([clang, "-O2", "-g", "-target", "bpf", f"-I{arch}", "-c", str(SOURCE), "-o", tmp.name],
                         capture_output=True, text=True)
    if res.returncode != 0:
        os.unlink(tmp.name)
        raise Unavailable(f"clang could not build {SOURCE.name}: {res.stderr.strip()[-300:]}")
    os.replace(tmp.name, out)
    return out


class _Libbpf:
    """The few libbpf calls used, through ctypes."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf")
        if name is None:
            raise Unavailable("libbpf is not installed (Debian: libbpf1)")
        lib = ctypes.CDLL(name, use_errno=True)
        vp, cp, i, u = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint
        for fn, res, args in (
                ("bpf_object__open_file", vp, [cp, vp]), ("bpf_object__load", i, [vp]),
                ("bpf_object__close", None, [vp]), ("bpf_object__find_program_by_name", vp, [vp, cp]),
                ("bpf_program__fd", i, [vp]), ("bpf_object__find_map_fd_by_name", i, [vp, cp]),
                ("bpf_link_create", i, [i, i, u, vp]), ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
                ("bpf_map_lookup_elem", i, [i, vp, vp]), ("bpf_map_delete_elem", i, [i, vp]),
                ("bpf_map_get_next_key", i, [i, vp, vp]), ("libbpf_get_error", ctypes.c_long, [vp]),
                ("libbpf_num_possible_cpus", i, [])):
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        self.lib = lib


@dataclass
class Link:
    """An attached program (a bpf_link): detached when closed."""

    fd: int
    where: str

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KernelPath:
    """The loaded programs and their maps."""

    def __init__(self, option_class: int, udp_checksum: bool) -> None:
        obj_path = compiled_object()
        self._bpf = _Libbpf()
        lib = self._bpf.lib
        obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
        if not obj or lib.libbpf_get_error(obj):
            raise Unavailable(f"libbpf cannot open {obj_path}")
        self._obj = obj
        if lib.bpf_object__load(obj) != 0:
            err = ctypes.get_errno()
            lib.bpf_object__close(obj)
            self._obj = None
            why = "needs root or CAP_BPF + CAP_NET_ADMIN" if err in (errno.EPERM, errno.EACCES) else \
                os.strerror(err) if err else "see the libbpf messages above"
            raise Unavailable(f"the kernel refused the BPF programs: {why}")
        self.ingress_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, b"geneve_in"))
        self.egress_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, b"tunnel_out"))
        self.maps = {m: lib.bpf_object__find_map_fd_by_name(obj, m.encode())
                     for m in ("flows", "tunnels", "devices", "nexthops", "config", "counters")}
        if min(self.maps.values()) < 0 or min(self.ingress_fd, self.egress_fd) < 0:
            self.close()
            raise Unavailable("the BPF object lacks a program or map it should have")
        self.cpus = max(1, lib.libbpf_num_possible_cpus())
        self._update("config", struct.pack("=I", 0), _CONFIG_VAL.pack(option_class, int(udp_checksum)))
        self.links: list[Link] = []

    # -------------------------------------------------------------------------------------------- attach

    def attach(self, ifindex: int, ingress: bool, where: str) -> Link:
        """Attach the ingress program (GENEVE in) or the egress one (tunnel devices) to a device via tcx."""
        fd = self._bpf.lib.bpf_link_create(self.ingress_fd if ingress else self.egress_fd, ifindex,
                                           BPF_TCX_INGRESS if ingress else BPF_TCX_EGRESS, None)
        if fd < 0:
            raise OSError(-fd, f"cannot attach to {where} with tcx: {os.strerror(-fd)}")
        link = Link(fd, where)
        self.links.append(link)
        return link

    # ------------------------------------------------------------------------------------------------ maps

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        lib = self._bpf.lib
        if lib.bpf_map_update_elem(self.maps[name], key, value, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF map {name}: {os.strerror(err)}")

    def _delete(self, name: str, key: bytes) -> None:
        self._bpf.lib.bpf_map_delete_elem(self.maps[name], key)

    def _lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        if self._bpf.lib.bpf_map_lookup_elem(self.maps[name], key, buf) != 0:
            return None
        return buf.raw

    def _keys(self, name: str, size: int) -> list[bytes]:
        lib, fd = self._bpf.lib, self.maps[name]
        out, prev, nxt = [], None, ctypes.create_string_buffer(size)
        while lib.bpf_map_get_next_key(fd, prev, nxt) == 0:
            out.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, size)
        return out

    def tunnel_ready(self, eni_id: int, gwi: int, gwo: int) -> None:
        """Traffic of ``eni_id`` may take the fast path both ways (its tunnel is created, hooks done)."""
        for dev in (gwi, gwo):
            self._update("devices", struct.pack("=I", dev), struct.pack("=Q", eni_id))
        self._update("tunnels", struct.pack("=Q", eni_id), _TUNNEL_VAL.pack(gwi, gwo, 0))

    def tunnel_gone(self, eni_id: int, gwi: int, gwo: int) -> None:
        self._delete("tunnels", struct.pack("=Q", eni_id))
        for dev in (gwi, gwo):
            self._delete("devices", struct.pack("=I", dev))
        for k in self._keys("flows", _FLOW_KEY.size):
            if struct.unpack_from("=Q", k)[0] == eni_id:
                self._delete("flows", k)

    def tunnel_last_seen(self, eni_id: int) -> float | None:
        """When the fast path last carried a packet of the tunnel (CLOCK_MONOTONIC seconds), or None."""
        raw = self._lookup("tunnels", struct.pack("=Q", eni_id), _TUNNEL_VAL.size)
        if raw is None:
            return None
        ns = _TUNNEL_VAL.unpack(raw)[2]
        return ns / 1e9 if ns else None

    def set_nexthop(self, gwlb: str, ifindex: int, src_mac: bytes, dst_mac: bytes) -> None:
        self._update("nexthops", ipaddress.IPv4Address(gwlb).packed, _NEXTHOP_VAL.pack(ifindex, src_mac, dst_mac))

    def forget_flow(self, eni_id: int, pkt: bytes | bytearray | memoryview, start: int, end: int) -> None:
        """The Python datapath learnt this packet's flow itself: the kernel's copy may be stale, drop it."""
        k = flow_key(eni_id, pkt, start, end)
        if k is not None:
            self._delete("flows", k)

    def flow(self, eni_id: int, pkt: bytes | bytearray | memoryview, start: int,
             end: int) -> tuple[bytes, tuple[str, int, str, int], float] | None:
        """The kernel's copy of the flow of ``pkt[start:end]``: (GENEVE header, (GWLB's address and port, our
        address and GENEVE port), when its latest packet came in (CLOCK_MONOTONIC seconds)), or None."""
        k = flow_key(eni_id, pkt, start, end)
        raw = self._lookup("flows", k, _FLOW_VAL.size) if k is not None else None
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
        for k in self._keys("flows", _FLOW_KEY.size):
            raw = self._lookup("flows", k, _FLOW_VAL.size)
            if raw is not None and _FLOW_VAL.unpack(raw)[4] < limit:
                self._delete("flows", k)
            elif raw is not None:
                left += 1
        return left

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed."""
        out = {}
        for i, name in enumerate(COUNTERS):
            raw = self._lookup("counters", struct.pack("=I", i), 8 * self.cpus)
            out[name] = sum(struct.unpack(f"={self.cpus}Q", raw)) if raw is not None else 0
        return out

    def close(self) -> None:
        for link in getattr(self, "links", []):
            link.close()
        if getattr(self, "_obj", None):
            self._bpf.lib.bpf_object__close(self._obj)
            self._obj = None


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
        KernelPath(0x0108, True).close()
    except (Unavailable, OSError) as e:
        return str(e)
    return None
