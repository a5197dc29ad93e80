"""The kernel fast path's programs measured alone (``gwlbsim bench --only fastpath-programs``): the test run
returns each program's own verdict, and the benchmark reports every size only from runs that took the fast path
(nothing here asserts on speed)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from gwlbsim.reference.kernelpath import KernelPath, available

from gwlbsim.bench import fastpath_programs as fp
from gwlbsim.bench.cli import main
from gwlbsim.linuxio.netns import Lab, entered

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(available() is not None, reason=f"kernel path unavailable: {available()}")]

TC_ACT_UNSPEC = 0xFFFFFFFF  # the verdict -1, as the kernel hands it back


def test_a_test_run_hands_back_the_program_verdict() -> None:
    with Lab() as lab, entered(fp.tunnel_namespace(lab, "verdict")):
        up = {"ifindex": socket.if_nametoindex("eth0")}
        kp = KernelPath(0x0108, True, 1024)
        try:
            frame = fp._frame(fp._inner(64), False)
            assert kp.test_run("geneve_in", frame, **up)[0] == TC_ACT_UNSPEC  # no tunnel ready: left to Python
            kp.tunnel_ready(fp.ENI, socket.if_nametoindex("gwi-bench"), socket.if_nametoindex("gwo-bench"))
            assert kp.test_run("geneve_in", frame, **up)[0] == TC_ACT_UNSPEC  # not to an address received on
            kp.own_addresses({fp.SELF}, ())
            verdict, ns = kp.test_run("geneve_in", frame, **up)
            assert verdict == fp.TC_ACT_REDIRECT and ns > 0  # now it is decapsulated and redirected into gwi-
            with pytest.raises(RuntimeError, match="did not take the fast path"):  # the benchmark refuses a pass
                fp._per_packet(kp, "geneve_in", fp.MACS[1] + fp.MACS[0] + b"\x08\x06" + bytes(28),
                               fp.TC_ACT_REDIRECT, **up)
        finally:
            kp.close()


def test_the_benchmark_reports_in_and_out_per_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--only", "fastpath-programs", "--sizes", "64,1500", "-q", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["extra"]["fastpath-programs"]
    assert set(res["sizes"]) == {"64", "1500"}
    for row in res["sizes"].values():
        assert set(row) == {"in_ns", "in_sum_checked_ns", "out_ns"} and all(v > 0 for v in row.values())
    assert res["floor_ns"] > 0

