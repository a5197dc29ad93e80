"""Hypothesis strategies for GWLB GENEVE traffic: the single source of generated packets for the property tests,
the conformance suite and the fuzzers.

Valid packets come with the fields a correct parser must decode; malformed packets come labelled with the way
they are broken and the drop reason (a ``gwlbsim.wire.geneve`` reason string) a correct parser must give; flows
and traffic sequences model what GWLB sends a target. The third-party captures in :mod:`gwlbsim.wire.vectors`
(real AWS and Tencent GWLB packets, Suricata's GENEVE test vectors) are mixed into the packet strategies.

Examples (in a test)::

    from hypothesis import given
    from gwlbsim.wire import geneve
    from gwlbsim.traffic import strategies as gst

    @given(gst.valid_packets())
    def test_parses(vp):
        assert geneve.scan(vp.payload, option_class=vp.option_class) == vp.expected_scan()

    @given(gst.malformed_packets())
    def test_drops(mp):
        with pytest.raises(geneve.GeneveError) as e:
            geneve.scan(mp.payload, option_class=mp.option_class)
        assert e.value.reason == mp.reason

    @given(gst.flow_lists(min_size=2, max_size=5, eni_ids=st.sampled_from([1, 2])))
    def test_flows(flows):
        for f in flows:
            send(f.payload("forward"), sport=f.sport)

Strategies (all keyword-only parameters; every parameter that takes a strategy defaults to "anything"):

=========================  ================================================================================
:func:`inner_packets`      bare IPv4/IPv6 packets: TCP, UDP, ICMP/ICMPv6, other protocols, IPv4 options,
                           IPv6 extension headers, fragments, sizes up to the 8500-byte GWLB limit
:func:`extra_options`      non-GWLB option TLVs (any class, non-critical) that a parser must skip
:func:`valid_packets`      :class:`~gwlbsim.traffic.packets.ValidPacket`: options in any order, extras, any VNI, flag
                           and reserved bits, mixed with the real GWLB captures
:func:`vector_packets`     only the real GWLB captures, as valid packets
:func:`malformed_packets`  :class:`~gwlbsim.traffic.packets.MalformedPacket` of every class in
                           :data:`gwlbsim.traffic.malformations.MALFORMATIONS`, mixed with Suricata's vectors
:func:`datagrams`          any bytes a GENEVE port may receive: valid, malformed or arbitrary
:func:`flows`              :class:`~gwlbsim.traffic.packets.GwlbFlow`: ENI, cookie, outer source port, both directions
:func:`flow_lists`         flows with distinct keys per ENI
:func:`traffic`            a sequence of :class:`~gwlbsim.traffic.packets.Send` over a list of flows, cookies renewed
                           as when GWLB re-creates a flow; optionally malformed datagrams mixed in
=========================  ================================================================================
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import replace
from functools import cache

from hypothesis import strategies as st

from gwlbsim.traffic import inner as inner_mod
from gwlbsim.traffic.inner import IPV6_EXT_NUMBERS, InnerPacket
from gwlbsim.traffic.malformations import MALFORMATIONS, VECTOR_LABELS, malform
from gwlbsim.traffic.packets import GwlbFlow, MalformedPacket, Send, ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from gwlbsim.wire.vectors import all_vectors, gwlb_vectors

#: where Hypothesis keeps its caches for the command-line tools (by default it makes ./.hypothesis in the user's
#: working directory)
STORAGE_ENV = "HYPOTHESIS_STORAGE_DIRECTORY"


def keep_caches_out_of_the_working_directory() -> None:
    """For a command-line tool: Hypothesis's caches go to ``~/.cache/gwlbsim/hypothesis`` unless the user chose a
    place (read by Hypothesis when it first needs it, so this works after the import)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ.setdefault(STORAGE_ENV, os.path.join(base, "gwlbsim", "hypothesis"))


__all__ = [
    "MALFORMATIONS",
    "cookies",
    "datagrams",
    "eni_ids",
    "extra_options",
    "flow_lists",
    "flows",
    "inner_packets",
    "ipv4_addresses",
    "ipv6_addresses",
    "malformed_packets",
    "malformed_vectors",
    "option_classes",
    "traffic",
    "valid_packets",
    "vector_packets",
]

