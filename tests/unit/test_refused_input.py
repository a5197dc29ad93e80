"""Bad input to every command: one line naming the option, the value and what is allowed, exit status 2, and
nothing started or left behind (no namespace, no child process, nothing in the working directory)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from gwlbsim.fuzz.cli import main as fuzz_main
from gwlbsim.reference.cli import main as reference_main

from gwlbsim.bench.cli import main as bench_main
from gwlbsim.cli import main as gwlbsim_main
from gwlbsim.linuxio.netns import list_namespaces

pytestmark = pytest.mark.alone  # it compares the machine's namespaces before and after

#: config files the cases refer to as {NAME}: written into a directory of their own
CONFIGS = {
    "appliances_word": b'[topology]\nappliances = "two"\n',
    "appliances_zero": b"[topology]\nappliances = 0\n",
    "zones_float": b"[topology]\nzones = 1.5\n",
    "mode_unknown": b'[topology]\nmode = "bridge"\n',
    "idle_fraction": b'[listener]\n"tcp.idle_timeout.seconds" = 350.5\n',
    "idle_bool": b'[listener]\n"tcp.idle_timeout.seconds" = true\n',
    "idle_low": b'[listener]\n"tcp.idle_timeout.seconds" = 30\n',
    "not_utf8": b"[topology]\nzones = 1\n# \xff\xfe\n",
    "not_toml": b"[topology\n",
    "not_pcap": b"hello, not a capture\n",
}

SIMULATE = [
    (["--flows", "-1"], "--flows: -1 is not within 1-"),
    (["--rate", "0"], "--rate: 0 must be more than 0"),
    (["--rate", "-5"], "--rate: -5 must be more than 0"),
    (["--targets", "0"], "--targets: 0 is not within 1-"),
    (["--targets", "-1"], "--targets: -1 is not within 1-"),
    (["--endpoints", "0"], "--endpoints: 0 is not within 1-"),
    (["--zones", "0"], "--zones: 0 is not within 1-"),
    (["--flap", "1:99:5"], "--flap '1:99:5': target 99 does not exist (targets 0-7)"),
    (["--flap", "1:2"], "--flap '1:2': expected AT:TARGET:DOWN_FOR"),
    (["--flap", "1:2:-5"], "DOWN_FOR more than 0"),
    (["--packets-per-flow", "0"], "--packets-per-flow: 0 is not within 1-"),
    (["--tcp-fraction", "1.5"], "--tcp-fraction: 1.5 is not within 0-1"),
    (["--followup-after", "-2"], "--followup-after: -2 must be more than 0"),
    (["--json", "/nonexistent/dir/r.json"], "--json: /nonexistent/dir/r.json: directory /nonexistent/dir does not"),
    (["--workers", "0"], "--workers: 0 is not within 1-256"),
    (["--config", "{not_utf8}"], "not UTF-8 text"),
    (["--config", "{idle_fraction}"], "tcp.idle_timeout.seconds must be a whole number from 60 to 6000, not 350.5"),
]
TOPOLOGY = [
    (["--appliances", "0"], "--appliances: 0 is not within 1-200"),
    (["--appliances", "-3"], "--appliances: -3 is not within 1-200"),
    (["--zones", "0"], "--zones: 0 is not within 1-9"),
    (["--endpoints", "0"], "--endpoints: 0 is not within 1-50"),
    (["--health-port", "0"], "--health-port: port 0 is not within 1-65535"),
    (["--ready-timeout", "0"], "--ready-timeout: 0 is not within 0.5-3600"),
    (["--config", "{appliances_word}"], "[topology] appliances: 'two' is not a whole number"),
    (["--config", "{appliances_zero}"], "[topology] appliances: 0 is not within 1-200"),
    (["--config", "{zones_float}"], "[topology] zones: 1.5 is not a whole number"),
    (["--config", "{mode_unknown}"], "[topology] mode: 'bridge' is not one of passthrough"),
    (["--config", "{idle_bool}"], "tcp.idle_timeout.seconds must be a whole number from 60 to 6000, not True"),
    (["--config", "{idle_low}"], "tcp.idle_timeout.seconds = 30 is out of range: AWS allows 60 to 6000"),
    (["--config", "{not_utf8}"], "not UTF-8 text"),
    (["--config", "{not_toml}"], "not valid TOML"),
    (["--config", "/nonexistent.toml"], "--config: /nonexistent.toml: no such file"),
    (["--appliance", "fw {nope}"], "unknown placeholder {nope}"),
]
REFERENCE = [
    (["-c", ""], "-c: empty command"),
    (["-c", "sh /nonexistent/hook.sh"], "-c: /nonexistent/hook.sh: no such script"),
    (["-r", "bash /nonexistent/hook.sh"], "-r: /nonexistent/hook.sh: no such script"),
    (["-c", "/nonexistent/hook"], "-c: /nonexistent/hook is not an executable file"),
    (["-c", "no-such-program-anywhere"], "-c: no-such-program-anywhere: command not found"),
    (["-c", "sh 'unterminated"], "No closing quotation"),
    (["--udpaffinity", "99"], "--udpaffinity: CPU 99 not available"),
    (["--udpaffinity", "3-1"], "--udpaffinity: '3-1' is not a CPU or a range"),
    (["--udpaffinity", "abc"], "--udpaffinity: 'abc' is not a CPU list"),
    (["-p", "70000"], "-p: port 70000 is not within 1-65535"),
    (["-i", "0"], "-i: 0 must be more than 0"),
    (["--datapath", "ebpf"], "--datapath: invalid choice: 'ebpf'"),
]
FUZZ = [
    (["--replay", "{not_pcap}"], "file too short for a pcap header"),
    (["--replay", "{dir}"], "is a directory, not a file"),
    (["--replay", "/nonexistent.pcap"], "--replay: /nonexistent.pcap: no such file"),
    (["--max-fd-growth", "-1"], "--max-fd-growth: -1 is negative"),
    (["--pool", "99999999"], "--pool: 99999999 is not within 10-100000"),
    (["--out", "/nonexistent/dir/out"], "--out: /nonexistent/dir/out: directory /nonexistent/dir does not exist"),
    (["--rate", "0"], "--rate: 0 must be more than 0"),
]
BENCH = [
    (["--duration", "0"], "--duration: 0 is not within 0.1-3600"),
    (["--overload", "0.5"], "--overload 0.5: a factor above 1"),
    (["--json", "/nonexistent/dir/b.json"], "directory /nonexistent/dir does not exist"),
    (["--sizes", "10"], "inner size 10 outside"),
    (["--generator", "xdp", "--sizes", "4000"], "inner size 4000: the XDP generator sends inner packets of at most"),
    (["--generator", "dpdk"], "--generator: invalid choice: 'dpdk'"),
]

CASES: list[tuple[str, Callable[[list[str]], int], list[str], str]] = [
    *[("gwlbsim simulate", gwlbsim_main, ["simulate", *a], m) for a, m in SIMULATE],
    *[(f"gwlbsim {cmd}", gwlbsim_main, [cmd, *a], m) for cmd in ("up", "demo") for a, m in TOPOLOGY],
    *[("gwlb-reference", reference_main, a, m) for a, m in REFERENCE],
    *[("gwlb-fuzz", fuzz_main, a, m) for a, m in FUZZ],
    *[("gwlbsim bench", bench_main, a, m) for a, m in BENCH],
]


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.parametrize(("command", "main", "argv", "message"), CASES,
                         ids=[f"{c[0].split()[0]} {' '.join(c[2])}" for c in CASES])
def test_refused_with_one_line_and_exit_2_before_anything_starts(
        command: str, main: Callable[[list[str]], int], argv: list[str], message: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = {"dir": str(inputs)}
    for name, data in CONFIGS.items():
        (inputs / name).write_bytes(data)
        paths[name] = str(inputs / name)
    argv = [a.format(**paths) if a.startswith("{") else a for a in argv]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    namespaces, children = set(list_namespaces()), _children()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert list(cwd.iterdir()) == [], "nothing written in the working directory"
    assert set(list_namespaces()) == namespaces, "no namespace made"
    assert _children() == children, "no process left"
