"""How a return reaches GWLB: straight to the link, or through the IP layer. A pure policy (no sockets, no clock).

Returns go straight to the link (an AF_PACKET socket: Ethernet header, and a virtio-net header leaving the UDP
checksum to the device, in front) once the route and neighbour of the GWLB address are known; until then,
and for one return per address every :data:`gwlbsim.linuxio.linkpath.REFRESH` seconds (which keeps the
kernel's neighbour entry confirmed and takes the route afresh), through the raw IP socket. Without a link
socket (``--raw-returns``, or none could be opened) every return goes through the raw IP socket.

:class:`ReturnPaths` holds the choice per address; the driver asks :meth:`ReturnPaths.destination` for every
return and calls :meth:`ReturnPaths.tick` with the time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

#: (frame header to put in front, its length, destination sockaddr for the batch sender or None to send this
#: return through the raw IP socket, whether the device finishes the UDP checksum)
Destination = tuple[bytes, int, "bytes | None", bool]
VIA_IP: Destination = (b"", 0, None, False)


class Route(Protocol):
    """How to reach an address on the link (:class:`gwlbsim.linuxio.linkpath.LinkRoute`)."""

    @property
    def frame(self) -> bytes: ...

    @property
    def address(self) -> bytes: ...


class ReturnPaths:
    """The return path of each GWLB address (see the module's docstring).

    ``routes``: the resolver's current route by address (an address not in it, or None, is not known yet:
    ``want`` is then called with it, once per return until it is); ``static``: the raw-socket sockaddr of an
    address, when there is no link socket (``routes`` is then None); ``vnet``: the virtio-net header to put
    in front of each frame, or empty when the device does not finish checksums.
    """

    def __init__(self, routes: Mapping[str, Route | None] | None, want: Callable[[str], None],
                 static: Callable[[str], bytes], vnet: bytes = b"", refresh_every: float = 1.0) -> None:
        self._routes = routes
        self._want = want
        self._static = static
        self.vnet = vnet
        self.refresh_every = refresh_every
        self.known: dict[str, Destination] = {}  #: what the next return to an address uses, once known
        self.refresh: set[str] = set()  #: addresses whose next return goes through the IP layer
        self._next_refresh = 0.0

    def destination(self, gwlb: str) -> Destination:
        """Where this return to ``gwlb`` goes."""
        dest = self.known.get(gwlb)
        if dest is not None:
            return dest
        if self._routes is None:
            dest = self.known[gwlb] = (b"", 0, self._static(gwlb), False)
            return dest
        route = self._routes.get(gwlb)
        if route is None:
            self._want(gwlb)
            return VIA_IP
        frame = self.vnet + route.frame
        dest = self.known[gwlb] = (frame, len(frame), route.address, bool(self.vnet))
        if gwlb in self.refresh:
            self.refresh.discard(gwlb)
            return VIA_IP
        return dest

    def tick(self, now: float) -> None:
        """Every ``refresh_every`` seconds, the next return to each known address goes through the IP layer,
        and the address's link route is taken afresh."""
        if self._routes is None or now < self._next_refresh:
            return
        self._next_refresh = now + self.refresh_every
        self.refresh.update(self.known)
        self.known.clear()
