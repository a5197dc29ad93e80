"""The reference appliance, end to end: real namespaces, TUN devices, sockets and a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gwlbsim.reference import kernelpath
from scapy.all import ICMP, IP, TCP, UDP, IPv6, IPv6ExtHdrHopByHop, raw
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.inet6 import ICMPv6EchoRequest

from gwlbsim.appliance import hook_path
from gwlbsim.linuxio import netns
from gwlbsim.wire import eni, geneve
from gwlbsim.wire.scapy_gwlb import gwlb_geneve

from .conftest import APP_IP, Topo

PASSTHROUGH = hook_path()

pytestmark = pytest.mark.root

ENI = 0x2B8EE1D4DB0C51C4


def tcp(sport: int = 40000, dport: int = 80, src: str = "192.168.1.10", dst: str = "192.168.2.20",
        flags: str = "S", payload: bytes = b"") -> bytes:
    return raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / payload)


def roundtrip(topo: Topo, payload: bytes, sport: int = 60001, timeout: float = 3.0) -> geneve.GwlbPacket:
    topo.peer.send(payload, sport=sport)
    r = topo.peer.recv(timeout)
    assert r is not None, f"no return for a packet from port {sport}\n{topo.log()}"
    assert (r.src, r.sport) == (APP_IP, sport), "return must come from the appliance to GWLB's source port"
    return geneve.parse(r.payload)


def test_return_is_byte_identical_header_and_inner(topo: Topo) -> None:
    topo.start()
    extras = (geneve.GeneveOption(0xFF01, 0x22, b"abcdefgh", reserved=5), geneve.GeneveOption(0x0103, 0x7F))
    hdr = geneve.GeneveHeader(protocol=geneve.ETH_P_IP, vni=0xABCDEF, reserved_flags=0x15, reserved=0xA5,
                              options=(extras[0], *geneve.gwlb_options(ENI, 7, 0x11223344), extras[1]))
    inner = tcp(payload=b"hello")
    sent = hdr.to_bytes() + inner
    back = roundtrip(topo, sent, sport=60733)
    assert back.to_bytes() == sent
    assert back.header_bytes == hdr.to_bytes()


def test_scapy_built_packets_come_back_unchanged(topo: Topo) -> None:
    topo.start()
    g = gwlb_geneve(ENI, 0xCAFE, 0, reserved=3)
    g.options.append(GeneveOptions(classid=0x0110, type=0x05, data=b"\x01\x02\x03\x04"))
    for inner in (IP(src="10.1.1.1", dst="10.2.2.2") / UDP(sport=5353, dport=53) / b"q",
                  IP(src="10.1.1.1", dst="10.2.2.2") / ICMP(id=9, seq=1)):
        sent = raw(g / inner)
        topo.peer.send(sent, sport=60010)
        r = topo.peer.recv(3)
        assert r is not None and r.payload == sent
        back = GENEVE(r.payload)
        assert back.options[2].cookie == 0xCAFE and back.reserved == 3


@pytest.mark.parametrize("kind", ["tcp4", "udp4", "icmp4", "tcp6", "udp6", "icmp6", "ext6"])
def test_ipv4_and_ipv6_traffic_kinds_in_both_directions(topo: Topo, kind: str) -> None:
    topo.start()
    v4 = dict(src="192.168.1.10", dst="192.168.2.20")
    v6 = dict(src="2001:db8:1::10", dst="2001:db8:2::20")
    fwd, rev = {
        "tcp4": (IP(**v4) / TCP(sport=1, dport=2, flags="S"), IP(src=v4["dst"], dst=v4["src"]) / TCP(sport=2, dport=1)),
        "udp4": (IP(**v4) / UDP(sport=1, dport=2), IP(src=v4["dst"], dst=v4["src"]) / UDP(sport=2, dport=1)),
        "icmp4": (IP(**v4) / ICMP(id=5), IP(src=v4["dst"], dst=v4["src"]) / ICMP(type=0, id=5)),
        "tcp6": (IPv6(**v6) / TCP(sport=1, dport=2), IPv6(src=v6["dst"], dst=v6["src"]) / TCP(sport=2, dport=1)),
        "udp6": (IPv6(**v6) / UDP(sport=1, dport=2), IPv6(src=v6["dst"], dst=v6["src"]) / UDP(sport=2, dport=1)),
        "icmp6": (IPv6(**v6) / ICMPv6EchoRequest(id=3), IPv6(src=v6["dst"], dst=v6["src"]) / ICMPv6EchoRequest(id=3)),
        "ext6": (IPv6(**v6) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2),
                 IPv6(src=v6["dst"], dst=v6["src"]) / UDP(sport=2, dport=1)),
    }[kind]
    for cookie, pkt in ((0x1111, fwd), (0x1111, rev)):
        inner = raw(pkt)
        back = roundtrip(topo, geneve.build(inner, ENI, cookie), sport=60100)
        assert back.inner == inner and back.cookie == cookie
        assert back.header.protocol == (geneve.ETH_P_IP if inner[0] >> 4 == 4 else geneve.ETH_P_IPV6)


def test_interleaved_flows_keep_their_own_cookies(topo: Topo) -> None:
    topo.start()
    flows = [(tcp(sport=41000 + i), 0x1000 + i, 60200 + i) for i in range(6)]
    for _round in range(3):
        for inner, cookie, sport in flows:
            topo.peer.send(geneve.build(inner, ENI, cookie), sport=sport)
    got = topo.peer.recv_all(18, timeout=3)
    assert len(got) == 18
    for r in got:
        p = geneve.parse(r.payload)
        inner, cookie, sport = next(f for f in flows if f[0] == p.inner)
        assert (p.cookie, r.sport) == (cookie, sport)


LOCAL_HOOK = """\
#!/bin/sh
# deliver tunnel traffic to this namespace's own stack (192.168.2.20 is local) and route the answers to
# 192.168.1.0/24 out of the egress device, whose MTU is raised so that oversize answers reach the appliance
set -eu
[ "$1" = CREATE ] || exit 0
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.$2.rp_filter=0
ip addr add 192.168.2.20/32 dev lo 2>/dev/null || true
ip link set dev $3 mtu 9500
ip route replace 192.168.1.0/24 dev $3
"""


def local_delivery(topo: Topo, *args: str) -> None:
    hook = topo.tmp / "local.sh"
    hook.write_text(LOCAL_HOOK)
    topo.start(*args, create=f"sh {hook}")


def test_reused_five_tuple_switches_to_the_new_cookie_at_once(topo: Topo) -> None:
    """The appliance's own OS answers (a local TCP listener), so the return is a new packet of the flow."""
    local_delivery(topo)
    srv = topo.lab.socket(topo.app, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the address appears when the tunnel is created
    srv.bind(("192.168.2.20", 80))
    srv.listen(8)
    try:
        for cookie in (0xA1, 0xA2, 0xA3):
            syn = tcp(sport=40000, dport=80, flags="S")
            topo.peer.send(geneve.build(syn, ENI, cookie), sport=60300)
            r = topo.peer.recv(3)
            assert r is not None, topo.log()
            p = geneve.parse(r.payload)
            assert str(TCP(p.inner[20:]).flags) == "SA", "the OS answered the SYN"
            assert p.cookie == cookie, "the answer carries the cookie of the newest inbound packet"
            topo.peer.send(geneve.build(tcp(sport=40000, dport=80, flags="R"), ENI, cookie), sport=60300)
            topo.peer.drain(0.1)
    finally:
        srv.close()


def _answer_from_the_appliance(topo: Topo, payload: bytes) -> None:
    """Send a UDP datagram 192.168.2.20:53 -> 192.168.1.10:5353 from the appliance namespace's own stack."""
    s = topo.lab.socket(topo.app)
    try:
        s.bind(("192.168.2.20", 53))
        s.sendto(payload, ("192.168.1.10", 5353))
    finally:
        s.close()


def test_returns_over_8500_bytes_are_dropped_and_counted(topo: Topo) -> None:
    local_delivery(topo)
    query = raw(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=5353, dport=53) / b"q")
    topo.peer.send(geneve.build(query, ENI, 1))
    time.sleep(0.3)
    _answer_from_the_appliance(topo, b"a" * 100)
    assert geneve.parse(topo.peer.recv(3).payload).cookie == 1  # type: ignore[union-attr]
    _answer_from_the_appliance(topo, b"z" * 9000)
    assert topo.peer.recv(0.5) is None
    assert topo.status()["totals"]["drops"].get("oversize_return") == 1


