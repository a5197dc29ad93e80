"""Deployment modes: what an appliance deployed a given way (``--mode``) must do besides carrying traffic."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial

from gwlbsim.conformance.environment import ConformanceEnv, check, inner_of, not_applicable
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import raw_eni, udp4

from gwlbsim.appliance import LOCAL_PORT
from gwlbsim.live.balancer import Captured
from gwlbsim.live.topology import Internet
from gwlbsim.live.traffic import tcp_request, tcp_transfer, udp_exchange
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError, address, flow_of

#: the inner UDP port the policy drops, and a neighbour it lets through
DROPPED_PORT, ALLOWED_PORT = 5999, 5998
#: an nftables table of the suite's own, added in every appliance namespace and deleted after (its name says whose)
POLICY_TABLE = "gwlbsim_conformance_policy"


@contextmanager
def forward_drop(gwlb: ConformanceEnv, port: int) -> Iterator[None]:
    """An nftables forward-hook rule dropping inner UDP to ``port`` in every instance's namespace, for the block."""
    ruleset = (f"table inet {POLICY_TABLE} {{\n chain forward {{\n  type filter hook forward priority -10;\n"
               f"  udp dport {port} counter drop\n }}\n}}\n").encode()
    lab = gwlb.topo.lab
    added = []
    try:
        for app in gwlb.topo.appliances:
            lab.run(app.ns, ["nft", "-f", "-"], input=ruleset)
            added.append(app.ns)
        yield
    finally:
        for ns in added:
            lab.run(ns, ["nft", "delete", "table", "inet", POLICY_TABLE], check=False)


def _probe(gwlb: ConformanceEnv, port: int, n: int) -> bytes:
    return geneve.build(udp4(sport=47000 + n, dport=port, payload=b"policy"), raw_eni(gwlb), 0x9100 + n)


@requirement("ROUTE-1")
def test_forward_policy_is_honoured_in_routed_mode(gwlb: ConformanceEnv) -> None:
    """Routed mode exists so that the appliance's own netfilter rules see GWLB's traffic: a FORWARD drop rule must
    really drop the flow (an appliance whose packets bypass the kernel's forwarding, as tc mirred does, does not
    honour its policy), while other flows are still carried; on every instance."""
    if gwlb.options.mode not in ("routed", "nat", "local"):
        not_applicable(f"the appliance is deployed in {gwlb.options.mode} mode, which does not route through the "
                       "kernel (--mode routed, nat or local)")
    gwlb.not_applicable_unless_tunnels("a forwarding policy on the tunnel devices")
    for i in range(len(gwlb.instances)):
        for port in (DROPPED_PORT, ALLOWED_PORT):
            sent = _probe(gwlb, port, 2 * i + port % 2)
            got = gwlb.echo(sent, instance=i)
            check(got, f"instance {i}: before any policy, a UDP probe to port {port} did not come back; "
                  + got.lost("it"), sent)
    with forward_drop(gwlb, DROPPED_PORT):
        for i in range(len(gwlb.instances)):
            dropped = _probe(gwlb, DROPPED_PORT, 10 + i)
            got = gwlb.expect_nothing_back(dropped, instance=i)
            check(got.marker_back, f"instance {i}: nothing came back, not even the marker behind the probe: "
                  "the appliance stopped carrying traffic")
            check(not got.returns, f"instance {i}: a UDP probe to port {DROPPED_PORT} came back although a "
                  f"netfilter FORWARD rule in its namespace drops it: its packets bypass the kernel's forwarding "
                  "(the appliance's policy is not applied)", got.returns[0].data if got.returns else dropped)
            allowed = _probe(gwlb, ALLOWED_PORT, 20 + i)
            back = gwlb.echo(allowed, instance=i)
            check(back, f"instance {i}: with a rule dropping port {DROPPED_PORT} only, a probe to port "
                  f"{ALLOWED_PORT} did not come back; " + back.lost("it"), allowed)


# ------------------------------------------------------------------------------------------- two-arm NAT


def _internet(gwlb: ConformanceEnv) -> Internet:
    if gwlb.options.mode != "nat" or gwlb.topo.internet is None:
        not_applicable(f"the appliance is deployed in {gwlb.options.mode} mode, not two-arm NAT (--mode nat)")
    return gwlb.topo.internet


