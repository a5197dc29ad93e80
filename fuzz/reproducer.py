"""Reproducers written by the network fuzzer: the packet sequence as a pcap, what was found, how to replay it.

A reproducer directory holds:

* ``sequence.pcap``: the (minimized) sequence, as outer IPv4/UDP packets from GWLB to the appliance (open it
  in Wireshark; replay uses each packet's UDP source port and GENEVE payload);
* ``original.pcap``: the sequence before minimization;
* ``reproducer.json``: the finding (kind, reason, level, requirement, whether fatal, how often it was seen,
  detail; see :mod:`gwlbsim.fuzz.findings`), the appliance command and health settings, seed and counts, and the
  class and codec verdict of every packet;
* ``replay.sh``: ``gwlb-fuzz --replay`` with the same appliance (exit status 1: the finding reproduced);
* ``appliance.log``: the end of the appliance's output when the run ended.
"""

from __future__ import annotations

import json
import shlex
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gwlbsim.traffic import record
from gwlbsim.traffic.record import Sent, write_pcap
from gwlbsim.wire import geneve

SEQUENCE = "sequence.pcap"
ORIGINAL = "original.pcap"
META = "reproducer.json"
SCRIPT = "replay.sh"


def verdict(payload: bytes, option_class: int = geneve.AWS_OPTION_CLASS) -> str:
    """What a correct GWLB parser does with ``payload``: "accepted", or the drop reason."""
    try:
        geneve.scan(payload, option_class=option_class)
    except geneve.GeneveError as e:
        return e.reason
    return "accepted"


def read_pcap(path: Path) -> list[Sent]:
    """The datagrams of a pcap (any link type with IPv4/UDP); labels from ``reproducer.json`` if beside it."""
    out = record.read_pcap(path)
    meta = load_meta(path)
    labels = (meta or {}).get("labels", {}).get(path.name)
    if labels and len(labels) == len(out):
        out = [Sent(p.sport, p.payload, label) for p, label in zip(out, labels, strict=True)]
    return out


def load_meta(pcap_path: Path) -> dict[str, Any] | None:
    meta = pcap_path.parent / META
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text())
    except ValueError:
        return None


def recorded_finding(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The finding a reproducer was written for (``{}`` if none; reads the "failure" of older reproducers)."""
    found = (meta or {}).get("finding") or (meta or {}).get("failure") or {}
    return found if isinstance(found, dict) else {}


def write(directory: Path, *, kind: str, detail: str, sequence: Sequence[Sent], original: Sequence[Sent],
          appliance: dict[str, Any], seed: int, replays: int, minimized: bool, reproduced: bool, src: str, dst: str,
          log_tail: str = "", reason: str = "", level: str = "", requirement: str = "", fatal: bool = True,
          count: int = 1) -> Path:
    """Write a reproducer directory (see the module docstring); returns the path of ``replay.sh``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_pcap(directory / SEQUENCE, sequence, src, dst)
    write_pcap(directory / ORIGINAL, original, src, dst)
    meta = {
        "finding": {"kind": kind, "reason": reason, "level": level, "requirement": requirement, "fatal": fatal,
                    "count": count, "detail": detail},
        "appliance": appliance,
        "seed": seed,
        "packets": len(sequence),
        "original_packets": len(original),
        "replays": replays,
        "minimized": minimized,
        "reproduced_on_replay": reproduced,
        "labels": {SEQUENCE: [p.label for p in sequence], ORIGINAL: [p.label for p in original]},
        "verdicts": {SEQUENCE: [verdict(p.payload) for p in sequence]},
    }
    (directory / META).write_text(json.dumps(meta, indent=1) + "\n")
    (directory / "appliance.log").write_text(log_tail)
    args = ["--replay", SEQUENCE, "--appliance", appliance["command"], "--health-protocol",
            appliance["health_protocol"], "--health-port", str(appliance["health_port"])]
    script = directory / SCRIPT
    script.write_text(
        "#!/bin/sh\n"
        f"# gwlb-fuzz reproducer: {'fatal ' if fatal else ''}{kind}"
        + (f" ({reason})" if reason else "") + (f" [{level} {requirement}]" if level else "")
        + f": {_one_line(detail)}\n"
        f"# {len(sequence)} packet(s) in {SEQUENCE}"
        + (f", minimized from {len(original)} in {replays} replays" if minimized else "") + ".\n"
        "# Needs root (network namespaces). Exit status 1: the finding reproduced; 0: it did not.\n"
        "# With the gwlb-fuzz console script installed, the same is: gwlb-fuzz " + shlex.join(args) + "\n"
        'cd "$(dirname "$0")" || exit 2\n'
        f'exec "${{PYTHON:-{sys.executable}}}" -m gwlbsim.fuzz.cli {shlex.join(args)} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
