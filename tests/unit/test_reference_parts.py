"""The reference appliance's pure parts: the tunnel state machine, health reasons, the status schema, the return
path policy, the worker protocol, and the one event loop the drivers share."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass

import pytest
from gwlbsim.reference import protocol
from gwlbsim.reference.core import ApplianceCore, Config, TunnelState, TunnelTable
from gwlbsim.reference.returns import VIA_IP, ReturnPaths
from gwlbsim.reference.status import (
    STALL_AFTER,
    TOTALS,
    lifecycle_reasons,
    loop_reasons,
    status_document,
    sum_totals,
    sum_tunnel_counters,
    worker_reasons,
)

from gwlbsim.linuxio.loop import EventLoop

# ----------------------------------------------------------------------------------------- tunnel table


def test_a_tunnel_goes_creating_ready_retired() -> None:
    table = TunnelTable()
    t, new = table.need(7, 1.0, retry_interval=1.0) or (None, False)
    assert t is not None and new and t.state is TunnelState.CREATING and t.generation == 1
    assert table.need(7, 1.5, 1.0) == (t, False)  # being created: the same one, not started again
    assert table.ready(7) is t and t.state is TunnelState.READY
    assert table.ready(7) is None  # only a creating tunnel becomes ready
    assert table.retire(7) is t and t.state is TunnelState.RETIRED and table.get(7) is None
    t2, new2 = table.need(7, 2.0, 1.0) or (None, False)
    assert new2 and t2 is not t and t2 is not None and t2.generation == 2


def test_a_failed_tunnel_is_retried_after_the_interval_and_keeps_what_it_learned() -> None:
    table = TunnelTable()
    t, _ = table.need(1, 10.0, 1.0) or (None, False)
    assert t is not None
    t.counters.in_packets = 5
    assert table.failed(1, 10.0) is t and t.state is TunnelState.FAILED and t.failed_at == 10.0
    assert table.need(1, 10.5, retry_interval=1.0) is None  # too soon
    retried = table.need(1, 11.0, retry_interval=1.0)
    assert retried is not None and retried[1] and retried[0].generation == 2
    assert retried[0].counters.in_packets == 5 and retried[0].state is TunnelState.CREATING


def test_idle_retires_only_ready_tunnels_past_the_timeout() -> None:
    table = TunnelTable()
    for eni in (1, 2, 3):
        table.need(eni, 0.0, 1.0)
    table.ready(1)
    table.ready(2)
    table.get(2).last_seen = 50.0  # type: ignore[union-attr]
    assert table.idle(100.0, 0.0) == []  # 0: never
    gone = table.idle(100.0, 60.0)
    assert [t.eni_id for t in gone] == [1] and table.get(1) is None and table.get(3) is not None
    table.get(2).last_seen = 190.0  # type: ignore[union-attr]
    assert table.idle(200.0, 60.0) == []


def test_retire_all_returns_what_has_devices() -> None:
    table = TunnelTable()
    for eni in (1, 2, 3):
        table.need(eni, 0.0, 1.0)
    table.ready(1)
    table.failed(2, 0.0)
    out = table.retire_all()
    assert sorted(t.eni_id for t in out) == [1, 3] and len(table) == 0
    assert all(t.state is TunnelState.RETIRED for t in out)


def test_the_core_keeps_its_flow_count_through_the_table() -> None:
    core = ApplianceCore(Config(tunnel_timeout=5.0))
    t, _ = core.table.need(9, 0.0, 1.0) or (None, False)
    assert t is not None and core.tunnels is core.table.by_eni
    core.tunnel_ready(9, 0.0)
    assert [x.eni_id for x in core.tick(10.0)] == [9] and core.tunnels == {}


# ----------------------------------------------------------------------------------- health and status


def test_loop_reasons() -> None:
    assert loop_reasons("datapath", False, 10.0, 9.0) == []
    assert loop_reasons("datapath", True, 10.0, 9.0) == ["shutting down"]
    stalled = loop_reasons("supervisor", False, 10.0 + STALL_AFTER + 1, 10.0)
    assert stalled == [f"supervisor loop stalled for {STALL_AFTER + 1:.1f} s"]


def test_lifecycle_reasons() -> None:
    ok = {"alive": True, "stopping": False, "busy_since": None, "now": 100.0, "hook_timeout": 30.0,
          "last_create_error": ""}
    assert lifecycle_reasons(**ok) == []  # type: ignore[arg-type]
    assert lifecycle_reasons(**{**ok, "alive": False}) == ["tunnel lifecycle worker is not running"]  # type: ignore[arg-type]
    assert lifecycle_reasons(**{**ok, "alive": False, "stopping": True}) == []  # type: ignore[arg-type]
    assert lifecycle_reasons(**{**ok, "busy_since": 64.0}) == ["tunnel creation or destruction stuck"]  # type: ignore[arg-type]
    assert lifecycle_reasons(**{**ok, "busy_since": 66.0}) == []  # type: ignore[arg-type]
    assert lifecycle_reasons(**{**ok, "last_create_error": "x"}) == ["last tunnel creation failed: x"]  # type: ignore[arg-type]


def test_worker_reasons() -> None:
    assert worker_reasons(0, exited=True, replacing=True, heartbeat=None, spawned_at=0, now=1) == \
        ["datapath worker 0 exited, being replaced"]
    assert worker_reasons(1, exited=True, replacing=False, heartbeat=5.0, spawned_at=0, now=6) == \
        ["datapath worker 1 exited"]
    assert worker_reasons(0, exited=False, replacing=False, heartbeat=None, spawned_at=0, now=1) == []
    assert worker_reasons(0, exited=False, replacing=False, heartbeat=None, spawned_at=0, now=STALL_AFTER + 1) == \
        ["datapath worker 0 never reported"]
    assert worker_reasons(2, exited=False, replacing=False, heartbeat=1.0, spawned_at=0, now=2.0) == []
    assert worker_reasons(2, exited=False, replacing=False, heartbeat=1.0, spawned_at=0, now=10.0) == \
        ["datapath worker 2 stalled for 9.0 s"]


def test_sums_over_workers() -> None:
    a = {k: 0 for k in TOTALS} | {"packets_in": 3, "drops": {"no_flow": 1}}
    b = {k: 0 for k in TOTALS} | {"packets_in": 4, "drops": {"no_flow": 2, "too_short": 1}}
    total = sum_totals([a, b])
    assert total["packets_in"] == 7 and total["drops"] == {"no_flow": 3, "too_short": 1}
    part = {"packets_in": 1, "bytes_in": 2, "packets_out": 3, "bytes_out": 4, "flows": 5, "pending": 6,
            "drops": {"x": 1}}
    assert sum_tunnel_counters([part, part]) == {"packets_in": 2, "bytes_in": 4, "packets_out": 6, "bytes_out": 8,
                                                 "flows": 10, "pending": 12, "drops": {"x": 2}}


def test_the_status_document_schema() -> None:
    @dataclass
    class Hooks:
        create_ok: int = 1
        create_failed: int = 0
        destroy_ok: int = 0
        destroy_failed: int = 2

    doc = status_document(Config(), 12.3456, [], Hooks(), sum_totals([]), [], workers=2)
    assert doc["schema"] == "gwlbsim.reference.status/1" and doc["healthy"] and doc["uptime_seconds"] == 12.346
    assert set(doc) == {"schema", "version", "healthy", "reasons", "uptime_seconds", "config", "totals", "hooks",
                        "tunnels", "workers"}
    assert doc["hooks"] == {"create_ok": 1, "create_failed": 0, "destroy_ok": 0, "destroy_failed": 2}
    assert not status_document(Config(), 0, ["x"], Hooks(), {}, [])["healthy"]


# ------------------------------------------------------------------------------------------ return path


@dataclass(frozen=True)
class _Route:
    frame: bytes
    address: bytes


def test_returns_go_through_the_ip_layer_until_the_route_is_known_then_to_the_link() -> None:
    routes: dict[str, _Route | None] = {}
    wanted: list[str] = []
    paths = ReturnPaths(routes, wanted.append, static=lambda a: b"never", vnet=b"V", refresh_every=1.0)
    assert paths.destination("10.0.0.1") == VIA_IP and wanted == ["10.0.0.1"]
    routes["10.0.0.1"] = _Route(b"ETH", b"LL")
    assert paths.destination("10.0.0.1") == (b"VETH", 4, b"LL", True)
    assert paths.known["10.0.0.1"] == (b"VETH", 4, b"LL", True)


def test_once_a_refresh_period_one_return_per_address_goes_through_the_ip_layer() -> None:
    routes: dict[str, _Route | None] = {"a": _Route(b"E", b"L")}
    paths = ReturnPaths(routes, lambda a: None, static=lambda a: b"never", refresh_every=1.0)
    assert paths.destination("a")[2] == b"L"
    paths.tick(0.0)
    assert paths.known == {} and paths.destination("a") == VIA_IP  # the refreshing one
    assert paths.destination("a")[2] == b"L"  # then the link again
    paths.tick(0.5)  # not yet due
    assert paths.destination("a")[2] == b"L"


def test_without_a_link_socket_every_return_uses_the_static_address() -> None:
    paths = ReturnPaths(None, lambda a: None, static=lambda a: f"sa:{a}".encode())
    assert paths.destination("b") == (b"", 0, b"sa:b", False)
    paths.tick(100.0)
    assert paths.known  # nothing to refresh


# ----------------------------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("msg", [
    protocol.Need(5), protocol.Gone(1 << 40, 2), protocol.Ready(3, 1), protocol.Failed(3), protocol.Retire(9),
    protocol.Closing(1 << 63, 1234.567891), protocol.Closed(7), protocol.Keep(7, 0.1 + 0.2),
    protocol.Report(), protocol.Stop(),
    protocol.Status(1, 12.5, 4242, {"packets_in": 3, "drops": {"no_flow": 1}}, {"7": {"last_seen": 1.0}}),
])
def test_every_message_round_trips(msg: protocol.Message) -> None:
    assert protocol.decode(protocol.encode(msg)) == msg
    assert type(protocol.decode(protocol.encode(msg))) is type(msg)


@pytest.mark.parametrize("data", [b"", b"{}", b'["nope", 1]', b'["need"]', b'["need", 1, 2]', b'["ready", 1]',
                                  b"\xff"])
def test_a_foreign_message_is_refused(data: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(data)


# --------------------------------------------------------------------------------------------- event loop


def test_the_loop_calls_handlers_wakes_and_ticks_then_stops() -> None:
    now = [0.0]

    def clock() -> float:  # an injected clock that moves on a little at every look
        now[0] += 0.004
        return now[0]

    loop = EventLoop(tick=0.01, clock=clock)
    r, w = os.pipe()
    seen: list[str] = []

    def readable(t: float) -> None:
        seen.append(os.read(r, 10).decode())
        loop.wake()

    def woke(t: float) -> None:
        seen.append("wake")

    def ticked(t: float) -> None:
        seen.append("tick")
        if seen.count("tick") >= 2:
            loop.stop()

    loop.watch(r, readable)
    os.write(w, b"x")
    done = threading.Event()
    th = threading.Thread(target=lambda: (loop.run(on_tick=ticked, on_wake=woke), done.set()))
    th.start()
    assert done.wait(10), "the loop did not stop"
    th.join()
    assert seen[0] == "x" and "wake" in seen and seen.count("tick") >= 2
    assert loop.heartbeat >= 0.02
    loop.unwatch(r)
    loop.unwatch(r)  # twice: no error
    assert not loop.watching(r)
    loop.close()
    os.close(r)
    os.close(w)


def test_wakes_from_other_threads_are_never_lost_and_cost_a_write_only_when_none_is_pending() -> None:
    """Producers hand work over (a queue, then a wake) while the loop drains it: every item is seen, however
    the wakes fall against the loop's turns, and wakes already covered by a byte in the pipe write nothing."""
    loop = EventLoop(tick=0.05)
    work: queue.Queue[int] = queue.Queue()
    seen: list[int] = []
    writes = [0]
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes[0] += 1
        return real_write(fd, data)

    def drain(now: float) -> None:
        while True:
            try:
                seen.append(work.get_nowait())
            except queue.Empty:
                return

    real_drain = loop._drain
    between = [True]

    def drain_with_a_hand_over_in_between() -> None:
        if between:  # once: a producer hands work over just as the loop empties the pipe
            between.clear()
            work.put(-1)
            loop.wake()
        real_drain()

    n, producers = 20_000, 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", counting_write)
        mp.setattr(loop, "_drain", drain_with_a_hand_over_in_between)
        th = threading.Thread(target=loop.run, kwargs={"on_wake": drain})
        th.start()

        def produce(base: int) -> None:
            for i in range(n):
                work.put(base + i)
                loop.wake()

        ps = [threading.Thread(target=produce, args=(p * n,)) for p in range(producers)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        deadline = time.monotonic() + 10
        while len(seen) <= n * producers and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop's own thread drains: waiting for its count, with a deadline
        loop.stop()
        th.join(5)
    loop.close()
    assert sorted(seen) == [-1, *range(n * producers)], f"{n * producers + 1 - len(seen)} items never handed over"
    assert writes[0] < n * producers, writes  # wakes coalesced while one was pending
