"""The network fuzzer's traffic: pools drawn once from :mod:`gwlbsim.traffic.strategies`, mixed and mutated at line
rate.

* valid packets for a few "burst" endpoints (ENI ids), plus the real GWLB captures of the option class;
* labelled malformed packets of every class (and Suricata's vectors);
* "probe" flows on their own endpoints, sent with a fresh cookie at every check to see that the appliance
  still returns valid traffic with the right header;
* havoc: random byte-level mutations of pool packets (bit flips, interesting values, truncation, insertion,
  deletion, splicing), classified by ``gwlbsim.wire.geneve``. Mutants that happen to be valid are kept only for
  the known endpoints, so that legitimate tunnels (and their devices) stay bounded.

Endpoints are bounded on purpose: an appliance may create state per endpoint (gwlbtun creates two devices),
so device and descriptor counts are only expected to stay bounded if the endpoints are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gwlbsim.fuzz.sampling import sample
from hypothesis import strategies as st

from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.malformations import MALFORMATIONS
from gwlbsim.traffic.packets import GwlbFlow, MalformedPacket, ValidPacket
from gwlbsim.traffic.record import Sent
from gwlbsim.wire import geneve

PROBE_ENIS = tuple(0x0F00_0000_0000_0001 + i for i in range(4))
BURST_ENIS = tuple(0x0E00_0000_0000_0001 + i for i in range(4))
MAX_PAYLOAD = 8900  # stays under the test link's 9001-byte MTU with outer IPv4 + UDP
_INTERESTING8 = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF)
_INTERESTING16 = (0x0000, 0x0001, 0x0800, 0x86DD, 0x6558, 0x7FFF, 0x8000, 0xFFFF)


@dataclass
class TrafficPool:
    valid: list[ValidPacket]
    malformed: list[MalformedPacket]
    probes: list[GwlbFlow]
    option_class: int
    allowed_enis: frozenset[int]

    @classmethod
    def build(cls, *, seed: int, size: int, probes: int = 4,
              option_class: int = geneve.AWS_OPTION_CLASS) -> TrafficPool:
        """Draw the pools (takes a few seconds for a few hundred packets; ``size`` 0: only the probe flows)."""
        flows = sample(gst.flow_lists(min_size=probes, max_size=probes, eni_ids=st.sampled_from(PROBE_ENIS),
                                      option_class=option_class, max_inner_size=1200, extras=True), 1,
                       seed + 99) if probes else [[]]
        if size <= 0:
            return cls([], [], flows[0], option_class, frozenset(PROBE_ENIS))
        valid = sample(gst.valid_packets(option_class=option_class, eni_ids=st.sampled_from(BURST_ENIS)), size, seed)
        valid += list(gst._vector_valid(option_class))
        per_class = max(4, size // len(MALFORMATIONS))  # every class, evenly
        malformed = [mp for i, label in enumerate(MALFORMATIONS)
                     for mp in sample(gst.malformed_packets(malformations=[label], option_class=option_class),
                                      per_class, seed + 1 + i)]
        if option_class == geneve.AWS_OPTION_CLASS:
            malformed += list(gst._malformed_vector_list())
        return cls(valid, malformed, flows[0], option_class,
                   frozenset({*PROBE_ENIS, *BURST_ENIS, *(vp.eni_id for vp in valid)}))


class TrafficSource:
    """Chooses each next datagram: valid, malformed or havoc by weight, from one of ``sports`` source ports."""

    def __init__(self, pool: TrafficPool, rng: random.Random, *, mix: tuple[int, int, int] = (3, 5, 2),
                 sports: range = range(50000, 50032)) -> None:
        self.pool = pool
        self.rng = rng
        self.mix = mix
        self.sports = sports

    def next(self) -> Sent:
        kind = self.rng.choices(("valid", "malformed", "havoc"), weights=self.mix)[0]
        sport = self.rng.choice(self.sports)
        if kind == "valid" and self.pool.valid:
            return Sent(sport, self.rng.choice(self.pool.valid).payload, "valid")
        if kind == "havoc":
            return self.havoc(sport)
        mp = self.rng.choice(self.pool.malformed)
        return Sent(sport, mp.payload, mp.malformation)

    def havoc(self, sport: int) -> Sent:
        """A random mutant of a pool packet; valid mutants only for known endpoints."""
        for _ in range(4):
            data = mutate(self.rng, self._any_payload(), self._any_payload)
            try:
                s = geneve.scan(data, option_class=self.pool.option_class)
            except geneve.GeneveError:
                return Sent(sport, data, "havoc")
            if s.eni_id in self.pool.allowed_enis:
                return Sent(sport, data, "havoc:valid")
        mp = self.rng.choice(self.pool.malformed)
        return Sent(sport, mp.payload, mp.malformation)

    def _any_payload(self) -> bytes:
        if self.pool.valid and self.rng.random() < 0.5:
            return self.rng.choice(self.pool.valid).payload
        return self.rng.choice(self.pool.malformed).payload


def _position(rng: random.Random, n: int) -> int:
    return rng.randrange(min(n, 64)) if rng.random() < 0.6 else rng.randrange(n)


def mutate(rng: random.Random, data: bytes, other: object = None) -> bytes:
    """1-4 random byte-level mutations, biased towards the GENEVE header (the first 64 bytes)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        n = len(buf)
        if n == 0:
            buf += rng.randbytes(rng.randint(1, 16))
        elif op == 0:
            p = _position(rng, n)
            buf[p] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[_position(rng, n)] = rng.choice(_INTERESTING8)
        elif op == 2 and n >= 2:
            p = min(_position(rng, n), n - 2)
            v = rng.choice((*_INTERESTING16, n, n - 1))
            buf[p:p + 2] = (v & 0xFFFF).to_bytes(2, "big")
        elif op == 3:
            del buf[rng.randrange(n):]
        elif op == 4:
            p = _position(rng, n)
            buf[p:p] = rng.randbytes(rng.randint(1, 32))
        elif op == 5:
            p = _position(rng, n)
            del buf[p:p + rng.randint(1, 32)]
        elif op == 6:
            p = _position(rng, n)
            q = min(n, p + rng.randint(1, 64))
            buf[q:q] = buf[p:q]
        elif callable(other):
            donor = other()
            buf = buf[:_position(rng, n)] + donor[rng.randrange(len(donor) or 1):]
    return bytes(buf[:MAX_PAYLOAD])
