"""The reference-core benchmark: registered, runs without root, and checks what it measures."""

from __future__ import annotations

import argparse

import pytest

from gwlbsim.bench import extra, hotpath


def test_reference_core_is_registered_and_reports_each_step() -> None:
    entry = extra.available()["reference-core"]
    result = entry.run(argparse.Namespace(quick=True))
    for step in ("scan", "symmetric_key", "inbound", "round_trip"):
        assert result[step] > 0, step
        assert f"{result[step]:.2f} µs" in result["text"]
    assert result["packets"] == 200 * hotpath.FLOWS * 5


def test_measure_fails_when_a_return_carries_the_wrong_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from gwlbsim.reference import core

    real = core.put_return_header

    def swapped_cookie(flow: core.ReturnFlow, buf: memoryview, at: int, n: int, partial: bool = False) -> int:
        start = real(flow, buf, at, n, partial)
        buf[at - 1] ^= 0xFF  # the last byte of the GENEVE header: the flow cookie's
        return start

    monkeypatch.setattr(core, "put_return_header", swapped_cookie)
    with pytest.raises(RuntimeError, match="another header"):
        hotpath.measure(batches=1, rounds=1)