def _flow(c: Captured) -> tuple[str, str, int, int, int] | None:
    """(source, destination, protocol, source port, destination port) of the inner packet GWLB sent or got."""
    inner = inner_of(c.data)
    if inner is None:
        return None
    try:
        ft, _ = flow_of(inner, 0, len(inner))
    except InnerError:
        return None
    return str(address(ft.src)), str(address(ft.dst)), ft.proto, ft.sport, ft.dport


def _instances_carrying(gwlb: ConformanceEnv, items: list[Captured],
                        want: Callable[[tuple[str, str, int, int, int]], bool]) -> set[int]:
    """The instances GWLB sent a packet of a wanted flow to."""
    by_address = {a.address: a.index for a in gwlb.topo.appliances}
    return {by_address[c.dst] for c in items if c.kind == "to_target" and c.dst in by_address
            and (f := _flow(c)) is not None and want(f)}


def _drops(items: list[Captured]) -> str:
    """What GWLB made of the returns it dropped, for a failure message."""
    why = Counter(c.verdict for c in items if c.kind == "from_target" and c.verdict)
    if not why:
        return ""
    return "; GWLB dropped returns: " + ", ".join(f"{n} x {reason}" for reason, n in why.most_common())


def _ping(gwlb: ConformanceEnv, e: int, dst: str) -> tuple[bool, str]:
    r = gwlb.session.run_client(e, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst], check=False)
    out = r.stdout.decode()
    return " 3 received" in out, "not every echo was answered: " + " ".join(out.split("\n")[-3:-1])


def _udp(gwlb: ConformanceEnv, e: int, port: int, v6: bool) -> tuple[bool, str]:
    msg = f"nat {e} {port} {'v6' if v6 else 'v4'}".encode() * 20
    back = udp_exchange(gwlb.session, e, port, msg, v6=v6, internet=True)
    return back == msg[::-1], "the answer was lost" if back is None else "the answer was another's or changed"


def _tcp(gwlb: ConformanceEnv, e: int, port: int, v6: bool) -> tuple[bool, str]:
    r = tcp_transfer(gwlb.session, e, port, size=65536, v6=v6, timeout=6.0, internet=True)
    return r.ok, r.detail


@requirement("NAT-1")
def test_nat_egress_and_return(gwlb: ConformanceEnv) -> None:
    """Two-arm NAT: every kind of client flow to the internet leaves by the second arm and each reply comes back
    through GWLB to its own client (GWLB drops a reply without its flow's cookie), many flows in flight at once,
    from two endpoints with the same addresses, on every instance."""
    net = _internet(gwlb)
    ends = range(min(2, len(gwlb.topo.endpoints)))
    jobs: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    for e in ends:
        for v6 in (False, True):
            fam, dst = ("IPv6", net.server_v6) if v6 else ("IPv4", net.server_v4)
            base = 7300 + 40 * e + 20 * v6
            jobs.append((f"endpoint {e}: TCP over {fam}", partial(_tcp, gwlb, e, base, v6)))
            jobs.append((f"endpoint {e}: ping {dst}", partial(_ping, gwlb, e, dst)))
            for i in range(8):
                jobs.append((f"endpoint {e}: UDP over {fam} to port {base + 1 + i}",
                             partial(_udp, gwlb, e, base + 1 + i, v6)))
    servers = {net.server_v4, net.server_v6}
    with gwlb.collecting(lambda c: c.kind in ("to_target", "from_target")) as seen:
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: job[1](), jobs))
        failures = [f"{what}: {detail}" for (what, _), (ok, detail) in zip(jobs, results, strict=True) if not ok]
        check(not failures, f"{len(failures)} of {len(jobs)} flows to the internet failed: " + "; ".join(failures[:6])
              + _drops(seen.items))

        def carried() -> set[int]:
            return _instances_carrying(gwlb, list(seen.items), lambda f: f[1] in servers)

        extra = 0
        while carried() != set(range(len(gwlb.instances))) and extra < 32:  # GWLB spreads flows by hash
            ok, detail = _udp(gwlb, extra % len(ends), 7400 + extra, False)
            check(ok, f"endpoint {extra % len(ends)}: UDP over IPv4 to port {7400 + extra}: {detail}"
                  + _drops(seen.items))
            extra += 1
        missing = set(range(len(gwlb.instances))) - carried()
        check(not missing, f"GWLB sent none of {len(jobs) + extra} flows to the internet to instance(s) "
              f"{sorted(missing)}; they could not be checked")


