"""The CI templates in docs/examples parse, run gwlb-conformance with options it has, and keep its reports."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml
from gwlbsim.conformance.cli import build_parser

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


def _conformance_args(script: str) -> list[str]:
    """The arguments of the gwlb-conformance call in a shell script."""
    words = shlex.split(script.replace("\\\n", " "))
    start = next(i for i, w in enumerate(words) if w.endswith("gwlb-conformance"))
    return words[start + 1:]


def _check_call(script: str) -> Any:
    args = build_parser().parse_args(_conformance_args(script))  # exits 2 on an option it does not have
    assert args.appliance and args.junit and args.html and args.json
    return args


def test_github_actions_workflow() -> None:
    doc = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    assert doc.get("on", doc.get(True)) is not None  # YAML 1.1 reads the key "on" as true
    steps = doc["jobs"]["conformance"]["steps"]
    runs = [s["run"] for s in steps if "gwlb-conformance" in s.get("run", "")]
    assert len(runs) == 1
    args = _check_call(runs[0])
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    kept = upload["with"]["path"].split()
    assert {str(args.junit), str(args.html), str(args.json), f"{args.artifacts}/"} <= set(kept)


def test_gitlab_ci_job() -> None:
    doc = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    job = doc["gwlb-conformance"]
    assert job["stage"] in doc["stages"] and job["needs"] == ["build-appliance"]
    (script,) = [line for line in job["script"] if "gwlb-conformance" in line]
    args = _check_call(script)
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == str(args.junit)
    assert {str(args.html), str(args.json), f"{args.artifacts}/"} <= set(job["artifacts"]["paths"])
