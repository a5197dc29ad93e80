"""The kernel path's addresses GENEVE is received on, kept current by the Python side: only what changed is
sent to the kernel, a failure to look them up leaves the last known ones, and a specific --listen address is
the only one."""

from __future__ import annotations

from typing import Any

import pytest
from gwlbsim.reference import fastpath
from gwlbsim.reference.fastpath import FastPath


class _Kernel:
    def __init__(self) -> None:
        self.calls: list[tuple[set[str], set[str]]] = []

    def own_addresses(self, added: Any, gone: Any) -> None:
        self.calls.append((set(added), set(gone)))


def _path(listen: str) -> tuple[FastPath, _Kernel]:
    p = FastPath.__new__(FastPath)
    k = _Kernel()
    p.kernel, p.listen, p._own, p._next_own = k, listen, set(), 0.0  # type: ignore[assignment]
    return p, k


def test_only_changes_go_to_the_kernel_and_a_failed_look_keeps_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    p, k = _path("0.0.0.0")
    found = [{"10.0.0.1", "10.0.0.2"}]

    def addresses() -> set[str]:
        if not found:
            raise OSError("netlink trouble")
        return found.pop(0)

    monkeypatch.setattr(fastpath.linkpath, "local_addresses", addresses)
    p._refresh_own(0.0)
    assert k.calls == [({"10.0.0.1", "10.0.0.2"}, set())] and p._next_own == fastpath.OWN_EVERY
    p._refresh_own(1.0)  # the look fails: nothing changes, no exception reaches the loop
    assert len(k.calls) == 1 and p._own == {"10.0.0.1", "10.0.0.2"}
    found.append({"10.0.0.2", "10.0.0.3"})
    p._refresh_own(2.0)
    assert k.calls[-1] == ({"10.0.0.3"}, {"10.0.0.1"})
    found.append({"10.0.0.2", "10.0.0.3"})
    p._refresh_own(3.0)
    assert len(k.calls) == 2  # nothing changed: no call


def test_a_specific_listen_address_is_the_only_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath.linkpath, "local_addresses", lambda: pytest.fail("not to be looked up"))
    p, k = _path("192.0.2.7")
    p._refresh_own(0.0)
    assert k.calls == [({"192.0.2.7"}, set())]
