"""What a GWLB appliance must do, requirement by requirement: the suite's catalogue.

Each test of the suite names one requirement (``@requirement("ECHO-2")``). Levels follow RFC 2119: a MUST
failure makes the run fail; SHOULD and MAY failures are reported but do not change the exit status.
"""

from __future__ import annotations

from dataclasses import dataclass

MUST, SHOULD, MAY = "MUST", "SHOULD", "MAY"


RFC = "RFC 8926"
AWS_TG = "AWS GWLB docs, target groups (GENEVE, option class 0x0108)"
AWS_HC = "AWS GWLB docs, health checks"
AWS_GW = "AWS GWLB docs, Gateway Load Balancers (MTU, asymmetric flows)"
AWS_BLOG = "AWS blog: integrate your appliance with GWLB"
OBSERVED = "observed GWLB behaviour"


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str
    area: str
    title: str
    source: str


AREAS = ("Echo", "Cookies", "Symmetry", "Traffic", "Timeouts", "Health", "Robustness")

_ALL = [
    Requirement("ECHO-1", MUST, "Echo", "Returns swap the outer IP addresses and keep the UDP ports as sent "
                "(source = GWLB's source port, destination 6081)", f"{OBSERVED}; gwlbtun; {AWS_BLOG}"),
    Requirement("ECHO-2", MUST, "Echo", "The GENEVE header comes back byte for byte: flags, reserved bits, VNI, "
                "option order, unknown non-critical options", f"{AWS_TG}; {AWS_BLOG}; {RFC} 3.5"),
    Requirement("ECHO-3", MUST, "Echo", "The inner packet comes back unchanged (passthrough)", AWS_GW),
    Requirement("ECHO-4", MUST, "Echo", "Any valid option layout is accepted and echoed: GWLB options in any "
                "order, extra options of any class, any VNI and flag bits (Hypothesis)", f"{RFC} 3.4-3.5"),
    Requirement("COOKIE-1", MUST, "Cookies", "Interleaved flows each keep their own flow cookie",
                f"{OBSERVED}: GWLB drops returns with another flow's cookie"),
    Requirement("COOKIE-2", MUST, "Cookies", "A reused 5-tuple with a new cookie switches to it at once",
                f"{OBSERVED}: aws-samples/aws-gateway-load-balancer-tunnel-handler PR #15"),
    Requirement("COOKIE-3", MUST, "Cookies", "ENI id and attachment id are never mixed between endpoints with "
                "overlapping inner addresses", "gwlbtun README (overlapping CIDRs)"),
    Requirement("COOKIE-4", MUST, "Cookies", "Many flows in flight at once, packets of different flows, endpoints "
                "and instances interleaved, cookies renewed mid-stream: every return carries its own flow's latest "
                "header, none is duplicated, at most 1 % is lost",
                f"{AWS_TG} (the cookie identifies the flow); {AWS_GW} (flow symmetry); {OBSERVED}: GWLB drops "
                "returns with another flow's cookie (PR #15)"),
    Requirement("SYM-1", MUST, "Symmetry", "Both directions of every flow return through the appliance that "
                "received them", f"{AWS_GW} (flow symmetry)"),
    Requirement("SYM-2", MUST, "Symmetry", "With several appliances, no appliance returns a flow it did not "
                "receive", f"{AWS_GW} (asymmetric flows are not supported)"),
    Requirement("SYM-3", MUST, "Symmetry", "Packets for flows the appliance never received from GWLB never reach "
                "GWLB (appliances may not originate flows)", "gwlbtun; AWS GWLB docs (asymmetric flows)"),
    Requirement("TRAFFIC-1", MUST, "Traffic", "TCP: a real handshake and data transfer end to end, IPv4 and IPv6",
                AWS_GW),
    Requirement("TRAFFIC-2", MUST, "Traffic", "UDP exchanges end to end, IPv4 and IPv6", AWS_GW),
    Requirement("TRAFFIC-3", MUST, "Traffic", "ICMP and ICMPv6 echo end to end", AWS_GW),
    Requirement("TRAFFIC-4", MUST, "Traffic", "Other IP protocols (GRE, ESP, SCTP, ...) are carried as 3-tuple "
                "flows, both directions", "AWS GWLB docs (3-tuple stickiness for non-TCP/UDP)"),
    Requirement("TRAFFIC-5", MUST, "Traffic", "IPv6 extension headers, and IPv4 and IPv6 fragments (first, "
                "middle and last, out of order, both directions), are carried",
                f"{AWS_GW} (dualstack)"),
    Requirement("TRAFFIC-6", MUST, "Traffic", "Inner packets up to 8500 bytes are carried", f"{AWS_GW} (MTU 8500)"),
    Requirement("TRAFFIC-7", MUST, "Traffic", "Generated inner packets of every kind (protocols, sizes, IPv4 and "
                "IPv6) come back right through GWLB (Hypothesis; option layouts are ECHO-4's)", AWS_GW),
    Requirement("TRAFFIC-8", SHOULD, "Traffic", "A TCP flow that GWLB hands over mid-stream (no SYN seen, as after "
                "a failover rebalance) is carried", "AWS GWLB docs, target failover (rebalance moves existing flows "
                "to healthy targets)"),
    Requirement("TIMEOUT-1", SHOULD, "Timeouts", "A flow idle for longer than the appliance's own flow timeout "
                "still passes when GWLB resumes it", "AWS blog: best practices (idle timeout mismatch)"),
    Requirement("TIMEOUT-2", MUST, "Timeouts", "A flow that comes back after GWLB's idle timeout, with a new "
                "cookie, is returned with the new cookie", f"{OBSERVED}; AWS GWLB docs (idle timeout)"),
    Requirement("TIMEOUT-3", MUST, "Timeouts", "An idle tunnel is torn down: devices removed, destroy hook run",
                "gwlbtun (-t)"),
    Requirement("TIMEOUT-4", MUST, "Timeouts", "The same endpoint's tunnel is re-created repeatedly with nothing "
                "lost", "gwlbtun (-t)"),
    Requirement("HEALTH-1", MUST, "Health", "The health check answers 200 while healthy, with a complete HTTP "
                "exchange (or accepts TCP connections)", AWS_HC),
    Requirement("HEALTH-2", MUST, "Health", "Several concurrent probers are all answered", f"{AWS_HC} (consensus)"),
    Requirement("HEALTH-3", SHOULD, "Health", "The health check answers 503 when the datapath is broken (a tunnel "
                "cannot be created)", "gwlbtun (-p)"),
    Requirement("HEALTH-4", MUST, "Health", "A restarted appliance serves health and traffic again at once, on the "
                "same port", AWS_HC),
    Requirement("HEALTH-5", MUST, "Health", "When the appliance fails its health checks, GWLB sends new flows "
                "elsewhere (fake GWLB's view)", AWS_HC),
    Requirement("HEALTH-6", SHOULD, "Health", "A tunnel device deleted under the running appliance is not a silent "
                "black hole: within 1 s the endpoint's packets are carried again, or health answers 503",
                f"{AWS_HC} (GWLB routes only to targets passing their checks); gwlbtun (-p: health reflects the "
                "tunnels); SHOULD as HEALTH-3"),
    Requirement("ROBUST-1", MUST, "Robustness", "Every malformed GENEVE class is dropped, never forwarded, and the "
                "appliance stays alive and healthy", f"{RFC} 3-4; gwlbtun"),
    Requirement("ROBUST-2", MUST, "Robustness", "Control packets (O bit) and unknown critical options are not "
                "forwarded", f"{RFC} 3.4-3.5"),
    Requirement("ROBUST-3", MUST, "Robustness", "Oversize datagrams up to 64 KB are survived", AWS_GW),
    Requirement("ROBUST-4", MUST, "Robustness", "Generated malformed traffic (Hypothesis) is never forwarded",
                f"{RFC}; gwlbtun"),
    Requirement("ROBUST-5", SHOULD, "Robustness", "Sustained traffic at the configured rate for a bounded time "
                "passes with zero loss", f"{OBSERVED}"),
    Requirement("ROBUST-7", SHOULD, "Robustness", "Datagrams the appliance carries are not also answered with ICMP "
                "errors toward GWLB (port unreachable from a kernel with no UDP socket on 6081)",
                "RFC 1122 3.2.2.1 and RFC 792 (Port Unreachable says no process received the datagram, which is "
                "false for a datagram the appliance carried); GWLB's handling of ICMP is not documented, hence "
                "SHOULD"),
    Requirement("ROBUST-8", MUST, "Robustness", "Many distinct flows (100,000 per instance by default, at the rate "
                "the appliance declares, some renewed with new cookies) leave every instance alive, healthy and "
                "correct: each return carries its own flow's header, at most 1 % is lost, old and new flows work "
                "afterwards", f"{AWS_GW} (a flow per 5-tuple, each to one target); {AWS_TG} (a cookie per flow)"),
    Requirement("ROBUST-6", SHOULD, "Robustness", "Malformed inner packets (an IP length claiming more bytes than "
                "are present, an inner header cut short, an IP version that contradicts the protocol type) are not "
                "passed through", "RFC 1812 5.2.2 (IP header validation before forwarding); neither RFC 8926 nor AWS "
                "asks a GENEVE endpoint to validate inner packets, hence SHOULD"),
]

REQUIREMENTS: dict[str, Requirement] = {r.id: r for r in _ALL}


def get(req_id: str) -> Requirement:
    try:
        return REQUIREMENTS[req_id]
    except KeyError:
        raise KeyError(f"unknown requirement {req_id!r}") from None


def markdown_table() -> str:
    lines = ["| Id | Level | Area | Requirement | Source |", "|---|---|---|---|---|"]
    for r in _ALL:
        lines.append(f"| {r.id} | {r.level} | {r.area} | {r.title} | {r.source} |")
    return "\n".join(lines)
