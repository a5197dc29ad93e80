"""What generated traffic is made of: a valid packet with the fields it must decode to, a malformed packet with
the drop reason it must get, and a flow as GWLB carries it.

These are plain frozen dataclasses (no Hypothesis here): the strategies in :mod:`gwlbsim.traffic.strategies` produce
them, the fuzzers and the conformance suite consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gwlbsim.traffic.inner import InnerPacket
from gwlbsim.traffic.reprs import pretty_short, short_repr
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import FiveTuple, SymKey


@dataclass(frozen=True, repr=False)
class ValidPacket:
    """A GENEVE UDP payload that a correct GWLB parser must accept, and what it must decode to.

    ``payload == header.to_bytes() + inner + padding``. ``flow`` is the inner flow tuple the packet was built
    from (None for third-party captures, whose inner packets were not built here).

    Example::

        >>> from gwlbsim import geneve
        >>> vp = ValidPacket.from_parts(geneve.gwlb_header(0x1122, 0x33), bytes.fromhex("4500001400000000"
        ...                             "40fd0000c0000201c0000202"))
        >>> geneve.parse(vp.payload).cookie == vp.cookie == 0x33
        True
    """

    payload: bytes
    header: geneve.GeneveHeader
    eni_id: int
    attachment_id: int
    cookie: int
    inner: bytes
    option_class: int = geneve.AWS_OPTION_CLASS
    flow: FiveTuple | None = None
    inner_kind: str = ""
    origin: str = "generated"  #: "generated", or the name of the third-party vector it is
    padding: bytes = b""  #: bytes after the inner packet, which parsers must ignore
    built_from: InnerPacket | None = None  #: what the inner packet was built from (None for captures)

    @classmethod
    def from_parts(cls, header: geneve.GeneveHeader, inner: bytes | InnerPacket, *,
                   option_class: int = geneve.AWS_OPTION_CLASS, padding: bytes = b"",
                   origin: str = "generated") -> ValidPacket:
        """Assemble a packet from a header carrying exactly one of each GWLB option of ``option_class``."""
        values: dict[int, int] = {}
        for o in header.options:
            if o.option_class == option_class and o.type in geneve.GWLB_OPTION_SIZES:
                if o.type in values or len(o.data) != geneve.GWLB_OPTION_SIZES[o.type]:
                    raise ValueError(f"option type {o.type} repeated or of the wrong size")
                values[o.type] = int.from_bytes(o.data, "big")
        if len(values) != 3:
            raise ValueError("a valid packet needs all three GWLB options")
        if isinstance(inner, InnerPacket):
            data, flow, kind, info = inner.data, inner.five_tuple(), inner.kind, inner
        else:
            data, flow, kind, info = bytes(inner), None, "", None
        return cls(header.to_bytes() + data + padding, header, values[geneve.OPT_ENI_ID],
                   values[geneve.OPT_ATTACHMENT_ID], values[geneve.OPT_FLOW_COOKIE], data, option_class, flow,
                   kind, origin, padding, info)

    @property
    def header_bytes(self) -> bytes:
        return self.payload[:self.header.length]

    __repr__ = short_repr
    _repr_pretty_ = pretty_short

    def expected_scan(self) -> geneve.Scan:
        """What :func:`gwlbsim.wire.geneve.scan` must return for this packet."""
        return geneve.Scan(self.header.length, len(self.inner), self.header.protocol, self.eni_id,
                           self.attachment_id, self.cookie)


@dataclass(frozen=True, repr=False)
class MalformedPacket:
    """A datagram a correct GWLB parser must drop, labelled with how it is broken and the reason to give.

    ``malformation`` is a key of :data:`gwlbsim.traffic.malformations.MALFORMATIONS`; ``reason`` is the
    :attr:`gwlbsim.wire.geneve.GeneveError.reason` a parser following the rules in ``gwlbsim.wire.geneve`` reports
    (when a datagram is broken in several ways, the first check in that order wins, and the label names
    that one).
    """

    payload: bytes
    malformation: str
    reason: str
    option_class: int = geneve.AWS_OPTION_CLASS
    detail: str = ""
    origin: str = "generated"

    __repr__ = short_repr
    _repr_pretty_ = pretty_short


@dataclass(frozen=True)
class GwlbFlow:
    """One flow as GWLB carries it to a target: endpoint, cookie, outer source port, inner packets both ways.

    ``forward`` is the client's packet, ``reverse`` the server's answer (same flow, swapped). Use
    :meth:`payload` for the GENEVE UDP payload of either direction; a new ``cookie`` models GWLB re-creating
    the flow after a 5-tuple is reused.
    """

    eni_id: int
    attachment_id: int
    cookie: int
    sport: int  #: outer UDP source port GWLB sends this flow from
    forward: InnerPacket
    reverse: InnerPacket
    extra_options: tuple[geneve.GeneveOption, ...] = ()
    vni: int = 0
    option_class: int = geneve.AWS_OPTION_CLASS
    shuffled: tuple[int, ...] = field(default=())  #: option order (indexes), empty for GWLB's own order

    def header(self, cookie: int | None = None, direction: str = "forward") -> geneve.GeneveHeader:
        inner = self.forward if direction == "forward" else self.reverse
        opts = geneve.gwlb_options(self.eni_id, self.attachment_id, self.cookie if cookie is None else cookie,
                                   self.option_class) + self.extra_options
        if self.shuffled:
            opts = tuple(opts[i] for i in self.shuffled)
        return geneve.GeneveHeader(protocol=geneve.ETH_P_IP if inner.version == 4 else geneve.ETH_P_IPV6,
                                   vni=self.vni, options=opts)

    def packet(self, direction: str = "forward", cookie: int | None = None) -> ValidPacket:
        inner = self.forward if direction == "forward" else self.reverse
        return ValidPacket.from_parts(self.header(cookie, direction), inner, option_class=self.option_class)

    def payload(self, direction: str = "forward", cookie: int | None = None) -> bytes:
        """The GENEVE UDP payload GWLB sends for this flow's packet in ``direction``."""
        return self.packet(direction, cookie).payload

    @property
    def key(self) -> SymKey:
        """The direction-independent flow key (what appliances keep per endpoint)."""
        return self.forward.five_tuple().symmetric()


@dataclass(frozen=True, repr=False)
class Send:
    """One datagram of a traffic sequence: GWLB sends ``payload`` from outer source port ``sport``."""

    payload: bytes
    sport: int
    label: str  #: "valid", or the malformation label
    flow: GwlbFlow | None = None
    direction: str = "forward"

    __repr__ = short_repr
    _repr_pretty_ = pretty_short
