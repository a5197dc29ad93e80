"""Reducing a failing sequence of packets to a small one that still fails (generic; the test is a callback).

:func:`minimize` first finds the shortest failing prefix (binary search: the failure happened once its last
needed packet was sent), then finds the other needed packets one at a time, each by a binary search for the
shortest failing suffix of what is left (a variant of delta debugging that costs about log2(n) replays per
needed packet instead of ddmin's many more). Every test is a replay against a fresh appliance, so the
number of tests is bounded by a :class:`Budget`; when it runs out the smallest failing sequence found so far
is returned.

Example::

    >>> seq = list(range(100))
    >>> minimize(seq, lambda s: {13, 57, 58} <= set(s)).items
    [13, 57, 58]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Budget:
    """How many tests (replays) and how much time minimization may use."""

    max_tests: int = 200
    seconds: float = 300.0
    tests: int = 0
    started: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return self.tests >= self.max_tests or time.monotonic() - self.started >= self.seconds


@dataclass
class Result(Generic[T]):
    items: list[T]  #: the smallest failing sequence found (in the original order)
    tests: int  #: how many times the test ran
    complete: bool  #: False when the budget ran out first (``items`` fails, but may not be minimal)
    reproduced: bool = True  #: False when the whole sequence did not fail when replayed (or the budget was
    #: spent before it could be replayed)


class _Tester(Generic[T]):
    def __init__(self, items: Sequence[T], fails: Callable[[list[T]], bool], budget: Budget) -> None:
        self.items = items
        self.fails = fails
        self.budget = budget
        self.cache: dict[tuple[int, ...], bool] = {}

    def __call__(self, idx: Sequence[int]) -> bool:
        key = tuple(idx)
        if key not in self.cache:
            if self.budget.spent():
                raise _OutOfBudget
            self.budget.tests += 1
            self.cache[key] = bool(self.fails([self.items[i] for i in key]))
        return self.cache[key]


class _OutOfBudget(Exception):
    pass


def minimize(items: Sequence[T], fails: Callable[[list[T]], bool], budget: Budget | None = None) -> Result[T]:
    """A small subsequence of ``items`` for which ``fails`` is true, in the original order.

    When failing is monotone (adding packets to a failing sequence keeps it failing, as for crashes and
    stateful corruption) the result is 1-minimal and costs about (k + 1) * log2(len(items)) tests for k
    needed packets; otherwise it is still a failing subsequence.
    """
    budget = budget or Budget()
    test = _Tester(items, fails, budget)
    every = list(range(len(items)))
    found: list[list[int]] = []
    whole_fails = False
    try:
        if not test(every):
            return Result(list(items), budget.tests, True, reproduced=False)
        whole_fails = True
        if test([]):
            return Result([], budget.tests, True)
        best = every
        # 1. the shortest failing prefix: its last packet is needed
        lo, hi = 0, len(every)  # prefix of length lo passes, of length hi fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if test(every[:mid]):
                hi = mid
            else:
                lo = mid
        best = every[:hi]
        found.append(best)
        # 2. culprits one at a time, earliest first: keep the needed ones, search the packets after the last one
        needed = [best[-1]]
        pool = best[:-1]  # invariant: pool + needed fails
        while not test(sorted(needed)):
            lo, hi = 0, len(pool)  # pool[lo:] + needed fails; pool[hi:] + needed passes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if test(sorted(pool[mid:] + needed)):
                    lo = mid
                else:
                    hi = mid
            needed.append(pool[lo])
            pool = pool[lo + 1:]
            found.append(sorted(pool + needed))
        best = sorted(needed)
    except _OutOfBudget:
        best = found[-1] if found else every
        return Result([items[i] for i in best], budget.tests, False, reproduced=whole_fails)
    return Result([items[i] for i in best], budget.tests, True)
