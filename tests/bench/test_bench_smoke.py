"""Smoke tests of the benchmark harness: it runs, it checks every return, its report is well formed.

Nothing here asserts on speed: figures depend on the machine and its load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gwlbsim.bench import memory, report
from gwlbsim.bench.agent import Receiver
from gwlbsim.bench.cli import main
from gwlbsim.bench.runner import MAX, Cell, Measurement
from gwlbsim.bench.traffic import STAMP, Traffic

pytestmark = pytest.mark.alone  # benchmark runs: CPU pinning and paced offers want the machine to themselves


def test_traffic_packets_carry_a_stamp_and_expectations_match() -> None:
    t = Traffic(size=512, flows=3, ports="many", nonce=7)
    exp = t.expectation()
    for fid in range(3):
        pkt = t.packet(fid)
        assert STAMP.unpack_from(pkt, t.stamp_offset)[0] == fid
        payload = pkt[28:]  # what the receiver gets back from a correct appliance
        assert len(payload) == exp.length
        assert payload.startswith(exp.prefixes[fid])
        assert exp.sports[fid] == t.outer_sport(fid)
    assert len({t.cookie(f) for f in range(3)}) == 3
    assert Traffic(size=64, flows=1, nonce=8).cookie(0) != Traffic(size=64, flows=1, nonce=7).cookie(0)
    with pytest.raises(ValueError):
        Traffic(size=20)


def test_report_aggregates_repeats_and_ratios() -> None:
    cell = Cell(64, 64, "many", MAX)
    ms = [Measurement(s, cell, r, 1000, ret, 1.0, 0, 0, {"p50": 10.0, "p99": 20.0}, {"appliance": 0.01}, 0.5,
                      {}, 0, 0)
          for r, (s, ret) in enumerate([("kernel", 1000), ("reference", 800), ("naive", 200)] * 2)]
    for i, m in enumerate(ms):
        m.repeat = i // 3
    rows = report.aggregate(ms)
    assert {r["subject"] for r in rows} == {"kernel", "reference", "naive"}
    ref = next(r for r in report.ratios(ms) if r["subject"] == "reference")
    assert ref["vs_kernel"] == pytest.approx(0.8) and ref["vs_naive"] == pytest.approx(4.0)
    assert "reference" in report.results_table(rows) and "x kernel" in report.ratio_table(report.ratios(ms))


@pytest.mark.root  # the receiver forces its socket buffer size
def test_returns_later_than_the_bound_count_as_lost() -> None:
    r = Receiver({"traffic": Traffic(size=64, flows=2).as_dict(), "bind": ["127.0.0.1", 0]})
    try:
        for seq, lat_ms in [(9, 1), (10, 1), (11, 250), (12, 2), (13, 150), (14, 3), (20, 1)]:
            r.seqs.append(seq)
            r.lats.append(lat_ms * 1_000_000)
        got = r.finish(10, 15, late=0.1)  # the window is sequence numbers 10..14
        assert (got["returned"], got["late"], got["outside_window"]) == (5, 2, 2)
        assert got["latency_us"]["max"] == 250_000.0  # late ones are in the latency figures
        assert r.finish(10, 15)["late"] == 0
    finally:
        r.close()
    cell = Cell(64, 2, "many", 1000.0)
    m = Measurement("reference", cell, 0, 5, 5, 1.0, 0, 0, {}, {}, None, {}, 0, 0, late=2)
    assert m.loss == pytest.approx(0.4) and m.returned_pps == 5


def test_flow_cache_memory_is_measured() -> None:
    mem = memory.measure(flows=3000, traced=1000)
    assert mem["flows"] == 3000 and mem["traced_bytes_per_flow"] > 0


@pytest.mark.root
@pytest.mark.slow
def test_quick_run_checks_every_return_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["--quick", "-q", "--memory-flows", "2000", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0, doc
    assert doc["schema"] == "gwlbsim.bench/1"
    subjects = {m["subject"] for m in doc["measurements"]}
    assert subjects == {"kernel", "reference", "naive"}
    for m in doc["measurements"]:
        assert m["echo_errors"] == 0, m["echo_error_examples"]
        assert m["duplicates"] == 0
        assert m["offered"] > 0 and 0 <= m["returned"] <= m["offered"]
        assert 0.0 <= m["loss"] <= 1.0
        if m["subject"] != "kernel":
            assert m["cpu_seconds"]["appliance"] >= 0
    assert {r["subject"] for r in doc["ratios"]} == {"reference"}
    assert doc["memory"]["traced_bytes_per_flow"] > 0


@pytest.mark.root
@pytest.mark.slow
def test_split_cpus_counts_returns_in_the_kernel_and_overload_is_reported(tmp_path: Path) -> None:
    """--split-cpus: returns counted and timed by the BPF sink (no user-space receiver); --generator xdp: the
    traffic sent by the XDP generator, paced in the kernel; --overload: the searched loss-free rate, then an
    open-loop multiple of it, reported against that rate."""
    out = tmp_path / "bench.json"
    rc = main(["--quick", "-q", "--split-cpus", "--generator", "xdp", "--subjects", "kernel,reference",
               "--memory-flows", "0", "--overload", "2", "--search-steps", "2", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0, doc
    assert doc["meta"]["generator"] == "xdp"
    fixed = [m for m in doc["measurements"] if m["rate"] == 20_000]
    assert {m["subject"] for m in fixed} == {"kernel", "reference"}
    for m in fixed:  # a paced 20k is far below either: every packet back, each with its latency
        assert m["returned"] == m["offered"] and m["latency_us"]["p99"] is not None, m
        assert m["offered"] == pytest.approx(20_000 * 0.5, abs=32), m  # the program's pacing: 0.5 s at 20k
    rows = {r["subject"]: r for r in doc["overload"]}
    assert set(rows) == {"kernel", "reference"}
    for r in rows.values():
        assert r["loss_free_pps"] > 0 and r["asked_pps"] == pytest.approx(2 * r["loss_free_pps"], rel=0.01)
        assert r["returned_of_loss_free"] == pytest.approx(r["returned_pps"] / r["loss_free_pps"], rel=0.01)
        assert r["returned_runs_pps"] == [r["returned_pps"]]  # one offer (--repeat 1): its own median
