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


AREAS = ("Echo", "Cookies", "Symmetry", "Traffic", "Timeouts", "Health", "Robustness", "Deployment")
GWLBTUN_README = ("gwlbtun README (aws-samples/aws-gateway-load-balancer-tunnel-handler: the tunnel interfaces "
                  "\"allow standard Linux tools (iptables, etc.) to work with GWLB\"; two interfaces make "
                  "\"routing and iptables easier\")")

GWLBTUN_NAT = ("gwlbtun example-scripts/create-nat.sh (\"Setting up two-armed NAT\": MASQUERADE out of the "
               "instance's own interface) and create-nat-overlapping.sh (\"deals with multiple endpoints that may "
               "have overlapping IP CIDR ranges\": a mark per ENI saved to and restored from CONNMARK selects the "
               "endpoint's route table for the replies)")
GWLBTUN_LOCAL = ("gwlbtun example-scripts/create-local.sh (\"makes it so locally-hosted services can answer and "
                 "reply back through GWLB correctly\": a mark per tunnel saved to CONNMARK routes the local replies "
                 "out of gwo-)")
GWLBTUN_NO_ORIGIN = ("gwlbtun GeneveHandler.cpp (a tunnel packet of a flow not seen from GWLB is dropped: \"GWLB is "
                     "for inline inspection only - you cannot source new flows from this device into it\")")

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
    Requirement("ROUTE-1", MUST, "Deployment", "Modes that route through the kernel (--mode routed, nat, local): "
                "the appliance's forwarding policy applies to GWLB's traffic: a flow its netfilter FORWARD rules "
                "drop does not come back, others still do, on every instance", f"{GWLBTUN_README}; the routed "
                "deployment exists for this"),
    Requirement("LOCAL-1", MUST, "Deployment", "Local termination (--mode local): TCP flows to the terminated port "
                "(7780) are answered by the appliance itself, its replies returned through GWLB with each flow's "
                "header (IPv4 and IPv6, both endpoints, many at once, every instance)",
                f"{GWLBTUN_LOCAL}; {AWS_TG} (a cookie per flow)"),
    Requirement("NAT-1", MUST, "Deployment", "Two-arm NAT mode (--mode nat): clients' flows to the internet (TCP "
                "handshake and data, UDP, ICMP echo; IPv4 and IPv6; from two endpoints with the same addresses, many "
                "at once) leave by the second arm and every reply comes back through GWLB with its own flow's cookie "
                "and endpoint, on every instance", f"{GWLBTUN_NAT}; {AWS_TG} (a cookie per flow)"),
    Requirement("NAT-2", MUST, "Deployment", "Two-arm NAT mode: nothing started from the internet side (TCP, UDP, "
                "ICMP toward the clients' addresses, IPv4 and IPv6) is sent into a tunnel toward GWLB",
                f"{GWLBTUN_NO_ORIGIN}; {AWS_GW} (GWLB does not support flows whose first packet it did not see)"),
    Requirement("NAT-3", SHOULD, "Deployment", "Two-arm NAT mode: the very same 5-tuple from two endpoints with "
                "overlapping addresses, at the same time through one instance, makes two connections, each answered "
                "through its own endpoint", f"{GWLBTUN_NAT}; overlapping CIDRs mean equal tuples happen, but neither "
                "AWS nor gwlbtun's example covers them, hence SHOULD"),
]

