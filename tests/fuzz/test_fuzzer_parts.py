"""The network fuzzer's pure parts: traffic source, reproducer files, progress display."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from fuzz.malformations import MALFORMATIONS
from fuzz.progress import Progress
from fuzz.reproducer import SCRIPT, Sent, load_meta, read_pcap, verdict, write
from fuzz.traffic_pool import MAX_PAYLOAD, TrafficPool, TrafficSource, mutate
from gwlbsim import geneve


def test_traffic_source_mixes_every_class_and_keeps_valid_mutants_on_known_endpoints() -> None:
    pool = TrafficPool.build(seed=3, size=40, probes=3)
    assert {mp.malformation for mp in pool.malformed} >= set(MALFORMATIONS)
    assert len(pool.probes) == 3 and len({(f.eni_id, f.key) for f in pool.probes}) == 3
    src = TrafficSource(pool, random.Random(1))
    labels = set()
    for _ in range(3000):
        s = src.next()
        labels.add(s.label)
        assert 50000 <= s.sport < 50032 and len(s.payload) <= MAX_PAYLOAD
        v = verdict(s.payload)
        if s.label in ("valid", "havoc:valid"):
            assert v == "accepted" and geneve.scan(s.payload).eni_id in pool.allowed_enis
        elif s.label in MALFORMATIONS:
            assert v == MALFORMATIONS[s.label].reason
        else:
            assert s.label.startswith("suricata") or (s.label == "havoc" and v != "accepted")
    assert {"valid", "havoc", "havoc:valid"} <= labels


def test_mutations_are_reproducible_and_bounded() -> None:
    data = bytes(range(256)) * 40
    a = [mutate(random.Random(9), data) for _ in range(50)]
    b = [mutate(random.Random(9), data) for _ in range(50)]
    assert a == b and all(len(m) <= MAX_PAYLOAD for m in a)
    assert mutate(random.Random(1), b"")  # empty input grows


def test_reproducer_files_round_trip(tmp_path: Path) -> None:
    seq = [Sent(50001, b"\x08\x00\x08\x00" + bytes(36), "missing_gwlb_option"), Sent(60000, b"\x80" * 9, "havoc")]
    script = write(tmp_path / "r", kind="crashed", detail="the appliance exited with status 1", sequence=seq,
                   original=seq * 3, appliance={"command": "{python} app.py --port {health_port}",
                                                "health_protocol": "tcp", "health_port": 9000, "health_path": "/"},
                   seed=5, replays=7, minimized=True, reproduced=True, src="10.99.0.1", dst="10.99.0.2",
                   log_tail="Traceback ...")
    assert script.name == SCRIPT and script.stat().st_mode & 0o111
    text = script.read_text()
    assert "--replay sequence.pcap" in text and "'{python} app.py --port {health_port}'" in text
    assert "--health-protocol tcp --health-port 9000" in text
    back = read_pcap(tmp_path / "r" / "sequence.pcap")
    assert back == seq
    meta = load_meta(tmp_path / "r" / "sequence.pcap")
    assert meta is not None and meta["failure"]["kind"] == "crashed" and meta["seed"] == 5
    assert meta["verdicts"]["sequence.pcap"] == ["missing_gwlb_option", "bad_version"]
    assert len(read_pcap(tmp_path / "r" / "original.pcap")) == 6
    json.loads((tmp_path / "r" / "reproducer.json").read_text())


def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_otherwise() -> None:
    tty = io.StringIO()
    p = Progress(tty, tty=True)
    p.update("sent 10", force=True)
    p.update("sent 2", force=True)
    p.message("FAILURE")
    p.update("minimizing", force=True)
    p.done()
    assert tty.getvalue() == "\rsent 10\rsent 2 \r      \rFAILURE\n\rminimizing\n"
    plain = io.StringIO()
    q = Progress(plain, tty=False, interval=3600)
    q.update("first")
    q.update("throttled")
    q.update("forced", force=True)
    q.done()
    assert plain.getvalue() == "first\nforced\n"
