"""The reference with several datapath workers, end to end: every flow comes back with its own header, and a
worker that dies is replaced (health says so meanwhile) without losing the flows steered to it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from gwlbsim.reference.supervisor import MAX_RESTARTS
from scapy.all import IP, TCP, raw

from gwlbsim.wire import geneve

from .conftest import APP_IP, Topo

pytestmark = pytest.mark.root

ENI = 0x2B8EE1D4DB0C51C4
FLOWS = 48


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile (the health server has one per request)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _flow(i: int) -> tuple[bytes, int, int]:
    inner = raw(IP(src="192.168.1.10", dst="192.168.2.20") / TCP(sport=42000 + i, dport=443, flags="S"))
    return inner, 0x5000 + i, 61000 + i


def _every_flow_returns(topo: Topo) -> None:
    flows = [_flow(i) for i in range(FLOWS)]
    for inner, cookie, sport in flows:
        topo.peer.send(geneve.build(inner, ENI, cookie), sport=sport)
    got = topo.peer.recv_all(FLOWS, timeout=5)
    assert len(got) == FLOWS, f"{len(got)} of {FLOWS} returned\n{topo.log()}"
    by_inner = {inner: (cookie, sport) for inner, cookie, sport in flows}
    for r in got:
        p = geneve.parse(r.payload)
        assert (r.src, (p.cookie, r.sport)) == (APP_IP, by_inner[p.inner])


def test_a_killed_worker_is_replaced_and_its_flows_come_back(topo: Topo) -> None:
    proc = topo.start("--udpthreads", "2", "--tunthreads", "2")
    _every_flow_returns(topo)
    status = topo.status()
    assert status["workers"] == 2 and status["worker_restarts"] == 0
    # the status says which datapath carries the traffic, and why, as a single process's does
    assert status["datapath"] == {"kind": "python", "reason": "--udpthreads/--tunthreads 2: the kernel path runs "
                                  "in one process so far"}
    before = status["totals"]["packets_in"]
    assert before == FLOWS

    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    seen: list[str] = []

    def replaced() -> bool:
        s = topo.status()
        seen.extend(s["reasons"])
        return s["healthy"] and s["worker_restarts"] == 1

    topo.wait_for(replaced, timeout=15, what="the dead worker's replacement")
    assert any("exited" in r for r in seen), seen  # unhealthy while a worker was down
    now = _children(proc.pid)
    assert victim not in now and len(now) == 2, now

    # both workers (the replacement relearns its flows from their next packets) return every flow again
    _every_flow_returns(topo)
    status = topo.status()
    assert status["totals"]["packets_in"] >= before + FLOWS  # the dead worker's counters still count
    assert status["totals"]["packets_out"] >= 2 * FLOWS

    topo.lab.stop_process(proc)
    assert proc.returncode == 0
    assert not any(_alive(p) for p in now), "a worker outlived the appliance"
    assert "replaced" in topo.log()


def test_a_worker_that_keeps_dying_is_left_down_and_health_says_so(topo: Topo) -> None:
    proc = topo.start("--udpthreads", "2", "--tunthreads", "2")
    for n in range(MAX_RESTARTS + 1):
        # the same worker each time: the first forked one, then its latest replacement (the newest child)
        victim = _children(proc.pid)[0 if n == 0 else -1]
        os.kill(victim, signal.SIGKILL)
        if n < MAX_RESTARTS:
            topo.wait_for(lambda n=n: topo.status()["worker_restarts"] == n + 1 and topo.status()["healthy"],
                          timeout=15, what=f"replacement {n + 1}")
    time.sleep(2.5)  # longer than a replacement takes
    status = topo.status()
    assert status["worker_restarts"] == MAX_RESTARTS and not status["healthy"]
    assert any("exited" in r for r in status["reasons"]), status["reasons"]
    assert len(_children(proc.pid)) == 1
    assert "left down" in topo.log()
    topo.lab.stop_process(proc)
    assert proc.returncode == 0


def test_what_the_kernel_drops_on_the_way_into_gwi_is_counted_with_workers(topo: Topo) -> None:
    """As with one process (test_kernel_path): gwi- set down, each packet the workers write into it is refused
    and counted, in the tunnel's and the totals' ``ingress_rx_dropped`` (kept once the idle tunnel is gone)."""
    topo.start("--udpthreads", "2", "--tunthreads", "2", "-t", "3")
    _every_flow_returns(topo)
    (tunnel,) = topo.status()["tunnels"]
    assert tunnel["ingress_rx_dropped"] == 0, tunnel
    topo.lab.run(topo.app, ["ip", "link", "set", "dev", tunnel["ingress"], "down"])
    for inner, cookie, sport in (_flow(i) for i in range(FLOWS)):
        topo.peer.send(geneve.build(inner, ENI, cookie), sport=sport)
    topo.wait_for(lambda: topo.status()["totals"]["drops"].get("tun_write_failed", 0) == FLOWS, timeout=5,
                  what="the workers' failed writes")
    doc = topo.status()
    assert doc["tunnels"][0]["ingress_rx_dropped"] == doc["totals"]["ingress_rx_dropped"] == FLOWS, doc
    topo.wait_for(lambda: not topo.status()["tunnels"], timeout=15, what="the idle tunnel retired")
    assert topo.status()["totals"]["ingress_rx_dropped"] == FLOWS, topo.log()
