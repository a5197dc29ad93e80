"""``/metrics`` on the health port: the status document in the Prometheus text exposition format (0.0.4).

Names follow Prometheus's conventions: the ``gwlb_reference_`` prefix, ``_total`` for counters, base units
(bytes, seconds), labels for the ENI (``eni``, 16 hex digits), the direction (``in`` from GWLB, ``out`` back
to it) and the drop reason. Counters are what the appliance counted since it started, both datapaths'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "gwlb_reference_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Mapping[str, object], value: float) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{PREFIX}{name}{{{inner}}} {value:g}" if inner else f"{PREFIX}{name} {value:g}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[str] = []

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(_sample(self.name, labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {PREFIX}{self.name} {self.help}"
        yield f"# TYPE {PREFIX}{self.name} {self.kind}"
        yield from self.samples


def render(st: Mapping[str, Any]) -> str:
    """The status document (``gwlbsim.reference.status/1``) as Prometheus metrics."""
    fam: dict[str, _Family] = {}

    def f(name: str, kind: str, help_text: str) -> _Family:
        return fam.setdefault(name, _Family(name, kind, help_text))

    f("healthy", "gauge", "1 while the health check answers 200, else 0").add(1 if st.get("healthy") else 0)
    f("uptime_seconds", "gauge", "Seconds since the appliance started").add(st.get("uptime_seconds", 0))
    dp = st.get("datapath") or {}
    f("datapath_info", "gauge", "The datapath carrying the common case (kernel or python)").add(
        1, kind=dp.get("kind", "python"))
    t = st.get("totals") or {}
    packets = f("packets_total", "counter", "GENEVE datagrams from GWLB (in) and returns to it (out)")
    octets = f("bytes_total", "counter", "Bytes of GENEVE payload from GWLB (in) and of returns (out)")
    for d in ("in", "out"):
        packets.add(t.get(f"packets_{d}", 0), direction=d)
        octets.add(t.get(f"bytes_{d}", 0), direction=d)
    f("flows", "gauge", "Flows in the flow cache").add(t.get("flows", 0))
    f("flow_evictions_total", "counter", "Flows evicted from a full flow cache").add(t.get("flow_evictions", 0))
    drops = f("drops_total", "counter", "Datagrams and packets dropped, by reason")
    for reason, n in sorted((t.get("drops") or {}).items()):
        drops.add(n, reason=reason)
    f("tunnels_rebuilt_total", "counter", "Tunnels retired because their device was deleted").add(
        t.get("tunnels_rebuilt", 0))
    f("ingress_rx_dropped_total", "counter", "Packets the kernel dropped on the way into the tunnels' gwi- "
      "devices (rx_dropped), retired tunnels' included").add(t.get("ingress_rx_dropped", 0))
    hooks = f("tunnel_hooks_total", "counter", "Hook runs by action (create, destroy) and result (ok, failed)")
    for action in ("create", "destroy"):
        for result in ("ok", "failed"):
            hooks.add((st.get("hooks") or {}).get(f"{action}_{result}", 0), action=action, result=result)
    tunnels = st.get("tunnels") or []
    f("tunnels", "gauge", "Tunnels (one per GWLB endpoint, ENI)").add(len(tunnels))
    tp = f("tunnel_packets_total", "counter", "Inner packets of an ENI's tunnel, in from GWLB and out to it")
    tb = f("tunnel_bytes_total", "counter", "Inner bytes of an ENI's tunnel, in from GWLB and out to it")
    tf = f("tunnel_flows", "gauge", "Flows of an ENI in the Python datapath's flow cache")
    td = f("tunnel_drops_total", "counter", "Drops of an ENI's traffic, by reason")
    tk = f("tunnel_ingress_rx_dropped_total", "counter",
           "Packets the kernel dropped on the way into an ENI's gwi- device (rx_dropped)")
    for tun in tunnels:
        eni = tun["eni_id"]
        for d in ("in", "out"):
            tp.add(tun.get(f"packets_{d}", 0), eni=eni, direction=d)
            tb.add(tun.get(f"bytes_{d}", 0), eni=eni, direction=d)
        tf.add(tun.get("flows", 0), eni=eni)
        tk.add(tun.get("ingress_rx_dropped", 0), eni=eni)
        for reason, n in sorted((tun.get("drops") or {}).items()):
            td.add(n, eni=eni, reason=reason)
    if "worker_restarts" in st:
        f("worker_restarts_total", "counter", "Datapath workers replaced after they died").add(st["worker_restarts"])
    return "\n".join(line for family in fam.values() for line in family.lines()) + "\n"
