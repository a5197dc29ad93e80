"""The loss-free rate search (a pure algorithm over measurements): doubling, bisection, the generator's limit."""

from __future__ import annotations

from typing import Any

from gwlbsim.bench.runner import Cell, Measurement, Runner

CELL = Cell(64, 64, "many")


def _runner(capacity: float, generator: float) -> tuple[Runner, list[float]]:
    """A runner whose subject loses what is offered above ``capacity`` and whose generator offers at most
    ``generator`` packets/s; returns it and the rates it was asked to offer."""
    asked: list[float] = []
    r = Runner.__new__(Runner)

    def measure(subject: Any, cell: Cell, repeat: int = 0, timing: Any = None) -> Measurement:
        asked.append(cell.rate)
        offered = min(cell.rate, generator)
        returned = min(offered, capacity)
        return Measurement("s", cell, repeat, int(offered), int(returned), 1.0, 0, 0, {}, {}, None, {}, 0, 0)

    r.measure = measure  # type: ignore[method-assign]
    return r, asked


def test_doubles_until_a_rate_fails_then_bisects_below_it() -> None:
    r, asked = _runner(capacity=700_000, generator=10_000_000)
    best, bound = r.search(None, CELL, 100_000, 0.001, 10)  # type: ignore[arg-type]
    assert asked[:4] == [100_000, 200_000, 400_000, 800_000]
    assert 650_000 <= best <= 700_000 and not bound, (best, asked)


def test_a_faster_subject_than_the_generator_is_said_to_be_so() -> None:
    r, _ = _runner(capacity=10_000_000, generator=1_000_000)
    best, bound = r.search(None, CELL, 100_000, 0.001, 10)  # type: ignore[arg-type]
    assert best == 1_000_000 and bound


def test_a_subject_slower_than_the_generator_limit_is_bisected_below_that_limit() -> None:
    r, asked = _runner(capacity=900_000, generator=1_000_000)
    best, bound = r.search(None, CELL, 100_000, 0.001, 10)  # type: ignore[arg-type]
    assert 850_000 <= best <= 900_000 and not bound, (best, asked)
    assert max(asked) == 1_600_000 and all(a <= 1_000_000 for a in asked[asked.index(1_600_000) + 1:])


def _stalling_runner(capacity: float, stall_every: int) -> tuple[Runner, list[float]]:
    """A subject that takes ``capacity`` packets/s but loses 1 % of one run in ``stall_every`` (a stall of the
    machine), whatever the rate."""
    asked: list[float] = []
    r = Runner.__new__(Runner)

    def measure(subject: Any, cell: Cell, repeat: int = 0, timing: Any = None) -> Measurement:
        asked.append(cell.rate)
        returned = min(cell.rate, capacity) * (0.99 if len(asked) % stall_every == 0 else 1.0)
        return Measurement("s", cell, repeat, int(cell.rate), int(returned), 1.0, 0, 0, {}, {}, None, {}, 0, 0)

    r.measure = measure  # type: ignore[method-assign]
    return r, asked


def test_one_stalled_run_decides_a_step_alone_but_not_the_median_of_three() -> None:
    r, _ = _stalling_runner(capacity=700_000, stall_every=3)
    best, _bound = r.search(None, CELL, 100_000, 0.001, 10)  # type: ignore[arg-type]
    assert best < 650_000  # the third run, at 400k, stalled: the search bisected below it
    r, asked = _stalling_runner(capacity=700_000, stall_every=3)
    best, _bound = r.search(None, CELL, 100_000, 0.001, 10, step_runs=3)  # type: ignore[arg-type]
    assert 650_000 <= best <= 700_000, (best, asked)  # every step had one stalled run of three
    assert len(asked) == 30 and asked[:3] == [100_000] * 3
