"""The benchmark's loss-free rates against kernel forwarding's: overall, and round by round."""

from __future__ import annotations

import pytest

from gwlbsim.bench.cli import _against_forwarding


def _row(subject: str, rates: list[int]) -> dict[str, object]:
    return {"subject": subject, "rate": sorted(rates)[len(rates) // 2], "rates": rates}


def test_each_round_is_set_against_the_forwarding_search_next_to_it() -> None:
    rows = [_row("kernel", [700_000, 500_000, 600_000]), _row("reference", [560_000, 450_000, 420_000])]
    _against_forwarding(rows)
    kernel, ref = rows
    assert ref["kernel_ratio"] == pytest.approx(450_000 / 600_000, abs=0.001)  # median against median
    assert ref["paired_ratios"] == [0.8, 0.9, 0.7]  # each round against its own forwarding figure
    assert "kernel_ratio" not in kernel and "paired_ratios" not in kernel


def test_one_round_gives_no_pairs_and_no_forwarding_no_ratio() -> None:
    rows = [_row("kernel", [600_000]), _row("reference", [480_000])]
    _against_forwarding(rows)
    assert rows[1]["kernel_ratio"] == 0.8 and "paired_ratios" not in rows[1]
    alone = [_row("reference", [480_000, 500_000])]
    _against_forwarding(alone)
    assert "kernel_ratio" not in alone[0]
