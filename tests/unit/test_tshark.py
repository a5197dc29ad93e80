"""tshark (Wireshark's dissector) as an independent oracle for what the codec builds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gwlbsim.wire import geneve, pcap
from gwlbsim.wire.outer import build_ipv4_udp

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None,
                                reason="tshark is not installed (apt-get install tshark)")

INNER = bytes.fromhex("4500001c000100004001f7cf0a0000010a0000020800f7ff00000000")


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
           "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def test_tshark_decodes_what_we_build(tmp_path: Path) -> None:
    extra = (geneve.GeneveOption(0xFF01, 0x11, b"abcdefgh", reserved=2),)
    payloads = [
        geneve.build(INNER, 0x2B8EE1D4DB0C51C4, 0xDEADBEEF),
        geneve.build(INNER, 1, 2, 3, vni=0x123456, extra_options=extra),
    ]
    path = tmp_path / "ours.pcap"
    pcap.write(path, [build_ipv4_udp("10.0.0.1", "10.0.0.2", 60000 + i, 6081, p) for i, p in enumerate(payloads)])
    rows = tshark_fields(path, "geneve.version", "geneve.vni", "geneve.proto_type", "geneve.option.class",
                         "geneve.option.type", "geneve.option.unknown.data", "udp.checksum.status",
                         "_ws.expert.message", "icmp.type")
    assert len(rows) == 2
    ver, vni, proto, classes, types, data, _csum, expert, icmp = rows[0]
    assert (ver, int(vni, 16), int(proto, 16)) == ("0", 0, 0x0800)
    assert [int(c, 16) for c in classes.split(",")] == [0x0108] * 3
    assert [int(t, 16) for t in types.split(",")] == [1, 2, 3]
    assert data.replace(":", "").split(",") == ["2b8ee1d4db0c51c4", "0000000000000000", "deadbeef"]
    assert expert == "" and icmp == "8"
    _ver, vni, _proto, classes, _types, data, _csum, _expert, _icmp = rows[1]
    assert int(vni, 16) == 0x123456
    assert [int(c, 16) for c in classes.split(",")] == [0x0108] * 3 + [0xFF01]
    assert data.replace(":", "").split(",")[-1] == b"abcdefgh".hex()


def test_tshark_flags_the_malformations_it_knows(tmp_path: Path) -> None:
    good = geneve.build(INNER, 1, 2)
    bad_version = bytes([good[0] | 0x40]) + good[1:]
    overrun = good[:11] + b"\x1f" + good[12:]
    path = tmp_path / "bad.pcap"
    pcap.write(path, [build_ipv4_udp("10.0.0.1", "10.0.0.2", 60000, 6081, p) for p in (bad_version, overrun)])
    rows = tshark_fields(path, "_ws.expert.message")
    assert "Unknown version 1" in rows[0][0]
    assert "past end of options" in rows[1][0]
    for data, error in ((bad_version, geneve.BadVersion), (overrun, geneve.OptionOverrun)):
        with pytest.raises(error):
            geneve.scan(data)
