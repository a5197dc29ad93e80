"""Writes the committed seed corpus of the coverage-guided fuzzers: ``python -m fuzz.corpus_seed``.

* ``fuzz/corpus/codec/``: every third-party vector (real AWS and Tencent GWLB packets, Suricata's), and one
  generated packet per malformation class plus a few valid ones (Hypothesis with a fixed seed);
* ``fuzz/corpus/core/``: programs for :mod:`fuzz.atheris_core`: each real AWS packet inbound, its tunnel
  made ready, the packet and its answer returned; plus programs with several endpoints, a renewed cookie,
  expiry, a failed tunnel creation and a retry, an idle tunnel torn down.

File names are the SHA-1 of the content (as libFuzzer names its own), so rerunning changes nothing unless the
generators changed. Keep it small: it is a starting point, not a record of everything found.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from fuzz.atheris_core import CLOCK, FAILED, INBOUND, READY, REPLY, RETURN, RETURN_RAW, TICK, Op, encode
from fuzz.coverage import CORPUS_DIR
from fuzz.sampling import sample
from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.inner import tcp_packet, udp_packet
from gwlbsim.traffic.malformations import MALFORMATIONS
from gwlbsim.traffic.packets import MalformedPacket, ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.vectors import all_vectors, gwlb_vectors


def codec_seeds() -> list[bytes]:
    seeds = [v.payload for v in all_vectors()]
    for label, m in MALFORMATIONS.items():
        small = gst.valid_packets(inner=gst.inner_packets(versions=(m.inner_version or 4,), max_size=400))
        mp = sample(gst.malformed_packets(malformations=[label], base=small), 1, 1)[0]
        assert isinstance(mp, MalformedPacket)
        seeds.append(mp.payload)
    for vp in sample(gst.valid_packets(vectors=False, inner=gst.inner_packets(max_size=600)), 6, 2):
        assert isinstance(vp, ValidPacket)
        seeds.append(vp.payload)
    return seeds


def core_seeds() -> list[bytes]:
    programs: list[list[Op]] = []
    for v in gwlb_vectors():
        if v.option_class == geneve.AWS_OPTION_CLASS:
            programs.append([Op(INBOUND, v.payload, 0, 0), Op(READY), Op(RETURN), Op(REPLY), Op(CLOCK, a=100),
                             Op(TICK)])
    fwd = tcp_packet("192.168.1.10", "192.168.2.20", 40000, 80).data
    other = udp_packet("192.168.1.11", "192.168.2.20", 5353, 53, b"q").data
    a = geneve.build(fwd, 0xA, 1)
    a2 = geneve.build(fwd, 0xA, 2, extra_options=(geneve.GeneveOption(0xFF00, 0x10, b"abcd", 3),))
    b = geneve.build(other, 0xB, 7)
    programs += [
        # two endpoints, interleaved, cookie renewed, returns both ways
        [Op(INBOUND, a, 0, 60001), Op(INBOUND, b, 1, 60002), Op(READY, a=0), Op(READY, a=0), Op(RETURN, a=0),
         Op(INBOUND, a2, 0, 60001), Op(REPLY, a=0, b=0), Op(RETURN, a=1, b=1), Op(REPLY, a=1, b=0)],
        # flow expiry (timeout 10 s), then the flow comes back
        [Op(INBOUND, a, 0, 60001), Op(READY), Op(CLOCK, a=1001), Op(REPLY), Op(INBOUND, a2, 0, 60001),
         Op(REPLY, b=1), Op(TICK)],
        # creation fails, packets queued and dropped, retried after the interval
        [Op(INBOUND, a, 0, 0), Op(INBOUND, a2, 0, 0), Op(FAILED), Op(INBOUND, a, 0, 0), Op(CLOCK, a=150),
         Op(INBOUND, a, 0, 0), Op(READY), Op(RETURN)],
        # idle tunnel torn down (timeout 30 s), a stray return, a packet to another port
        [Op(INBOUND, a, 0x80, 0), Op(INBOUND, a, 0, 0), Op(READY), Op(CLOCK, a=3100), Op(TICK),
         Op(INBOUND, b, 0, 0), Op(RETURN_RAW, tcp_packet("9.9.9.9", "8.8.8.8", 1, 2).data, 0)],
    ]
    small = gst.valid_packets(inner=gst.inner_packets(versions=(4,), max_size=400))
    for i, mp in enumerate(sample(gst.malformed_packets(base=small), 8, 3)):
        assert isinstance(mp, MalformedPacket)
        programs.append([Op(INBOUND, a, 0, 0), Op(INBOUND, mp.payload, i & 1, 0), Op(READY), Op(RETURN)])
    return [encode(p) for p in programs]


def write(root: Path = CORPUS_DIR) -> dict[str, int]:
    counts = {}
    for target, seeds in (("codec", codec_seeds()), ("core", core_seeds())):
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for data in seeds:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        counts[target] = len(list(d.iterdir()))
    return counts


if __name__ == "__main__":
    for target, n in write(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS_DIR).items():
        print(f"{target}: {n} files")