PROTOCOLS = ("tcp", "udp", "icmp", "other")
_EXT_CHOICES = ("hbh", "dstopts", "routing", "frag", "ah")
_IPV4_OPTIONS = (b"", b"\x01\x01\x01\x01", b"\x94\x04\x00\x00", b"\x01\x01\x94\x04\x00\x00\x00\x00", b"\x01" * 40)


# ------------------------------------------------------------------------------------------------- numbers


def _eni_ids() -> st.SearchStrategy[int]:
    """GWLB endpoint ENI ids: any 64-bit value, often one seen in real captures."""
    real = sorted({v.eni_id for v in _vector_valid(None)})
    return st.sampled_from(real) | st.integers(0, 2**64 - 1)


def _cookies() -> st.SearchStrategy[int]:
    """Flow cookies: any 32-bit value."""
    return st.integers(0, 2**32 - 1)


# public names (the strategy functions take parameters of the same names)
eni_ids = _eni_ids
cookies = _cookies


def option_classes(exclude: int | None = None) -> st.SearchStrategy[int]:
    """GENEVE option classes, biased to registered and interesting ones."""
    known = [0x0000, 0x0100, 0x0101, 0x0103, 0x0105, geneve.AWS_OPTION_CLASS, 0x0109, 0x0110, 0x0132, 0x0164,
             geneve.TENCENT_OPTION_CLASS, 0xFF00, 0xFFFF]
    s = st.sampled_from(known) | st.integers(0, 0xFFFF)
    return s.filter(lambda c: c != exclude) if exclude is not None else s


def ipv4_addresses() -> st.SearchStrategy[str]:
    return st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))


def ipv6_addresses() -> st.SearchStrategy[str]:
    return st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v)))


#: unicast ranges a VPC routes: private ones first (10/8, 172.16/12, 192.168/16, 100.64/10; fd00::/8), then
#: global ones; the private ones are what a two-arm NAT appliance returns through the tunnel (the rest it NATs)
_PRIVATE_V4 = ((0x0A000000, 8), (0xAC100000, 12), (0xC0A80000, 16), (0x64400000, 10))
_PRIVATE_V6 = ((0xFD << 120, 8),)
_ROUTABLE_V4 = (*_PRIVATE_V4, (0x0B000000, 8))
_ROUTABLE_V6 = (*_PRIVATE_V6, (0x1 << 125, 3))


def routable_addresses(version: int, private: bool = False) -> st.SearchStrategy[str]:
    """Unicast addresses a VPC routes to a GWLB endpoint (no unspecified, loopback, multicast, broadcast or
    link-local address): what an appliance that routes through its kernel must forward. ``private``: only
    private ranges (the VPCs' own; a two-arm NAT appliance sends anything else out of its second arm)."""
    bits = 32 if version == 4 else 128
    v4, v6 = (_PRIVATE_V4, _PRIVATE_V6) if private else (_ROUTABLE_V4, _ROUTABLE_V6)
    nets = v4 if version == 4 else v6
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address

    def pick(net: tuple[int, int], host: int) -> str:
        base, plen = net
        span = bits - plen
        host = host % (1 << span)
        host = min(max(host, 1), (1 << span) - 2)  # neither the network nor the all-ones address
        return str(make(base | host))

    return st.builds(pick, st.sampled_from(nets), st.integers(0, 2**bits - 1))


def _ports() -> st.SearchStrategy[int]:
    return st.sampled_from([53, 80, 443, 6081]) | st.integers(0, 65535)


