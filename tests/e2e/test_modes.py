"""Deployment modes end to end: the shipped hooks undo exactly what they did, and ``gwlbsim demo --mode MODE``
moves real ping, TCP and UDP traffic (IPv4 and IPv6) through reference appliances deployed that way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gwlbsim.appliance import MODES, hook_path
from gwlbsim.linuxio import netns
from gwlbsim.linuxio.netns import Lab
from gwlbsim.wire.eni import device_names

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

#: three endpoints; the last two share their low 28 bits (their tables would collide without the hook's care)
ENIS = (0x2B8EE1D4DB0C5100, 0x2B8EE1D4DB0C5101, 0x1B8EE1D4DB0C5101)
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/rp_filter",
           "net/ipv4/tcp_fwmark_accept")


def _state(lab: Lab, ns: str) -> dict[str, str]:
    """Everything a hook may change in a namespace: rules, routes of every table, the namespace-wide sysctls."""
    out = {}
    for name, argv in (("rules4", ["ip", "-4", "rule", "show"]), ("rules6", ["ip", "-6", "rule", "show"]),
                       ("routes4", ["ip", "-4", "route", "show", "table", "all"]),
                       ("routes6", ["ip", "-6", "route", "show", "table", "all"])):
        out[name] = lab.run(ns, argv).stdout.decode()
    for eni in ENIS:  # tc on the tunnel devices (the passthrough hook's mirred)
        for dev in device_names(eni):
            out[f"tc {dev}"] = lab.run(ns, ["tc", "qdisc", "show", "dev", dev]).stdout.decode()
            out[f"filters {dev}"] = lab.run(ns, ["tc", "filter", "show", "dev", dev, "ingress"],
                                            check=False).stdout.decode()
    for key in SYSCTLS:
        out[key] = lab.run(ns, ["cat", f"/proc/sys/{key}"]).stdout.decode().strip()
    out["nftables"] = lab.run(ns, ["nft", "list", "ruleset"]).stdout.decode()  # the nat hook's tables
    return out


def _hook(lab: Lab, ns: str, mode: str, action: str, eni: int) -> None:
    gwi, gwo = device_names(eni)
    lab.run(ns, ["sh", str(hook_path(mode)), action, gwi, gwo, f"{eni:016x}"])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_destroy_undoes_exactly_what_create_did(mode: str) -> None:
    with Lab() as lab:
        ns = lab.namespace("hooks")
        for eni in ENIS:
            for dev in device_names(eni):
                lab.run(ns, ["ip", "tuntap", "add", "dev", dev, "mode", "tun"])
                lab.run(ns, ["ip", "link", "set", dev, "up"])
        before = _state(lab, ns)
        for eni in ENIS:
            _hook(lab, ns, mode, "CREATE", eni)
        during = _state(lab, ns)
        if mode == "passthrough":
            assert "mirred" in during[f"filters {device_names(ENIS[0])[0]}"], during
        if mode in ("routed", "nat", "local"):
            rules = [ln for ln in during["rules4"].splitlines() if ln.startswith("6081:")]
            assert len(rules) == len(ENIS), during["rules4"]
            tables = {ln.split("lookup")[1].strip() for ln in rules}
            assert len(tables) == len(ENIS), f"overlapping endpoints share a table: {rules}"
            assert during["net/ipv4/ip_forward"] == "1"
        if mode == "nat":
            marks = [ln for ln in during["rules6"].splitlines() if ln.startswith("6082:") and "fwmark" in ln]
            assert len(marks) == len(ENIS), during["rules6"]
            zones = re.findall(r"ct original zone set (\d+)", during["nftables"])
            assert len(zones) == 2 * len(ENIS) and len(set(zones)) == len(ENIS), during["nftables"]
            assert during["nftables"].count("masquerade") == len(ENIS), during["nftables"]
        if mode == "local":
            diverts = [ln for ln in during["rules6"].splitlines() if ln.startswith("6080:") and "fwmark" in ln]
            assert len(diverts) == len(ENIS), during["rules6"]
            assert during["nftables"].count("tproxy ip6 to :7780") == len(ENIS), during["nftables"]
            assert during["net/ipv4/tcp_fwmark_accept"] == "1"
        for eni in (ENIS[1], ENIS[0], ENIS[2]):  # not in creation order
            _hook(lab, ns, mode, "DESTROY", eni)
            if mode != "passthrough" and eni != ENIS[2]:
                assert _state(lab, ns)["net/ipv4/ip_forward"] == "1", "a sysctl went back while tunnels remain"
        assert _state(lab, ns) == before


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_demo_carries_traffic_in_every_mode(mode: str, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "gwlbsim.cli", "demo", "--mode", mode, "--appliances", "2",
                          "--no-failover", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for what in ("ping 10.20.0.2: ok", "ping fd00:20::2: ok", "TCP 1 MiB over IPv4: ok", "TCP 1 MiB over IPv6: ok",
                 "UDP exchange over IPv4: ok", "UDP exchange over IPv6: ok"):
        assert what in out, out[-3000:]
    if mode == "local":  # TCP to the terminated port is answered by the appliance itself
        for what in ("TCP to 10.20.0.2 port 7780 answered by the appliance: ok",
                     "TCP to fd00:20::2 port 7780 answered by the appliance: ok"):
            assert what in out, out[-3000:]
    if mode == "nat":  # and out of the second arm, to the internet namespace's server, and back
        for what in ("ping 198.51.100.10 (internet): ok", "ping 2001:db8:100::10 (internet): ok",
                     "TCP 1 MiB over IPv4 (internet): ok", "TCP 1 MiB over IPv6 (internet): ok",
                     "UDP exchange over IPv4 (internet): ok", "UDP exchange over IPv6 (internet): ok"):
            assert what in out, out[-3000:]
    assert "FAILED" not in out, out[-3000:]


def test_cleanup_removes_hook_state_of_namespaces_that_are_gone() -> None:
    """A routing hook keeps a namespace's sysctls in /run while it has tunnels; a run killed outright leaves the
    file behind with its namespace gone. ``cleanup`` removes it, and leaves the file of a live namespace alone."""
    state = Path("/run/gwlbsim-prooftest-hook")
    state.mkdir(exist_ok=True)
    st = os.stat("/proc/self/ns/net")
    live = state / f"{st.st_dev}-{st.st_ino}.sysctl"
    gone = state / "1-1.sysctl"  # no namespace has inode 1
    try:
        live.write_text("net/ipv4/ip_forward=0\n")
        gone.write_text("net/ipv4/ip_forward=0\n")
        removed = netns.cleanup()
        assert str(gone) in removed and not gone.exists()
        assert live.exists(), "the state of a namespace that still exists was removed"
    finally:
        live.unlink(missing_ok=True)
        gone.unlink(missing_ok=True)
        if state.exists():
            state.rmdir()
