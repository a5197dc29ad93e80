"""A failing demo says why (ping's own summary, no UDP answer) and keeps the appliances' logs."""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gwlbsim import cli
from gwlbsim.linuxio.netns import OWNER_FILE
from gwlbsim.live.session import GwlbSession
from gwlbsim.progress import Progress


class _Session:
    def __init__(self, code: int, out: bytes) -> None:
        self.result = subprocess.CompletedProcess(["ping"], code, out, b"")

    def run_client(self, e: int, argv: list[str], check: bool = True) -> Any:
        return self.result


def test_a_failed_ping_says_what_ping_said() -> None:
    out = io.StringIO()
    prog = Progress("demo", stream=out)
    summary = b"3 packets transmitted, 0 received, 100% packet loss, time 2043ms"
    assert not cli._demo_ping(_Session(1, b"PING 10.20.0.2\n\n--- stats ---\n" + summary + b"\n"), 0, "10.20.0.2",
                              prog)
    assert cli._demo_ping(_Session(0, b""), 0, "10.20.0.2", prog)
    lines = out.getvalue().splitlines()
    assert lines == [f"endpoint 0: ping 10.20.0.2: FAILED ({summary.decode()})", "endpoint 0: ping 10.20.0.2: ok"]


@pytest.mark.parametrize(("answer", "reason"), [(None, "no answer"), (b"pong", "answer b'pong', expected b'gnip'")])
def test_a_failed_udp_exchange_says_what_came_back(monkeypatch: pytest.MonkeyPatch, answer: bytes | None,
                                                   reason: str) -> None:
    monkeypatch.setattr(cli, "udp_exchange", lambda *a, **k: answer)
    out = io.StringIO()
    assert not cli._demo_udp(object(), 0, Progress("demo", stream=out))
    assert out.getvalue().splitlines() == [f"endpoint 0: UDP exchange over IPv4: FAILED ({reason})",
                                           f"endpoint 0: UDP exchange over IPv6: FAILED ({reason})"]


def test_the_logs_of_a_temporary_working_directory_are_kept_elsewhere() -> None:
    s = GwlbSession()
    assert s.keep_logs() is None  # not started: nothing to keep
    s._tmp = tempfile.TemporaryDirectory(prefix="gwlbsim-")
    s.workdir = Path(s._tmp.name)
    (s.workdir / "reference-0.log").write_text("create hook failed\n")
    (s.workdir / OWNER_FILE).write_text("1")
    kept = s.keep_logs()
    try:
        s._tmp.cleanup()  # what close() does
        assert kept is not None and (kept / "reference-0.log").read_text() == "create hook failed\n"
        assert not (kept / OWNER_FILE).exists(), "gwlbsim cleanup must not take the kept logs for a dead run's"
    finally:
        if kept is not None:
            import shutil

            shutil.rmtree(kept)