@st.composite
def _payload(draw: st.DrawFn, size: int) -> bytes:
    """``size`` bytes: drawn outright when short, a drawn pattern repeated when long (cheap at 8500 bytes)."""
    if size <= 64:
        return draw(st.binary(min_size=size, max_size=size))
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (size // len(pattern) + 1))[:size]


# ----------------------------------------------------------------------------------------------- inner packets


@st.composite
def inner_packets(draw: st.DrawFn, *, versions: Sequence[int] = (4, 6), protocols: Sequence[str] = PROTOCOLS,
                  max_size: int = geneve.GWLB_MTU, extension_headers: bool = True,
                  fragments: bool = True, routable: bool = False, private: bool = False) -> InnerPacket:
    """Bare IP packets as GWLB carries them, well formed, with every flow-relevant variation.

    ``routable``: only packets a router forwards (unicast addresses a VPC routes, TTL / hop limit >= 2);
    ``private`` with it: only private addresses (traffic a two-arm NAT appliance returns through the tunnel).

    ``protocols`` is a subset of ``("tcp", "udp", "icmp", "other")`` (ICMP is ICMPv6 in IPv6; "other" is
    any other protocol number, e.g. GRE or ESP, carrying random bytes). IPv4 packets may have options and be
    fragments; IPv6 packets may have a chain of up to four extension headers (hop-by-hop, destination
    options, routing, fragment, AH). Sizes go up to ``max_size`` (GWLB's 8500-byte limit by default).

    Example::

        @given(inner_packets(versions=[6], protocols=["udp"], max_size=1500))
        def test_v6_udp(pkt):
            assert pkt.kind.startswith("ipv6") and pkt.kind.endswith("/udp")   # e.g. "ipv6+hbh+frag/udp"
            assert flowkey.five_tuple(pkt.data) == pkt.five_tuple()
    """
    version = draw(st.sampled_from(versions))
    kind = draw(st.sampled_from(protocols))
    if routable:
        src, dst = draw(routable_addresses(version, private)), draw(routable_addresses(version, private))
    elif version == 4:
        src, dst = draw(ipv4_addresses()), draw(ipv4_addresses())
    else:
        src, dst = draw(ipv6_addresses()), draw(ipv6_addresses())
    sport = dport = 0
    if kind == "tcp":
        proto = IPPROTO_TCP
    elif kind == "udp":
        proto = IPPROTO_UDP
    elif kind == "icmp":
        proto = IPPROTO_ICMP if version == 4 else IPPROTO_ICMPV6
    else:
        banned = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP} | ({IPPROTO_ICMPV6, *IPV6_EXT_NUMBERS} if version == 6
                                                            else set())
        proto = draw(st.sampled_from([47, 50, 132, 89, 59, 103]) | st.integers(0, 255)
                     .filter(lambda p: p not in banned))
    if kind in ("tcp", "udp", "icmp"):
        sport, dport = draw(_ports()), draw(_ports())
    exts: tuple[str, ...] = ()
    ext_size = 8
    if version == 6 and extension_headers:
        exts = tuple(draw(st.lists(st.sampled_from(_EXT_CHOICES), max_size=4)))
        if not fragments:
            exts = tuple(e for e in exts if e != "frag")
        if routable:  # RFC 8200 4.1: hop-by-hop only first; routers drop it anywhere else
            exts = tuple(e for i, e in enumerate(exts) if e != "hbh" or i == 0)
        ext_size = draw(st.sampled_from([8, 16, 24, 64]))
        if routable and "hbh" in exts:  # Linux routers drop hop-by-hop padding over 7 bytes (RFC 4942 2.1.9.5)
            ext_size = 8
    fragment = (0, False)
    if fragments and (version == 4 or "frag" in exts):
        fragment = draw(st.just((0, False)) | st.tuples(st.integers(0, 0x1FFF), st.booleans()))
    ip_options = draw(st.sampled_from(_IPV4_OPTIONS)) if version == 4 else b""

    def overhead() -> int:
        ext = sum(8 if e == "frag" else max(ext_size, 16) if e == "ah" else ext_size for e in exts)
        return (20 + len(ip_options) if version == 4 else 40) + ext + {"tcp": 20, "udp": 8, "icmp": 8}.get(kind, 0)

    while overhead() > max_size and (exts or ip_options):  # a small max_size: fewer headers
        if ip_options:
            ip_options = b""
        else:
            exts = exts[:-1]
            if "frag" not in exts:
                fragment = (0, False)
    room = max_size - overhead()
    if room < 0:
        raise ValueError(f"max_size {max_size} leaves no room for the headers")
    size = draw(st.integers(0, min(64, room)) | st.integers(0, room) | st.just(room))
    payload = draw(_payload(size))
    return inner_mod.build(version, src, dst, proto, sport=sport, dport=dport, payload=payload, ext_headers=exts,
                           fragment=fragment, ttl=draw(st.integers(2 if routable else 0, 255)),
                           tos=draw(st.integers(0, 255)),
                           ident=draw(st.integers(0, 0xFFFF)), df=draw(st.booleans()), ip_options=ip_options,
                           icmp_type=draw(st.sampled_from([8, 0] if version == 4 else [128, 129])),
                           tcp_flags=draw(st.integers(0, 0xFF)), ext_size=ext_size)


# --------------------------------------------------------------------------------------------------- options


