"""Coverage-guided fuzz target: the GENEVE codec (``gwlbsim.wire.geneve``) on arbitrary bytes.

``check(data)`` raises (an AssertionError, or whatever the codec raised) only if the codec misbehaves:

* ``scan``/``parse``/``GeneveHeader.from_bytes`` raise nothing but ``GeneveError`` with a known reason,
  for the AWS and the Tencent option class;
* what ``scan`` accepts, ``parse`` decodes to the same values, and the header re-encodes to the same bytes;
* ``scan`` of the same bytes inside a larger buffer (``start``/``end``) gives the same verdict.

Run it with ``python -m gwlbsim.fuzz.coverage --target codec`` (instrumented, with the seed corpus).
"""

from __future__ import annotations

from gwlbsim.wire import geneve

_CLASSES = (geneve.AWS_OPTION_CLASS, geneve.TENCENT_OPTION_CLASS)


def _verdict(buf: bytes | memoryview, start: int, end: int, option_class: int) -> geneve.Scan | str:
    try:
        return geneve.scan(buf, start, end, option_class)
    except geneve.GeneveError as e:
        assert e.reason in geneve.REASONS, f"unknown reason {e.reason!r}"
        return e.reason


def check(data: bytes) -> None:
    for cls in _CLASSES:
        s = _verdict(data, 0, len(data), cls)
        framed = memoryview(b"\xa5" * 3 + data + b"\x5a")
        assert _verdict(framed, 3, 3 + len(data), cls) == s, "scan depends on bytes outside start:end"
        if isinstance(s, str):
            continue
        p = geneve.parse(data, cls)
        assert (p.eni_id, p.attachment_id, p.cookie) == (s.eni_id, s.attachment_id, s.cookie)
        assert p.header_bytes == data[:s.header_len] == p.header.to_bytes()
        assert p.inner == data[s.header_len:s.header_len + s.inner_len]
        assert not p.header.oam and p.header.protocol == s.protocol
    try:
        h = geneve.GeneveHeader.from_bytes(data)
    except geneve.GeneveError as e:
        assert e.reason in geneve.REASONS, f"unknown reason {e.reason!r}"
    else:
        assert h.to_bytes() == data[:h.length], "a decoded header must re-encode to its bytes"
