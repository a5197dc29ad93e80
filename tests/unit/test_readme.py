"""The README states what the code knows; these keep the two from drifting apart."""

from __future__ import annotations

from pathlib import Path

from gwlbsim.conformance.requirements import markdown_table

README = Path(__file__).parents[2] / "README.md"


def test_requirements_table_is_the_catalogue() -> None:
    assert markdown_table() in README.read_text(), "regenerate the table with `gwlb-conformance --list`"
