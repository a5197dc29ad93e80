"""Drawing many values from a strategy outside a test (for pools of traffic and seed corpora), reproducibly.

Hypothesis's ``.example()`` is for interactive use only; this runs a ``@given`` function with a fixed seed in
the generate phase and keeps what it is given.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")


def sample(strategy: st.SearchStrategy[T], count: int, at_seed: int = 0) -> list[T]:
    """``count`` values of ``strategy`` (fewer only if it has fewer distinct values), the same for a seed."""
    out: list[T] = []

    @seed(at_seed)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def grab(x: T) -> None:
        out.append(x)

    grab()
    return out
