"""A tunnel near its idle deadline is closed in the kernel first: its traffic is then the Python datapath's, so
the decision to retire it is made where its packets are handled (never while the kernel is carrying one into
it), and what the kernel carried for it still counts. The real core decides; the kernel is a stand-in that
records what it is told."""

from __future__ import annotations

from typing import Any

import pytest
from gwlbsim.reference import fastpath
from gwlbsim.reference.core import ApplianceCore, Config, TunnelState
from gwlbsim.reference.fastpath import CLOSE_LEAD, FastPath
from scapy.all import IP, UDP, raw

from gwlbsim.wire import geneve

ENI = 0x2B8EE1D4DB0C51D1
TIMEOUT = 6.0
INNER = raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1000, dport=53))


class _Kernel:
    """The kernel's copy of one tunnel: open or closed, when it last carried a packet in, what it carried."""

    def __init__(self) -> None:
        self.open = True
        self.seen: float | None = None  # CLOCK_MONOTONIC seconds
        self.counts = (0, 0, 0, 0)
        self.calls: list[str] = []

    def tunnel_state(self, eni_id: int) -> Any:
        return (self.seen, self.counts) if self.open else None

    def close_tunnel(self, eni_id: int) -> Any:
        self.calls.append("close")
        was, self.open = self.open, False
        state = (self.seen, self.counts)
        self.counts = (0, 0, 0, 0)
        return state if was else None

    def open_tunnel(self, eni_id: int, gwi: int, gwo: int) -> None:
        self.calls.append("open")
        self.open = True

    def expire_flows(self, older_than: float) -> int:
        return 0


def _setup(monkeypatch: pytest.MonkeyPatch) -> tuple[FastPath, _Kernel, ApplianceCore, list[float]]:
    """A core with one ready tunnel (last used at 0.0), a fast path that has it open, and the monotonic clock
    (the list's one value) the fast path reads."""
    core = ApplianceCore(Config(tunnel_timeout=TIMEOUT))
    data = geneve.build(INNER, ENI, 1)
    core.inbound(data, 0, len(data), "10.0.0.1", "10.0.0.2", 60001, 6081, 0.0)
    core.tunnel_ready(ENI, 0.0)
    p = FastPath.__new__(FastPath)
    k = _Kernel()
    p.kernel, p.flow_timeout = k, 350.0  # type: ignore[assignment]
    p._tunnels, p._closed, p._carried, p._nexthops = {ENI: (11, 12, [])}, set(), {}, {}
    p._next_own, p._next_expiry = float("inf"), float("inf")
    mono = [1000.0]  # the loop's clock is 0 at mono 1000
    monkeypatch.setattr(fastpath.time, "monotonic", lambda: mono[0])
    return p, k, core, mono


def _tick(p: FastPath, core: ApplianceCore, mono: list[float], now: float) -> list[object]:
    """One turn of the datapath's tick at loop time ``now``: the fast path first, then the core."""
    mono[0] = 1000.0 + now
    p.tick(now, core, None)
    return list(core.tick(now))


def test_a_tunnel_is_closed_in_the_kernel_before_it_is_retired(monkeypatch: pytest.MonkeyPatch) -> None:
    p, k, core, mono = _setup(monkeypatch)
    k.seen, k.counts = 1000.0 + 1.0, (5, 500, 4, 400)  # the kernel carried its last packet in at 1.0
    assert _tick(p, core, mono, TIMEOUT - CLOSE_LEAD) == [] and k.open  # idle for 6 - 2 - 1 s: not yet
    assert _tick(p, core, mono, 1.0 + TIMEOUT - CLOSE_LEAD) == [] and not k.open  # the last CLOSE_LEAD: closed
    assert p.carried(ENI) == (5, 500, 4, 400)  # what the kernel carried still counts
    assert _tick(p, core, mono, 1.0 + TIMEOUT - 0.1) == []  # not before the deadline
    assert len(_tick(p, core, mono, 1.0 + TIMEOUT)) == 1  # idle for -t: retired, as it would be anyway
    assert k.calls == ["close"]


def test_a_stalled_tick_closes_first_and_retires_no_sooner_than_a_lead_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick late enough to find the tunnel idle past its deadline closes it, and leaves it to the Python
    datapath for the lead before retiring it: never in the same tick."""
    p, k, core, mono = _setup(monkeypatch)
    assert _tick(p, core, mono, TIMEOUT + 3.0) == [] and not k.open
    assert core.tunnels[ENI].state is TunnelState.READY
    assert _tick(p, core, mono, TIMEOUT + 3.0 + CLOSE_LEAD - 0.1) == []
    assert len(_tick(p, core, mono, TIMEOUT + 3.0 + CLOSE_LEAD)) == 1


def test_a_closed_tunnel_used_again_is_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    p, k, core, mono = _setup(monkeypatch)
    k.counts = (2, 200, 2, 200)
    _tick(p, core, mono, TIMEOUT - CLOSE_LEAD)
    assert not k.open
    data = geneve.build(INNER, ENI, 2)  # a packet, on the Python datapath: the tunnel is still ready
    v = core.inbound(data, 0, len(data), "10.0.0.1", "10.0.0.2", 60001, 6081, TIMEOUT - 0.2)
    assert v is not None and not v.queued and not v.new_tunnel
    assert _tick(p, core, mono, TIMEOUT) == [] and k.open and k.calls == ["close", "open"]
    k.counts = (1, 100, 0, 0)  # counted afresh by the kernel: the sum goes on from what it had
    assert p.carried(ENI) == (3, 300, 2, 200)
    assert _tick(p, core, mono, 2 * TIMEOUT - 0.2 - CLOSE_LEAD - 0.05) == [] and k.open


def test_a_packet_the_kernel_carried_while_closing_keeps_the_tunnel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel carried a packet in between the fast path's look and the close: the time it reports on
    closing counts, so the tunnel opens again at the next tick instead of being retired."""
    p, k, core, mono = _setup(monkeypatch)
    real_close = k.close_tunnel

    def close_after_a_packet(eni_id: int) -> Any:
        k.seen = mono[0]  # at this very moment
        return real_close(eni_id)

    monkeypatch.setattr(k, "close_tunnel", close_after_a_packet)
    _tick(p, core, mono, TIMEOUT - CLOSE_LEAD + 0.1)
    assert not k.open
    assert _tick(p, core, mono, TIMEOUT + 0.2) == [] and k.open


def test_without_a_tunnel_timeout_nothing_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    p, k, core, mono = _setup(monkeypatch)
    core.config = Config(tunnel_timeout=0.0)
    assert _tick(p, core, mono, 10_000.0) == [] and k.open and k.calls == []
