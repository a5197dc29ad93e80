"""The network fuzzer (``gwlb-fuzz``) against live appliances in real namespaces: the reference survives a bounded
run; a deliberately broken appliance is caught, its failing input minimized, and the reproducer replays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import cli
from fuzz.malformations import MALFORMATIONS
from fuzz.netfuzz import NetworkFuzzer, Options
from fuzz.progress import Progress
from fuzz.reproducer import load_meta, read_pcap
from gwlbsim.appliance import ApplianceSpec

from .broken_appliance import is_control, overruns

BROKEN = Path(__file__).with_name("broken_appliance.py")
REFERENCE = ApplianceSpec().command


def broken(bug: str) -> str:
    return f"{{python}} {BROKEN} --health-port {{health_port}} --bug {bug}"


def fuzz_cli(tmp_path: Path, *args: str) -> int:
    return cli.main(["--out", str(tmp_path / "out"), "--pool", "150", "--settle", "0.3", *args])


def only_reproducer(tmp_path: Path) -> Path:
    dirs = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.root
@pytest.mark.slow
def test_reference_appliance_survives_a_bounded_run(tmp_path: Path) -> None:
    fuzzer = NetworkFuzzer(Options(duration=20, rate=500, pool_size=150, out=tmp_path, seed=7),
                           Progress(sys.stderr, tty=False))
    summary = fuzzer.run()
    print(summary.render())
    assert summary.found == [], summary.render()
    assert summary.checks >= 3 and summary.probe_rounds == summary.checks + 1
    assert set(MALFORMATIONS) <= set(summary.sent), "every malformation class was sent"
    assert summary.sent["havoc"] > 0 and summary.sent["valid"] > 0
    valid_sent = summary.sent["valid"] + summary.sent["probe"] + summary.sent["havoc:valid"]
    assert 0 < summary.returns <= valid_sent
    assert not any(tmp_path.iterdir()), "no reproducer without a failure"


@pytest.mark.root
def test_crash_is_found_minimized_to_one_datagram_and_replayable(tmp_path: Path) -> None:
    rc = fuzz_cli(tmp_path, "--appliance", broken("crash-on-overrun"), "--time", "30", "--rate", "300",
                  "--check-interval", "0.5")
    assert rc == 1
    rep = only_reproducer(tmp_path)
    meta = load_meta(rep / "sequence.pcap")
    assert meta is not None and meta["failure"]["kind"] == "crashed" and meta["minimized"]
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
    assert meta is not None and meta["failure"]["kind"] == "unhealthy"
    seq = read_pcap(rep / "sequence.pcap")
    assert len(seq) == 3 and all(is_control(p.payload) for p in seq), [p.label for p in seq]
    assert cli.main(["--replay", str(rep / "sequence.pcap")]) == 1, "the appliance comes from reproducer.json"


@pytest.mark.root
def test_stale_return_header_is_found_and_minimized_to_one_earlier_packet_of_the_flow(tmp_path: Path) -> None:
    rc = fuzz_cli(tmp_path, "--appliance", broken("stale-header"), "--time", "30", "--rate", "300",
                  "--check-interval", "0.5")
    assert rc == 1
    rep = only_reproducer(tmp_path)
    meta = load_meta(rep / "sequence.pcap")
    assert meta is not None and meta["failure"]["kind"] == "wrong_return", meta
    assert "came back with header" in meta["failure"]["detail"]
    seq = read_pcap(rep / "sequence.pcap")
    assert len(seq) == 1 and seq[0].label == "probe", "one earlier packet of a probe flow is all it takes"


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
    (["--pool", "3"], "at least 10"),
])
def test_bad_options_are_refused_clearly(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_needs_root_is_said_clearly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run as if by an ordinary user: the fuzzer refuses with a clear message and exit status 2."""
    import fuzz.cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert fuzz.cli.main(["--time", "1"]) == 2
    assert "need root" in capsys.readouterr().err
