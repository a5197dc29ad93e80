"""What the network fuzzer watches on a live appliance, and how it judges what comes back.

:class:`Watchdog` finds the fatal findings (crashed, hang, unhealthy, fd_growth, device_growth);
:class:`ReturnChecker` judges every datagram the appliance sends back to GWLB against what it was sent, with
the catalogue of :mod:`gwlbsim.fuzz.findings` (which mirrors the conformance suite's requirements):

* a return GWLB's parser accepts must belong to a flow (ENI and 5-tuple) the appliance was sent
  (``unknown_flow``, SYM-3) and carry a header sent for that flow (``wrong_cookie``, COOKIE-1, when only the
  cookie differs; ``wrong_header``, ECHO-2, otherwise);
* a return GWLB's parser drops is judged by why: if it is a datagram the appliance was sent, byte for byte,
  it was forwarded although it should have been dropped (``forwarded_malformed`` / ``forwarded_mutant``, MUST,
  ROBUST-1/2/4), except when only its inner packet is malformed (``forwarded_bad_inner``, SHOULD, ROBUST-6,
  also when the header is one it was sent and the inner packet differs); anything else is ``bad_return``
  (ECHO-2).
"""

from __future__ import annotations

import signal
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import NamedTuple

from gwlbsim.fuzz.findings import INNER_REASONS, Finding, forwarded_kind

from gwlbsim.appliance import RunningAppliance
from gwlbsim.traffic.record import Sent
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError, SymKey, flow_of, symmetric_key

FlowId = tuple[int, SymKey | None]  #: ENI id and symmetric 5-tuple key (None: the inner packet has none)


@dataclass(frozen=True)
class Limits:
    """How far descriptors and devices may grow from the appliance's count at start."""

    fd_growth: int = 64
    device_growth: int | None = None  #: None: two per endpoint the traffic uses, plus 16
    health_timeout: float = 3.0


def exit_reason(returncode: int | None) -> tuple[str, str]:
    """The reason (``exit_N``, ``signal_NAME``) and a description of how a process ended."""
    if returncode is None:
        return "vanished", "the appliance vanished"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"SIG{-returncode}"
        return f"signal_{name}", f"the appliance was killed by signal {-returncode} ({name})"
    return f"exit_{returncode}", f"the appliance exited with status {returncode}"


