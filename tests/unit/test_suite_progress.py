"""The suite's progress lines: tests done of all and an estimate from the pace so far, at most every 15 s."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gwlbsim.conformance import plugin


def test_progress_lines_estimate_the_rest_from_the_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    clock = [1000.0]
    monkeypatch.setattr(plugin.time, "monotonic", lambda: clock[0])
    reporter = SimpleNamespace(write_line=lines.append)
    config: Any = SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace(verbose=0),
                                  pluginmanager=SimpleNamespace(get_plugin=lambda name: reporter))
    config.stash[plugin._progress_key] = [1000.0, 0.0, 1000.0]
    config.stash[plugin._session_key] = SimpleNamespace(testscollected=40)
    for _ in range(10):  # 10 tests in 20 s: nothing before 15 s have passed since the start, then one line
        clock[0] += 2.0
        plugin._progress(config)
    assert lines == ["gwlb-conformance: 8 of 40 tests done in 16 s; about 64 s to go"]
    config.option.verbose = -1  # -q: no progress lines
    clock[0] += 60
    plugin._progress(config)
    assert len(lines) == 1
