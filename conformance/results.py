"""Conformance results, requirement by requirement: the terminal summary, JSON and a self-contained HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.requirements import AREAS, MUST, REQUIREMENTS

RESULTS = pytest.StashKey["Results"]()


@dataclass
class TestOutcome:
    nodeid: str
    outcome: str  #: passed, failed, skipped
    message: str
    seconds: float
    artifacts: dict[str, str] = field(default_factory=dict)
    details: str = ""


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300]
    return str(report.longrepr or "").strip().splitlines()[-1][:300] if report.longrepr else ""


@dataclass
class Results:
    by_requirement: dict[str, list[TestOutcome]] = field(default_factory=dict)
    failed_unmarked: list[str] = field(default_factory=list)

    def add(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        req = props.get("requirement")
        if report.when == "call" or (report.when in ("setup", "teardown") and (report.failed or report.skipped)):
            outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
            if req is None:
                if report.failed:
                    self.failed_unmarked.append(report.nodeid)
                return
            details = "\n\n".join(f"{title}\n{text}" for title, text in report.sections
                                  if title in ("offending packet", "capture"))
            if report.failed and report.longreprtext:
                details = report.longreprtext[-4000:] + ("\n\n" + details if details else "")
            self.by_requirement.setdefault(req, []).append(TestOutcome(
                report.nodeid, outcome, _first_line(report) if outcome != "passed" else "", report.duration,
                {k: str(v) for k, v in props.items() if k in ("pcap", "hexdump")}, details))

    def verdict(self, req_id: str) -> str:
        tests = self.by_requirement.get(req_id, [])
        if any(t.outcome == "failed" for t in tests):
            return "FAIL"
        if any(t.outcome == "passed" for t in tests):
            return "PASS"
        return "SKIP" if tests else "NOT RUN"

    def failed(self, level: str) -> list[str]:
        return [r for r in self.by_requirement if self.verdict(r) == "FAIL" and REQUIREMENTS[r].level == level]

    def reason(self, req_id: str) -> str:
        for t in self.by_requirement.get(req_id, []):
            if t.outcome == "failed":
                return t.message
        for t in self.by_requirement.get(req_id, []):
            if t.outcome == "skipped":
                return t.message
        return ""

    def summary_lines(self) -> list[str]:
        lines = []
        for area in AREAS:
            reqs = [r for r in REQUIREMENTS.values() if r.area == area and r.id in self.by_requirement]
            if not reqs:
                continue
            lines.append(area)
            for r in reqs:
                v = self.verdict(r.id)
                why = self.reason(r.id)
                lines.append(f"  {v:4}  {r.level:6}  {r.id:10} {r.title}" + (f"\n{'':24}-> {why}" if why else ""))
        counts = {v: sum(1 for r in self.by_requirement if self.verdict(r) == v) for v in ("PASS", "FAIL", "SKIP")}
        must = self.failed(MUST)
        lines.append(f"{len(self.by_requirement)} requirements: {counts['PASS']} passed, {counts['FAIL']} failed "
                     f"({len(must)} MUST), {counts['SKIP']} skipped")
        lines.append("verdict: " + ("NOT CONFORMANT: MUST failures " + ", ".join(sorted(must)) if must
                                    else "CONFORMANT to every requirement that ran"))
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"requirements": [
            {"id": r.id, "level": r.level, "area": r.area, "title": r.title, "source": r.source,
             "verdict": self.verdict(r.id), "reason": self.reason(r.id),
             "tests": [t.__dict__ for t in self.by_requirement.get(r.id, [])]}
            for r in REQUIREMENTS.values() if r.id in self.by_requirement],
            "must_failures": sorted(self.failed(MUST))}

    def html(self, title: str) -> str:
        colour = {"PASS": "#1a7f37", "FAIL": "#cf222e", "SKIP": "#9a6700", "NOT RUN": "#6e7781"}
        rows = []
        for area in AREAS:
            reqs = [r for r in REQUIREMENTS.values() if r.area == area and r.id in self.by_requirement]
            if not reqs:
                continue
            rows.append(f'<tr><th colspan="5" class="area">{html.escape(area)}</th></tr>')
            for r in reqs:
                v = self.verdict(r.id)
                detail = ""
                for t in self.by_requirement[r.id]:
                    if t.outcome != "passed":
                        links = " ".join(f'<a href="{html.escape(Path(p).as_uri())}">{k}</a>'
                                         for k, p in t.artifacts.items())
                        detail += (f"<details><summary>{html.escape(t.nodeid)}: {html.escape(t.message)}</summary>"
                                   f"{links}<pre>{html.escape(t.details)}</pre></details>")
                rows.append(f'<tr><td style="color:{colour[v]};font-weight:bold">{v}</td><td>{r.level}</td>'
                            f"<td>{r.id}</td><td>{html.escape(r.title)}<br><small>{html.escape(r.source)}</small>"
                            f"{detail}</td><td>{len(self.by_requirement[r.id])}</td></tr>")
        must = self.failed(MUST)
        verdict = ("NOT CONFORMANT: MUST failures " + ", ".join(sorted(must))) if must else "CONFORMANT"
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;text-align:left}}
th.area{{background:#f6f8fa}}pre{{white-space:pre-wrap;font-size:12px;background:#f6f8fa;padding:8px}}</style>
</head><body><h1>{html.escape(title)}</h1><p><b>{html.escape(verdict)}</b></p>
<table><tr><th>Verdict</th><th>Level</th><th>Id</th><th>Requirement</th><th>Tests</th></tr>
{''.join(rows)}</table></body></html>
"""