class Watchdog:
    """Checks one running appliance against the counts it had when the watchdog was made."""

    def __init__(self, app: RunningAppliance, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.base_fds = app.fd_count()
        self.base_devices = len(app.devices())
        self.fds = self.base_fds
        self.devices = self.base_devices

    def crashed(self) -> Finding | None:
        if self.app.alive():
            return None
        reason, detail = exit_reason(self.app.proc.returncode if self.app.proc is not None else None)
        return Finding("crashed", reason, detail)

    def check(self) -> Finding | None:
        """Alive, healthy, and descriptors and devices within bounds; the first problem found, or None."""
        if f := self.crashed():
            return f
        spec = self.app.spec
        if spec.health_protocol != "none":
            r = self.app.health(timeout=self.limits.health_timeout)
            if f := self.crashed():
                return f
            if not r.ok:
                if "timed out" in r.error.lower():
                    return Finding("hang", "health_timeout", f"the health port did not answer within "
                                                             f"{self.limits.health_timeout:g} s ({r.error})")
                return Finding("unhealthy", "health_error", f"health check failed: {r.error}")
            if spec.health_protocol == "http" and r.status != 200:
                return Finding("unhealthy", f"http_{r.status}", f"health check answered HTTP {r.status}")
        self.fds = self.app.fd_count()
        if self.fds - self.base_fds > self.limits.fd_growth:
            return Finding("fd_growth", "fds", f"open file descriptors grew from {self.base_fds} to {self.fds}")
        self.devices = len(self.app.devices())
        if self.limits.device_growth is not None and self.devices - self.base_devices > self.limits.device_growth:
            return Finding("device_growth", "devices",
                           f"network devices grew from {self.base_devices} to {self.devices}")
        return None


class Judged(NamedTuple):
    """A finding about one return, and the datagram it is a return of (when the appliance sent back exactly
    one it was sent; None when that is not known)."""

    finding: Finding
    origin: Sent | None


def header_len(payload: bytes) -> int:
    """The GENEVE header length the first byte claims (meaningful once the header is known to be valid)."""
    return geneve.BASE_HEADER_LEN + (payload[0] & 0x3F) * 4


def without_cookie(header: bytes, option_class: int = geneve.AWS_OPTION_CLASS) -> bytes | None:
    """``header`` with the data of its flow cookie option zeroed (None if it does not decode)."""
    try:
        h = geneve.GeneveHeader.from_bytes(header)
    except geneve.GeneveError:
        return None
    opts = tuple(replace(o, data=bytes(len(o.data)))
                 if o.option_class == option_class and o.type == geneve.OPT_FLOW_COOKIE else o for o in h.options)
    return replace(h, options=opts).to_bytes()


def _hex(data: bytes, n: int = 48) -> str:
    return data[:n].hex() + ("..." if len(data) > n else "")


class ReturnChecker:
    """Remembers what was sent to the appliance and judges each datagram it sends back to GWLB."""

    def __init__(self, option_class: int = geneve.AWS_OPTION_CLASS, *, remember: int = 100_000) -> None:
        self.option_class = option_class
        self.remember = remember  #: how many distinct recent datagrams are kept to recognise a forwarded one
        self.headers: set[bytes] = set()  #: every valid GENEVE header sent (inner packet valid or not)
        self.flows: dict[FlowId, set[bytes]] = {}  #: the headers sent validly for each flow
        self.origins: OrderedDict[bytes, Sent] = OrderedDict()
        self.returns = 0
        self._masked: dict[bytes, bytes | None] = {}  # header sent -> the same without its cookie (memo)

    def _flow(self, payload: bytes, s: geneve.Scan) -> FlowId:
        try:
            return s.eni_id, symmetric_key(payload, s.header_len, s.header_len + s.inner_len)
        except InnerError:
            return s.eni_id, None

    def sent(self, sent: Sent) -> None:
        payload = sent.payload
        self.origins[payload] = sent
        self.origins.move_to_end(payload)
        if len(self.origins) > self.remember:
            self.origins.popitem(last=False)
        try:
            s = geneve.scan(payload, option_class=self.option_class)
        except geneve.GeneveError as e:
            if e.reason in INNER_REASONS:  # the header was valid: a return may carry it with a fixed inner packet
                self.headers.add(payload[:header_len(payload)])
            return
        header = payload[:s.header_len]
        self.headers.add(header)
        self.flows.setdefault(self._flow(payload, s), set()).add(header)

    def received(self, payload: bytes) -> Judged | None:
        """None when GWLB would take ``payload`` back as a return of a flow it sent; else the finding."""
        self.returns += 1
        origin = self.origins.get(payload)
        try:
            s = geneve.scan(payload, option_class=self.option_class)
        except geneve.GeneveError as e:
            return self._dropped(payload, e, origin)
        header = payload[:s.header_len]
        flow = self._flow(payload, s)
        sent_headers = self.flows.get(flow)
        if sent_headers is None:
            return Judged(Finding("unknown_flow", "never_sent", f"the appliance returned a flow it was never sent: "
                                  f"ENI {s.eni_id:016x}, {self._describe_flow(payload, s)}; first bytes "
                                  f"{_hex(payload)}"), origin)
        if header in sent_headers:
            return None
        mine = without_cookie(header, self.option_class)
        if mine is not None and any(self._without_cookie(h) == mine for h in sent_headers):
            return Judged(Finding("wrong_cookie", "other_cookie",
                                  f"the appliance returned {self._describe_flow(payload, s)} of ENI {s.eni_id:016x} "
                                  f"with cookie {s.cookie:08x}, never sent for that flow (header {header.hex()})"),
                          origin)
        return Judged(Finding("wrong_header", "header_changed",
                              f"the appliance returned {self._describe_flow(payload, s)} of ENI {s.eni_id:016x} with a "
                              f"header never sent for that flow: {header.hex()}"), origin)

    def _dropped(self, payload: bytes, e: geneve.GeneveError, origin: Sent | None) -> Judged:
        why = f"{e.reason}: {e}"
        if e.reason in INNER_REASONS and (origin is not None or payload[:header_len(payload)] in self.headers):
            what = f"a datagram it was sent ({origin.label})" if origin is not None and origin.label else \
                "a datagram with a header it was sent"
            return Judged(Finding("forwarded_bad_inner", e.reason,
                                  f"the appliance passed through {what} whose inner packet is malformed, which GWLB "
                                  f"drops ({why}); first bytes {_hex(payload)}"), origin)
        if origin is not None:
            kind = forwarded_kind(e.reason, origin.label)
            return Judged(Finding(kind, e.reason, f"the appliance sent back a datagram it was sent "
                                                  f"({origin.label or 'unlabelled'}, {len(payload)} bytes) that GWLB "
                                                  f"drops ({why}); first bytes {_hex(payload)}"), origin)
        return Judged(Finding("bad_return", e.reason, f"the appliance sent GWLB a datagram GWLB drops ({why}), not one "
                                                      f"it was sent; first bytes {_hex(payload)}"), None)

    def _without_cookie(self, header: bytes) -> bytes | None:
        if header not in self._masked:
            self._masked[header] = without_cookie(header, self.option_class)
        return self._masked[header]

    @staticmethod
    def _describe_flow(payload: bytes, s: geneve.Scan) -> str:
        try:
            return flow_of(payload, s.header_len, s.header_len + s.inner_len)[0].describe()
        except InnerError:
            return f"an inner packet without a flow ({_hex(payload[s.header_len:], 24)})"

