"""A whole live run: namespaces, appliances, the fake GWLB, and the way to tear it all down.

::

    with GwlbSession(SessionOptions(appliances=2)) as s:
        s.wait_healthy()
        s.run_client(0, ["ping", "-c", "3", s.server_v4(0)])

Everything is owned by the session's :class:`gwlbsim.linuxio.netns.Lab` and removed on exit, however it comes.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gwlbsim.appliance import INTERNET_MODES, ApplianceSpec, RunningAppliance
from gwlbsim.config import GwlbConfig, HealthCheck
from gwlbsim.linuxio.netns import OWNER_FILE, Lab
from gwlbsim.live.balancer import LiveGwlb
from gwlbsim.live.topology import Topology, build
from gwlbsim.model import HEALTHY, Encapsulation, GwlbModel


@dataclass
class SessionOptions:
    zones: int = 1
    appliances: int = 2
    endpoints: int = 1
    spec: ApplianceSpec = field(default_factory=ApplianceSpec)
    #: GWLB settings; None: AWS defaults, with the health check aimed at the appliance's health port
    config: GwlbConfig | None = None
    encapsulation: Encapsulation | None = None
    workdir: Path | None = None
    start_appliances: bool = True
    #: model time runs this many times faster than real time (timeouts, health intervals); 1 = real
    time_scale: float = 1.0
    #: environment variables for the appliances (on top of this process's)
    appliance_env: dict[str, str] = field(default_factory=dict)
    #: how the appliances are deployed (gwlbsim.appliance.MODES): two-arm modes get the internet namespace
    mode: str = "passthrough"


def health_check_for(spec: ApplianceSpec, base: HealthCheck | None = None) -> HealthCheck:
    """The GWLB health check that probes an appliance the way its spec says it answers, fast."""
    base = base or HealthCheck(interval=5, timeout=2, healthy_threshold=2, unhealthy_threshold=2)
    if spec.health_protocol == "none":
        return base
    return replace(base, protocol="TCP" if spec.health_protocol == "tcp" else "HTTP", port=spec.health_port,
                   path=spec.health_path, matcher="200")


class GwlbSession:
    """A running world: the namespaces (:class:`Lab`, topology), the fake GWLB (model and :class:`LiveGwlb`)
    and the appliance instances under test, started and stopped together (``with GwlbSession(...)``)."""

    def __init__(self, options: SessionOptions | None = None) -> None:
        self.options = options or SessionOptions()
        self.lab: Lab | None = None
        self.topo: Topology | None = None
        self.model: GwlbModel | None = None
        self.gwlb: LiveGwlb | None = None
        self.appliances: list[RunningAppliance] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir: Path | None = None
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------------------------------ lifecycle

    def clock(self) -> float:
        return (time.monotonic() - self._t0) * self.options.time_scale

    def start(self) -> GwlbSession:
        o = self.options
        try:
            self.lab = Lab()
            if o.workdir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="gwlbsim-")
                self.workdir = Path(self._tmp.name)
                (self.workdir / OWNER_FILE).write_text(str(os.getpid()))  # gwlbsim cleanup, after a SIGKILL
            else:
                self.workdir = o.workdir
                self.workdir.mkdir(parents=True, exist_ok=True)
            self.topo = topo = build(self.lab, zones=o.zones, appliances=o.appliances, endpoints=o.endpoints,
                                     internet=o.mode in INTERNET_MODES)
            config = o.config or GwlbConfig(health_check=health_check_for(o.spec))
            self.model = GwlbModel(config, topo.nodes, o.encapsulation)
            now = self.clock()
            for e in topo.endpoints:
                self.model.add_endpoint(e.eni_id, e.zone, e.attachment_id)
            for a in topo.appliances:
                self.model.register_target(a.id, a.address, a.zone, now)
                if o.spec.health_protocol == "none":  # no health checks at all
                    self.model.assume_healthy(a.id, now)
                self.appliances.append(RunningAppliance(self.lab, o.spec, a.ns, a.address, topo.gwlb_ns,
                                                        a.gwlb_address, a.index, self.workdir,
                                                        env=dict(o.appliance_env)))
            if o.start_appliances:
                for ra in self.appliances:
                    ra.start(wait=False)
                for ra in self.appliances:
                    ra.wait_ready()
            self.gwlb = LiveGwlb(topo, self.model, self.clock)
            self.gwlb.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.gwlb is not None:
            self.gwlb.stop()
            self.gwlb = None
        for ra in self.appliances:
            ra.stop()
        if self.lab is not None:
            self.lab.close()
            self.lab = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def keep_logs(self) -> Path | None:
        """Where the appliances' logs will still be after :meth:`close`: the working directory the caller gave,
        else a copy of the temporary one (which close removes); None before the session started."""
        if self.workdir is None:
            return None
        if self._tmp is None:
            return self.workdir
        dest = Path(tempfile.mkdtemp(prefix="gwlbsim-logs-"))
        shutil.copytree(self.workdir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(OWNER_FILE))
        return dest

    def __enter__(self) -> GwlbSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- using

    def call(self, fn: Callable[[GwlbModel], Any]) -> Any:
        assert self.gwlb is not None
        return self.gwlb.call(fn)

    def running(self) -> tuple[Lab, Topology]:
        """The namespaces and topology of the started session."""
        if self.lab is None or self.topo is None:
            raise RuntimeError("the session is not started")
        return self.lab, self.topo

    def target_states(self) -> dict[str, str]:
        return self.call(lambda m: {t.id: t.state for t in m.targets.values()})

    def wait_healthy(self, timeout: float = 60.0, targets: list[str] | None = None) -> None:
        """Wait until the GWLB sees the targets (all by default) as healthy."""
        want = set(targets or [a.id for a in self.running()[1].appliances])
        deadline = time.monotonic() + timeout
        while True:
            states = self.target_states()
            if all(states.get(t) == HEALTHY for t in want):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not healthy within {timeout:g} s: {states}\n" +
                                   "\n".join(a.output_tail(10) for a in self.appliances))
            time.sleep(0.1)

    def wait_state(self, target: str, state: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.target_states().get(target) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"target {target} not {state} within {timeout:g} s: {self.target_states()}")
            time.sleep(0.1)

    def client_socket(self, e: int = 0, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> socket.socket:
        lab, topo = self.running()
        return lab.socket(topo.endpoints[e].client_ns, family, type)

    def server_socket(self, e: int = 0, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> socket.socket:
        lab, topo = self.running()
        return lab.socket(topo.endpoints[e].server_ns, family, type)

    def run_client(self, e: int, argv: list[str], **kw: Any) -> Any:
        lab, topo = self.running()
        return lab.run(topo.endpoints[e].client_ns, argv, **kw)

    def run_server(self, e: int, argv: list[str], **kw: Any) -> Any:
        lab, topo = self.running()
        return lab.run(topo.endpoints[e].server_ns, argv, **kw)

    def report(self) -> str:
        """Targets, flows per target and CloudWatch metrics, as text."""
        def collect(m: GwlbModel) -> tuple[list[str], dict[str, int]]:
            rows = []
            for t in m.targets.values():
                drops = ", ".join(f"{k}={v}" for k, v in sorted(t.drops.items()))
                rows.append(f"  {t.id:6} {t.address:15} zone {t.zone}  {t.state:9}  flows {t.flows:6}"
                            + (f"  drops: {drops}" if drops else ""))
            return rows, m.cloudwatch()

        rows, cw = self.call(collect)
        return "\n".join(["targets:", *rows, "metrics:", *(f"  {k} = {v}" for k, v in cw.items())])