def test_flows_expire_after_the_flow_timeout(topo: Topo) -> None:
    local_delivery(topo, "-i", "1")
    query = raw(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=5353, dport=53) / b"q")
    topo.peer.send(geneve.build(query, ENI, 1))
    time.sleep(0.3)
    _answer_from_the_appliance(topo, b"early")
    assert topo.peer.recv(3) is not None
    time.sleep(1.3)
    before = topo.status()["totals"]["drops"]
    _answer_from_the_appliance(topo, b"late")
    assert topo.peer.recv(0.5) is None
    after = topo.status()["totals"]["drops"]
    # counted as expired if the lookup found the dead entry, as no flow if a sweep had removed it already
    gone = ("expired_flow", "no_flow")
    assert sum(after.get(k, 0) for k in gone) == sum(before.get(k, 0) for k in gone) + 1


def test_appliance_originated_flows_never_reach_gwlb(topo: Topo) -> None:
    local_delivery(topo)
    topo.peer.send(geneve.build(tcp(), ENI, 1))  # creates the tunnel, not this flow
    time.sleep(0.3)
    topo.peer.drain(0.2)
    before = topo.status()["totals"]["drops"].get("no_flow", 0)
    _answer_from_the_appliance(topo, b"unsolicited")
    assert topo.peer.recv(0.5) is None
    assert topo.status()["totals"]["drops"].get("no_flow", 0) == before + 1


