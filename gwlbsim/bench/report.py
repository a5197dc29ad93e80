"""The benchmark's results: aggregated over repeats (median, min-max), printed as tables, written as JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gwlbsim.bench.runner import Cell, Measurement

BASELINES = ("kernel", "naive")


def _median(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def aggregate(ms: list[Measurement]) -> list[dict[str, Any]]:
    """One row per (subject, cell): medians over repeats, with the spread of the rate and the loss."""
    groups: dict[tuple[str, Cell], list[Measurement]] = {}
    for m in ms:
        groups.setdefault((m.subject, m.cell), []).append(m)
    rows = []
    for (subject, cell), g in groups.items():
        ret = [m.returned_pps for m in g]
        loss = [m.loss for m in g]
        rows.append({
            "subject": subject, "size": cell.size, "flows": cell.flows, "ports": cell.ports, "rate": cell.rate,
            "repeats": len(g),
            "offered_pps": _median(m.offered_pps for m in g),
            "returned_pps": _median(ret), "returned_pps_min": min(ret), "returned_pps_max": max(ret),
            "loss": _median(loss), "loss_min": min(loss), "loss_max": max(loss),
            "p50_us": _median(m.latency_us.get("p50") for m in g),
            "p99_us": _median(m.latency_us.get("p99") for m in g),
            "appliance_cpu_us_per_packet": _median(m.cpu_us_per_packet for m in g),
            "machine_busy": _median(m.machine_busy for m in g),
            "other_busy": _median(m.other_busy for m in g),
            "echo_errors": sum(m.echo_errors for m in g),
            "duplicates": sum(m.duplicates for m in g),
            "late": _median(m.late / m.offered if m.offered else 0.0 for m in g),
        })
    return rows


def ratios(ms: list[Measurement]) -> list[dict[str, Any]]:
    """Each appliance's returned rate over the kernel's and the naive handler's, per cell, per repeat."""
    by: dict[tuple[str, Cell, int], Measurement] = {(m.subject, m.cell, m.repeat): m for m in ms}
    subjects = sorted({m.subject for m in ms} - set(BASELINES))
    cells = list(dict.fromkeys(m.cell for m in ms))
    repeats = sorted({m.repeat for m in ms})
    rows = []
    for subject in subjects:
        for cell in cells:
            row: dict[str, Any] = {"subject": subject, "size": cell.size, "flows": cell.flows,
                                   "ports": cell.ports, "rate": cell.rate}
            for base in BASELINES:
                vals = []
                for r in repeats:
                    a, b = by.get((subject, cell, r)), by.get((base, cell, r))
                    if a and b and b.returned_pps:
                        vals.append(a.returned_pps / b.returned_pps)
                if vals:
                    row[f"vs_{base}"] = statistics.median(vals)
                    row[f"vs_{base}_min"], row[f"vs_{base}_max"] = min(vals), max(vals)
            if len(row) > 5:
                rows.append(row)
    return rows


def _fmt(v: float | None, scale: float = 1.0, nd: int = 1) -> str:
    return "-" if v is None else f"{v / scale:.{nd}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,  # noqa: E731
                                                                                                   strict=True)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def results_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        spread = ""
        if r["repeats"] > 1:
            spread = f" ({r['returned_pps_min'] / 1000:.0f}-{r['returned_pps_max'] / 1000:.0f})"
        loss_spread = ""
        if r["repeats"] > 1:
            loss_spread = f" ({r['loss_min'] * 100:.2f}-{r['loss_max'] * 100:.2f})"
        out.append([r["subject"], f"{r['size']}", f"{r['flows']}", r["ports"],
                    Cell(0, 0, "", r["rate"]).offer,
                    _fmt(r["offered_pps"], 1000), _fmt(r["returned_pps"], 1000) + spread,
                    f"{r['loss'] * 100:.3f}{loss_spread}", f"{(r['late'] or 0) * 100:.2f}",
                    _fmt(r["p50_us"], nd=0), _fmt(r["p99_us"], nd=0),
                    _fmt(r["appliance_cpu_us_per_packet"], nd=2), _fmt(r["machine_busy"], 0.01, 0),
                    _fmt(r["other_busy"], 0.01, 0), str(r["echo_errors"])])
    return _table(["subject", "inner B", "flows", "ports", "offer", "offered kpps", "returned kpps",
                   "loss %", "late %", "p50 us", "p99 us", "app CPU us/pkt", "busy %", "other %", "errors"], out)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        cells = [r["subject"], f"{r['size']}", f"{r['flows']}", r["ports"],
                 Cell(0, 0, "", r["rate"]).offer]
        for base in BASELINES:
            v = r.get(f"vs_{base}")
            if v is None:
                cells.append("-")
            elif r.get(f"vs_{base}_min") != r.get(f"vs_{base}_max"):
                cells.append(f"{v:.2f} ({r[f'vs_{base}_min']:.2f}-{r[f'vs_{base}_max']:.2f})")
            else:
                cells.append(f"{v:.2f}")
        out.append(cells)
    return _table(["subject", "inner B", "flows", "ports", "offer", "x kernel", "x naive"], out)


def overload_text(rows: list[dict[str, Any]]) -> str:
    """Overload: each subject offered a multiple of its loss-free rate, open-loop."""
    out = []
    for r in rows:
        note = []
        if r["loss_free_generator_bound"]:
            note.append("loss-free rate bounded by the generator")
        if r["generator_bound"]:
            note.append(f"the generator offered only {r['offered_pps'] / r['loss_free_pps']:.2f}x")
        runs = r.get("returned_runs_pps") or []
        if len(runs) > 1:
            note.append(f"median of {len(runs)}: " + ", ".join(f"{x / 1000:.0f}k" for x in runs))
        share = r["returned_of_loss_free"]
        out.append([r["subject"], f"{r['size']}", f"{r['flows']}", r["ports"], _fmt(r["loss_free_pps"], 1000),
                    _fmt(r["offered_pps"], 1000), _fmt(r["returned_pps"], 1000),
                    "-" if share is None else f"{share * 100:.0f}", f"{r['loss'] * 100:.1f}",
                    _fmt(r["p50_us"], 1000, 2), _fmt(r["p99_us"], 1000, 2), "; ".join(note)])
    return _table(["overload", "inner B", "flows", "ports", "loss-free kpps", "offered kpps", "returned kpps",
                   "% of loss-free", "loss %", "p50 ms", "p99 ms", "note"], out)


def memory_text(mem: dict[str, Any]) -> str:
    return (f"flow cache: {mem['traced_bytes_per_flow']:.0f} bytes/flow traced (tracemalloc, "
            f"{mem['traced_flows']:,} flows), {mem['rss_bytes_per_flow']:.0f} bytes/flow resident "
            f"({mem['flows']:,} flows: {mem['rss_mib']:.0f} MiB); {mem['new_flows_per_second']:,} new flows/s "
            f"into the core")


def write_json(path: Path, meta: dict[str, Any], ms: list[Measurement], extra: dict[str, Any]) -> None:
    doc = {"schema": "gwlbsim.bench/1", "meta": meta, "measurements": [m.as_dict() for m in ms],
           "summary": aggregate(ms), "ratios": ratios(ms), **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n")