@contextmanager
def _routed_to(gwlb: ConformanceEnv, net: Internet, instance: int) -> Iterator[None]:
    """The internet side routes the clients' addresses to one instance's second arm, for the block."""
    a = gwlb.topo.appliances[instance]
    routes = [("10.10.0.0/16", a.uplink_v4), ("fd00:10::/64", a.uplink_v6)]
    lab = gwlb.lab
    try:
        for dst, via in routes:
            lab.run(net.ns, ["ip", "route", "replace", dst, "via", via])
        yield
    finally:
        for dst, _ in routes:
            lab.run(net.ns, ["ip", "route", "del", dst], check=False)


def _unsolicited(gwlb: ConformanceEnv, net: Internet, clients: list[tuple[str, str]]) -> None:
    """UDP, a TCP SYN and pings from the internet's server to each (family, client address)."""
    lab = gwlb.lab
    for fam, dst in clients:
        src = net.server_v6 if fam == "6" else net.server_v4
        af = socket.AF_INET6 if fam == "6" else socket.AF_INET
        with lab.socket(net.ns, af) as u:
            u.bind((src, 0))
            for n in range(3):
                u.sendto(b"unsolicited %d" % n, (dst, NAT2_PORT))
        with lab.socket(net.ns, af, socket.SOCK_STREAM) as t:
            t.bind((src, 0))
            t.setblocking(False)
            t.connect_ex((dst, NAT2_PORT + 1))  # a SYN (and its retransmissions while the socket lives)
            lab.run(net.ns, ["ping", f"-{fam}", "-c", "2", "-i", "0.2", "-W", "1", "-I", src, dst], check=False)


NAT2_PORT = 7450


@requirement("NAT-2")
def test_nothing_from_the_internet_enters_a_tunnel(gwlb: ConformanceEnv) -> None:
    """An appliance may not originate flows toward GWLB: packets the internet side sends to the clients' addresses
    (routed to the appliance's second arm) must not come back through any tunnel; the clients get nothing."""
    net = _internet(gwlb)
    servers = {net.server_v4, net.server_v6}
    slot = gwlb.topo.endpoints[0]
    clients = [("4", slot.client_v4), ("6", slot.client_v6)]
    with ExitStack() as stack:
        listeners = []
        for e in range(min(2, len(gwlb.topo.endpoints))):
            for fam, addr in clients:
                af = socket.AF_INET6 if fam == "6" else socket.AF_INET
                u = stack.enter_context(gwlb.session.client_socket(e, af))
                u.bind((addr, NAT2_PORT))
                u.setblocking(False)
                listeners.append((e, addr, u))
        seen = stack.enter_context(gwlb.collecting(
            lambda c: c.kind == "from_target" and (f := _flow(c)) is not None and f[0] in servers))
        for i in range(len(gwlb.instances)):
            with _routed_to(gwlb, net, i):
                _unsolicited(gwlb, net, clients)
                marker = geneve.build(udp4(sport=47400 + i, dport=5998, payload=b"after"), raw_eni(gwlb), 0x9400 + i)
                back = gwlb.echo(marker, instance=i)
                check(back, f"instance {i}: after the internet's unsolicited packets, a probe did not come back; "
                      + back.lost("it"), marker)
            leaked = seen.wait_for(lambda items: bool(items), 0.5)
            check(not leaked, f"instance {i}: {len(leaked)} packet(s) the internet side started were sent toward "
                  f"GWLB through a tunnel (first: {_flow(leaked[0]) if leaked else None}); an appliance may not "
                  "originate flows into GWLB", leaked[0].data if leaked else None)
        got = []
        for e, addr, u in listeners:
            try:
                got.append((e, addr, u.recv(2048)))
            except BlockingIOError:
                pass
        check(not got, f"clients received what the internet side sent them unsolicited: {got[:3]}")


NAT3_CLIENT_PORT, NAT3_SERVER_PORT = 7500, 7600


def _one_instance(gwlb: ConformanceEnv, seen: list[Captured], cport: int, sport: int) -> bool:
    """Whether GWLB sent the packets of client port ``cport`` to server port ``sport`` to a single instance."""
    return len(_instances_carrying(gwlb, seen, lambda f: f[3] == cport and f[4] == sport)) == 1


