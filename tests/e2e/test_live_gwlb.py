"""The fake GWLB live: real namespaces, real reference appliances, ordinary tools end to end."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest
from scapy.all import IP, UDP, raw

from gwlbsim.appliance import ApplianceSpec
from gwlbsim.config import GwlbConfig, HealthCheck
from gwlbsim.linuxio import netns
from gwlbsim.live.balancer import Captured
from gwlbsim.live.session import GwlbSession, SessionOptions, health_check_for
from gwlbsim.live.traffic import tcp_transfer, udp_exchange
from gwlbsim.wire import geneve

pytestmark = pytest.mark.root


class Recorder:
    def __init__(self) -> None:
        self.items: list[Captured] = []
        self.lock = threading.Condition()

    def __call__(self, c: Captured) -> None:
        with self.lock:
            self.items.append(c)
            self.lock.notify_all()

    def of(self, kind: str) -> list[Captured]:
        with self.lock:
            return [c for c in self.items if c.kind == kind]

    def wait(self, kind: str, timeout: float = 3.0) -> list[Captured]:
        """What was captured of ``kind``, once there is some (or the timeout passed)."""
        with self.lock:
            self.lock.wait_for(lambda: any(c.kind == kind for c in self.items), timeout)
        return self.of(kind)


@pytest.fixture(scope="module")
def session() -> Iterator[GwlbSession]:
    with GwlbSession(SessionOptions(appliances=2, endpoints=2)) as s:
        s.wait_healthy(60)
        yield s


@pytest.fixture
def recorder(session: GwlbSession) -> Iterator[Recorder]:
    r = Recorder()
    session.gwlb.add_tap(r)  # type: ignore[union-attr]
    yield r
    session.gwlb.remove_tap(r)  # type: ignore[union-attr]


def tcp_ok(s: GwlbSession, e: int, port: int, size: int = 200_000, v6: bool = False) -> bool:
    r = tcp_transfer(s, e, port, size, v6)
    assert r.ok, r.detail
    return r.ok


def test_ping_tcp_udp_end_to_end_ipv4_and_ipv6(session: GwlbSession) -> None:
    for dst in ("10.20.0.2", "fd00:20::2"):
        r = session.run_client(0, ["ping", "-c", "2", "-i", "0.2", "-W", "2", dst], check=False)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert tcp_ok(session, 0, 7001)
    assert tcp_ok(session, 0, 7002, v6=True)
    assert udp_exchange(session, 0, 5001) == b"gnip"
    assert udp_exchange(session, 0, 5002, v6=True) == b"gnip"


def test_flows_are_symmetric_through_one_appliance(session: GwlbSession, recorder: Recorder) -> None:
    for port in range(6000, 6016):
        assert udp_exchange(session, 0, port) == b"gnip"
    assert tcp_ok(session, 0, 7010, size=50_000)
    sent: dict[int, set[str]] = defaultdict(set)
    back: dict[int, set[str]] = defaultdict(set)
    for c in recorder.of("to_target"):
        sent[geneve.parse(c.data).cookie].add(c.dst)
    for c in recorder.of("from_target"):
        assert c.verdict == "", c
        back[geneve.parse(c.data).cookie].add(c.src)
    assert len(sent) >= 17
    assert {t for ts in sent.values() for t in ts} == {"10.100.1.10", "10.100.1.11"}, "flows use both appliances"
    for cookie, targets in sent.items():
        assert len(targets) == 1, "both directions of a flow go to one appliance"
        assert back[cookie] == targets, "and come back from that one"
    # both directions of each UDP exchange carried the same header
    headers = defaultdict(set)
    for c in recorder.of("to_target"):
        headers[geneve.parse(c.data).cookie].add(geneve.parse(c.data).header_bytes)
    assert all(len(h) == 1 for h in headers.values())


def test_endpoints_with_overlapping_addresses_stay_apart(session: GwlbSession, recorder: Recorder) -> None:
    assert udp_exchange(session, 0, 5100, payload=b"for endpoint zero") == b"orez tniopdne rof"
    assert udp_exchange(session, 1, 5100, payload=b"for endpoint one") == b"eno tniopdne rof"
    enis = {geneve.parse(c.data).eni_id for c in recorder.of("to_target")}
    assert enis == {e.eni_id for e in session.topo.endpoints}  # type: ignore[union-attr]
    e0, e1 = (e.eni_id for e in session.topo.endpoints)  # type: ignore[union-attr]
    tagged = {b"for endpoint zero": e0, b"orez tniopdne rof": e0, b"for endpoint one": e1,
              b"eno tniopdne rof": e1}
    seen = 0
    for c in recorder.of("delivered"):
        for tag, eni_id in tagged.items():
            if tag in c.data:
                assert c.eni_id == eni_id, "a packet of one endpoint was delivered on the other's side"
                seen += 1
    assert seen == 4, "both requests and both answers were delivered, each on its own endpoint's side"


def test_strict_return_validation_drops_a_forged_cookie(session: GwlbSession, recorder: Recorder) -> None:
    topo = session.topo
    assert topo is not None
    app = topo.appliances[0]
    inner = raw(IP(src="10.20.0.2", dst="10.10.0.2") / UDP(sport=53, dport=5555) / b"forged")
    forged = geneve.build(inner, topo.endpoints[0].eni_id, 0xDEADBEEF)
    s = topo.lab.socket(app.ns)
    try:
        s.bind((app.address, 60123))
        s.sendto(forged, (app.gwlb_address, 6081))
    finally:
        s.close()
    got = recorder.wait("from_target")
    assert got and got[0].verdict == "unknown_cookie"
    assert not recorder.of("delivered")
    drops = session.call(lambda m: dict(m.targets["app0"].drops))
    assert drops.get("unknown_cookie", 0) >= 1


def test_oversize_inner_packets_are_dropped(session: GwlbSession, recorder: Recorder) -> None:
    slot = session.topo.endpoints[0]  # type: ignore[union-attr]
    raw_sock = session.lab.socket(slot.client_ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # type: ignore[union-attr]
    raw_sock.setsockopt(socket.IPPROTO_IP, 10, 3)  # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: ignore the route MTU
    try:
        big = raw(IP(src=slot.client_v4, dst=slot.server_v4, flags="DF") / UDP(sport=1, dport=2) / (b"x" * 8600))
        raw_sock.sendto(big, (slot.server_v4, 0))
    finally:
        raw_sock.close()
    assert [c.verdict for c in recorder.wait("from_endpoint")] == ["oversize"]
    assert not recorder.of("to_target")


def failover_session(rebalance: bool) -> GwlbSession:
    spec = ApplianceSpec()
    hc = health_check_for(spec, HealthCheck(interval=5, timeout=2, healthy_threshold=2, unhealthy_threshold=2))
    mode = "rebalance" if rebalance else "no_rebalance"
    cfg = GwlbConfig(health_check=hc, failover_on_unhealthy=mode, failover_on_deregistration=mode)
    # GWLB's clock runs 2.5x: its 5 s health checks every 2 s of real time (AWS allows no shorter interval)
    return GwlbSession(SessionOptions(appliances=2, spec=spec, config=cfg, time_scale=2.5))


@pytest.mark.parametrize("rebalance", [False, True], ids=["no_rebalance", "rebalance"])
def test_health_failure_moves_new_flows_and_with_rebalance_existing_ones(rebalance: bool) -> None:
    with failover_session(rebalance) as s:
        s.wait_healthy(60)
        # a long-lived UDP flow per source port; find one that landed on app0
        slot = s.topo.endpoints[0]  # type: ignore[union-attr]
        srv = s.server_socket(0)
        srv.bind((slot.server_v4, 4000))
        srv.settimeout(2)
        clients = []
        for port in range(30000, 30020):
            c = s.client_socket(0)
            c.bind((slot.client_v4, port))
            c.settimeout(2)
            c.sendto(b"hello", (slot.server_v4, 4000))
            srv.recvfrom(100)
            clients.append(c)
        def mine_on_app0(m: object) -> int:
            return sum(1 for f in m.flows.values() if f.target.id == "app0" and f.tuple.dport == 4000)  # type: ignore[attr-defined]

        on_victim = s.call(mine_on_app0)
        assert 0 < on_victim < len(clients)
        s.appliances[0].stop(signal.SIGKILL)
        s.wait_state("app0", "unhealthy", 30)
        time.sleep(0.2)  # let rebalancing (a tick) happen
        for c in clients:
            c.sendto(b"again", (slot.server_v4, 4000))
        # every datagram that gets through arrives within moments; the lost ones are waited for once, not each
        delivered = 0
        srv.settimeout(1.5)
        while delivered < len(clients):
            try:
                srv.recvfrom(100)
            except TimeoutError:
                break
            delivered += 1
        if rebalance:
            assert delivered == len(clients), "rebalance: every existing flow moved to the healthy appliance"
            assert s.call(lambda m: m.metrics.rebalanced_flows) == on_victim
        else:
            assert delivered == len(clients) - on_victim, "no_rebalance: flows on the dead appliance are lost"
        # new flows avoid the unhealthy appliance
        before = s.call(lambda m: m.targets["app0"].flows)
        for port in range(31000, 31010):
            assert udp_exchange(s, 0, port) == b"gnip"
        assert s.call(lambda m: m.targets["app0"].flows) == before
        for c in clients:
            c.close()
        srv.close()


def start_up() -> tuple[subprocess.Popen[str], str]:
    """``gwlbsim up`` in a child process, read until it is ready; returns it and its namespace prefix."""
    proc = subprocess.Popen([sys.executable, "-m", "gwlbsim.cli", "up", "--appliances", "1", "--report-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("ready."):
            break
    head = next(line for line in lines if line.startswith("fake GWLB: namespace"))
    prefix = head.split("namespace ")[1].split("-")[0]
    assert netns.PREFIX_RE.match(prefix), head
    mine = [n for n in netns.list_namespaces() if n.startswith(prefix + "-")]
    assert len(mine) == 5, (mine, lines)
    return proc, prefix


def test_sigterm_removes_everything() -> None:
    proc, prefix = start_up()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out  # 128 + SIGTERM, after removing everything
    assert "removed." in out
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix + "-")]