def test_hook_arguments_are_exact(topo: Topo) -> None:
    record = topo.tmp / "hook-calls.txt"
    hook = topo.tmp / "record.sh"
    hook.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {record}\necho >> {record}\nexec sh {PASSTHROUGH} "$@"\n')
    hook.chmod(0o755)
    proc = topo.start(create=str(hook), destroy=str(hook))
    roundtrip(topo, geneve.build(tcp(), ENI, 1))
    assert Lab_stop(topo, proc) == 0
    calls = record.read_text().splitlines()
    gwi, gwo = eni.device_names(ENI)
    assert gwi == "gwi-5bqWvzLwwkk"
    assert calls == [f"CREATE|{gwi}|{gwo}|2b8ee1d4db0c51c4|", f"DESTROY|{gwi}|{gwo}|2b8ee1d4db0c51c4|"]


def Lab_stop(topo: Topo, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int | None:
    return topo.lab.stop_process(proc, timeout=30, sig=sig)


@pytest.mark.parametrize("workers", [1, 2])
def test_tunnel_teardown_and_ten_create_destroy_cycles(topo: Topo, workers: int) -> None:
    """Idle for -t, a tunnel is destroyed (with two workers: once both have let go of it), and the next packet
    builds it again; every packet of every cycle comes back."""
    record = topo.tmp / "calls.txt"
    hook = topo.tmp / "record.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $2" >> {record}\nexec sh {PASSTHROUGH} "$@"\n')
    topo.start("-t", "0.5", "--udpthreads", str(workers), create=f"sh {hook}", destroy=f"sh {hook}")
    gwi, gwo = eni.device_names(ENI)
    for cycle in range(10):
        for i in range(5):
            back = roundtrip(topo, geneve.build(tcp(sport=42000 + i), ENI, 100 * cycle + i), sport=60400 + i)
            assert back.cookie == 100 * cycle + i
        assert gwi in topo.links() and gwo in topo.links()
        topo.wait_for(lambda: gwi not in topo.links() and gwo not in topo.links(), timeout=5,
                      what=f"tunnel teardown in cycle {cycle}")
    calls = record.read_text().split()
    assert calls == [w for _ in range(10) for w in ("CREATE", gwi, "DESTROY", gwi)]
    st = topo.status()
    assert st["healthy"] and st["hooks"]["create_ok"] == 10 and st["hooks"]["destroy_ok"] == 10
    assert st["totals"]["packets_out"] == 50


def _malformed() -> dict[str, bytes]:
    good = geneve.build(tcp(), ENI, 1)
    bad_opts = geneve.GeneveHeader(options=(geneve.eni_option(ENI), geneve.attachment_option(0),
                                            geneve.GeneveOption(geneve.AWS_OPTION_CLASS, 3, b"\0" * 8)))
    crit = geneve.GeneveHeader(critical=True, options=(*geneve.gwlb_options(ENI, 0, 1),
                                                       geneve.GeneveOption(0xFF00, 0x80, b"\0" * 4)))
    return {
        "too_short": good[:7],
        "bad_version": bytes([good[0] | 0x40]) + good[1:],
        "options_beyond_packet": bytes([0x3F]) + good[1:30],
        "option_overrun": good[:11] + b"\x1f" + good[12:],
        "bad_protocol_type": good[:2] + b"\x65\x58" + good[4:],
        "protocol_mismatch": good[:2] + b"\x86\xdd" + good[4:],
        "missing_gwlb_option": good[:34] + b"\x04" + good[35:],
        "bad_gwlb_option_length": bad_opts.to_bytes() + tcp(),
        "unknown_critical_option": crit.to_bytes() + tcp(),
        "control_packet": good[:1] + b"\x80" + good[2:],
        "no_inner_packet": good[:40],
        "truncated_inner": good[:-3],
    }


def test_each_malformed_input_is_dropped_with_its_reason_and_health_stays_200(topo: Topo) -> None:
    topo.start()
    roundtrip(topo, geneve.build(tcp(), ENI, 1))
    cases = _malformed()
    for reason, data in cases.items():
        topo.peer.send(data, sport=60500)
        assert topo.peer.recv(0.3) is None, f"{reason} was forwarded"
        st = topo.status()
        assert st["totals"]["drops"].get(reason) == 1, (reason, st["totals"]["drops"])
        assert topo.health().status == 200
    back = roundtrip(topo, geneve.build(tcp(), ENI, 2))
    assert back.cookie == 2


def test_oversize_datagrams_are_dropped_and_the_appliance_lives(topo: Topo) -> None:
    proc = topo.start()
    big_inner = raw(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=1, dport=2) / (b"x" * 16000))
    topo.peer.send(geneve.build(big_inner, ENI, 1))
    topo.peer.send(b"\x00" * 65000)
    just_right = raw(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=1, dport=2) / (b"y" * (8500 - 28)))
    back = roundtrip(topo, geneve.build(just_right, ENI, 3))
    assert back.inner == just_right
    st = topo.status()
    assert st["totals"]["drops"]["oversize_inbound"] == 1
    assert st["totals"]["drops"]["bad_protocol_type"] == 1  # 65000 zero bytes: protocol type 0
    assert proc.poll() is None and st["healthy"]