def _same_tuple_udp(gwlb: ConformanceEnv, net: Internet, k: int, v6: bool) -> tuple[bool, str]:
    """Both endpoints' clients send from the same address and port to the same server and port at once; each must
    get its own answer and no other. Returns (shown: both went through one instance, failure or "")."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    server = net.server_v6 if v6 else net.server_v4
    cport, sport = NAT3_CLIENT_PORT + k, NAT3_SERVER_PORT + k
    with ExitStack() as stack:
        srv = stack.enter_context(gwlb.lab.socket(net.ns, fam))
        srv.bind((server, sport))
        srv.settimeout(3.0)
        clis = []
        for e in (0, 1):
            c = stack.enter_context(gwlb.session.client_socket(e, fam))
            slot = gwlb.topo.endpoints[e]
            c.bind((slot.client_v6 if v6 else slot.client_v4, cport))
            clis.append(c)
        seen = stack.enter_context(gwlb.collecting(lambda c: c.kind in ("to_target", "from_target")))
        for e, c in enumerate(clis):
            c.sendto(b"endpoint %d" % e, (server, sport))
        senders = []
        try:
            for _ in clis:
                data, addr = srv.recvfrom(2048)
                senders.append(addr[:2])
                srv.sendto(data[::-1], addr)
        except OSError:
            pass
        answers: list[list[bytes]] = [[], []]
        for e, c in enumerate(clis):
            c.settimeout(3.0)
            try:
                while True:
                    answers[e].append(c.recv(2048))
                    c.settimeout(0.3)  # a second answer would be the other endpoint's
            except OSError:
                pass
        items = list(seen.items)
    if not _one_instance(gwlb, items, cport, sport):
        return False, ""
    what = f"UDP over IPv{6 if v6 else 4} from port {cport} of both endpoints' clients to {server}:{sport}"
    if len(senders) < 2:
        return True, (f"{what}: the server got {len(senders)} datagram(s), not one per endpoint (both endpoints' "
                      "flows were taken for one connection)" + _drops(items))
    want = [[(b"endpoint %d" % e)[::-1]] for e in (0, 1)]
    if answers != want:
        return True, f"{what}: the clients got {answers}, not each its own answer {want}" + _drops(items)
    return True, ""


def _same_tuple_tcp(gwlb: ConformanceEnv, net: Internet, k: int) -> tuple[bool, str]:
    """TCP connections from the same client address and port of both endpoints to one server port at once."""
    cport, sport = NAT3_CLIENT_PORT + 50 + k, NAT3_SERVER_PORT + 50 + k
    with ExitStack() as stack:
        srv = stack.enter_context(gwlb.lab.socket(net.ns, socket.AF_INET, socket.SOCK_STREAM))
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((net.server_v4, sport))
        srv.listen(4)
        srv.settimeout(4.0)
        accepted = []

        def serve() -> None:
            try:
                for _ in range(2):
                    conn, _ = srv.accept()
                    stack.callback(conn.close)
                    conn.settimeout(3.0)
                    data = conn.recv(64)
                    accepted.append(data)
                    conn.sendall(data[::-1])
            except OSError:
                pass

        server_thread = threading.Thread(target=serve, daemon=True)
        seen = stack.enter_context(gwlb.collecting(lambda c: c.kind in ("to_target", "from_target")))
        server_thread.start()
        clis = []
        for e in (0, 1):
            c = stack.enter_context(gwlb.session.client_socket(e, socket.AF_INET, socket.SOCK_STREAM))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.bind((gwlb.topo.endpoints[e].client_v4, cport))
            c.setblocking(False)
            c.connect_ex((net.server_v4, sport))
            clis.append(c)
        answers: list[bytes | str] = []
        deadline = time.monotonic() + 4.0
        for e, c in enumerate(clis):
            try:
                _wait_connected(c, deadline)
                c.setblocking(True)
                c.settimeout(max(0.1, deadline - time.monotonic()))
                c.sendall(b"endpoint %d" % e)
                answers.append(c.recv(64))
            except OSError as err:
                answers.append(f"error: {err}")
        server_thread.join(4.0)
        items = list(seen.items)
    if not _one_instance(gwlb, items, cport, sport):
        return False, ""
    want = [(b"endpoint %d" % e)[::-1] for e in (0, 1)]
    if answers != want:
        return True, (f"TCP from port {cport} of both endpoints' clients to {net.server_v4}:{sport}: the clients got "
                      f"{answers}, not each its own answer {want} (the server accepted {len(accepted)} "
                      "connection(s))" + _drops(items))
    return True, ""


def _wait_connected(c: socket.socket, deadline: float) -> None:
    """Until the non-blocking connect of ``c`` completes (the socket turns writable), or ``deadline``."""
    if not select.select([], [c], [], max(0.0, deadline - time.monotonic()))[1]:
        raise TimeoutError("the TCP handshake did not complete")
    err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, f"connect failed: {os.strerror(err)}")


@requirement("NAT-3")
def test_same_tuple_from_overlapping_endpoints(gwlb: ConformanceEnv) -> None:
    """Endpoints with overlapping addresses can send the very same 5-tuple to the internet at the same time: through
    one instance, the two must stay two connections (conntrack zones, or an appliance's own NAT table keyed by
    endpoint), each answered through its own endpoint."""
    net = _internet(gwlb)
    if len(gwlb.topo.endpoints) < 2:
        not_applicable("needs two endpoints")
    cases: list[tuple[str, Callable[[int], tuple[bool, str]]]] = [
        ("UDP over IPv4", lambda k: _same_tuple_udp(gwlb, net, k, False)),
        ("UDP over IPv6", lambda k: _same_tuple_udp(gwlb, net, k, True)),
        ("TCP over IPv4", lambda k: _same_tuple_tcp(gwlb, net, k)),
    ]
    for what, case in cases:
        for k in range(12):  # until GWLB sent both flows to one instance (it balances by the 5-tuple)
            shown, failure = case(k + 12 * cases.index((what, case)))
            if shown:
                check(not failure, failure)
                break
        else:
            check(False, f"{what}: GWLB never sent the same 5-tuple of both endpoints to one instance (12 tries)")


# -------------------------------------------------------------------------------------- local termination


LOCAL_REQUEST = b"GET / HTTP/1.0\r\nHost: gwlbsim\r\n\r\n"


@requirement("LOCAL-1")
def test_locally_terminated_flows_are_answered_through_gwlb(gwlb: ConformanceEnv) -> None:
    """Local termination: the appliance answers TCP flows to the terminated port itself (as a proxy does); its
    replies are packets GWLB never sent it, so they must leave through the flow's tunnel with the flow's header,
    or GWLB drops them. Many connections at once, IPv4 and IPv6, from both endpoints, on every instance."""
    if gwlb.options.mode != "local":
        not_applicable(f"the appliance is deployed in {gwlb.options.mode} mode, not local termination (--mode local)")
    ends = range(min(2, len(gwlb.topo.endpoints)))
    jobs = [(e, v6) for e in ends for v6 in (False, True) for _ in range(4)]
    servers = {a for slot in gwlb.topo.endpoints for a in (slot.server_v4, slot.server_v6)}

    def ask(job: tuple[int, bool]) -> bytes | None:
        return tcp_request(gwlb.session, job[0], LOCAL_PORT, LOCAL_REQUEST, v6=job[1])

    def carried(items: list[Captured]) -> set[int]:
        return _instances_carrying(gwlb, items, lambda f: f[1] in servers and f[4] == LOCAL_PORT)

    with gwlb.collecting(lambda c: c.kind in ("to_target", "from_target")) as seen:
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(ask, jobs))
        failed = [f"endpoint {e} over IPv{6 if v6 else 4}" for (e, v6), a in zip(jobs, answers, strict=True) if not a]
        check(not failed, f"{len(failed)} of {len(jobs)} TCP connections to port {LOCAL_PORT} (terminated by the "
              f"appliance) got no answer: {', '.join(failed[:4])}" + _drops(seen.items))
        extra = 0
        while carried(list(seen.items)) != set(range(len(gwlb.instances))) and extra < 24:  # spread by hash
            e, v6 = extra % len(ends), False
            check(ask((e, v6)), f"endpoint {e}: a TCP connection to port {LOCAL_PORT} got no answer"
                  + _drops(seen.items))
            extra += 1
        missing = set(range(len(gwlb.instances))) - carried(list(seen.items))
        check(not missing, f"GWLB sent none of {len(jobs) + extra} connections to instance(s) {sorted(missing)}")
