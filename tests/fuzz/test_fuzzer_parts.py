"""The network fuzzer's pure parts: traffic source, findings and how returns are judged, reproducer files,
progress display, exit statuses."""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path

import pytest
from gwlbsim.fuzz.cli import exit_status
from gwlbsim.fuzz.findings import CATALOGUE, INNER_REASONS, MUST, SHOULD, Finding, matches, order, rate
from gwlbsim.fuzz.netfuzz import OVERSIZE_MAX, OVERSIZE_MIN, Found, Summary, oversize, worst
from gwlbsim.fuzz.reproducer import SCRIPT, load_meta, read_pcap, recorded_finding, verdict, write
from gwlbsim.fuzz.traffic_pool import MAX_PAYLOAD, TrafficPool, TrafficSource, mutate
from gwlbsim.fuzz.watchdog import ReturnChecker, exit_reason, without_cookie

from gwlbsim.progress import Progress
from gwlbsim.traffic.malformations import MALFORMATIONS
from gwlbsim.traffic.record import Sent
from gwlbsim.wire import geneve
from gwlbsim.wire.outer import build_ipv4_udp


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
    assert meta is not None and meta["finding"]["kind"] == "crashed" and meta["seed"] == 5
    assert recorded_finding(meta)["kind"] == "crashed"
    assert recorded_finding({"failure": {"kind": "hang", "detail": ""}})["kind"] == "hang", "older reproducers"
    assert meta["verdicts"]["sequence.pcap"] == ["missing_gwlb_option", "bad_version"]
    assert len(read_pcap(tmp_path / "r" / "original.pcap")) == 6
    json.loads((tmp_path / "r" / "reproducer.json").read_text())


def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_otherwise() -> None:
    tty = io.StringIO()
    p = Progress(stream=tty, tty=True)
    p.line("sent 10", force=True)
    p.line("sent 2", force=True)
    p.note("FAILURE")
    p.line("minimizing", force=True)
    p.done()
    assert tty.getvalue() == "\rsent 10\rsent 2 \r      \rFAILURE\n\rminimizing\n"
    plain = io.StringIO()
    q = Progress(stream=plain, tty=False, every=3600)
    q.line("first")
    q.line("throttled")
    q.line("forced", force=True)
    q.done()
    assert plain.getvalue() == "first\nforced\n"


# ------------------------------------------------------------------------------------------------ findings

ENI, OTHER_ENI = 0x0E00_0000_0000_0001, 0x0E00_0000_0000_0002
INNER = build_ipv4_udp("10.0.0.1", "10.0.0.2", 1000, 2000, b"x" * 20)
REPLY = build_ipv4_udp("10.0.0.2", "10.0.0.1", 2000, 1000, b"y" * 9)


def _with_total_length(inner: bytes, total: int) -> bytes:
    return inner[:2] + struct.pack("!H", total) + inner[4:]


def test_catalogue_levels_and_requirements_follow_the_conformance_catalogue() -> None:
    assert rate("crashed", "signal_SIGSEGV") == (True, MUST, "ROBUST-1")
    assert {k for k, v in CATALOGUE.items() if v.fatal} == {"crashed", "hang", "unhealthy", "lost_flow",
                                                             "fd_growth", "device_growth"}
    assert rate("forwarded_bad_inner", "truncated_inner") == (False, SHOULD, "ROBUST-6")
    assert rate("forwarded_malformed", "option_overrun") == (False, MUST, "ROBUST-1")
    assert rate("forwarded_malformed", "control_packet") == (False, MUST, "ROBUST-2")
    assert rate("forwarded_mutant", "unknown_critical_option") == (False, MUST, "ROBUST-2")
    assert rate("forwarded_mutant", "bad_version") == (False, MUST, "ROBUST-4")
    assert rate("wrong_header", "header_changed").requirement == "ECHO-2"
    assert rate("bad_return", "too_short").requirement == "ECHO-2"
    assert rate("wrong_cookie", "other_cookie").requirement == "COOKIE-1"
    assert rate("unknown_flow", "never_sent").requirement == "SYM-3"
    assert INNER_REASONS.issubset(geneve.REASONS)
    with pytest.raises(ValueError, match="unknown finding kind"):
        Finding("segfault", "", "")


