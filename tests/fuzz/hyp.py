"""Hypothesis settings shared by the fuzz tests: no deadlines (the machine may be loaded), modest counts."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def budget(examples: int, **kw: object) -> settings:
    """Settings for ``examples`` examples, without a deadline."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=_QUIET, **kw)  # type: ignore[arg-type]