@st.composite
def extra_options(draw: st.DrawFn, *, option_class: int = geneve.AWS_OPTION_CLASS,
                  max_bytes: int = geneve.MAX_OPTIONS_LEN - geneve.GWLB_OPTIONS_LEN,
                  max_count: int = 6) -> tuple[geneve.GeneveOption, ...]:
    """Options a GWLB parser must skip (and an appliance must echo): non-critical, any class and reserved bits,
    data of 0-124 bytes, never a GWLB option of ``option_class``; at most ``max_bytes`` in all.

    Example::

        @given(extra_options(max_count=2))
        def test_skipped(opts):   # e.g. (GeneveOption(option_class=0xff00, type=5, data=b"12345678"),)
            vp = geneve.build(inner, 1, 2, extra_options=opts)
            assert geneve.parse(vp).header.options[3:] == opts
    """
    budget = max_bytes
    out: list[geneve.GeneveOption] = []
    for _ in range(draw(st.integers(0, max_count))):
        if budget < geneve.OPTION_HEADER_LEN:
            break
        cls = draw(option_classes())
        types = st.integers(0, 0x7F)
        if cls == option_class:
            types = types.filter(lambda t: t not in geneve.GWLB_OPTION_SIZES)
        words = draw(st.integers(0, min(31, (budget - geneve.OPTION_HEADER_LEN) // 4)))
        out.append(geneve.GeneveOption(cls, draw(types), draw(_payload(words * 4)), draw(st.integers(0, 7))))
        budget -= geneve.OPTION_HEADER_LEN + words * 4
    return tuple(out)


# --------------------------------------------------------------------------------------------- valid packets


@cache
def _vector_valid(option_class: int | None) -> tuple[ValidPacket, ...]:
    out = []
    for v in gwlb_vectors():
        if option_class is not None and v.option_class != option_class:
            continue
        s = geneve.scan(v.payload, option_class=v.option_class)
        header = geneve.GeneveHeader.from_bytes(v.payload[:s.header_len])
        inner = v.payload[s.header_len:s.header_len + s.inner_len]
        out.append(ValidPacket(v.payload, header, s.eni_id, s.attachment_id, s.cookie, inner, v.option_class,
                               None, f"ipv{4 if s.protocol == geneve.ETH_P_IP else 6}/captured", v.name,
                               v.payload[s.header_len + s.inner_len:]))
    return tuple(out)


def vector_packets(option_class: int | None = None) -> st.SearchStrategy[ValidPacket]:
    """The real GWLB packets of :mod:`gwlbsim.wire.vectors` (AWS, class 0x0108; Tencent, class 0x0167).

    Their expected fields come from the codec; the differential tests check them against scapy and tshark.
    """
    return st.sampled_from(_vector_valid(option_class))


@st.composite
def _generated_valid(draw: st.DrawFn, option_class: int, eni: st.SearchStrategy[int],
                     attachment: st.SearchStrategy[int], cookie: st.SearchStrategy[int],
                     inner: st.SearchStrategy[InnerPacket], extras: bool, flag_bits: bool, shuffle: bool,
                     padding: bool) -> ValidPacket:
    opts = list(geneve.gwlb_options(draw(eni), draw(attachment), draw(cookie), option_class))
    if flag_bits:
        opts = [replace(o, reserved=draw(st.integers(0, 7))) for o in opts]
    if extras:
        opts += draw(extra_options(option_class=option_class))
    if shuffle:
        opts = draw(st.permutations(opts))
    pkt = draw(inner)
    header = geneve.GeneveHeader(
        protocol=geneve.ETH_P_IP if pkt.version == 4 else geneve.ETH_P_IPV6,
        vni=draw(st.integers(0, 0xFFFFFF)) if flag_bits else 0, options=tuple(opts),
        critical=draw(st.booleans()) if flag_bits else False,
        reserved_flags=draw(st.integers(0, 0x3F)) if flag_bits else 0,
        reserved=draw(st.integers(0, 0xFF)) if flag_bits else 0)
    pad = draw(st.binary(max_size=32)) if padding else b""
    return ValidPacket.from_parts(header, pkt, option_class=option_class, padding=pad)


def valid_packets(*, option_class: int = geneve.AWS_OPTION_CLASS, eni_ids: st.SearchStrategy[int] | None = None,
                  attachment_ids: st.SearchStrategy[int] | None = None,
                  cookies: st.SearchStrategy[int] | None = None, inner: st.SearchStrategy[InnerPacket] | None = None,
                  extras: bool = True, flag_bits: bool = True, shuffle: bool = True, padding: bool = False,
                  vectors: bool = True) -> st.SearchStrategy[ValidPacket]:
    """GWLB GENEVE payloads a correct parser must accept, with the fields each must decode to.

    By default anything RFC 8926 and GWLB allow: the three GWLB options in any order and with any reserved
    bits, up to 220 bytes of extra non-critical options of any class, any VNI, C bit, reserved flag bits and
    reserved byte, any inner packet from :func:`inner_packets`; mixed with the real captures of
    ``option_class`` (unless ``vectors`` is false or the ENI ids are constrained). ``extras=False,
    flag_bits=False, shuffle=False`` gives exactly what real GWLB sends. ``padding`` adds bytes after the
    inner packet (as Ethernet padding would), which parsers must ignore.

    Example::

        @given(valid_packets(eni_ids=st.just(7)))
        def test_eni(vp):
            assert geneve.parse(vp.payload).eni_id == vp.eni_id == 7
    """
    gen = _generated_valid(option_class, eni_ids if eni_ids is not None else _eni_ids(),
                           attachment_ids if attachment_ids is not None else st.just(0) | st.integers(0, 2**64 - 1),
                           cookies if cookies is not None else _cookies(),
                           inner if inner is not None else inner_packets(), extras, flag_bits, shuffle, padding)
    if vectors and eni_ids is None and attachment_ids is None and cookies is None and inner is None:
        known = _vector_valid(option_class)
        if known:
            return st.one_of(gen, st.sampled_from(known))
    return gen


# ----------------------------------------------------------------------------------------- malformed packets


@cache
def _malformed_vector_list() -> tuple[MalformedPacket, ...]:
    out = []
    for v in all_vectors():
        if v.name in VECTOR_LABELS:
            label, reason = VECTOR_LABELS[v.name]
            out.append(MalformedPacket(v.payload, label, reason, v.option_class, "third-party vector", v.name))
    return tuple(out)


def malformed_vectors() -> st.SearchStrategy[MalformedPacket]:
    """Suricata's GENEVE unit-test vectors, labelled (see :data:`gwlbsim.traffic.malformations.VECTOR_LABELS`)."""
    return st.sampled_from(_malformed_vector_list())


@st.composite
def _generated_malformed(draw: st.DrawFn, labels: tuple[str, ...], option_class: int,
                         base: st.SearchStrategy[ValidPacket] | None) -> MalformedPacket:
    label = draw(st.sampled_from(labels))
    if base is None:
        version = MALFORMATIONS[label].inner_version
        vp = draw(_base_for(option_class, version))
    else:
        vp = draw(base)
    return malform(draw, label, vp)


@cache
def _base_for(option_class: int, version: int | None) -> st.SearchStrategy[ValidPacket]:
    if version is None:
        return valid_packets(option_class=option_class)
    return st.one_of(valid_packets(option_class=option_class, inner=inner_packets(versions=(version,))),
                     vector_packets(option_class).filter(lambda vp: vp.header.protocol ==
                                                         (geneve.ETH_P_IP if version == 4 else geneve.ETH_P_IPV6)))


def malformed_packets(*, malformations: Sequence[str] | None = None, option_class: int = geneve.AWS_OPTION_CLASS,
                      base: st.SearchStrategy[ValidPacket] | None = None,
                      vectors: bool = True) -> st.SearchStrategy[MalformedPacket]:
    """Datagrams a correct GWLB parser must drop, each labelled with its malformation and expected reason.

    ``malformations`` restricts the classes (keys of :data:`gwlbsim.traffic.malformations.MALFORMATIONS`); each is
    made by breaking one packet of ``base`` (default: :func:`valid_packets`, which includes the real
    captures). Suricata's malformed vectors are mixed in for class 0x0108 unless ``vectors`` is false.

    Example::

        @given(malformed_packets(malformations=["control_bit", "duplicate_gwlb_option"]))
        def test_dropped(mp):   # mp.reason is "control_packet" or "duplicate_gwlb_option"
            with pytest.raises(geneve.GeneveError) as e:
                geneve.scan(mp.payload)
            assert e.value.reason == mp.reason
    """
    labels = tuple(malformations) if malformations is not None else tuple(MALFORMATIONS)
    unknown = [label for label in labels if label not in MALFORMATIONS]
    if unknown:
        raise ValueError(f"unknown malformations {unknown}; known: {', '.join(MALFORMATIONS)}")
    gen = _generated_malformed(labels, option_class, base)
    if vectors and malformations is None and base is None and option_class == geneve.AWS_OPTION_CLASS:
        return st.one_of(gen, malformed_vectors())
    return gen


def datagrams(option_class: int = geneve.AWS_OPTION_CLASS) -> st.SearchStrategy[bytes]:
    """Anything that may arrive on UDP 6081: valid, malformed, or arbitrary bytes."""
    return st.one_of(valid_packets(option_class=option_class).map(lambda vp: vp.payload),
                     malformed_packets(option_class=option_class).map(lambda mp: mp.payload),
                     st.binary(max_size=300))


# ------------------------------------------------------------------------------------------ flows and traffic


@st.composite
def flows(draw: st.DrawFn, *, eni_ids: st.SearchStrategy[int] | None = None,
          cookies: st.SearchStrategy[int] | None = None, sports: st.SearchStrategy[int] | None = None,
          inner: st.SearchStrategy[InnerPacket] | None = None, option_class: int = geneve.AWS_OPTION_CLASS,
          extras: bool = False, max_inner_size: int = 1500) -> GwlbFlow:
    """A flow as GWLB carries it: ENI id, attachment id, cookie, outer source port, forward and reverse packet.

    Inner packets are unfragmented (so both directions share one key) and at most ``max_inner_size`` bytes.
    ``extras`` adds extra options and a shuffled option order to the flow's header.

    Example::

        @given(flows(eni_ids=st.just(0xE1)))
        def test_flow(f):
            assert geneve.parse(f.payload("reverse", cookie=9)).cookie == 9
            assert geneve.parse(f.payload("forward")).inner == f.forward.data
    """
    fwd = draw(inner if inner is not None else inner_packets(max_size=max_inner_size, fragments=False))
    rev = inner_mod.reply(fwd, draw(st.binary(max_size=32)))
    eni = draw(eni_ids if eni_ids is not None else _eni_ids())
    extra = draw(extra_options(option_class=option_class, max_count=2)) if extras else ()
    order: tuple[int, ...] = ()
    if extras:
        order = tuple(draw(st.permutations(range(3 + len(extra)))))
    return GwlbFlow(eni, draw(st.just(0) | st.integers(0, 2**64 - 1)),
                    draw(cookies if cookies is not None else _cookies()),
                    draw(sports if sports is not None else st.integers(1024, 65535)), fwd, rev, extra,
                    option_class=option_class, shuffled=order)


def flow_lists(*, min_size: int = 1, max_size: int = 8, **flow_args: object) -> st.SearchStrategy[list[GwlbFlow]]:
    """Lists of :func:`flows` (same keyword arguments) with distinct flow keys per ENI and distinct ports."""
    # (type: ignore below) keyword arguments of several types, passed on
    return st.lists(flows(**flow_args), min_size=min_size, max_size=max_size,  # type: ignore[arg-type]
                    unique_by=(lambda f: (f.eni_id, f.key), lambda f: f.sport))


@st.composite
def traffic(draw: st.DrawFn, *, flow_list: st.SearchStrategy[list[GwlbFlow]] | None = None, max_packets: int = 40,
            renew_cookies: bool = True, malformed: bool = False) -> list[Send]:
    """A sequence of datagrams over a list of flows, both directions, in any interleaving.

    With ``renew_cookies`` a flow's cookie sometimes changes (GWLB re-creating the flow after its 5-tuple was
    reused); each :class:`~gwlbsim.traffic.packets.Send` carries the flow as it was when sent. With ``malformed``,
    labelled malformed datagrams from random source ports are mixed in.
    """
    fl = draw(flow_list if flow_list is not None else flow_lists())
    current = list(fl)
    out: list[Send] = []
    for _ in range(draw(st.integers(1, max_packets))):
        if malformed and draw(st.integers(0, 3)) == 0:
            mp = draw(malformed_packets(option_class=current[0].option_class))
            out.append(Send(mp.payload, draw(st.integers(1024, 65535)), mp.malformation))
            continue
        i = draw(st.integers(0, len(current) - 1))
        if renew_cookies and draw(st.integers(0, 7)) == 0:
            current[i] = replace(current[i], cookie=draw(_cookies()))
        direction = draw(st.sampled_from(["forward", "reverse"]))
        f = current[i]
        out.append(Send(f.payload(direction), f.sport, "valid", f, direction))
    return out
