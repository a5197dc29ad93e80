"""Health: the appliance's own health answers, and what the fake GWLB makes of them."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gwlbsim.conformance.environment import ConformanceEnv, check, not_applicable, not_run
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import eni, raw_eni, tcp4, udp4

from gwlbsim.linuxio.httpprobe import http_probe
from gwlbsim.wire import eni as eni_names
from gwlbsim.wire import geneve


def _has_health_check(env: ConformanceEnv) -> None:
    if env.spec.health_protocol == "none":
        not_applicable("the appliance has no health check (--health-protocol none)")


@requirement("HEALTH-1")
def test_healthy_answers_200_with_a_complete_exchange(gwlb: ConformanceEnv) -> None:
    _has_health_check(gwlb)
    for i, ra in enumerate(gwlb.instances):
        r = ra.health(timeout=5)
        check(r.ok, f"instance {i}: health probe failed: {r.error}")
        if gwlb.spec.health_protocol == "http":
            check(r.status == 200, f"instance {i}: health answered {r.status}, not 200")
            # the server must end the exchange: GWLB closes after each check, and so must the answer
            s = gwlb.lab.socket(gwlb.topo.gwlb_ns, socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect((ra.address, gwlb.spec.health_port))
                s.sendall(f"GET {gwlb.spec.health_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            except OSError as e:
                check(False, f"instance {i}: the health exchange did not complete: {e}")
            finally:
                s.close()
            check(data.startswith(b"HTTP/1."), f"instance {i}: not an HTTP response: {data[:40]!r}")


@requirement("HEALTH-2")
def test_concurrent_probers_are_all_answered(gwlb: ConformanceEnv) -> None:
    _has_health_check(gwlb)
    ra = gwlb.instances[0]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: ra.health(timeout=5), range(48)))
    bad = [r for r in results if not r.ok or (gwlb.spec.health_protocol == "http" and r.status != 200)]
    check(not bad, f"{len(bad)} of 48 concurrent probes failed: {bad[0] if bad else ''}")


@requirement("HEALTH-3")
def test_503_when_a_tunnel_cannot_be_created(gwlb: ConformanceEnv) -> None:
    _has_health_check(gwlb)
    if gwlb.spec.health_protocol != "http":
        not_applicable(f"a {gwlb.spec.health_protocol.upper()} health check cannot answer 503")
    gwlb.not_applicable_unless_tunnels("breaking the datapath from outside (a tunnel that cannot be created)")
    blocked = gwlb.fresh_eni()
    gwi, _ = eni_names.device_names(blocked)
    ra = gwlb.instances[0]
    gwlb.lab.run(ra.ns, ["ip", "link", "add", gwi, "type", "veth", "peer", "name", "gwlbsim-blk"])
    try:
        gwlb.echo(geneve.build(udp4(), blocked, 1), timeout=1)
        deadline = time.monotonic() + 10
        status = gwlb.health_status()
        while status != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = gwlb.health_status()
        check(status == 503, f"the appliance cannot create the tunnel for an endpoint, yet health says {status}")
    finally:
        gwlb.lab.run(ra.ns, ["ip", "link", "del", gwi], check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # recovery: traffic for that endpoint once the obstacle is gone
            gwlb.echo(geneve.build(udp4(), blocked, 1), timeout=0.5)
            if gwlb.health_status() == 200:
                break
            time.sleep(0.5)
        gwlb.ensure_healthy()


#: a restarted appliance must answer health and carry traffic within this many seconds of being started again
RESTART_BOUND = 5.0


def _leave_time_wait(env: ConformanceEnv) -> bool:
    """Close a health connection the way GWLB's checks end: the server closes first, so the server's side of
    the connection stays in TIME_WAIT on the health port (for a minute). True if one is there now."""
    ra = env.instances[0]
    s = env.lab.socket(env.topo.gwlb_ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((ra.address, env.spec.health_port))
        if env.spec.health_protocol == "http":
            s.sendall(f"GET {env.spec.health_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):  # until the server's FIN
            pass
    except OSError:
        pass
    finally:
        s.close()
    out = env.lab.run(ra.ns, ["ss", "-Htan", "state", "time-wait", f"sport = :{env.spec.health_port}"],
                              check=False).stdout.decode()
    return bool(out.strip())


@requirement("HEALTH-4")
def test_restart_on_the_same_port(gwlb: ConformanceEnv) -> None:
    """Restarted at once after a health check left a TIME_WAIT on the port (a server that binds without
    SO_REUSEADDR cannot come back for a minute), it must answer health and carry traffic within 5 s."""
    time_wait = _leave_time_wait(gwlb) if gwlb.spec.health_protocol != "none" else False
    ra = gwlb.instances[0]
    started = time.monotonic()
    try:
        started = gwlb.restart(0)
    except Exception as e:
        check(False, "the appliance did not come back after a restart"
              + (" with a TIME_WAIT left on its health port" if time_wait else "") + f": {e}")
    if gwlb.spec.health_protocol == "http":
        r = http_probe(ra.address, gwlb.spec.health_port, gwlb.spec.health_path, 5, ns=gwlb.topo.gwlb_ns)
        check(r.status == 200, f"health after restart: {r.status or r.error}")
    sent = geneve.build(udp4(), raw_eni(gwlb), 0x9999)
    got = gwlb.echo(sent, timeout=5)
    check(got, "after a restart: " + got.lost("a valid packet"), sent)
    took = time.monotonic() - started
    check(took <= RESTART_BOUND, f"the restarted appliance took {took:.1f} s to answer health and carry traffic "
          f"again (at most {RESTART_BOUND:g} s: GWLB marks it unhealthy meanwhile)")
    gwlb.ensure_healthy()


@requirement("HEALTH-5")
def test_unhealthy_appliance_gets_no_new_flows(gwlb: ConformanceEnv) -> None:
    if len(gwlb.instances) < 2:
        not_run("needs at least two appliance instances (--instances 2)")
    _has_health_check(gwlb)
    victim = gwlb.topo.appliances[0]
    if gwlb.spec.health_protocol == "tcp":
        gwlb.kill(0)  # a stopped process still completes TCP handshakes: only a closed port fails a TCP check
    else:
        gwlb.pause(0)  # a stalled appliance: HTTP checks time out
    try:
        try:
            gwlb.session.wait_state(victim.id, "unhealthy", 30)
        except TimeoutError as e:
            check(False, f"GWLB never saw the stopped appliance as unhealthy: {e}")
        before = gwlb.call(lambda m: m.targets[victim.id].flows)
        with gwlb.collecting(lambda c: c.kind == "to_target" and c.eni_id == eni(gwlb)) as sent:
            for port in range(100):  # 100 new flows at once: only where GWLB sends them matters here
                gwlb.gwlb.inject(eni(gwlb), tcp4(sport=33000 + port, flags="S"))
            sent.wait(100, timeout=5)
        after = gwlb.call(lambda m: m.targets[victim.id].flows)
        check(after == before, f"{after - before} new flows went to the unhealthy appliance")
    finally:
        gwlb.ensure_healthy()


#: how long after its tunnel device is deleted an appliance has to carry the endpoint's traffic again, or
#: to say it cannot (503)
BLACK_HOLE_BOUND = 1.0


@requirement("HEALTH-6")
@pytest.mark.parametrize("which", ["ingress (gwi-)", "egress (gwo-)"])
def test_a_deleted_tunnel_device_is_not_a_silent_black_hole(gwlb: ConformanceEnv, which: str) -> None:
    """A tunnel device deleted under the running appliance (an operator's ``ip link del``, a network manager
    tidying up): packets of that endpoint must be carried again within a second, or health must say 503 within
    a second, so that GWLB moves the flows. Black-holing them while health says 200 is the failure."""
    gwlb.not_applicable_unless_tunnels("deleting a tunnel device under the appliance")
    e = raw_eni(gwlb)
    sport = gwlb.next_sport()

    def packet(n: int) -> bytes:
        return geneve.build(udp4(sport=48000, payload=b"bh%d" % n), e, 0x8B00)

    first = gwlb.echo(packet(0), sport=sport)
    check(first, first.lost("a valid packet before the device was deleted"), packet(0))
    device = eni_names.device_names(e)[0 if which.startswith("ingress") else 1]
    ra = gwlb.instances[0]
    check(device in gwlb.tunnel_devices()[0], f"{device} does not exist after a packet of its endpoint was carried")
    gwlb.lab.run(ra.ns, ["ip", "link", "del", device])
    deleted = time.monotonic()
    outcome, n = "", 0
    try:
        while not outcome and time.monotonic() - deleted < BLACK_HOLE_BOUND:
            n += 1
            if gwlb.echo(packet(n), sport=sport, timeout=0.15):
                outcome = f"carried again after {time.monotonic() - deleted:.2f} s"
            elif gwlb.spec.health_protocol == "http" and gwlb.health_status(timeout=0.3) == 503:
                outcome = f"health said 503 after {time.monotonic() - deleted:.2f} s"
        took = time.monotonic() - deleted
        check(outcome, f"after {device} was deleted, none of {n} packets of its endpoint came back for {took:.1f} s "
              f"while health said {gwlb.health_status() if gwlb.spec.health_protocol != 'none' else 'nothing'}: a "
              "black hole GWLB cannot see (rebuild the tunnel, or answer 503)")
    finally:
        if gwlb.spec.health_protocol == "http" and gwlb.health_status() != 200:
            gwlb.restart(0)  # a correct appliance may stay at 503 until restarted: later tests need it healthy
