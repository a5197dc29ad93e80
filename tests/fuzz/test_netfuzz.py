"""The network fuzzer (``gwlb-fuzz``) against live appliances in real namespaces: the reference survives a bounded
run; a deliberately broken appliance is caught, its failing input minimized, and the reproducer replays; a
non-fatal finding is recorded and fuzzing goes on to the fatal one, which is reported first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gwlbsim.fuzz import cli
from gwlbsim.fuzz.netfuzz import NetworkFuzzer, Options
from gwlbsim.fuzz.reproducer import load_meta, read_pcap, verdict

from gwlbsim.appliance import ApplianceSpec
from gwlbsim.progress import Progress
from gwlbsim.traffic.malformations import MALFORMATIONS

from .broken_appliance import is_control, overruns

BROKEN = Path(__file__).with_name("broken_appliance.py")
REFERENCE = ApplianceSpec().command


def broken(*bugs: str) -> str:
    return f"{{python}} {BROKEN} --health-port {{health_port}}" + "".join(f" --bug {b}" for b in bugs)


def fuzz_cli(tmp_path: Path, *args: str) -> int:
    return cli.main(["--out", str(tmp_path / "out"), "--pool", "150", "--settle", "0.3", *args])


def reproducers(out: Path) -> dict[tuple[str, str], Path]:
    """Reproducer directories by (kind, reason) of their finding."""
    found = {}
    for d in sorted(out.iterdir()):
        meta = load_meta(d / "sequence.pcap")
        assert meta is not None, d
        found[(meta["finding"]["kind"], meta["finding"]["reason"])] = d
    return found


def only_reproducer(tmp_path: Path) -> Path:
    dirs = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.root
@pytest.mark.slow
def test_reference_appliance_survives_a_bounded_run(tmp_path: Path) -> None:
    fuzzer = NetworkFuzzer(Options(duration=10, rate=500, pool_size=150, out=tmp_path, seed=7),
                           Progress(stream=sys.stderr, tty=False))
    summary = fuzzer.run()
    print(summary.render())
    assert summary.found == [], summary.render()
    assert summary.checks >= 3 and summary.probe_rounds == summary.checks + 1
    assert set(MALFORMATIONS) <= set(summary.sent), "every malformation class was sent"
    assert summary.sent["havoc"] > 0 and summary.sent["valid"] > 0 and summary.sent["oversize"] > 0
    valid_sent = summary.sent["valid"] + summary.sent["probe"] + summary.sent["havoc:valid"]
    assert 0 < summary.returns <= valid_sent + summary.sent["oversize"]  # oversize: some are valid GENEVE
    assert not any(tmp_path.iterdir()), "no reproducer without a failure"


@pytest.mark.root
def test_crash_is_found_minimized_to_one_datagram_and_replayable(tmp_path: Path) -> None:
    rc = fuzz_cli(tmp_path, "--appliance", broken("crash-on-overrun"), "--time", "30", "--rate", "300",
                  "--check-interval", "0.5")
    assert rc == 1
    rep = only_reproducer(tmp_path)
    meta = load_meta(rep / "sequence.pcap")
    assert meta is not None and meta["finding"]["kind"] == "crashed" and meta["minimized"]
    assert meta["finding"]["fatal"] and meta["finding"]["requirement"] == "ROBUST-1"
    seq = read_pcap(rep / "sequence.pcap")
    assert len(seq) == 1 and overruns(seq[0].payload), "minimized to the one datagram that triggers the bug"
    assert len(read_pcap(rep / "original.pcap")) >= 1
    assert "Traceback" in (rep / "appliance.log").read_text()

    replayed = subprocess.run([str(rep / "replay.sh")], capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 1 and "REPRODUCED crashed" in replayed.stdout, replayed.stdout + replayed.stderr
    # the same datagram does not hurt the reference appliance
    assert cli.main(["--replay", str(rep / "sequence.pcap"), "--appliance", REFERENCE]) == 0


@pytest.mark.root
def test_stateful_health_failure_is_minimized_to_the_three_control_datagrams(tmp_path: Path) -> None:
    rc = fuzz_cli(tmp_path, "--appliance", broken("unhealthy-after-control=3"), "--time", "30", "--rate", "300",
                  "--check-interval", "0.5")
    assert rc == 1
    rep = only_reproducer(tmp_path)
    meta = load_meta(rep / "sequence.pcap")
    assert meta is not None and meta["finding"]["kind"] == "unhealthy" and meta["finding"]["reason"] == "http_503"
    seq = read_pcap(rep / "sequence.pcap")
    assert len(seq) == 3 and all(is_control(p.payload) for p in seq), [p.label for p in seq]
    assert cli.main(["--replay", str(rep / "sequence.pcap")]) == 1, "the appliance comes from reproducer.json"


@pytest.mark.root
def test_stale_return_header_is_found_and_minimized_to_one_earlier_packet_of_the_flow(tmp_path: Path) -> None:
    """Not fatal: the run goes on to its end (counting repeats), then the finding is minimized."""
    rc = fuzz_cli(tmp_path, "--appliance", broken("stale-header"), "--time", "3", "--rate", "300",
                  "--check-interval", "0.5")
    assert rc == 1, "a MUST-level finding"
    rep = only_reproducer(tmp_path)
    meta = load_meta(rep / "sequence.pcap")
    assert meta is not None and meta["finding"]["kind"] == "wrong_return", meta
    assert meta["finding"]["requirement"] == "COOKIE-2" and not meta["finding"]["fatal"]
    assert meta["finding"]["count"] >= 2, "every later probe round saw it again"
    assert "came back with header" in meta["finding"]["detail"]
    seq = read_pcap(rep / "sequence.pcap")
    assert len(seq) == 1 and seq[0].label == "probe", "one earlier packet of a probe flow is all it takes"


@pytest.mark.root
def test_non_fatal_finding_is_recorded_and_fuzzing_goes_on_to_the_crash_which_is_reported_first(
        tmp_path: Path) -> None:
    """A correct appliance except that it passes through malformed inner packets (SHOULD, ROBUST-6: recorded,
    not a stop) and dies on datagrams of more than 9000 bytes (fatal: found later, reported first)."""
    fuzzer = NetworkFuzzer(Options(appliance=ApplianceSpec(command=broken("pass-bad-inner", "crash-on-oversize=9000")),
                                   duration=20, rate=300, check_interval=0.5, settle=0.3, pool_size=150, seed=0,
                                   out=tmp_path / "out"), Progress(stream=sys.stderr, tty=False))
    summary = fuzzer.run()
    print(summary.render())
    crash, *others = summary.found
    assert (crash.finding.kind, crash.finding.grade) == ("crashed", "FATAL"), "the crash is reported first"
    assert {(f.finding.kind, f.finding.grade, f.finding.requirement) for f in others} == \
        {("forwarded_bad_inner", "SHOULD", "ROBUST-6")}
    assert {f.finding.reason for f in others} <= {"truncated_inner", "protocol_mismatch"}
    inner = next(f for f in others if f.finding.reason == "truncated_inner")
    assert inner.sent_before < crash.sent_before and inner.count >= 2, "recorded, and fuzzing went on"
    assert summary.seconds < 60
    text = summary.render()
    assert text.index("FATAL crashed") < text.index("SHOULD forwarded_bad_inner")
    assert cli.exit_status(summary.found) == 1

    reps = reproducers(tmp_path / "out")
    assert set(reps) == {f.finding.key for f in summary.found}, "every distinct finding has its own reproducer"
    crash_rep, inner_rep = reps[crash.finding.key], reps[inner.finding.key]
    assert crash.script == crash_rep / "replay.sh" and inner.script == inner_rep / "replay.sh"
    seq = read_pcap(crash_rep / "sequence.pcap")
    assert len(seq) == 1 and seq[0].label == "oversize" and len(seq[0].payload) > 9000, \
        "minimized to the one oversize datagram"
    assert crash.minimized and crash.reproduced
    seq = read_pcap(inner_rep / "sequence.pcap")
    meta = load_meta(inner_rep / "sequence.pcap")
    assert meta is not None and meta["finding"]["level"] == "SHOULD" and meta["finding"]["count"] == inner.count
    assert len(seq) == 1 and inner.reproduced and inner.replays == 1, "one known datagram: confirmed, not reduced"
    assert verdict(seq[0].payload) == "truncated_inner"

    assert cli.main(["--replay", str(inner_rep / "sequence.pcap")]) == 1, "reproduces (appliance from the json)"
    assert cli.main(["--replay", str(inner_rep / "sequence.pcap"), "--appliance", REFERENCE]) == 0, \
        "the reference drops it"


@pytest.mark.root
def test_a_run_with_only_should_findings_is_not_a_must_failure(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = fuzz_cli(tmp_path, "--appliance", broken("pass-bad-inner"), "--time", "2", "--rate", "300",
                  "--check-interval", "0.5", "--strict")
    assert rc == 3, "with --strict: status 3 (without it, 0)"
    out = capsys.readouterr().out
    assert "findings: 0 fatal, 0 MUST," in out and "[SHOULD ROBUST-6]" in out
    assert {kind for kind, _ in reproducers(tmp_path / "out")} == {"forwarded_bad_inner"}


@pytest.mark.root
def test_appliance_that_does_not_start_or_return_traffic_is_a_clear_error(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz_cli(tmp_path, "--appliance", "{python} -c 'import sys; sys.exit(3)'", "--ready-timeout", "5") == 2
    assert "exited with status 3" in capsys.readouterr().err
    sink = "{python} -m http.server --bind 0.0.0.0 {health_port}"
    assert fuzz_cli(tmp_path, "--appliance", sink, "--probe-timeout", "1", "--time", "5") == 2
    assert "did not return valid traffic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "0"], "must be more than 0"),
    (["--time", "-5"], "must be more than 0"),
    (["--rate", "fast"], "is not a number"),
    (["--health-port", "70000"], "not within 1-65535"),
    (["--health-protocol", "udp"], "invalid choice"),
    (["--appliance", "run {nonsense}"], "unknown placeholder {nonsense}"),
    (["--replay", "/nonexistent.pcap"], "no such file"),
    (["--pool", "3"], "3 is not within 10-100000"),
])
def test_bad_options_are_refused_clearly(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_needs_root_is_said_clearly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run as if by an ordinary user: the fuzzer refuses with a clear message and exit status 2."""
    import gwlbsim.fuzz.cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert gwlbsim.fuzz.cli.main(["--time", "1"]) == 2
    assert "need root" in capsys.readouterr().err
