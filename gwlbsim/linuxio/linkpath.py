"""Sending IPv4 packets straight to the link (an AF_PACKET socket), past the IP layer.

A raw IP socket routes every packet it sends (route lookup, netfilter output hooks, neighbour lookup): about
a microsecond each. A datapath that sends many packets to a few addresses can instead look those up once and
put the Ethernet header in front itself. :class:`Resolver` does the looking up from the kernel's own tables
(route, link and neighbour, through netlink) in a thread, again every second, so a changed neighbour is
noticed. What cannot be sent this way (no route, not an Ethernet link, a neighbour not resolved yet) is
reported as None: the caller sends such packets through its raw IP socket, which also has the kernel resolve
the neighbour for next time.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from gwlbsim.linuxio.fastio import set_buffer
from gwlbsim.wire.outer import UDP_CSUM_OFFSET, UDP_CSUM_START

log = logging.getLogger("gwlbsim.linuxio.linkpath")

ETH_P_IP = 0x0800
ETH_HEADER_LEN = 14
ARPHRD_ETHER = 1
RTN_UNICAST = 1
SOCKADDR_LL_SIZE = 20
SOL_PACKET = 263
# neighbour states whose link address may be used: reachable, stale, delay, probe, permanent
_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80
_SOCKADDR_LL = struct.Struct("=HHiHBB8s")

REFRESH = 1.0  #: seconds between two lookups of an address in use
RETRY = 0.05  #: seconds between lookups of an address not resolved yet, during its first RETRY_FOR seconds
RETRY_FOR = 2.0


@dataclass(frozen=True)
class LinkRoute:
    """How to reach one IPv4 address on the link: the frame header to put in front, and where to send it."""

    frame: bytes  #: Ethernet header: destination and source MAC, EtherType IPv4
    address: bytes  #: the ``sockaddr_ll`` (interface index) for sendto/sendmmsg
    ifname: str


def link_socket(sndbuf: int = 8 << 20) -> socket.socket:
    """An AF_PACKET socket that sends whole frames and receives nothing (protocol 0)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        set_buffer(s, socket.SO_SNDBUF, sndbuf)
    except OSError:
        s.close()
        raise
    return s


PACKET_VNET_HDR = 15
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1


def offload_checksums(sock: socket.socket) -> bool:
    """Have every frame sent on ``sock`` start with a virtio-net header (:func:`vnet_partial_udp`), through
    which the device (or the kernel in its place) is asked to finish UDP checksums. False if unsupported."""
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    except OSError:
        return False
    return True


def vnet_partial_udp() -> bytes:
    """The virtio-net header of an Ethernet frame carrying IPv4 (no options) + UDP whose checksum field holds
    the pseudo-header's sum: where to start summing, and where the result goes (little-endian fields)."""
    return struct.pack("<BBHHHH", VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, ETH_HEADER_LEN + UDP_CSUM_START,
                       UDP_CSUM_OFFSET)


SIOCETHTOOL = 0x8946
ETHTOOL_GGRO, ETHTOOL_SGRO = 0x2B, 0x2C  # linux/ethtool.h: the one-feature get and set of GRO


def gro(ifname: str, on: bool | None = None) -> bool:
    """Whether GRO is on for ``ifname`` (of the calling thread's namespace); with ``on``, switch it first.
    (On a veth, GRO on also gives the device NAPI, which its peer's XDP transmissions need.)"""
    value = (ctypes.c_uint32 * 2)(0, int(bool(on)))  # struct ethtool_value: cmd, data
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in ([ETHTOOL_SGRO] if on is not None else []) + [ETHTOOL_GGRO]:
            value[0] = cmd
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return bool(value[1])


def sockaddr_ll(ifindex: int, mac: bytes) -> bytes:
    return _SOCKADDR_LL.pack(socket.AF_PACKET, socket.htons(ETH_P_IP), ifindex, 0, 0, len(mac), mac)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def resolve(ipr: Any, addr: str) -> LinkRoute | None:
    """The link route to ``addr`` from the kernel's tables now, or None (see the module's description)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        routes = ipr.route("get", dst=addr)
    except NetlinkError:
        return None
    if not routes or routes[0]["type"] != RTN_UNICAST:
        return None
    route = routes[0]
    oif = route.get_attr("RTA_OIF")
    hop = route.get_attr("RTA_GATEWAY") or addr
    links = ipr.get_links(oif)
    if not links or links[0]["ifi_type"] != ARPHRD_ETHER or not links[0].get_attr("IFLA_ADDRESS"):
        return None
    for n in ipr.get_neighbours(dst=hop, ifindex=oif):
        lladdr = n.get_attr("NDA_LLADDR")
        if lladdr and n["state"] & _USABLE:
            dst_mac = _mac(lladdr)
            frame = dst_mac + _mac(links[0].get_attr("IFLA_ADDRESS")) + struct.pack("!H", ETH_P_IP)
            return LinkRoute(frame, sockaddr_ll(oif, dst_mac), links[0].get_attr("IFLA_IFNAME") or str(oif))
    return None


def route_to(addr: str, timeout: float = 1.0) -> LinkRoute | None:
    """The link route to ``addr``, having the kernel resolve its next hop first if need be (one empty UDP
    datagram to ``addr``'s discard port: unlike a ping, it does not wait for an answer that a one-way path,
    such as the benchmark's forwarding path, never gives)."""
    from pyroute2 import IPRoute

    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        r = resolve(ipr, addr)
        if r is None:
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (addr, 9))
        while r is None and time.monotonic() < deadline:
            time.sleep(0.01)
            r = resolve(ipr, addr)
        return r


def local_addresses() -> set[str]:
    """Every IPv4 address of the calling thread's namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = {a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
    return {a for a in found if a}


class Resolver(threading.Thread):
    """Keeps :attr:`routes` (address -> :class:`LinkRoute` or None) current for the addresses asked for.

    :meth:`want` an address and it is looked up at once, then every :data:`REFRESH` seconds (every
    :data:`RETRY` seconds while unresolved during the first :data:`RETRY_FOR` seconds). Readers use
    ``routes.get(addr)`` from any thread: entries are replaced whole.
    """

    def __init__(self) -> None:
        super().__init__(name="link-resolver", daemon=True)
        self.routes: dict[str, LinkRoute | None] = {}
        self._wanted: dict[str, float] = {}  # address -> when it was first asked for
        self._event = threading.Event()
        self._stopping = False

    def want(self, addr: str) -> None:
        if addr not in self._wanted:
            self._wanted[addr] = time.monotonic()
            self._event.set()

    def stop(self) -> None:
        self._stopping = True
        self._event.set()

    def run(self) -> None:
        from pyroute2 import IPRoute

        try:
            ipr = IPRoute()
        except OSError as e:
            log.warning("no netlink (%s): returns go through the IP layer", e)
            return
        with ipr:
            while not self._stopping:
                pending = False
                now = time.monotonic()
                for addr, since in list(self._wanted.items()):
                    try:
                        r = resolve(ipr, addr)
                    except Exception as e:  # netlink trouble: keep what we had, try again later
                        log.debug("looking up %s failed: %s", addr, e)
                        continue
                    if r != self.routes.get(addr):
                        self.routes[addr] = r
                        log.debug("link route to %s: %s", addr, r)
                    pending |= r is None and now - since < RETRY_FOR
                self._event.wait(RETRY if pending else REFRESH)
                self._event.clear()
