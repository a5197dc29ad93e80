"""The Prometheus rendering of the status document: valid for Prometheus's own parser, labels escaped."""

from __future__ import annotations

from gwlbsim.reference.metrics import render
from prometheus_client.parser import text_string_to_metric_families


def test_every_family_parses_with_its_type_and_labels_are_escaped() -> None:
    st = {"healthy": False, "uptime_seconds": 12.5, "datapath": {"kind": "python"},
          "totals": {"packets_in": 10, "bytes_in": 900, "packets_out": 8, "bytes_out": 700, "flows": 3,
                     "flow_evictions": 0, "drops": {'odd "reason"\\x': 2}, "tunnels_rebuilt": 0,
                     "ingress_rx_dropped": 7},
          "hooks": {"create_ok": 1, "create_failed": 1, "destroy_ok": 0, "destroy_failed": 0},
          "tunnels": [{"eni_id": "00000000000000aa", "packets_in": 10, "bytes_in": 800, "packets_out": 8,
                       "bytes_out": 600, "flows": 3, "drops": {"no_flow": 1}, "ingress_rx_dropped": 5}],
          "worker_restarts": 2}
    fams = {f.name: f for f in text_string_to_metric_families(render(st))}
    assert fams["gwlb_reference_packets"].type == "counter" and fams["gwlb_reference_flows"].type == "gauge"
    drops = {s.labels["reason"]: s.value for s in fams["gwlb_reference_drops"].samples}
    assert drops == {'odd "reason"\\x': 2}
    assert [s.value for s in fams["gwlb_reference_healthy"].samples] == [0]
    tun = {(s.labels["direction"], s.labels["eni"]): s.value for s in fams["gwlb_reference_tunnel_bytes"].samples}
    assert tun == {("in", "00000000000000aa"): 800, ("out", "00000000000000aa"): 600}
    assert [s.value for s in fams["gwlb_reference_worker_restarts"].samples] == [2]
    assert [s.value for s in fams["gwlb_reference_ingress_rx_dropped"].samples] == [7]
    assert [(s.labels["eni"], s.value) for s in fams["gwlb_reference_tunnel_ingress_rx_dropped"].samples] == \
        [("00000000000000aa", 5)]