def test_fuzzer_findings_follow_the_conformance_catalogue() -> None:
    """Every requirement a finding names is in the conformance suite's catalogue, at the same level, and the
    inner-only drop reasons (ROBUST-6) are the codec's."""
    from gwlbsim.conformance import requirements

    used = {(k.requirement, k.level) for k in CATALOGUE.values()} | {("ROBUST-2", MUST)}
    for req, level in used:
        assert requirements.get(req).level == level, req


def test_findings_are_keyed_by_kind_and_reason_and_ordered_fatal_must_should() -> None:
    crash = Finding("crashed", "exit_1", "the appliance exited with status 1")
    inner = Finding("forwarded_bad_inner", "truncated_inner", "a")
    cookie = Finding("wrong_cookie", "other_cookie", "b")
    assert inner.key == Finding("forwarded_bad_inner", "truncated_inner", "other detail").key
    assert sorted([inner, cookie, crash], key=order) == [crash, cookie, inner]
    assert [f.grade for f in (crash, cookie, inner)] == ["FATAL", MUST, SHOULD]
    assert "[fatal, MUST ROBUST-1]" in crash.describe() and "[SHOULD ROBUST-6]" in inner.describe()
    assert matches([Finding("crashed", "signal_SIGSEGV", "")], crash), "a crash is a crash"
    assert not matches([Finding("forwarded_bad_inner", "other", "")], inner)
    assert matches([cookie, Finding("forwarded_bad_inner", "truncated_inner", "z")], inner)
    assert exit_reason(-11) == ("signal_SIGSEGV", "the appliance was killed by signal 11 (SIGSEGV)")
    assert exit_reason(3)[0] == "exit_3"


def _found(*findings: Finding) -> list[Found]:
    return [Found(f, 2, 0.5, 1, 10, 1, True, True, Path("r/replay.sh"), "reproduced alone") for f in findings]


def test_exit_status_only_fails_a_run_for_fatal_or_must_findings() -> None:
    should = Finding("forwarded_bad_inner", "truncated_inner", "")
    must = Finding("unknown_flow", "never_sent", "")
    fatal = Finding("hang", "health_timeout", "")
    assert exit_status([]) == 0 and exit_status([], strict=True) == 0
    assert exit_status(_found(should)) == 0
    assert exit_status(_found(should), strict=True) == 3
    assert exit_status(_found(should, must)) == 1 and exit_status(_found(should, must), strict=True) == 1
    assert exit_status(_found(fatal)) == 1
    assert worst(_found(should, must, fatal)) == "FATAL" and worst([]) is None


def test_summary_lists_fatal_findings_first_with_counts() -> None:
    s = Summary(command="app", found=_found(Finding("crashed", "exit_1", "died"),
                                            Finding("forwarded_bad_inner", "truncated_inner", "passed")))
    text = s.render()
    assert "findings: 1 fatal, 0 MUST, 1 SHOULD (2 distinct, 4 in all)" in text
    assert text.index("FATAL crashed (exit_1) [MUST ROBUST-1], 2 times") < \
        text.index("SHOULD forwarded_bad_inner (truncated_inner) [SHOULD ROBUST-6]")
    assert "findings: none" in Summary().render()


