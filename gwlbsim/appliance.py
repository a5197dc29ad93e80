"""Appliances under test: how to start one inside its namespace, know it is ready, watch it and stop it.

An appliance is any program, given as a command template. Placeholders (``{name}``) are filled per
instance before the template is split like a shell would (no shell runs it):

=================  ==============================================================================
``{python}``       this Python interpreter
``{hook}``         the shipped one-arm passthrough hook for gwlbtun-style handlers (``sh {hook}``)
``{hook:MODE}``    the shipped hook of a deployment mode (``{hook:passthrough}``, ``{hook:routed}``,
                   ``{hook:nat}``, ``{hook:local}``)
``{health_port}``  the health port the suite probes
``{flow_timeout}`` flow idle timeout to configure (seconds)
``{tunnel_timeout}`` tunnel idle timeout to configure (seconds, 0 = never)
``{netns}``        the namespace the appliance runs in
``{address}``      the appliance's address (where GENEVE arrives)
``{gwlb_address}`` the fake GWLB's address facing it
``{index}``        the instance number (0, 1, ...)
``{workdir}``      a directory for this instance's files
=================  ==============================================================================

The appliance is a black box: nothing here imports its code.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gwlbsim.linuxio.httpprobe import ProbeResult, http_probe, tcp_probe
from gwlbsim.linuxio.netns import Lab

HOOK_DIR = Path(__file__).parent / "data" / "hooks"


#: the deployment modes with a shipped hook: how packets get from gwi- back to gwo- in the appliance
MODES = {
    "passthrough": "tc mirred redirects every packet from gwi- to gwo- (netfilter does not see it)",
    "routed": "the kernel routes every packet from gwi- out of gwo- (policy routing per tunnel): iptables and "
              "nftables FORWARD rules see it and can drop it",
    "nat": "two-arm NAT: traffic between VPC addresses is routed back out of gwo-; traffic to the internet leaves "
           "by a second arm (eth1), masqueraded, and its replies go back into the flow's tunnel",
    "local": "local termination: TCP flows to port 7780 are answered by a service in the appliance's namespace "
             "(TPROXY), whose replies leave through the flow's gwo-; everything else is routed back out of gwo-",
}
#: the modes whose appliances get a second arm toward an internet namespace
INTERNET_MODES = frozenset({"nat"})
#: the TCP port the local mode's shipped hook terminates (GWLBSIM_LOCAL_PORTS changes it) and the reference's
#: responder answers in that mode
LOCAL_PORT = 7780


def hook_path(name: str = "passthrough") -> Path:
    """A shipped hook script for gwlbtun-style appliances, by deployment mode (see :data:`MODES`)."""
    p = HOOK_DIR / f"{name}.sh"
    if name not in MODES or not p.exists():
        raise FileNotFoundError(f"no shipped hook for mode {name!r}; modes: {', '.join(MODES)}")
    return p


class _Hooks:
    """The ``{hook}`` placeholder: ``{hook}`` is the passthrough hook's path, ``{hook:MODE}`` that mode's."""

    def __format__(self, spec: str) -> str:
        try:
            return str(hook_path(spec or "passthrough"))
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None

    def __str__(self) -> str:
        return format(self, "")


#: how an appliance answers health checks (none: it is not health-checked)
HEALTH_PROTOCOLS = ("http", "tcp", "none")

#: the values of gwlb-reference --datapath (the reference is run as a black box: its CLI, not its code); auto is
#: the kernel path where it can run
DATAPATHS = ("auto", "kernel", "python")


def reference_command(mode: str = "passthrough", datapath: str = "auto") -> str:
    """The reference appliance's command template, with the shipped hook of deployment ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    if datapath not in DATAPATHS:
        raise ValueError(f"unknown datapath {datapath!r}; datapaths: {', '.join(DATAPATHS)}")
    hook = "{hook}" if mode == "passthrough" else f"{{hook:{mode}}}"
    responder = f" --local-responder {LOCAL_PORT}" if mode == "local" else ""
    chosen = "" if datapath == "auto" else f" --datapath {datapath}"
    return (f"{{python}} -m gwlbsim.reference.cli -c 'sh {hook}' -r 'sh {hook}' -p {{health_port}} -j "
            "-i {flow_timeout} -t {tunnel_timeout}" + responder + chosen)


REFERENCE_COMMAND = reference_command()


class ApplianceError(RuntimeError):
    pass


