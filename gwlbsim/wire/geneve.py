"""The GENEVE wire format as AWS Gateway Load Balancer uses it: the one place that knows it.

RFC 8926 base header (8 bytes) and option TLVs, plus the three GWLB options (class 0x0108 by default):

    type 1  GWLB endpoint ENI id   8 bytes, big-endian u64
    type 2  attachment id          8 bytes, big-endian u64
    type 3  flow cookie            4 bytes, big-endian u32

Two ways in:

* :func:`scan` is the hot-path parser: it validates a datagram in place (``bytes``, ``bytearray`` or
  ``memoryview``) and returns a :class:`Scan` tuple of plain ints. Every part of the project that takes
  GENEVE off the wire goes through it.
* :func:`parse` returns a :class:`GwlbPacket` with every field of the header decoded (for tests, tools and
  pretty-printing); it is built on :func:`scan`.

Both walk the option TLVs with :func:`iter_options` (the one option walk), except where :func:`scan` takes
GWLB's own layout in one read (a property test checks that shortcut against the walk).

Every malformation raises a subclass of :class:`GeneveError` whose ``reason`` is a short, stable name
used as the drop counter key everywhere. Arbitrary bytes never raise anything else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from gwlbsim.wire.reasons import DropReason

GENEVE_PORT = 6081
AWS_OPTION_CLASS = 0x0108
TENCENT_OPTION_CLASS = 0x0167

OPT_ENI_ID = 1
OPT_ATTACHMENT_ID = 2
OPT_FLOW_COOKIE = 3
#: Data length in bytes of each GWLB option type.
GWLB_OPTION_SIZES = {OPT_ENI_ID: 8, OPT_ATTACHMENT_ID: 8, OPT_FLOW_COOKIE: 4}

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_TEB = 0x6558  # transparent Ethernet bridging; valid GENEVE, never used by GWLB

BASE_HEADER_LEN = 8
OPTION_HEADER_LEN = 4
MAX_OPTIONS_LEN = 63 * 4  # 6-bit length in 4-byte words
MAX_OPTION_DATA_LEN = 31 * 4  # 5-bit length in 4-byte words
CRITICAL_BIT = 0x80

#: The largest inner packet GWLB carries (its documented MTU).
GWLB_MTU = 8500
#: GWLB's standard options: ENI id (4+8), attachment id (4+8), cookie (4+4).
GWLB_OPTIONS_LEN = 32
#: Outer IPv4 (20) + UDP (8) + GENEVE base (8) + the three options (32).
GWLB_OVERHEAD = 20 + 8 + BASE_HEADER_LEN + GWLB_OPTIONS_LEN


# --------------------------------------------------------------------------------------------------------
# Errors: one class per reason a packet is refused.


class GeneveError(ValueError):
    """A datagram that is not a usable GWLB GENEVE packet. ``reason`` names the drop counter."""

    reason: ClassVar[str] = DropReason.MALFORMED


class TooShort(GeneveError):
    reason = DropReason.TOO_SHORT


class BadVersion(GeneveError):
    reason = DropReason.BAD_VERSION


class OptionsBeyondPacket(GeneveError):
    """The header's option length claims more bytes than the datagram holds."""

    reason = DropReason.OPTIONS_BEYOND_PACKET


class OptionOverrun(GeneveError):
    """An option's header or data runs past the end of the option area."""

    reason = DropReason.OPTION_OVERRUN


class BadProtocolType(GeneveError):
    """Protocol type is neither IPv4 (0x0800) nor IPv6 (0x86DD): GWLB only carries bare IP packets."""

    reason = DropReason.BAD_PROTOCOL_TYPE


class ProtocolMismatch(GeneveError):
    """The inner packet's IP version does not match the protocol type."""

    reason = DropReason.PROTOCOL_MISMATCH


class MissingAwsOption(GeneveError):
    reason = DropReason.MISSING_GWLB_OPTION


class BadAwsOptionLength(GeneveError):
    reason = DropReason.BAD_GWLB_OPTION_LENGTH


class DuplicateAwsOption(GeneveError):
    """The same GWLB option twice: which cookie to echo would be a guess."""

    reason = DropReason.DUPLICATE_GWLB_OPTION


class UnknownCriticalOption(GeneveError):
    reason = DropReason.UNKNOWN_CRITICAL_OPTION


class ControlPacket(GeneveError):
    """O bit set: a control message whose payload a tunnel endpoint must not forward (RFC 8926 3.4)."""

    reason = DropReason.CONTROL_PACKET