def test_unhealthy_when_a_tunnel_cannot_be_created(topo: Topo) -> None:
    """A device already holding the tunnel's name makes creation fail: the appliance reports 503."""
    topo.start()
    gwi = eni.device_names(ENI)[0]
    topo.lab.run(topo.app, ["ip", "link", "add", gwi, "type", "veth", "peer", "name", "blocker"])
    topo.peer.send(geneve.build(tcp(), ENI, 1))
    topo.wait_for(lambda: topo.health().status == 503, timeout=5, what="503")
    r = topo.health()
    assert r.status == 503 and b"last tunnel creation failed" in r.body
    # once the obstacle is gone, the next attempt succeeds and health recovers
    topo.lab.run(topo.app, ["ip", "link", "del", gwi])
    time.sleep(1.1)
    back = roundtrip(topo, geneve.build(tcp(), ENI, 2))
    assert back.cookie == 2
    assert topo.health().status == 200


def test_unhealthy_while_shutting_down_then_clean_exit(topo: Topo) -> None:
    slow = topo.tmp / "slow.sh"
    slow.write_text(f'#!/bin/sh\n[ "$1" = DESTROY ] && sleep 2\nexec sh {PASSTHROUGH} "$@"\n')
    proc = topo.start(destroy=f"sh {slow}")
    roundtrip(topo, geneve.build(tcp(), ENI, 1))
    os.killpg(proc.pid, signal.SIGTERM)
    topo.wait_for(lambda: topo.health().status in (503, None), timeout=3, what="503 during shutdown")
    assert proc.wait(15) == 0
    gwi, gwo = eni.device_names(ENI)
    assert gwi not in topo.links() and gwo not in topo.links()
    assert "hook DESTROY" in topo.log()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_sigint_and_sighup_also_destroy_and_exit_with_their_status(topo: Topo, sig: int, status: int) -> None:
    proc = topo.start(destroy=f"sh {PASSTHROUGH}")
    roundtrip(topo, geneve.build(tcp(), ENI, 1))
    assert Lab_stop(topo, proc, sig) == status
    assert not any(n.startswith(("gwi-", "gwo-")) for n in topo.links())
    assert "hook DESTROY" in topo.log()


