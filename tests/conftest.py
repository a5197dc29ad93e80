"""Shared test setup: root-only tests skip with a reason; no run leaves namespaces behind."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gwlbsim.linuxio import netns


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates network namespaces, TUN devices and raw sockets")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _sigterm_cleans_up() -> Iterator[None]:
    """SIGTERM (e.g. a CI timeout) raises SystemExit so that fixtures remove what they created."""
    with netns.sigterm_raises():
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_namespaces_left_behind() -> Iterator[None]:
    yield
    left = sorted(n for n in netns.list_namespaces()
                  if (m := netns.NAME_RE.match(n)) and m.group(1) in netns.CREATED_PREFIXES)
    assert not left, f"namespaces left behind by this test run: {left}"