class NoInnerPacket(GeneveError):
    reason = DropReason.NO_INNER_PACKET


class TruncatedInner(GeneveError):
    """The inner IP header is cut short, or its length field claims more bytes than are present."""

    reason = DropReason.TRUNCATED_INNER


#: Every reason, in a stable order (drop counters are reported in this order).
ERRORS: tuple[type[GeneveError], ...] = (
    TooShort,
    BadVersion,
    OptionsBeyondPacket,
    OptionOverrun,
    BadProtocolType,
    ProtocolMismatch,
    MissingAwsOption,
    BadAwsOptionLength,
    DuplicateAwsOption,
    UnknownCriticalOption,
    ControlPacket,
    NoInnerPacket,
    TruncatedInner,
)
REASONS: tuple[str, ...] = tuple(e.reason for e in ERRORS)
#: The reasons that concern only the inner packet: the GENEVE header and the GWLB options passed every check
#: (:func:`scan` finds these last). Forwarding such a datagram is an inner-packet matter, not malformed GENEVE.
INNER_REASONS: frozenset[str] = frozenset({TruncatedInner.reason, ProtocolMismatch.reason})


# --------------------------------------------------------------------------------------------------------
# The hot-path scanner.

_BASE = struct.Struct("!BBHI")  # ver|optlen, flags|rsvd, protocol, vni<<8|reserved
#: GWLB's own layout and the start of an inner IPv4 header, 44 bytes at once: flags word, protocol, VNI word,
#: then per option its header word (class, type, length) and data; then the inner version/IHL and total length
_STANDARD = struct.Struct("!HHIIQIQIIBxH")
_STANDARD_WORDS: dict[int, tuple[int, int, int]] = {}  # option class -> the three option header words
_OPT = struct.Struct("!HBB")  # class, type, rsvd|length
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


#: One option TLV as :func:`iter_options` finds it: (offset of its 4-byte header in the buffer, option class,
#: type byte with the critical bit, the 3 reserved bits, bytes of data after the header). A plain tuple: a
#: named one made the general scan about a quarter slower.
OptionTlv = tuple[int, int, int, int, int]


def iter_options(buf: bytes | bytearray | memoryview, start: int, end: int) -> Iterator[OptionTlv]:
    """Walk the option TLVs of the GENEVE header at ``buf[start:]`` whose option area ends at ``end``.

    Yields an :data:`OptionTlv` per option, in order and as each is reached: a caller that raises on one
    never sees a later one. Raises :class:`OptionOverrun` when an option's header or data runs past ``end``.
    Offsets in error messages count from ``start``.
    """
    unpack = _OPT.unpack_from
    pos = start + BASE_HEADER_LEN
    while pos < end:
        if pos + OPTION_HEADER_LEN > end:
            raise OptionOverrun(f"option header at offset {pos - start} runs past the option area")
        cls, typ, length = unpack(buf, pos)
        data_len = (length & 0x1F) * 4
        nxt = pos + OPTION_HEADER_LEN + data_len
        if nxt > end:
            raise OptionOverrun(f"option 0x{cls:04x}/0x{typ:02x} at offset {pos - start} has {data_len} "
                                f"data bytes, only {end - pos - OPTION_HEADER_LEN} left in the option area")
        yield pos, cls, typ, length >> 5, data_len
        pos = nxt


class Scan(NamedTuple):
    """What the hot path needs from a valid GWLB GENEVE packet, with offsets relative to ``start``."""

    header_len: int  #: bytes of GENEVE header (base + options); the inner packet starts here
    inner_len: int  #: bytes of the inner IP packet, from its own length field
    protocol: int  #: 0x0800 or 0x86DD
    eni_id: int
    attachment_id: int
    cookie: int


