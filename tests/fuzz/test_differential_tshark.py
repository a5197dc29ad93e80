"""Differential tests against tshark (Wireshark's GENEVE dissector), on batches of generated packets.

Valid packets: tshark must read every GENEVE field as we do, find the inner packet's addresses, and reach the
TCP/UDP ports exactly when our flow key has them. Malformed packets: tshark's expert infos must fall in the
category :data:`gwlbsim.fuzz.oracles.TSHARK_EXPECTED` documents for the malformation (docs/fuzzing.md lists the
intended disagreements). One tshark run per batch keeps this affordable (tshark starts in ~0.4 s).
"""

from __future__ import annotations

import ipaddress

import pytest
from gwlbsim.fuzz.oracles import (
    TSHARK_EXPECTED,
    geneve_experts_unexplained,
    tshark_available,
    tshark_expected,
    tshark_outcome,
    tshark_views,
)
from hypothesis import Phase, given
from hypothesis import strategies as st

from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.malformations import MALFORMATIONS
from gwlbsim.traffic.packets import MalformedPacket, ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import address

from .hyp import budget

pytestmark = pytest.mark.skipif(not tshark_available(), reason="tshark is not installed (apt-get install tshark); "
                                                               "CI installs it")


def _same_address(shown: str | None, value: int) -> bool:
    return shown is not None and ipaddress.ip_address(shown) == address(value)


# No shrinking: it would rerun tshark hundreds of times; the assertion names the packet that disagrees.
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]


@budget(6, phases=NO_SHRINK)
@given(st.lists(gst.valid_packets(), min_size=25, max_size=40))
def test_tshark_reads_every_field_of_valid_packets_as_we_do(batch: list[ValidPacket]) -> None:
    for vp, v in zip(batch, tshark_views([vp.payload for vp in batch]), strict=True):
        h = vp.header
        assert v.dissected and not geneve_experts_unexplained(v) and not v.outer_malformed, (vp, v)
        assert (v.version, v.options_len, v.oam, v.critical, v.reserved_flags, v.protocol, v.vni, v.reserved) == (
            h.version, h.options_len, h.oam, h.critical, h.reserved_flags, h.protocol, h.vni, h.reserved), vp
        assert [(o.option_class, o.type, o.reserved, o.data) for o in v.options] == [
            (o.option_class, o.type, o.reserved, o.data) for o in h.options], vp
        assert v.inner_version == vp.inner[0] >> 4
        if vp.flow is not None and vp.built_from is not None:
            assert _same_address(v.inner_src, vp.flow.src) and _same_address(v.inner_dst, vp.flow.dst), (vp, v)
            if vp.built_from.ports_visible:
                assert v.inner_ports == (vp.flow.sport, vp.flow.dport), (vp, v)
            else:
                assert v.inner_ports is None, (vp, v)


@budget(6, phases=NO_SHRINK)
@given(st.lists(gst.malformed_packets(), min_size=40, max_size=60))
def test_tshark_expert_infos_on_malformed_packets_are_as_documented(batch: list[MalformedPacket]) -> None:
    for mp, v in zip(batch, tshark_views([mp.payload for mp in batch]), strict=True):
        expected = tshark_expected(mp)
        assert expected in tshark_outcome(v), (f"{mp.malformation} ({mp.detail}): expected tshark to be "
                                               f"{expected}, got {sorted(tshark_outcome(v))}", mp, v)


def test_every_malformation_has_a_documented_tshark_expectation() -> None:
    assert set(MALFORMATIONS) <= set(TSHARK_EXPECTED)
    assert {"malformed_geneve", "unknown_version", "option_past_end", "inner_ip_flagged", "silent"} >= set(
        TSHARK_EXPECTED.values())


def test_tshark_reads_the_real_captures_as_we_do() -> None:
    vps = list(gst._vector_valid(None))
    for vp, v in zip(vps, tshark_views([vp.payload for vp in vps]), strict=True):
        assert [int.from_bytes(o.data, "big") for o in v.options
                if o.option_class == vp.option_class and o.type in geneve.GWLB_OPTION_SIZES] == [
            vp.eni_id, vp.attachment_id, vp.cookie], vp.origin
        assert not v.geneve_experts and v.inner_version == 4