def test_health_modes_and_restart_on_the_same_port(topo: Topo) -> None:
    proc = topo.start("-s")
    r = topo.health()
    assert r.status == 200 and r.body == b""
    Lab_stop(topo, proc)
    proc = topo.start()  # JSON, same port, at once
    assert topo.status()["schema"] == "gwlbsim.reference.status/1"
    Lab_stop(topo, proc)
    topo.start("-p", "8080")
    r = topo.health()
    assert r.status == 200 and b"gwlb-reference" in r.body and b"tunnels: 0" in r.body


def test_concurrent_probers(topo: Topo) -> None:
    from concurrent.futures import ThreadPoolExecutor

    topo.start()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: topo.health(), range(64)))
    assert all(r.status == 200 for r in results)


def test_bad_command_lines_give_clear_errors() -> None:
    for args, text in ((["-i", "0"], "must be more than 0"), (["-p", "70000"], "not within"),
                       (["-s", "-j"], "exclude each other"), (["-c", "/nonexistent/hook"], "not an executable"),
                       (["-t", "soon"], "not a number")):
        res = subprocess.run([sys.executable, "-m", "gwlbsim.reference.cli", *args], capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 2 and text in res.stderr, (args, res.stderr)
    res = subprocess.run([sys.executable, "-m", "gwlbsim.reference.cli", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and "CREATE|DESTROY" in res.stdout


def test_port_in_use_is_a_clear_error(topo: Topo) -> None:
    blocker = topo.lab.socket(topo.app)
    blocker.bind(("0.0.0.0", 6081))
    try:
        res = topo.lab.run(topo.app, [sys.executable, "-m", "gwlbsim.reference.cli"], check=False, timeout=30)
    finally:
        blocker.close()
    assert res.returncode == 1 and b"cannot listen for GENEVE on 0.0.0.0:6081" in res.stderr


def test_nothing_is_left_behind_when_a_test_body_fails(tmp_path: Path) -> None:
    from gwlbsim.linuxio.netns import Lab

    names: list[str] = []
    with pytest.raises(RuntimeError), Lab() as lab:
        a = lab.namespace("app")
        names.append(a)
        lab.popen(a, [sys.executable, "-m", "gwlbsim.reference.cli"])
        time.sleep(0.5)
        raise RuntimeError("the test failed")
    assert not set(names) & set(netns.list_namespaces())


def test_a_killed_run_leaves_nothing_after_sigterm_and_cleanup_handles_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from gwlbsim.linuxio.netns import Lab, sigterm_raises
        with sigterm_raises(), Lab() as lab:
            ns = lab.namespace("x")
            lab.popen(ns, ["sleep", "600"])
            print(ns, flush=True)
            time.sleep(600)
    """))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        name = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert name in netns.list_namespaces()
        proc.send_signal(sig)
        proc.wait(20)
        if sig == signal.SIGKILL:
            assert name in netns.list_namespaces(), "SIGKILL cannot be caught: the leftover is cleanup's job"
            assert name in netns.cleanup()
        assert name not in netns.list_namespaces()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_deleted_tunnel_device_is_rebuilt_not_black_holed(topo: Topo, workers: int) -> None:
    """``ip link del gwi-X`` (or gwo-X) under traffic: the tunnel is rebuilt (destroy, then create hook) from
    the endpoint's next packet, instead of health saying 200 while every packet vanishes."""
    record = topo.tmp / "calls.txt"
    hook = topo.tmp / "record.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $2" >> {record}\nexec sh {PASSTHROUGH} "$@"\n')
    topo.start("--udpthreads", str(workers), create=f"sh {hook}", destroy=f"sh {hook}")
    gwi, gwo = eni.device_names(ENI)
    assert roundtrip(topo, geneve.build(tcp(sport=43000), ENI, 1), sport=60500).cookie == 1
    for device in (gwi, gwo):
        topo.lab.run(topo.app, ["ip", "link", "del", device])
        # the next packets are answered again within a second (the first may be the one that found it gone)
        deadline, back = time.monotonic() + 1.0, None
        while back is None and time.monotonic() < deadline:
            topo.peer.send(geneve.build(tcp(sport=43001), ENI, 2), sport=60501)
            back = topo.peer.recv(0.1)
        assert back is not None, f"nothing came back within 1 s of deleting {device}\n{topo.log()}"
        topo.wait_for(lambda: gwi in topo.links() and gwo in topo.links(), timeout=5, what="the devices again")
    st = topo.status()
    assert st["healthy"], st
    assert st["totals"]["tunnels_rebuilt"] == 2, st["totals"]  # once per rebuild, however many workers saw it
    calls = record.read_text().split()
    assert calls == ["CREATE", gwi, "DESTROY", gwi, "CREATE", gwi, "DESTROY", gwi, "CREATE", gwi], calls


@pytest.mark.parametrize("datapath", ["kernel", "python"])
def test_metrics_in_the_prometheus_format_count_per_eni_and_reason(topo: Topo, datapath: str) -> None:
    """``/metrics`` on the health port, parsed with Prometheus's own parser: per-ENI packets and bytes both ways
    (both datapaths' traffic), drops by reason, tunnel creations, the datapath kind."""
    from prometheus_client.parser import text_string_to_metric_families

    if datapath == "kernel" and kernelpath.available() is not None:
        pytest.skip(f"kernel path unavailable: {kernelpath.available()}")
    topo.start("--datapath", datapath)
    inner = tcp()
    for i in range(5):
        roundtrip(topo, geneve.build(inner, ENI, 1 + i), sport=60100 + i)
    topo.peer.send(b"\x00" * 7, sport=60200)  # too short for GENEVE: dropped, counted
    topo.wait_for(lambda: topo.status()["totals"]["drops"].get("too_short") == 1, what="the drop counted")
    res = topo.health("/metrics")
    assert res.status == 200, res
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(res.body.decode()) for s in fam.samples}
    eni = f"{ENI:016x}"
    p = "gwlb_reference_"
    assert samples[(p + "tunnel_packets_total", (("direction", "in"), ("eni", eni)))] == 5
    assert samples[(p + "tunnel_packets_total", (("direction", "out"), ("eni", eni)))] == 5
    assert samples[(p + "tunnel_bytes_total", (("direction", "in"), ("eni", eni)))] == 5 * len(inner)
    assert samples[(p + "packets_total", (("direction", "in"),))] == 6
    assert samples[(p + "drops_total", (("reason", "too_short"),))] == 1
    assert samples[(p + "tunnel_hooks_total", (("action", "create"), ("result", "ok")))] == 1
    assert samples[(p + "datapath_info", (("kind", datapath),))] == 1
    assert samples[(p + "healthy", ())] == 1 and samples[(p + "tunnels", ())] == 1