#: How each requirement is provoked and observed (the README's table shows it).
HOW: dict[str, str] = {
    "ECHO-1": "Provoked: a valid datagram to each instance from each GWLB node (two, cross-zone), on its own port. "
        "Observed: it returns from that port to the sending node's 6081; returns to a wrong port or address "
        "are found in the capture.",
    "ECHO-2": "Provoked: 4 header layouts to instance 0 (GWLB options reordered, foreign-class options, other VNIs, "
        "reserved flag bits and reserved byte set). Observed: the returned GENEVE header must equal the one "
        "sent, byte for byte.",
    "ECHO-3": "Provoked: 4 crafted flows to instance 0 (TCP SYN with 100 B of data, 1000 B UDP, ICMP echo, IPv6 "
        "UDP), one cookie each. Observed: the returned inner packet must equal the one sent; only a "
        "TTL/hop-limit decrement is allowed.",
    "ECHO-4": "Provoked: Hypothesis-generated valid datagrams (any option order, extra options, VNI, flags; inner "
        "up to 1500 B, SYN first for TCP). Observed: header back byte for byte; inner same apart from a TTL "
        "decrement.",
    "COOKIE-1": "Provoked: 8 UDP flows, each with its own cookie and port; 16 forward and reverse packets sent back "
        "to back, 3 rounds. Observed: all 16 come back each round, each with its own flow's cookie (looked up "
        "by port).",
    "COOKIE-2": "Provoked: the SYN and SYN-ACK of one TCP 5-tuple on one outer port, reopened 4 times with cookies "
        "0x6001 to 0x6004. Observed: every return carries the cookie that was just sent, never an earlier "
        "one.",
    "COOKIE-3": "Provoked: 2 ENI ids (attachment 0, 77), same inner UDP 5-tuple both ways, 4 packets interleaved per "
        "round, 5 rounds. Observed: each return (by payload tag) has its own ENI id, attachment id, cookie "
        "and port.",
    "COOKIE-4": "Provoked: per instance 16 flows x 2 endpoints, 4 packets each interleaved, 4 rounds; half renew "
        "cookie mid-round in rounds 2, 4. Observed: right instance, node, port; own or newer header of its "
        "flow; no dup; loss at most 1%.",
    "SYM-1": "Provoked: 40 concurrent real UDP query/answer flows through the fake GWLB (2+ instances). Observed: "
        "by cookie, each flow goes to one instance and returns only from it; all 40 answered; Auditor sees "
        "nothing unparseable.",
    "SYM-2": "Provoked: 20 concurrent real UDP query/answer flows through the fake GWLB over all instances. "
        "Observed: Auditor sees no return of a flow sent to another instance and nothing unparseable; "
        "wrong_target drops unchanged.",
    "SYM-3": "Provoked: after 10 real flows, never-seen UDP/TCP/ICMP/IPv6 packets written into every gwi-/gwo- "
        "device of every instance (tunnel kind), then 2 s idle. Observed: Auditor logs no return of an "
        "unreceived flow, none unparseable.",
    "TRAFFIC-1": "Provoked: a real TCP connection through GWLB on endpoint 0, IPv4 and IPv6: client sends 300 KB, "
        "server sends back the last 1000 B. Observed: the handshake completes; all bytes and the answer "
        "arrive unchanged.",
    "TRAFFIC-2": "Provoked: 5 real UDP exchanges over IPv4 and 5 over IPv6 through GWLB; the client sends a 500 B "
        "datagram and the server answers with it reversed. Observed: the client gets back exactly the "
        "reversed payload.",
    "TRAFFIC-3": "Provoked: ping -c 3 from the client namespace to the server's IPv4 and IPv6 addresses, through GWLB. "
        "Observed: ping reports 3 received for each address.",
    "TRAFFIC-4": "Provoked: GRE, ESP, SCTP and protocol-253 packets injected at endpoint 0 via through(), both ways, "
        "twice each. Observed: the fake GWLB sends each to an appliance and delivers its return unchanged "
        "(TTL decrement allowed).",
    "TRAFFIC-5": "Provoked: IPv6 with hop-by-hop, dest-options, routing headers or a chain; 2400 B UDP cut into 1000 B "
        "IPv4/IPv6 fragments, both ways, last first; via through(). Observed: each delivered back unchanged "
        "(TTL decrement allowed).",
    "TRAFFIC-6": "Provoked: inner IPv4 UDP packets of 1500, 4000, 8000 and 8500 bytes, and an 8500-byte IPv6 one, "
        "injected at endpoint 0 with through(). Observed: the fake GWLB delivers each one back unchanged (TTL "
        "decrement allowed).",
    "TRAFFIC-7": "Provoked: Hypothesis-generated unfragmented inner packets of many protocols, up to 8500 B (SYN first "
        "for TCP), injected via through(). Observed: the fake GWLB delivers each back unchanged apart from a "
        "TTL decrement.",
    "TRAFFIC-8": "Provoked: client ACK+data, server ACK+data, client FIN of a TCP flow whose SYN was never sent, to "
        "instance 0 on one port and cookie. Observed: each one comes back, inner unchanged apart from a TTL "
        "decrement.",
    "TIMEOUT-1": "Provoked: for TCP and non-TCP apart, a flow opened to instance 0, left idle past the declared flow "
        "timeout (+1.5 s; up to 60 s, any with --long), then resumed both ways. Observed: both come back; a "
        "longer timeout below GWLB's fails as declared.",
    "TIMEOUT-2": "Provoked: a UDP packet injected at endpoint 0; the fake GWLB forgets all flows (as after its idle "
        "timeout); reverse and forward packets injected again. Observed: they carry a new cookie and their "
        "returns are delivered.",
    "TIMEOUT-3": "Provoked: one packet of a fresh endpoint to instance 0, then idle for the declared --tunnel-timeout "
        "(tunnel kind only). Observed: its gwi-/gwo- devices appear, then go within timeout + 5 s; hook log "
        "has DESTROY gwi gwo eni.",
    "TIMEOUT-4": "Provoked: 4 cycles of 6 IPv4/IPv6 UDP packets (own cookie and port each) to one fresh endpoint; "
        "cycles 2 and 4 are sent just as the tunnel is due for teardown. Observed: all 6 return every cycle "
        "with their cookies; devices go within timeout + 5 s.",
    "HEALTH-1": "Provoked: a health probe to each instance; for HTTP also a raw GET with Connection: close from the "
        "GWLB namespace. Observed: the probe succeeds with 200 (TCP: connect accepted); the server sends "
        "HTTP/1.x and closes.",
    "HEALTH-2": "Provoked: 48 health probes to instance 0 from 16 concurrent threads. Observed: every probe succeeds, "
        "and over HTTP every one answers 200.",
    "HEALTH-3": "Provoked: a veth that takes the gwi- name of a fresh ENI is created in instance 0, then a packet of "
        "that ENI is sent (HTTP health and tunnel kind only). Observed: health status, polled for 10 s, must "
        "become 503.",
    "HEALTH-4": "Provoked: a health check leaves a TIME_WAIT on the health port, then instance 0 is stopped and "
        "started again. Observed: HTTP health answers 200 and a valid packet comes back, all within 5 s of "
        "the restart.",
    "HEALTH-5": "Provoked: instance 0 paused (SIGSTOP; SIGKILL for TCP health) until the fake GWLB marks it "
        "unhealthy, then 100 new TCP SYN flows injected at endpoint 0. Observed: that instance's flow count "
        "in the fake GWLB stays the same.",
    "HEALTH-6": "Provoked: after a packet of a fresh endpoint is carried, its gwi- device (one case) or gwo- device "
        "(the other) is deleted in instance 0 with ip link del. Observed: within 1 s a repeated packet "
        "returns, or health says 503.",
    "ROBUST-1": "Provoked: 15 malformed datagrams to instance 0 (empty, truncated, version 1/3, bad option lengths, "
        "wrong protocol type, GWLB option missing or wrong size, no inner, no options). Observed: none "
        "forwarded; alive, healthy.",
    "ROBUST-2": "Provoked: a valid packet, then the same with the O (control) bit, an unknown critical option, or the "
        "critical bit on a GWLB option type. Observed: the valid one returns; the bad one is not forwarded; "
        "still healthy.",
    "ROBUST-3": "Provoked: well-formed datagrams of 9000, 16000, 32000 and 65000 bytes, then zero-filled garbage of "
        "each size, to instance 0. Observed: any return is byte-identical; instances alive and healthy; a "
        "valid packet returns.",
    "ROBUST-4": "Provoked: Hypothesis-generated malformed GENEVE datagrams (GENEVE and option malformation classes) "
        "to instance 0. Observed: no instance forwards one before the marker behind it returns; then all "
        "alive and healthy.",
    "ROBUST-5": "Provoked: 64 TCP flows opened by SYN through GWLB, then 64 B segments at --rate pkt/s for --duration "
        "s, each numbered by its IP id. Observed: every packet delivered exactly once; every instance alive "
        "and carrying flows. A loss while other processes used a quarter of a CPU or more of the host is not "
        "laid at the appliance: sent again on fresh flows (3 attempts), then NOT RUN; a duplicate fails at once.",
    "ROBUST-6": "Provoked: 5 crafted cases (IPv6 type over IPv4 inner, inner version 5, IPv4/IPv6 length overclaims, "
        "IPv4 header cut short) and Hypothesis-generated inner malformations. Observed: none forwarded before "
        "its marker; healthy.",
    "ROBUST-7": "Provoked: 10 valid datagrams to each instance from each GWLB node. Observed: all come back, and the "
        "capture shows no ICMP error (unreachable, time exceeded, parameter problem) from an appliance about "
        "a datagram to 6081.",
    "ROBUST-8": "Provoked: --flows distinct UDP flows (100,000) to every instance at once at --flow-rate, every tenth "
        "renewed with a new cookie. Observed: each return has its flow's cookie, no dup, loss at most 1%; "
        "alive, healthy; old and new flows right after.",
    "ROUTE-1": "Provoked: with --mode routed, nat or local, an nftables forward-hook rule dropping inner UDP to port "
        "5999 is added in every appliance's namespace. Observed: a UDP probe to 5999 does not come back from any "
        "instance (a marker behind it does), a probe to 5998 does; before the rule, both did. NOT APPLICABLE in other "
        "modes.",
    "LOCAL-1": "Provoked: with --mode local, 16 TCP connections at once from both endpoints' clients to their "
        "server's address on port 7780 (IPv4 and IPv6), each sending an HTTP request; more until every instance "
        "took one. Observed: each connection completes and gets an answer (the server has no listener there); "
        "GWLB's drops of returns are reported. NOT APPLICABLE in other modes.",
    "NAT-1": "Provoked: with --mode nat, from both endpoints' clients at once: a TCP connection (64 KB out, an answer "
        "back), 8 UDP exchanges and 3 pings to the internet namespace's server, over IPv4 and IPv6; more UDP flows "
        "until every instance carried one. Observed: every answer reaches its own client; GWLB's drops of returns "
        "are reported. NOT APPLICABLE in other modes.",
    "NAT-2": "Provoked: with --mode nat, the internet side routes the clients' addresses to each instance's second arm "
        "and sends them UDP, TCP SYNs and pings (IPv4 and IPv6). Observed: GWLB receives no return carrying any of "
        "them, and the clients receive nothing; the instance still carries a marker. NOT APPLICABLE in other modes.",
    "NAT-3": "Provoked: with --mode nat, both endpoints' clients send from the same address and port to the same "
        "internet server and port at the same time (UDP over IPv4 and IPv6, and TCP), until such a pair went "
        "through one instance. Observed: the server sees two flows; each client gets its own answer, none the "
        "other's. NOT APPLICABLE in other modes.",
}

REQUIREMENTS: dict[str, Requirement] = {r.id: r for r in _ALL}


def get(req_id: str) -> Requirement:
    try:
        return REQUIREMENTS[req_id]
    except KeyError:
        raise KeyError(f"unknown requirement {req_id!r}") from None


def markdown_table() -> str:
    lines = ["| Id | Level | Area | Requirement | How it is provoked and observed | Source |",
             "|---|---|---|---|---|---|"]
    for r in _ALL:
        lines.append(f"| {r.id} | {r.level} | {r.area} | {r.title} | {HOW[r.id]} | {r.source} |")
    return "\n".join(lines)
