"""Every command, stopped by SIGINT, SIGTERM or SIGHUP at a random point of its run, removes everything it
made (namespaces, processes, working directories, shared-memory files) and exits 128 + the signal (or 0 when
it had already finished); after a SIGKILL, ``gwlbsim cleanup`` removes what is left.

The random points come from a seed printed with every failure (``GWLBSIM_KILL_SEED`` repeats a run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gwlbsim.linuxio import netns

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.alone]

SEED = int(os.environ.get("GWLBSIM_KILL_SEED") or time.time_ns() % 1_000_000)
PY = sys.executable
COMMANDS = {
    "up": [PY, "-m", "gwlbsim.cli", "up", "--appliances", "1", "--report-every", "0"],
    "demo": [PY, "-m", "gwlbsim.cli", "demo", "--appliances", "1"],
    "simulate": [PY, "-m", "gwlbsim.cli", "simulate", "--flows", "300000", "--workers", "2"],
    "bench": [PY, "-m", "gwlbsim.cli", "bench", "--quick", "-q", "--memory-flows", "0", "--subjects", "reference"],
    "fuzz": [PY, "-m", "gwlbsim.fuzz.cli", "--time", "30", "--out", "fuzz-out"],
    "conformance": [PY, "-m", "gwlbsim.conformance.cli", "--requirements", "ECHO-1,ECHO-2", "--instances", "1",
                    "--artifacts", "artifacts", "-q"],
}


def _state() -> dict[str, set[str]]:
    """What a run may leave behind: namespaces, processes of ours, working directories, shared memory."""
    procs = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "gwlbsim." in text and str(os.getpid()) != cmdline.parent.name:
            procs.add(f"{cmdline.parent.name} {text[:120]}")
    tmp = Path(tempfile.gettempdir())
    return {"namespaces": set(netns.list_namespaces()),
            "processes": procs,
            "workdirs": {str(p) for p in tmp.glob("gwlbsim-*")} | {str(p.parent) for p in
                                                                   tmp.glob("*/" + netns.OWNER_FILE)},
            "shm": {str(p) for p in Path("/dev/shm").glob("gwlbsim-*")}}


def _left(before: dict[str, set[str]], deadline: float = 10.0) -> dict[str, set[str]]:
    """What is there now and was not before (processes get a moment to finish exiting)."""
    end = time.monotonic() + deadline
    while True:
        now = _state()
        left = {k: now[k] - before[k] for k in now if now[k] - before[k]}
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_signal_at_a_random_point_leaves_nothing(command: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{command}")
    sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
    delay = rng.uniform(1.5, 5.0)  # after the interpreter has started: from the first namespace to the run's end
    why = f"{command}: {signal.Signals(sig).name} after {delay:.2f} s (GWLBSIM_KILL_SEED={SEED})"
    before = _state()
    proc = subprocess.Popen(COMMANDS[command], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        out = proc.communicate(timeout=90)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode in (0, 128 + sig), f"{why}: exit {proc.returncode}\n{out[-3000:]}"
    assert "Traceback" not in out, f"{why}\n{out[-3000:]}"
    left = _left(before)
    assert not left, f"{why}: left behind {left}\n{out[-2000:]}"
    assert not (tmp_path / ".hypothesis").exists(), f"{why}: Hypothesis's caches left in the working directory"


def test_after_sigkill_cleanup_removes_what_was_left(tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-sigkill")
    delay = rng.uniform(2.0, 6.0)
    before = _state()
    proc = subprocess.Popen(COMMANDS["demo"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    res = subprocess.run([PY, "-m", "gwlbsim.cli", "cleanup"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    left = _left(before)
    assert not left, f"SIGKILL after {delay:.2f} s (GWLBSIM_KILL_SEED={SEED}): left behind {left}\n{res.stdout}"