def _standard_words(option_class: int) -> tuple[int, int, int]:
    words = _STANDARD_WORDS.get(option_class)
    if words is None:
        def word(typ: int) -> int:
            return (option_class << 16) | (typ << 8) | (GWLB_OPTION_SIZES[typ] // 4)

        words = (word(OPT_ENI_ID), word(OPT_ATTACHMENT_ID), word(OPT_FLOW_COOKIE))
        if len(_STANDARD_WORDS) < 64:
            _STANDARD_WORDS[option_class] = words
    return words


_scan = tuple.__new__  # makes a Scan without the generated __new__


def scan(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None,
         option_class: int = AWS_OPTION_CLASS) -> Scan:
    """Validate the GENEVE packet in ``buf[start:end]`` and return its GWLB fields.

    Raises a :class:`GeneveError` subclass for every way the packet can be unusable; never anything else.
    """
    if end is None:
        end = len(buf)
    size = end - start
    if size >= 60:
        # fast path: exactly what GWLB sends (three options in its order, no flag or reserved bits set)
        # around an inner IPv4 packet whose header is all there
        (flags, protocol, _vni, w1, eni_id, w2, attachment_id, w3, cookie, vihl,
         total) = _STANDARD.unpack_from(buf, start)
        if flags == 0x0800 and (w1, w2, w3) == (_STANDARD_WORDS.get(option_class) or _standard_words(option_class)):
            if protocol == ETH_P_IP and vihl >> 4 == 4 and 20 <= (vihl & 0x0F) * 4 <= total <= size - 40:
                return _scan(Scan, (40, total, protocol, eni_id, attachment_id, cookie))
            if protocol in (ETH_P_IP, ETH_P_IPV6):
                return _scan(Scan, (40, _inner_len(buf, start + 40, size - 40, protocol), protocol, eni_id,
                                    attachment_id, cookie))
    return scan_general(buf, start, end, option_class)


def scan_general(buf: bytes | bytearray | memoryview, start: int, end: int, option_class: int) -> Scan:
    """:func:`scan` without its shortcut for GWLB's own layout: walks any option list."""
    size = end - start
    if size < BASE_HEADER_LEN:
        raise TooShort(f"{size} bytes, a GENEVE header needs {BASE_HEADER_LEN}")
    b0, b1, protocol, _vni = _BASE.unpack_from(buf, start)
    if b0 >> 6:
        raise BadVersion(f"version {b0 >> 6}, only 0 is defined")
    header_len = BASE_HEADER_LEN + (b0 & 0x3F) * 4
    if header_len > size:
        raise OptionsBeyondPacket(f"option length {header_len - BASE_HEADER_LEN} bytes, "
                                  f"only {size - BASE_HEADER_LEN} after the base header")
    if protocol != ETH_P_IP and protocol != ETH_P_IPV6:
        raise BadProtocolType(f"protocol type 0x{protocol:04x}, GWLB carries only 0x0800 and 0x86dd")

    eni_id = attachment_id = cookie = -1
    for pos, cls, typ, _reserved, data_len in iter_options(buf, start, start + header_len):
        data = pos + OPTION_HEADER_LEN
        if cls == option_class and typ in GWLB_OPTION_SIZES:
            want = GWLB_OPTION_SIZES[typ]
            if data_len != want:
                raise BadAwsOptionLength(f"GWLB option type {typ} has {data_len} data bytes, expected {want}")
            if typ == OPT_ENI_ID:
                if eni_id >= 0:
                    raise DuplicateAwsOption("two ENI id options")
                eni_id = _U64.unpack_from(buf, data)[0]
            elif typ == OPT_ATTACHMENT_ID:
                if attachment_id >= 0:
                    raise DuplicateAwsOption("two attachment id options")
                attachment_id = _U64.unpack_from(buf, data)[0]
            else:
                if cookie >= 0:
                    raise DuplicateAwsOption("two flow cookie options")
                cookie = _U32.unpack_from(buf, data)[0]
        elif typ & CRITICAL_BIT:
            raise UnknownCriticalOption(f"unknown critical option class 0x{cls:04x} type 0x{typ:02x}")
    if eni_id < 0 or attachment_id < 0 or cookie < 0:
        missing = [name for name, v in (("ENI id", eni_id), ("attachment id", attachment_id),
                                        ("flow cookie", cookie)) if v < 0]
        raise MissingAwsOption(f"no {', '.join(missing)} option of class 0x{option_class:04x}")
    if b1 & 0x80:
        raise ControlPacket("O bit set: control packet, payload must not be forwarded")

    avail = size - header_len
    if avail <= 0:
        raise NoInnerPacket("no inner packet after the GENEVE header")
    return Scan(header_len, _inner_len(buf, start + header_len, avail, protocol), protocol, eni_id, attachment_id,
                cookie)


def _inner_len(buf: bytes | bytearray | memoryview, inner: int, avail: int, protocol: int) -> int:
    """Validate the inner IP packet at ``buf[inner:]`` (``avail`` bytes present) against the protocol type;
    returns its length from its own header."""
    version = buf[inner] >> 4
    if protocol == ETH_P_IP:
        if version != 4:
            raise ProtocolMismatch(f"protocol type 0x0800 but inner IP version {version}")
        if avail < 20:
            raise TruncatedInner(f"inner IPv4 header needs 20 bytes, {avail} present")
        ihl = (buf[inner] & 0x0F) * 4
        total: int = _U16.unpack_from(buf, inner + 2)[0]
        if ihl < 20 or total < ihl or total > avail:
            raise TruncatedInner(f"inner IPv4 header length {ihl}, total length {total}, {avail} bytes present")
        inner_len: int = total
    else:
        if version != 6:
            raise ProtocolMismatch(f"protocol type 0x86dd but inner IP version {version}")
        if avail < 40:
            raise TruncatedInner(f"inner IPv6 header needs 40 bytes, {avail} present")
        payload_len: int = _U16.unpack_from(buf, inner + 4)[0]
        inner_len = 40 + payload_len
        if inner_len > avail:
            raise TruncatedInner(f"inner IPv6 payload length claims {inner_len} bytes, {avail} present")
    return inner_len


# --------------------------------------------------------------------------------------------------------
# The decoded view, and the builder.


@dataclass(frozen=True, slots=True)
class GeneveOption:
    """One option TLV, every bit kept: ``type`` includes the critical bit, ``reserved`` is the 3 R bits."""

    option_class: int
    type: int
    data: bytes = b""
    reserved: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.option_class <= 0xFFFF:
            raise ValueError(f"option class {self.option_class:#x} does not fit 16 bits")
        if not 0 <= self.type <= 0xFF:
            raise ValueError(f"option type {self.type:#x} does not fit 8 bits")
        if not 0 <= self.reserved <= 7:
            raise ValueError(f"option reserved bits {self.reserved:#x} do not fit 3 bits")
        if len(self.data) % 4 or len(self.data) > MAX_OPTION_DATA_LEN:
            raise ValueError(f"option data must be a multiple of 4 bytes up to {MAX_OPTION_DATA_LEN}, "
                             f"got {len(self.data)}")

    @property
    def critical(self) -> bool:
        return bool(self.type & CRITICAL_BIT)

    def to_bytes(self) -> bytes:
        return _OPT.pack(self.option_class, self.type, (self.reserved << 5) | (len(self.data) // 4)) + self.data


def eni_option(eni_id: int, option_class: int = AWS_OPTION_CLASS) -> GeneveOption:
    return GeneveOption(option_class, OPT_ENI_ID, _U64.pack(eni_id))


def attachment_option(attachment_id: int, option_class: int = AWS_OPTION_CLASS) -> GeneveOption:
    return GeneveOption(option_class, OPT_ATTACHMENT_ID, _U64.pack(attachment_id))


def cookie_option(cookie: int, option_class: int = AWS_OPTION_CLASS) -> GeneveOption:
    return GeneveOption(option_class, OPT_FLOW_COOKIE, _U32.pack(cookie))


def gwlb_options(eni_id: int, attachment_id: int, cookie: int,
                 option_class: int = AWS_OPTION_CLASS) -> tuple[GeneveOption, ...]:
    """The three GWLB options in the order real GWLB sends them."""
    return (eni_option(eni_id, option_class), attachment_option(attachment_id, option_class),
            cookie_option(cookie, option_class))


@dataclass(frozen=True, slots=True)
class GeneveHeader:
    """A GENEVE header with every bit kept, so that ``to_bytes`` reproduces what was parsed."""

    protocol: int = ETH_P_IP
    vni: int = 0
    options: tuple[GeneveOption, ...] = ()
    oam: bool = False
    critical: bool = False
    reserved_flags: int = 0  #: the 6 reserved bits after O and C
    reserved: int = 0  #: the reserved byte after the VNI
    version: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 3:
            raise ValueError(f"version {self.version} does not fit 2 bits")
        if not 0 <= self.reserved_flags <= 0x3F:
            raise ValueError(f"reserved flag bits {self.reserved_flags:#x} do not fit 6 bits")
        if not 0 <= self.reserved <= 0xFF:
            raise ValueError(f"reserved byte {self.reserved:#x} does not fit 8 bits")
        if not 0 <= self.vni <= 0xFFFFFF:
            raise ValueError(f"VNI {self.vni:#x} does not fit 24 bits")
        if not 0 <= self.protocol <= 0xFFFF:
            raise ValueError(f"protocol type {self.protocol:#x} does not fit 16 bits")
        if self.options_len > MAX_OPTIONS_LEN:
            raise ValueError(f"options take {self.options_len} bytes, at most {MAX_OPTIONS_LEN} fit")

    @property
    def options_len(self) -> int:
        return sum(OPTION_HEADER_LEN + len(o.data) for o in self.options)

    @property
    def length(self) -> int:
        return BASE_HEADER_LEN + self.options_len

    def to_bytes(self) -> bytes:
        b0 = (self.version << 6) | (self.options_len // 4)
        b1 = (self.oam << 7) | (self.critical << 6) | self.reserved_flags
        base = _BASE.pack(b0, b1, self.protocol, (self.vni << 8) | self.reserved)
        return base + b"".join(o.to_bytes() for o in self.options)

    @classmethod
    def from_bytes(cls, buf: bytes | bytearray | memoryview) -> GeneveHeader:
        """Decode a header whose option area is well formed (see :func:`scan` for full validation)."""
        buf = bytes(buf)
        if len(buf) < BASE_HEADER_LEN:
            raise TooShort(f"{len(buf)} bytes, a GENEVE header needs {BASE_HEADER_LEN}")
        b0, b1, protocol, vni_word = _BASE.unpack_from(buf, 0)
        end = BASE_HEADER_LEN + (b0 & 0x3F) * 4
        if end > len(buf):
            raise OptionsBeyondPacket(f"option length {end - BASE_HEADER_LEN} bytes, "
                                      f"only {len(buf) - BASE_HEADER_LEN} present")
        options = tuple(GeneveOption(ocls, typ, buf[pos + OPTION_HEADER_LEN:pos + OPTION_HEADER_LEN + n], rsv)
                        for pos, ocls, typ, rsv, n in iter_options(buf, 0, end))
        return cls(protocol=protocol, vni=vni_word >> 8, options=options, oam=bool(b1 & 0x80),
                   critical=bool(b1 & 0x40), reserved_flags=b1 & 0x3F, reserved=vni_word & 0xFF,
                   version=b0 >> 6)


def gwlb_header(eni_id: int, cookie: int, attachment_id: int = 0, *, inner_version: int = 4,
                vni: int = 0, option_class: int = AWS_OPTION_CLASS,
                extra_options: tuple[GeneveOption, ...] = ()) -> GeneveHeader:
    """The header real GWLB sends (``08 00 08 00 00 00 00 00`` + ENI, attachment, cookie), plus extras."""
    if inner_version not in (4, 6):
        raise ValueError(f"inner IP version must be 4 or 6, not {inner_version}")
    opts = gwlb_options(eni_id, attachment_id, cookie, option_class) + tuple(extra_options)
    return GeneveHeader(protocol=ETH_P_IP if inner_version == 4 else ETH_P_IPV6, vni=vni, options=opts,
                        critical=any(o.critical for o in extra_options))


def protocol_for(inner: bytes | bytearray | memoryview) -> int:
    """The GENEVE protocol type for a bare IP packet, from its version nibble."""
    version = inner[0] >> 4 if len(inner) else 0
    if version == 4:
        return ETH_P_IP
    if version == 6:
        return ETH_P_IPV6
    raise ValueError(f"not an IP packet (version nibble {version})")


@dataclass(frozen=True, slots=True)
class GwlbPacket:
    """A parsed GWLB GENEVE payload (what follows the outer UDP header)."""

    header: GeneveHeader
    eni_id: int
    attachment_id: int
    cookie: int
    inner: bytes
    header_bytes: bytes = field(repr=False)

    @property
    def inner_version(self) -> int:
        return 4 if self.header.protocol == ETH_P_IP else 6

    def to_bytes(self) -> bytes:
        return self.header_bytes + self.inner


def parse(buf: bytes | bytearray | memoryview, option_class: int = AWS_OPTION_CLASS) -> GwlbPacket:
    """Fully validate and decode a GENEVE UDP payload (see :func:`scan` for the rules)."""
    s = scan(buf, 0, len(buf), option_class)
    raw = bytes(buf[:s.header_len])
    return GwlbPacket(GeneveHeader.from_bytes(raw), s.eni_id, s.attachment_id, s.cookie,
                      bytes(buf[s.header_len:s.header_len + s.inner_len]), raw)


def build(inner: bytes, eni_id: int, cookie: int, attachment_id: int = 0, *,
          option_class: int = AWS_OPTION_CLASS, vni: int = 0,
          extra_options: tuple[GeneveOption, ...] = ()) -> bytes:
    """A GENEVE UDP payload as GWLB would send ``inner`` (a bare IPv4 or IPv6 packet)."""
    version = 4 if protocol_for(inner) == ETH_P_IP else 6
    hdr = gwlb_header(eni_id, cookie, attachment_id, inner_version=version, vni=vni,
                      option_class=option_class, extra_options=extra_options)
    return hdr.to_bytes() + bytes(inner)
