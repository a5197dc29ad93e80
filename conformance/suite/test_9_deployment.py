"""Deployment modes: what an appliance deployed a given way (``--mode``) must do besides carrying traffic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gwlbsim.conformance.environment import ConformanceEnv, check, not_applicable
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import raw_eni, udp4

from gwlbsim.wire import geneve

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
    if gwlb.options.mode != "routed":
        not_applicable(f"the appliance is deployed in {gwlb.options.mode} mode, not routed (--mode routed)")
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
