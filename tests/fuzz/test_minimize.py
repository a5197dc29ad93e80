"""Sequence minimization (prefix search + ddmin), on synthetic failure conditions."""

from __future__ import annotations

from gwlbsim.fuzz.minimize import Budget, minimize
from hypothesis import given
from hypothesis import strategies as st

from .hyp import budget


def test_single_culprit_is_found_with_few_tests() -> None:
    r = minimize(list(range(1000)), lambda s: 637 in s)
    assert r.items == [637] and r.complete and r.tests <= 15


def test_stateful_failure_needs_all_its_packets_in_order() -> None:
    def fails(s: list[int]) -> bool:  # fails once three "control" packets (multiples of 97 from 500) arrived
        return len([x for x in s if x % 97 == 0 and x >= 500]) >= 3

    r = minimize(list(range(1000)), fails)
    assert r.items == [582, 679, 776] and r.complete and r.tests <= 40
    assert r.items == sorted(r.items)


def test_not_reproduced_is_reported() -> None:
    r = minimize([1, 2, 3], lambda s: False)
    assert not r.reproduced and r.items == [1, 2, 3]


def test_budget_is_respected_and_the_best_so_far_returned() -> None:
    r = minimize(list(range(4096)), lambda s: {5, 3000} <= set(s), Budget(max_tests=14))
    assert r.tests <= 14 and not r.complete
    assert {5, 3000} <= set(r.items) and len(r.items) < 4096


@budget(200)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=60), st.sets(st.integers(0, 50), min_size=1, max_size=4))
def test_result_still_fails_and_is_one_minimal(seq: list[int], needed: set[int]) -> None:
    def fails(s: list[int]) -> bool:
        return needed <= set(s)

    r = minimize(seq, fails)
    if not fails(seq):
        assert not r.reproduced
        return
    assert fails(r.items) and r.complete
    for i in range(len(r.items)):  # removing any one item makes it pass
        assert not fails(r.items[:i] + r.items[i + 1:])
    rest = iter(seq)  # the result is a subsequence of the input: order kept (items may repeat)
    assert all(any(x == y for y in rest) for x in r.items)


def test_nothing_needed_when_the_empty_sequence_fails() -> None:
    assert minimize([1, 2, 3], lambda s: True).items == []


def test_non_monotone_failure_still_gives_a_failing_sequence() -> None:
    def fails(s: list[int]) -> bool:  # fails on an odd number of multiples of 10
        return len([x for x in s if x % 10 == 0]) % 2 == 1

    r = minimize(list(range(85)), fails)
    assert fails(r.items) and len(r.items) == 1