def test_return_checker_judges_returns_by_the_catalogue() -> None:
    c = ReturnChecker()
    good = geneve.build(INNER, ENI, 0x11)
    c.sent(Sent(50000, good, "valid"))
    assert c.received(good) is None
    assert c.received(geneve.build(REPLY, ENI, 0x11)) is None, "the reply direction of the same flow"

    def judged(payload: bytes) -> tuple[str, str, str, str | None]:
        j = c.received(payload)
        assert j is not None
        return j.finding.kind, j.finding.reason, j.finding.requirement, j.origin.label if j.origin else None

    # forwarded: what it was sent, byte for byte, although GWLB drops it
    overclaims = geneve.build(INNER, ENI, 0x22)[:-len(INNER)] + _with_total_length(INNER, len(INNER) + 10)
    control = good[:1] + bytes([good[1] | 0x80]) + good[2:]
    overrun = good[:11] + b"\x1f" + good[12:]
    mutant = bytes([good[0] | 0x40]) + good[1:]
    version5 = good[:40] + bytes([0x55]) + good[41:]
    for payload, label in ((overclaims, "inner_length_overclaims"), (control, "control_bit"),
                           (overrun, "option_length_overrun"), (mutant, "havoc"), (version5, "inner_version_mismatch")):
        c.sent(Sent(50001, payload, label))
    assert judged(overclaims) == ("forwarded_bad_inner", "truncated_inner", "ROBUST-6", "inner_length_overclaims")
    j = c.received(overclaims)
    assert j is not None and j.finding.level == SHOULD and not j.finding.fatal
    assert judged(version5) == ("forwarded_bad_inner", "protocol_mismatch", "ROBUST-6", "inner_version_mismatch")
    assert judged(control) == ("forwarded_malformed", "control_packet", "ROBUST-2", "control_bit")
    assert judged(overrun) == ("forwarded_malformed", "option_overrun", "ROBUST-1", "option_length_overrun")
    assert judged(mutant) == ("forwarded_mutant", "bad_version", "ROBUST-4", "havoc")
    # a malformed inner packet behind a header it was sent, though not byte for byte what it was sent
    cut = geneve.build(INNER, ENI, 0x11)[:-len(INNER)] + INNER[:12]
    assert judged(cut) == ("forwarded_bad_inner", "truncated_inner", "ROBUST-6", None)
    # not what it was sent
    assert judged(b"\x40" * 30) == ("bad_return", "bad_version", "ECHO-2", None)
    made_up = geneve.build(INNER, OTHER_ENI, 0x11)[:-len(INNER)] + INNER[:12]
    assert judged(made_up)[:3] == ("bad_return", "truncated_inner", "ECHO-2")
    assert judged(geneve.build(INNER, ENI, 0x12)) == ("wrong_cookie", "other_cookie", "COOKIE-1", None)
    assert judged(geneve.build(INNER, ENI, 0x11, vni=7)) == ("wrong_header", "header_changed", "ECHO-2", None)
    other_flow = build_ipv4_udp("10.0.0.1", "10.0.0.3", 1000, 2000, b"x" * 20)
    assert judged(geneve.build(other_flow, ENI, 0x11)) == ("unknown_flow", "never_sent", "SYM-3", None)
    assert judged(geneve.build(INNER, OTHER_ENI, 0x11))[:2] == ("unknown_flow", "never_sent"), "another ENI"
    assert c.returns == 15


def test_a_header_of_another_flow_is_a_wrong_cookie_for_this_one() -> None:
    c = ReturnChecker()
    other_flow = build_ipv4_udp("10.0.0.1", "10.0.0.3", 1000, 2000, b"x" * 20)
    c.sent(Sent(50000, geneve.build(INNER, ENI, 0x11), "valid"))
    c.sent(Sent(50000, geneve.build(other_flow, ENI, 0x99), "valid"))
    j = c.received(geneve.build(INNER, ENI, 0x99))
    assert j is not None and j.finding.key == ("wrong_cookie", "other_cookie")
    assert without_cookie(geneve.build(INNER, ENI, 0x11)[:40]) == without_cookie(geneve.build(INNER, ENI, 0x99)[:40])
    assert without_cookie(b"\x3f" + bytes(7)) is None


def test_oversize_datagrams_exceed_the_link_and_keep_their_base() -> None:
    rng = random.Random(4)
    base = geneve.build(INNER, ENI, 0x11)
    sizes, styles = [], set()
    for _ in range(60):
        s = oversize(rng, base, 50001)
        assert s.label == "oversize" and s.sport == 50001
        sizes.append(len(s.payload))
        styles.add("zeros" if s.payload == bytes(len(s.payload)) else "base" if s.payload.startswith(base) else "?")
        if s.payload.startswith(base):
            assert verdict(s.payload) == "accepted", "a valid packet with trailing bytes stays valid"
    assert min(sizes) >= OVERSIZE_MIN and max(sizes) <= OVERSIZE_MAX and max(sizes) > 16_000
    assert styles == {"zeros", "base"}


def test_minimize_does_not_claim_a_reproduction_it_never_replayed() -> None:
    from gwlbsim.fuzz.minimize import Budget, minimize

    r = minimize([1, 2, 3], lambda s: True, Budget(max_tests=0))
    assert not r.reproduced and not r.complete and r.tests == 0
