"""Virtual-time mode: the model and reference cores in one process, deterministic, fast."""

from __future__ import annotations

from gwlbsim.config import GwlbConfig
from gwlbsim.simulate import Flap, Workload, run


def test_every_packet_is_accounted_for_and_flows_spread_over_targets() -> None:
    r = run(Workload(flows=4000, rate=1000, seed=5), targets=8)
    assert r.packets_sent == 8000 and r.packets_returned == 8000 and r.packets_lost == 0
    assert sum(r.per_target_flows.values()) == 4000
    assert min(r.per_target_flows.values()) > 4000 / 8 * 0.7, r.per_target_flows
    assert r.cloudwatch["HealthyHostCount"] == 8 and r.drops == {}


def test_same_seed_same_run() -> None:
    a = run(Workload(flows=1000, rate=500, seed=9, flaps=[Flap(0.5, 2, 30)]), targets=4)
    b = run(Workload(flows=1000, rate=500, seed=9, flaps=[Flap(0.5, 2, 30)]), targets=4)
    assert a.per_target_flows == b.per_target_flows and a.packets_lost == b.packets_lost


def test_flap_loses_traffic_without_rebalance_and_moves_flows_with_it() -> None:
    wl = Workload(flows=6000, rate=200, flaps=[Flap(2, 1, 1000)], followup_after=60, seed=2)
    plain = run(wl, targets=4)
    assert plain.packets_lost > 0 and plain.flows_lost > 0 and plain.flows_moved == 0
    assert any("t1: healthy -> unhealthy" in e for e in plain.events)
    assert plain.per_target_flows["t1"] > 0, "no_rebalance: its flows stay on it"
    moved = run(wl, targets=4, config=GwlbConfig(failover_on_unhealthy="rebalance",
                                                 failover_on_deregistration="rebalance"))
    assert moved.flows_moved > 0 and moved.per_target_live["t1"] == 0 < moved.per_target_flows["t1"]
    assert moved.packets_lost < plain.packets_lost


def test_reused_tuples_after_idle_timeout_get_new_cookies() -> None:
    r = run(Workload(flows=3000, rate=5, reuse_fraction=0.5, tcp_fraction=0.0, seed=4), targets=2)
    assert r.cookie_renewals > 0
    assert r.drops == {}


def test_workers_share_the_flows_and_merge_one_report() -> None:
    wl = Workload(flows=3000, rate=500, flaps=[Flap(1, 0, 1000)], followup_after=30, seed=3)
    one = run(wl, targets=4)
    two = run(wl, targets=4, workers=2)
    assert two.flows == one.flows == 3000 and two.packets_sent == one.packets_sent
    assert sum(two.per_target_flows.values()) == 3000
    assert two.flows_lost > 0 and abs(two.flows_lost - one.flows_lost) <= one.flows_lost * 0.5


def test_flow_level_agrees_with_packet_level() -> None:
    wl = dict(flows=4000, rate=200, flaps=[Flap(2, 1, 1000)], followup_after=60, seed=2)
    pk = run(Workload(**wl), targets=4)  # type: ignore[arg-type]
    fl = run(Workload(level="flow", **wl), targets=4)  # type: ignore[arg-type]
    assert fl.per_target_flows == pk.per_target_flows, "same model, same decisions"
    assert fl.packets_lost == pk.packets_lost and fl.flows_lost == pk.flows_lost
    assert fl.packets_sent == pk.packets_sent