@dataclass(frozen=True)
class ApplianceSpec:
    """How to run and check one kind of appliance."""

    command: str = REFERENCE_COMMAND
    health_protocol: str = "http"  #: "http", "tcp" or "none"
    health_port: int = 8080
    health_path: str = "/"
    ready_timeout: float = 20.0  #: seconds to wait for the first healthy answer
    flow_timeout: float = 350.0  #: the flow timeout the appliance is configured with
    tunnel_timeout: float = 0.0  #: the tunnel timeout it is configured with (0 = none)
    stop_timeout: float = 20.0  #: seconds a stop signal may take before SIGKILL
    name: str = "reference"

    def __post_init__(self) -> None:
        if self.health_protocol not in HEALTH_PROTOCOLS:
            raise ValueError(f"health protocol must be http, tcp or none, not {self.health_protocol!r}")
        if not 1 <= self.health_port <= 65535:
            raise ValueError(f"health port {self.health_port} is not within 1-65535")
        if self.ready_timeout <= 0:
            raise ValueError("readiness timeout must be positive")
        try:
            self.argv(**_sample_context())
        except KeyError as e:
            raise ValueError(f"unknown placeholder {{{e.args[0]}}} in appliance command {self.command!r}; "
                             f"known: {', '.join(sorted(_sample_context()))}") from None
        except ValueError as e:
            raise ValueError(f"appliance command {self.command!r}: {e}") from None

    def with_(self, **changes: Any) -> ApplianceSpec:
        return replace(self, **changes)

    def context(self, **ctx: Any) -> dict[str, Any]:
        base = {"python": sys.executable, "hook": _Hooks(), "health_port": self.health_port,
                "flow_timeout": _num(self.flow_timeout), "tunnel_timeout": _num(self.tunnel_timeout)}
        base.update(ctx)
        return base

    def argv(self, **ctx: Any) -> list[str]:
        return shlex.split(self.command.format_map(self.context(**ctx)))

    def program(self) -> str:
        """The program the command runs (its first word, placeholders filled)."""
        argv = self.argv(**_sample_context())
        return argv[0] if argv else ""


def _num(v: float) -> str:
    return f"{v:g}"


def _sample_context() -> dict[str, Any]:
    return {"netns": "ns", "address": "10.0.0.2", "gwlb_address": "10.0.0.1", "index": 0, "workdir": "/tmp",
            "python": sys.executable, "hook": _Hooks(), "health_port": 1, "flow_timeout": 1, "tunnel_timeout": 0}


@dataclass
class RunningAppliance:
    """One started instance. ``proc`` is the appliance itself (``ip netns exec`` execs into it)."""

    lab: Lab
    spec: ApplianceSpec
    ns: str  #: the appliance's namespace
    address: str  #: its address, where GENEVE and health probes go
    gwlb_ns: str  #: the namespace probes come from (the fake GWLB's)
    gwlb_address: str
    index: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  #: added to the environment it starts with

    @property
    def log_path(self) -> Path:
        return self.workdir / f"appliance-{self.index}.log"

    def start(self, wait: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise ApplianceError(f"appliance {self.index} is already running")
        self.argv = self.spec.argv(netns=self.ns, address=self.address, gwlb_address=self.gwlb_address,
                                   index=self.index, workdir=str(self.workdir))
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {shlex.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = self.lab.popen(self.ns, self.argv, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=self.workdir,
                                           env={**os.environ, **self.env} if self.env else None)
            except OSError as e:
                raise ApplianceError(f"cannot start appliance: {e}") from e
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout
        last: ProbeResult | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                status = self.proc.returncode if self.proc is not None else None
                raise ApplianceError(f"appliance {self.index} exited with status {status} "
                                     f"before becoming ready; its output:\n{self.output_tail()}")
            if self.spec.health_protocol == "none":
                time.sleep(min(1.0, self.spec.ready_timeout))
                return
            last = self.health(timeout=1.0)
            if last.ok and (self.spec.health_protocol == "tcp" or last.status == 200):
                return
            time.sleep(0.1)
        raise ApplianceError(f"appliance {self.index} not healthy within {self.spec.ready_timeout:g} s "
                             f"(last probe: {last}); its output:\n{self.output_tail()}")

    def health(self, timeout: float = 5.0) -> ProbeResult:
        if self.spec.health_protocol == "tcp":
            return tcp_probe(self.address, self.spec.health_port, timeout, ns=self.gwlb_ns)
        return http_probe(self.address, self.spec.health_port, self.spec.health_path, timeout, ns=self.gwlb_ns)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        return self.lab.stop_process(self.proc, timeout=self.spec.stop_timeout, sig=sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def fd_count(self) -> int:
        """Open file descriptors of the appliance process (and none if it is gone)."""
        if self.proc is None or not self.alive():
            return 0
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except FileNotFoundError:
            return 0

    def devices(self) -> list[str]:
        return list(self.device_indexes())

    def device_indexes(self) -> dict[str, int]:
        """The network devices in the appliance's namespace, with their interface indexes."""
        out = self.lab.run(self.ns, ["ip", "-o", "link", "show"]).stdout.decode()
        devs = {}
        for line in out.splitlines():
            idx, _, rest = line.partition(":")
            devs[rest.strip().split(":")[0].split("@")[0]] = int(idx)
        return devs

    def output_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"
