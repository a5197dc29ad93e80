"""End-to-end fixtures: a gwlb namespace and an appliance namespace linked by a veth, the reference running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gwlbsim.appliance import hook_path
from gwlbsim.linuxio.httpprobe import ProbeResult, http_probe, wait_healthy
from gwlbsim.linuxio.netns import Lab
from gwlbsim.probe import GenevePeer

PASSTHROUGH = hook_path()

GWLB_IP, APP_IP = "10.99.0.1", "10.99.0.2"
HEALTH_PORT = 8080


@dataclass
class Topo:
    lab: Lab
    gwlb: str
    app: str
    peer: GenevePeer
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, create: str | None = None, destroy: str | None = None, wait: bool = True,
              health: bool = True) -> subprocess.Popen[bytes]:
        """Start the reference in the appliance namespace (JSON health on 8080 unless told otherwise)."""
        argv = [sys.executable, "-m", "gwlbsim.reference.cli", "-c", create or f"sh {PASSTHROUGH}", "-d"]
        if destroy:
            argv += ["-r", destroy]
        if health and "-p" not in args:
            argv += ["-p", str(HEALTH_PORT)]
            if "-s" not in args and "-j" not in args:
                argv += ["-j"]
        argv += list(args)
        log = open(self.tmp / f"appliance-{len(self.procs)}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = self.lab.popen(self.app, argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        if wait and health:
            r = wait_healthy(APP_IP, HEALTH_PORT, timeout=20, ns=self.gwlb)
            assert r.status == 200, f"appliance did not become healthy: {r}\n{self.log()}"
        return proc

    def log(self, i: int = -1) -> str:
        logs = sorted(self.tmp.glob("appliance-*.log"))
        return logs[i].read_text(errors="replace") if logs else ""

    def health(self, path: str = "/") -> ProbeResult:
        return http_probe(APP_IP, HEALTH_PORT, path, timeout=5, ns=self.gwlb)

    def status(self) -> dict[str, Any]:
        r = self.health()
        assert r.ok, r
        return json.loads(r.body)

    def links(self) -> list[str]:
        out = self.lab.run(self.app, ["ip", "-o", "link", "show"]).stdout.decode()
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log()}")
            time.sleep(0.05)


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topo]:
    with Lab() as lab:
        g = lab.namespace("gwlb")
        a = lab.namespace("app")
        lab.veth(g, "to-app", a, "eth0", addr_a=f"{GWLB_IP}/24", addr_b=f"{APP_IP}/24", mtu=9001)
        with GenevePeer(g, GWLB_IP, APP_IP) as peer:
            yield Topo(lab, g, a, peer, tmp_path)
