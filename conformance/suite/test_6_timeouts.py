"""Timeouts: idle flows and idle tunnels, and what comes after them."""

from __future__ import annotations

import time

from gwlbsim.conformance.environment import ConformanceEnv, check, not_applicable, not_run
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import cookie_of, cookie_text, eni, raw_eni, tcp4, udp4, udp6

from gwlbsim.config import DEFAULT_TCP_IDLE_TIMEOUT, NON_TCP_IDLE_TIMEOUT
from gwlbsim.wire import eni as eni_names
from gwlbsim.wire import geneve

MAX_WAIT = 60.0
#: TIMEOUT-4 sends every other cycle's packets this long after the tunnel's idle deadline (the teardown race)
TEARDOWN_RACE = (0.05, 0.2)


#: GWLB's idle timeouts: a flow GWLB still holds is one the appliance must still carry
GWLB_IDLE = {"TCP": DEFAULT_TCP_IDLE_TIMEOUT, "non-TCP": NON_TCP_IDLE_TIMEOUT}


def _flow_packets(cls: str, sport: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(what opens the flow, what resumes it after the idle time), for a TCP or a UDP flow."""
    if cls == "TCP":
        return ([("SYN", tcp4(sport=sport, flags="S")), ("SYN-ACK", tcp4(sport=sport, flags="SA", reverse=True)),
                 ("ACK", tcp4(sport=sport, flags="A"))],
                [("server's data", tcp4(sport=sport, flags="A", reverse=True, payload=b"2")),
                 ("client's data", tcp4(sport=sport, flags="A", payload=b"1"))])
    return ([("query", udp4(sport=sport, payload=b"q1")), ("answer", udp4(sport=sport, payload=b"a1", reverse=True))],
            [("answer", udp4(sport=sport, payload=b"a2", reverse=True)), ("query", udp4(sport=sport, payload=b"q2"))])


@requirement("TIMEOUT-1")
def test_flow_idle_past_the_appliance_timeout_still_passes(gwlb: ConformanceEnv) -> None:
    """For TCP and for other flows: an appliance timeout at least GWLB's (350 s, 120 s) cannot matter; a
    shorter one is observed (the flow opened, left idle past it, then resumed both ways by GWLB with the same
    header), when that takes at most a minute or with --long; longer mismatches are failed on the declaration."""
    declared = dict(zip(GWLB_IDLE, gwlb.options.flow_timeouts, strict=True))
    if all(t is None for t in declared.values()):
        not_run("declare the appliance's flow timeout with --flow-timeout (and --other-flow-timeout if non-TCP "
                "flows have another)")
    observe, mismatched = {}, []
    for cls, t in declared.items():
        if t is None or t >= GWLB_IDLE[cls]:
            continue  # GWLB forgets the flow first
        if t <= MAX_WAIT or gwlb.options.long:
            observe[cls] = t
        else:
            mismatched.append(f"its {cls} flow timeout ({t:g} s) is shorter than GWLB's ({GWLB_IDLE[cls]:g} s)")
    if not observe and not mismatched:
        not_applicable(f"the appliance's declared flow timeouts ({declared['TCP']} s TCP, {declared['non-TCP']} s "
                       "other) are at least GWLB's: GWLB forgets an idle flow first")
    e = raw_eni(gwlb)
    flows = {cls: (gwlb.next_sport(), *_flow_packets(cls, 44000 + n)) for n, cls in enumerate(observe)}
    for cls, (sport, opening, _) in flows.items():
        for what, inner in opening:
            sent = geneve.build(inner, e, 0x8001 + len(cls))
            got = gwlb.echo(sent, sport=sport)
            check(got, got.lost(f"the {cls} flow's {what} (before any idling)"), sent)
    if observe:
        time.sleep(max(observe.values()) + 1.5)
    for cls, (sport, _, resumed) in flows.items():
        for what, inner in resumed:
            sent = geneve.build(inner, e, 0x8001 + len(cls))
            got = gwlb.echo(sent, sport=sport)
            check(got, f"the {cls} flow idle for {observe[cls] + 1.5:g} s, past the appliance's timeout "
                  f"({observe[cls]:g} s) but not GWLB's ({GWLB_IDLE[cls]:g} s): " + got.lost(f"the {what}"), sent)
    check(not mismatched, "declared, not observed: " + "; ".join(mismatched) + " (AWS's documented idle-timeout "
          "mismatch: GWLB still sends the idle flow, the appliance has forgotten it). Observing whether it still "
          "carries such a flow takes minutes: run with --long")


@requirement("TIMEOUT-2")
def test_flow_back_after_gwlb_idle_timeout_uses_new_cookie(gwlb: ConformanceEnv) -> None:
    inner_f, inner_r = udp4(sport=5600), udp4(sport=5600, reverse=True)
    sent, delivered = gwlb.through(eni(gwlb), inner_f)
    check(delivered, "the flow's first packet was not carried (before any idling)")
    old = cookie_of(sent[0].data)
    gwlb.forget_flows()  # as GWLB does after its idle timeout (350 s TCP, 120 s other)
    for inner in (inner_r, inner_f):
        sent, delivered = gwlb.through(eni(gwlb), inner)
        new = cookie_of(sent[0].data)
        check(new != old, "the fake GWLB did not renew the cookie")
        check(delivered, f"after GWLB renewed the flow's cookie ({old:#x} -> {new:#x}), the appliance's return was "
              "refused or lost (it must carry the new cookie)", sent[0].data)


def _tunnel_timeout(env: ConformanceEnv) -> float:
    env.not_applicable_unless_tunnels("tunnel teardown")
    t = env.options.tunnel_timeout
    if t is None:
        not_run("give the appliance's configured tunnel idle timeout with --tunnel-timeout (at most "
                f"{MAX_WAIT:g} s; 0 if it has none)")
    if not t:
        not_applicable("the appliance is configured without a tunnel idle timeout (--tunnel-timeout 0)")
    if t > MAX_WAIT:
        not_run(f"tunnel timeout {t:g} s is too long to wait for: configure at most {MAX_WAIT:g} s")
    return t


def _devices(env: ConformanceEnv, eni_id: int) -> tuple[str, str, bool, bool]:
    gwi, gwo = eni_names.device_names(eni_id)
    devs = env.instances[0].devices()
    return gwi, gwo, gwi in devs, gwo in devs


def _hook_eni(arg: str) -> int | None:
    """The ENI id a hook was given: hexadecimal, 16 digits or gwlbtun v3's 17 (``std::setw(17)``)."""
    try:
        return int(arg.removeprefix("eni-"), 16)
    except ValueError:
        return None


@requirement("TIMEOUT-3")
def test_idle_tunnel_is_torn_down(gwlb: ConformanceEnv) -> None:
    t = _tunnel_timeout(gwlb)
    fresh = raw_eni(gwlb)
    sent = geneve.build(udp4(), fresh, 1)
    got = gwlb.echo(sent)
    check(got, got.lost("the first packet of a new endpoint"), sent)
    gwi, gwo, has_i, has_o = _devices(gwlb, fresh)
    check(has_i or has_o, f"no {gwi}/{gwo} devices for a new endpoint, although the appliance has tunnel devices")
    deadline = time.monotonic() + t + 5
    while time.monotonic() < deadline and any(_devices(gwlb, fresh)[2:]):
        time.sleep(0.2)
    _, _, has_i, has_o = _devices(gwlb, fresh)
    check(not has_i and not has_o, f"{gwi}/{gwo} still present {t + 5:g} s after the tunnel went idle "
          f"(tunnel timeout {t:g} s)")
    calls = [c.split() for c in gwlb.hook_calls()]
    if "{hook}" in gwlb.spec.command:  # the suite's own hooks are in use: they log every call
        check(calls, "the appliance never ran its hooks")
    if calls:  # the destroy hook must have run, with gwlbtun's arguments (the ENI compared by value)
        ok = any(len(c) >= 4 and c[:3] == ["DESTROY", gwi, gwo] and _hook_eni(c[3]) == fresh for c in calls)
        check(ok, f"destroy hook not called as `DESTROY {gwi} {gwo} {eni_names.to_hex(fresh)}`; calls: "
              f"{[' '.join(c) for c in calls[-4:]]}")


@requirement("TIMEOUT-4")
def test_tunnel_recreated_repeatedly_without_loss(gwlb: ConformanceEnv) -> None:
    t = _tunnel_timeout(gwlb)
    fresh = raw_eni(gwlb)
    for cycle in range(4):
        burst = [(geneve.build(udp4(sport=46000 + i) if i % 2 else udp6(sport=46000 + i), fresh, 100 * cycle + i),
                  gwlb.next_sport()) for i in range(6)]
        got = gwlb.burst(burst, timeout=5)
        when = ("sent as the tunnel was due for teardown" if cycle % 2 else "after the tunnel was re-created")
        check(len(got) == len(burst), f"cycle {cycle}: {len(got)} of {len(burst)} packets came back, {when}; "
              + got.lost("the rest"))
        want = {sport: cookie_of(p) for p, sport in burst}
        for r in got:
            check(cookie_of(r.data) == want[r.sport], f"cycle {cycle}: the return carried "
                  f"{cookie_text(cookie_of(r.data))}, not the flow's {want[r.sport]:#x}", r.data)
        if cycle % 2 == 0:  # the next cycle's packets arrive just as the tunnel is due for teardown
            time.sleep(t + TEARDOWN_RACE[cycle // 2 % len(TEARDOWN_RACE)])
            continue
        deadline = time.monotonic() + t + 5
        while time.monotonic() < deadline and any(_devices(gwlb, fresh)[2:]):
            time.sleep(0.2)
        check(not any(_devices(gwlb, fresh)[2:]), f"cycle {cycle}: tunnel not torn down {t + 5:g} s after going idle")
