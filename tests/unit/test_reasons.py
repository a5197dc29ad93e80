"""One registry of drop reasons: every counter name the codec, the fake GWLB and the reference use is in it."""

from __future__ import annotations

from gwlbsim.reference import datapath, worker
from gwlbsim.reference.core import CORE_REASONS

from gwlbsim.model.gwlb import MODEL_REASONS
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError
from gwlbsim.wire.outer import OuterError
from gwlbsim.wire.reasons import DropReason


def test_every_drop_reason_is_a_registered_one() -> None:
    used = {*geneve.REASONS, *MODEL_REASONS, *CORE_REASONS, InnerError.reason, OuterError.reason,
            datapath.TUN_WRITE_FAILED, datapath.TUNNEL_DEVICE_GONE, datapath.SEND_FAILED, datapath.UDP_TRUNCATED,
            worker.UNKNOWN_TUNNEL_PACKET}
    assert all(isinstance(r, DropReason) for r in used), [r for r in used if not isinstance(r, DropReason)]
    assert used <= set(DropReason)


def test_a_reason_is_its_string() -> None:
    """Counters keyed by a member are read back by its name as a string (status documents, JSON, tests)."""
    counts = {DropReason.NO_FLOW: 3}
    assert counts["no_flow"] == 3 and f"{DropReason.NO_FLOW}" == "no_flow"
    assert geneve.TooShort.reason == "too_short"
