"""A stop signal whose exception lands where Python cannot raise it (an at-fork callback, as logging registers
one) is not lost: it is sent again and stops the run at the next point that can take it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import os, signal, sys, time
from gwlbsim.linuxio.netns import Stopped, sigterm_raises
os.register_at_fork(after_in_parent=lambda: (os.kill(os.getpid(), signal.SIG{sig}), sum(range(1000))))
try:
    with sigterm_raises():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(200):  # the run going on: a lost signal would let it finish
            time.sleep(0.01)
        print("not stopped")
except Stopped as e:
    print("stopped", e.status)
    sys.exit(e.status)
"""


@pytest.mark.parametrize("sig", ["TERM", "HUP"])
def test_a_signal_raised_inside_an_at_fork_callback_still_stops_the_run(sig: str) -> None:
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(sig=sig)], capture_output=True, text=True,
                         timeout=30)
    status = 128 + signal.Signals[f"SIG{sig}"]
    assert res.returncode == status, res
    assert res.stdout.strip() == f"stopped {status}", res
    assert "Traceback" not in res.stderr and "ignored" not in res.stderr, res.stderr
