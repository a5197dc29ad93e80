"""Timeouts: idle flows and idle tunnels, and what comes after them."""

from __future__ import annotations

import time

import pytest

from conformance.environment import ConformanceEnv, check
from conformance.plugin import requirement
from conformance.suite.helpers import cookie_of, eni, tcp4, udp4
from gwlbsim import eni as eni_names
from gwlbsim import geneve

MAX_WAIT = 60.0


@requirement("TIMEOUT-1")
def test_flow_idle_past_the_appliance_timeout_still_passes(gwlb: ConformanceEnv) -> None:
    t = gwlb.spec.flow_timeout
    if t > MAX_WAIT:
        pytest.skip(f"the appliance's flow timeout ({t:g} s) is too long to wait for; configure a short one and "
                    "pass it with --gwlb-flow-timeout")
    sport = gwlb.next_sport()
    fwd, rev = tcp4(sport=44000, flags="A", payload=b"1"), tcp4(sport=44000, flags="A", reverse=True, payload=b"2")
    for inner in (fwd, rev):
        check(gwlb.echo(geneve.build(inner, eni(gwlb), 0x8001), sport=sport), "no return before idling")
    time.sleep(t + 1.5)
    for inner in (rev, fwd):
        sent = geneve.build(inner, eni(gwlb), 0x8001)
        check(gwlb.echo(sent, sport=sport), f"after {t + 1.5:g} s idle, mid-flow packets are no longer carried", sent)


@requirement("TIMEOUT-2")
def test_flow_back_after_gwlb_idle_timeout_uses_new_cookie(gwlb: ConformanceEnv) -> None:
    inner_f, inner_r = udp4(sport=5600), udp4(sport=5600, reverse=True)
    sent, delivered = gwlb.through(eni(gwlb), inner_f)
    check(delivered, "flow not carried before idling")
    old = cookie_of(sent[0].data)
    gwlb.forget_flows()  # as GWLB does after its idle timeout (350 s TCP, 120 s other)
    for inner in (inner_r, inner_f):
        sent, delivered = gwlb.through(eni(gwlb), inner)
        new = cookie_of(sent[0].data)
        check(new != old, "the fake GWLB did not renew the cookie")
        check(delivered, f"after GWLB renewed the flow's cookie ({old:#x} -> {new:#x}), the appliance's return was "
              "refused (it must carry the new cookie)", sent[0].data)


def _tunnel_timeout(env: ConformanceEnv) -> float:
    t = env.spec.tunnel_timeout
    if not t:
        pytest.skip("the appliance has no tunnel timeout (give the configured value with --gwlb-tunnel-timeout)")
    if t > MAX_WAIT:
        pytest.skip(f"tunnel timeout {t:g} s is too long to wait for")
    return t


def _devices(env: ConformanceEnv, eni_id: int) -> tuple[str, str, bool, bool]:
    gwi, gwo = eni_names.device_names(eni_id)
    devs = env.instances[0].devices()
    return gwi, gwo, gwi in devs, gwo in devs


@requirement("TIMEOUT-3")
def test_idle_tunnel_is_torn_down(gwlb: ConformanceEnv) -> None:
    t = _tunnel_timeout(gwlb)
    fresh = 0x7E570000 + int(time.time() * 10) % 65536
    sent = geneve.build(tcp4(flags="A"), fresh, 1)
    check(gwlb.echo(sent), "no return for a new endpoint", sent)
    gwi, gwo, has_i, has_o = _devices(gwlb, fresh)
    if not (has_i or has_o):
        pytest.skip("not a gwlbtun-style appliance (no gwi-/gwo- devices to watch)")
    deadline = time.monotonic() + t + 5
    while time.monotonic() < deadline and any(_devices(gwlb, fresh)[2:]):
        time.sleep(0.2)
    _, _, has_i, has_o = _devices(gwlb, fresh)
    check(not has_i and not has_o, f"{gwi}/{gwo} still present {t + 5:g} s after the tunnel went idle "
          f"(tunnel timeout {t:g} s)")
    calls = gwlb.hook_calls()
    if "{hook}" in gwlb.spec.command:  # the suite's own hooks are in use: they log every call
        check(calls, "the appliance never ran its hooks")
    if calls:  # the destroy hook must have run, with gwlbtun's arguments
        want = f"DESTROY {gwi} {gwo} {eni_names.to_hex(fresh)}"
        check(want in calls, f"destroy hook not called as `{want}`; calls: {calls[-4:]}")


@requirement("TIMEOUT-4")
def test_tunnel_recreated_repeatedly_without_loss(gwlb: ConformanceEnv) -> None:
    t = _tunnel_timeout(gwlb)
    fresh = 0x7E580000 + int(time.time() * 10) % 65536
    for cycle in range(4):
        for i in range(5):
            sent = geneve.build(tcp4(sport=46000 + i, flags="A"), fresh, 100 * cycle + i)
            got = gwlb.echo(sent, timeout=5)
            check(got, f"cycle {cycle}: packet {i} lost after the tunnel was re-created", sent)
            check(cookie_of(got[0].data) == 100 * cycle + i, f"cycle {cycle}: wrong cookie", got[0].data)
        if cycle == 0 and not any(_devices(gwlb, fresh)[2:]):
            pytest.skip("not a gwlbtun-style appliance (no gwi-/gwo- devices to watch)")
        deadline = time.monotonic() + t + 5
        while time.monotonic() < deadline and any(_devices(gwlb, fresh)[2:]):
            time.sleep(0.2)
        check(not any(_devices(gwlb, fresh)[2:]), f"cycle {cycle}: tunnel not torn down")
