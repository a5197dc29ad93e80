"""Other processes' share of the host (gwlbsim.linuxio.cpushare): the kernel's accounting, read right."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gwlbsim.linuxio import cpushare
from gwlbsim.linuxio.cpushare import OtherWorkMeter, family_seconds, host_busy_seconds

TICK = cpushare.TICK_SECONDS


def _proc(root: Path, busy_ticks: tuple[int, int, int, int, int, int, int, int],
          procs: dict[int, tuple[str, int, int, int]]) -> None:
    """A /proc of its own: the cpu line (user nice system idle iowait irq softirq steal) and each process
    (pid: name, parent, utime, stime)."""
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        if old.is_dir():
            (old / "stat").unlink()
            old.rmdir()
    (root / "stat").write_text("cpu  " + " ".join(map(str, busy_ticks)) + " 0 0\ncpu0 1 2 3\n")
    (root / "self").mkdir()  # not a process: ignored
    (root / "self" / "stat").write_text("")
    for pid, (name, ppid, utime, stime) in procs.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 1 0 0 0 "
                                             f"{utime} {stime} 0 0 20 0 1 0 100 0 0\n")


def test_host_busy_time_is_what_tasks_and_the_hypervisor_took(tmp_path: Path) -> None:
    _proc(tmp_path, (100, 5, 30, 9999, 7, 11, 13, 2), {})
    assert host_busy_seconds(tmp_path) == pytest.approx((100 + 5 + 30 + 2) * TICK)  # not idle, iowait, irq


def test_a_family_is_a_process_and_all_it_started_whatever_their_names(tmp_path: Path) -> None:
    _proc(tmp_path, (0,) * 8, {
        10: ("harness", 1, 100, 50),
        11: ("a) (strange ) name", 10, 7, 3),  # a name that looks like more fields
        12: ("grandchild", 11, 1, 1),
        20: ("someone else", 1, 500, 500),
        21: ("their child", 20, 9, 9),
    })
    assert family_seconds(10, tmp_path) == pytest.approx({10: 150 * TICK, 11: 10 * TICK, 12: 2 * TICK})
    assert family_seconds(99, tmp_path) == {}


def test_other_work_leaves_out_ours_counts_new_ones_whole_and_ended_ones_as_others(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _proc(proc, (1000, 0, 0, 0, 0, 0, 0, 0), {10: ("harness", 1, 100, 0), 11: ("ending", 10, 50, 0),
                                               20: ("someone else", 1, 0, 0)})
    meter = OtherWorkMeter(root=10, proc=proc)
    meter.start()
    # meanwhile: the host busy 400 ticks more; the harness took 100, a new child 60 (all of it since it
    # began), the ending child 20 before it went (no longer readable), someone else 220
    _proc(proc, (1400, 0, 0, 0, 0, 0, 0, 0), {10: ("harness", 1, 200, 0), 12: ("new", 10, 30, 30),
                                               20: ("someone else", 1, 220, 0)})
    other = meter.stop()
    assert other.seconds > 0
    assert other.cpus * other.seconds == pytest.approx((400 - 100 - 60) * TICK)


def test_stop_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        OtherWorkMeter().stop()


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_child_s_cpu_is_counted_as_ours() -> None:
    before = family_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 1.5\n"
                              "while time.monotonic() < end: pass\nimport sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (family_seconds(os.getpid()).get(child.pid, 0.0) < 1.0) and time.monotonic() < deadline:
            time.sleep(0.1)
        after = family_seconds(os.getpid())
        assert child.pid not in before and after[child.pid] >= 1.0, after
    finally:
        child.communicate(b"")


def test_a_process_we_did_not_start_is_other_work() -> None:
    """A busy loop started by a shell that then exits is no descendant of ours: its CPU is other work."""
    out = subprocess.run(["sh", "-c", "timeout 20 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    hog = int(out.split()[0])
    try:
        assert hog not in family_seconds(os.getpid())
        meter = OtherWorkMeter()
        meter.start()
        _burn(0.2)  # our own work does not count either
        time.sleep(1.3)
        other = meter.stop()
        assert other.cpus >= 0.3, other  # the loop has most of a CPU (more if the host is busier)
    finally:
        subprocess.run(["pkill", "-P", str(hog)], check=False)
        try:
            os.kill(hog, 9)
        except ProcessLookupError:
            pass


def test_a_process_in_an_appliance_namespace_is_ours_though_no_descendant(tmp_path: Path) -> None:
    """An appliance a container runtime started in the suite's namespace: its CPU is not other work."""
    proc = tmp_path / "proc"
    _proc(proc, (0,) * 8, {10: ("harness", 1, 1, 0), 30: ("containerd-shim", 1, 5, 0), 31: ("appliance", 30, 70, 0),
                           40: ("elsewhere", 1, 9, 0)})
    netns = tmp_path / "run-netns-app1"
    netns.write_text("")
    for pid in (30, 40):
        (proc / str(pid) / "ns").mkdir()
    os.link(netns, proc / "30" / "ns" / "net")  # the same inode: in that namespace
    (proc / "40" / "ns" / "net").write_text("")  # another namespace
    ino = frozenset({netns.stat().st_ino})
    assert family_seconds(10, proc) == pytest.approx({10: TICK})
    assert family_seconds(10, proc, ino) == pytest.approx({10: TICK, 30: 5 * TICK, 31: 70 * TICK})
    assert OtherWorkMeter(root=10, proc=proc, namespaces=[netns]).namespaces == ino
