"""Conformance results, requirement by requirement: the terminal summary, JSON and a self-contained HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gwlbsim.conformance.requirements import AREAS, MUST, REQUIREMENTS

RESULTS = pytest.StashKey["Results"]()


#: exit statuses of ``gwlb-conformance`` (documented in its --help and the README)
EXIT_CONFORMANT, EXIT_MUST_FAILED, EXIT_USAGE, EXIT_COULD_NOT_RUN, EXIT_INCOMPLETE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  #: SIGINT (SIGTERM: 143)

#: skip-message prefixes that say what a skip really was
NOT_APPLICABLE = "NOT APPLICABLE: "
NOT_RUN = "NOT RUN: "

VERDICTS = ("PASS", "FAIL", "NOT APPLICABLE", "SKIP", "NOT RUN")


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest test class
    nodeid: str
    outcome: str  #: passed, failed, skipped, na (not applicable), notrun
    message: str
    seconds: float
    artifacts: dict[str, str] = field(default_factory=dict)
    details: str = ""
    notes: list[str] = field(default_factory=list)  #: e.g. "instance 0 restarted before this test: ..."


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        first = str(crash.message).splitlines()[0]
        for prefix in ("gwlbsim.conformance.environment.ConformanceFailure: ",
                       "gwlbsim.conformance.environment.InstanceCrashed: "):
            first = first.removeprefix(prefix)
        return first[:400]
    return str(report.longrepr or "").strip().splitlines()[-1][:300] if report.longrepr else ""


def _skip_kind(message: str) -> tuple[str, str]:
    for prefix, kind in ((NOT_APPLICABLE, "na"), (NOT_RUN, "notrun")):
        if message.startswith(prefix):
            return kind, message.removeprefix(prefix)
    return "skipped", message


@dataclass
class Results:
    by_requirement: dict[str, list[TestOutcome]] = field(default_factory=dict)
    failed_unmarked: list[str] = field(default_factory=list)
    requested: frozenset[str] | None = None  #: --requirements; None: every requirement
    could_not_run: str = ""  #: the one-line cause when the appliance could not be started at all
    could_not_run_detail: str = ""  #: the appliance's last output then
    restarts: list[str] = field(default_factory=list)

    def add(self, report: pytest.TestReport) -> None:
        props = {str(k): v for k, v in report.user_properties}
        req = str(props["requirement"]) if "requirement" in props else None
        if report.when == "call" or (report.when in ("setup", "teardown") and (report.failed or report.skipped)):
            outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
            message = _first_line(report) if outcome != "passed" else ""
            if outcome == "skipped":
                outcome, message = _skip_kind(message)
            if req is None:
                if report.failed:
                    self.failed_unmarked.append(report.nodeid)
                return
            details = "\n\n".join(f"{title}\n{text}" for title, text in report.sections
                                  if title in ("offending packet", "capture", "appliance log", "supervision"))
            if report.failed and report.longreprtext:
                details = report.longreprtext[-4000:] + ("\n\n" + details if details else "")
            attribution = props.get("attribution")
            if outcome == "failed" and attribution:
                message = f"{message} [{attribution}]"
            notes = [str(v) for k, v in report.user_properties if k == "note"]
            self.restarts += [n for n in notes if "restarted" in n]
            self.by_requirement.setdefault(req, []).append(TestOutcome(
                report.nodeid, outcome, message, report.duration,
                {k: str(v) for k, v in props.items() if k in ("pcap", "hexdump", "reproducer", "log")}, details,
                notes))

    def verdict(self, req_id: str) -> str:
        tests = self.by_requirement.get(req_id, [])
        outcomes = {t.outcome for t in tests}
        if "failed" in outcomes:
            return "FAIL"
        if "notrun" in outcomes or "skipped" in outcomes:
            return "NOT RUN" if "notrun" in outcomes else "SKIP"
        if "passed" in outcomes:
            return "PASS"
        if "na" in outcomes:
            return "NOT APPLICABLE"
        return "NOT RUN"

    def in_scope(self) -> list[str]:
        return [r for r in REQUIREMENTS if self.requested is None or r in self.requested]

    def failed(self, level: str) -> list[str]:
        return [r for r in self.in_scope() if self.verdict(r) == "FAIL" and REQUIREMENTS[r].level == level]

    def reason(self, req_id: str) -> str:
        tests = self.by_requirement.get(req_id, [])
        for kind in ("failed", "notrun", "skipped", "na"):
            for t in tests:
                if t.outcome == kind:
                    return t.message
        if not tests:
            return (self.could_not_run and "the appliance could not be run") or "not collected (deselected?)"
        return ""

    def status(self) -> tuple[int, str]:
        """The run's exit status and its verdict line."""
        if self.could_not_run:
            return EXIT_COULD_NOT_RUN, f"COULD NOT RUN: {self.could_not_run}"
        must_failed = self.failed(MUST)
        should_failed = [r for r in self.in_scope() if self.verdict(r) == "FAIL" and REQUIREMENTS[r].level != MUST]
        should = f"; SHOULD failures: {', '.join(should_failed)}" if should_failed else ""
        if must_failed:
            return EXIT_MUST_FAILED, f"NOT CONFORMANT: MUST failures {', '.join(must_failed)}{should}"
        if self.failed_unmarked:
            return EXIT_MUST_FAILED, f"NOT CONFORMANT: suite tests failed: {', '.join(self.failed_unmarked[:3])}"
        musts = [r for r in self.in_scope() if REQUIREMENTS[r].level == MUST]
        missing = [r for r in musts if self.verdict(r) in ("SKIP", "NOT RUN")]
        ran = [r for r in musts if self.verdict(r) in ("PASS", "FAIL")]
        if missing or not ran:
            why = "; ".join(f"{r}: {self.reason(r)}" for r in missing[:4])
            what = (f"MUST requirements not run: {', '.join(missing)}" if missing
                    else "no MUST requirement ran")
            return EXIT_INCOMPLETE, f"INCOMPLETE: {what}" + (f" ({why})" if why else "") + should
        scope = "" if self.requested is None else f" to the {len(self.in_scope())} requested requirements"
        na = [r for r in self.in_scope() if self.verdict(r) == "NOT APPLICABLE"]
        extra = f" ({len(na)} not applicable)" if na else ""
        return EXIT_CONFORMANT, f"CONFORMANT{scope}{extra}{should}"

    def summary_lines(self) -> list[str]:
        lines = []
        for area in AREAS:
            reqs = [r for r in REQUIREMENTS.values() if r.area == area and r.id in self.in_scope()]
            if not reqs:
                continue
            lines.append(area)
            for r in reqs:
                v = self.verdict(r.id)
                why = self.reason(r.id) if v != "PASS" else ""
                lines.append(f"  {v:14}  {r.level:6}  {r.id:10} {r.title}" + (f"\n{'':34}-> {why}" if why else ""))
        counts = {v: sum(1 for r in self.in_scope() if self.verdict(r) == v) for v in VERDICTS}
        lines.append(f"{len(self.in_scope())} requirements: {counts['PASS']} passed, {counts['FAIL']} failed "
                     f"({len(self.failed(MUST))} MUST), {counts['NOT APPLICABLE']} not applicable, "
                     f"{counts['SKIP'] + counts['NOT RUN']} not run")
        for note in dict.fromkeys(self.restarts):
            lines.append(f"supervision: {note}")
        lines.append("verdict: " + self.status()[1])
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"requirements": [
            {"id": r.id, "level": r.level, "area": r.area, "title": r.title, "source": r.source,
             "verdict": self.verdict(r.id), "reason": self.reason(r.id),
             "tests": [t.__dict__ for t in self.by_requirement.get(r.id, [])]}
            for r in REQUIREMENTS.values() if r.id in self.in_scope()],
            "must_failures": sorted(self.failed(MUST)), "status": self.status()[0], "verdict": self.status()[1],
            "restarts": list(dict.fromkeys(self.restarts))}

    def html(self, title: str) -> str:
        colour = {"PASS": "#1a7f37", "FAIL": "#cf222e", "SKIP": "#9a6700", "NOT RUN": "#6e7781",
                  "NOT APPLICABLE": "#6e7781"}
        rows = []
        for area in AREAS:
            reqs = [r for r in REQUIREMENTS.values() if r.area == area and r.id in self.in_scope()]
            if not reqs:
                continue
            rows.append(f'<tr><th colspan="5" class="area">{html.escape(area)}</th></tr>')
            for r in reqs:
                v = self.verdict(r.id)
                detail = ""
                if v != "PASS" and self.reason(r.id):
                    detail += f"<div><small>{html.escape(self.reason(r.id))}</small></div>"
                for t in self.by_requirement.get(r.id, []):
                    if t.outcome == "failed":
                        links = " ".join(f'<a href="{html.escape(Path(p).as_uri())}">{k}</a>'
                                         for k, p in t.artifacts.items())
                        detail += (f"<details><summary>{html.escape(t.nodeid)}: {html.escape(t.message)}</summary>"
                                   f"{links}<pre>{html.escape(t.details)}</pre></details>")
                rows.append(f'<tr><td style="color:{colour[v]};font-weight:bold">{v}</td><td>{r.level}</td>'
                            f"<td>{r.id}</td><td>{html.escape(r.title)}<br><small>{html.escape(r.source)}</small>"
                            f"{detail}</td><td>{len(self.by_requirement.get(r.id, []))}</td></tr>")
        verdict = self.status()[1]
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;text-align:left}}
th.area{{background:#f6f8fa}}pre{{white-space:pre-wrap;font-size:12px;background:#f6f8fa;padding:8px}}</style>
</head><body><h1>{html.escape(title)}</h1><p><b>{html.escape(verdict)}</b></p>
<table><tr><th>Verdict</th><th>Level</th><th>Id</th><th>Requirement</th><th>Tests</th></tr>
{''.join(rows)}</table></body></html>
"""
