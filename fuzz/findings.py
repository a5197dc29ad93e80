"""What the network fuzzer reports: findings, each with a kind, a reason, a level and a conformance requirement.

The requirement ids and levels are the conformance suite's (``gwlbsim.conformance.requirements``), so a fuzzer finding
and a failed conformance test name the same rule. A finding is *fatal* when the appliance can no longer be
fuzzed meaningfully (it died, hangs, is unhealthy, stopped returning valid flows, or leaks); the fuzzer then
stops sending. Every other finding is recorded with the datagrams that caused it and fuzzing goes on. Distinct
findings are keyed by ``(kind, reason)``: repeats only add to the count.

===================  =====  ======  ===========  ====================================================================
kind                 fatal  level   requirement  meaning
===================  =====  ======  ===========  ====================================================================
crashed              yes    MUST    ROBUST-1     the appliance process exited (reason: ``exit_N`` or ``signal_NAME``)
hang                 yes    MUST    ROBUST-1     alive, but its health port does not answer within the timeout
unhealthy            yes    MUST    ROBUST-1     its health check fails (refused, reset, or not HTTP 200)
lost_flow            yes    MUST    ROBUST-1     a probe flow sent with a fresh cookie was not returned in time
fd_growth            yes    MUST    ROBUST-1     its open file descriptors grew past the limit (a leak)
device_growth        yes    MUST    ROBUST-1     its namespace's network devices grew past the limit
forwarded_malformed  no     MUST    ROBUST-1/2   it sent back a labelled malformed datagram GWLB drops for a GENEVE
                                                 or GWLB-option reason (ROBUST-2 for ``control_packet`` and
                                                 ``unknown_critical_option``; the reason is the codec's)
forwarded_mutant     no     MUST    ROBUST-4/2   the same for a havoc mutant or an oversize datagram
bad_return           no     MUST    ECHO-2       it sent GWLB a datagram GWLB drops that is not one it was sent
wrong_header         no     MUST    ECHO-2       a return for a flow it was sent, with a header never sent for it
wrong_cookie         no     MUST    COOKIE-1     the same, and only the cookie differs (another flow's, or made up)
wrong_return         no     MUST    COOKIE-2     a probe flow came back with an earlier header of its own, not the
                                                 latest one sent (the cookie did not switch)
unknown_flow         no     MUST    SYM-3        a return for a flow (ENI and 5-tuple) it was never sent
forwarded_bad_inner  no     SHOULD  ROBUST-6     it passed through a datagram whose inner packet is malformed:
                                                 ``truncated_inner`` (inner header cut short, or its IPv4 total /
                                                 IPv6 payload length claims more bytes than are present) or
                                                 ``protocol_mismatch`` (inner IP version contradicts the protocol
                                                 type)
===================  =====  ======  ===========  ====================================================================

The inner-only codec reasons are the codec's own ``gwlbsim.wire.geneve.INNER_REASONS`` (the conformance suite uses
the same set): ``truncated_inner`` and
``protocol_mismatch``. The codec finds them only after the GENEVE header and the GWLB options passed every
check; every other reason of ``gwlbsim.wire.geneve`` (``no_inner_packet`` included) is malformed GENEVE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from gwlbsim.wire import geneve

MUST, SHOULD = "MUST", "SHOULD"

#: Codec reasons for which only the inner packet is malformed: forwarding it is a SHOULD-level finding (ROBUST-6)
INNER_REASONS = geneve.INNER_REASONS
#: Codec reasons that RFC 8926's receiver rules cover (ROBUST-2) rather than GWLB's format rules (ROBUST-1).
RFC_RECEIVER_REASONS = frozenset({"control_packet", "unknown_critical_option"})


class Kind(NamedTuple):
    name: str
    fatal: bool
    level: str
    requirement: str
    meaning: str


CATALOGUE: dict[str, Kind] = {k.name: k for k in (
    Kind("crashed", True, MUST, "ROBUST-1", "the appliance process exited"),
    Kind("hang", True, MUST, "ROBUST-1", "alive, but its health port does not answer within the timeout"),
    Kind("unhealthy", True, MUST, "ROBUST-1", "its health check fails (refused, reset, or not HTTP 200)"),
    Kind("lost_flow", True, MUST, "ROBUST-1", "a probe flow sent with a fresh cookie was not returned in time"),
    Kind("fd_growth", True, MUST, "ROBUST-1", "its open file descriptors grew past the limit (a leak)"),
    Kind("device_growth", True, MUST, "ROBUST-1", "its namespace's network devices grew past the limit"),
    Kind("forwarded_malformed", False, MUST, "ROBUST-1",
         "it sent back a labelled malformed datagram that GWLB drops (GENEVE or GWLB-option fault)"),
    Kind("forwarded_mutant", False, MUST, "ROBUST-4",
         "it sent back a havoc mutant or oversize datagram that GWLB drops"),
    Kind("bad_return", False, MUST, "ECHO-2", "it sent GWLB a datagram GWLB drops that is not one it was sent"),
    Kind("wrong_header", False, MUST, "ECHO-2", "a return for a flow it was sent, with a header never sent for it"),
    Kind("wrong_cookie", False, MUST, "COOKIE-1", "a return for a flow it was sent, with a cookie never sent for it"),
    Kind("wrong_return", False, MUST, "COOKIE-2", "a probe flow came back with an earlier header, not the latest"),
    Kind("unknown_flow", False, MUST, "SYM-3", "a return for a flow it was never sent"),
    Kind("forwarded_bad_inner", False, SHOULD, "ROBUST-6", "it passed through a malformed inner packet"),
)}
KINDS: tuple[str, ...] = tuple(CATALOGUE)
FATAL_KINDS: frozenset[str] = frozenset(k.name for k in CATALOGUE.values() if k.fatal)
#: Kinds that only the probe rounds can find (a replay must send probes to reproduce them).
PROBE_KINDS = frozenset({"lost_flow", "wrong_return"})


class Rating(NamedTuple):
    fatal: bool
    level: str
    requirement: str


def rate(kind: str, reason: str) -> Rating:
    """How grave a finding of ``kind`` with ``reason`` is, and which requirement of the catalogue it breaks."""
    k = CATALOGUE[kind]
    requirement = k.requirement
    if kind in ("forwarded_malformed", "forwarded_mutant") and reason in RFC_RECEIVER_REASONS:
        requirement = "ROBUST-2"
    return Rating(k.fatal, k.level, requirement)


def forwarded_kind(reason: str, label: str) -> str:
    """The kind of finding for a datagram sent with ``label`` that came back although the codec drops it with
    ``reason``."""
    if reason in INNER_REASONS:
        return "forwarded_bad_inner"
    if label in ("havoc", "oversize", ""):
        return "forwarded_mutant"
    return "forwarded_malformed"


@dataclass(frozen=True)
class Finding:
    kind: str
    reason: str  #: short and stable: with ``kind``, what makes findings distinct
    detail: str  #: this occurrence, for people

    def __post_init__(self) -> None:
        if self.kind not in CATALOGUE:
            raise ValueError(f"unknown finding kind {self.kind!r}")

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.reason

    @property
    def rating(self) -> Rating:
        return rate(self.kind, self.reason)

    @property
    def fatal(self) -> bool:
        return self.rating.fatal

    @property
    def level(self) -> str:
        return self.rating.level

    @property
    def requirement(self) -> str:
        return self.rating.requirement

    @property
    def grade(self) -> str:
        """``FATAL``, ``MUST`` or ``SHOULD``: the order a report lists them in."""
        return "FATAL" if self.fatal else self.level

    def describe(self) -> str:
        """E.g. ``crashed (signal_SIGSEGV) [fatal, MUST ROBUST-1]: ...``."""
        fatal = "fatal, " if self.fatal else ""
        return f"{self.kind} ({self.reason}) [{fatal}{self.level} {self.requirement}]: {self.detail}"


def order(finding: Finding) -> int:
    """Sort key of reports: fatal first, then MUST, then SHOULD."""
    return 0 if finding.fatal else 1 if finding.level == MUST else 2


def matches(found: Iterable[Finding], target: Finding) -> bool:
    """Whether ``found`` (a replay's findings) reproduces ``target``: the same kind for a fatal finding (a
    crash is a crash, whatever its exit status), the same kind and reason otherwise."""
    return any(f.kind == target.kind if target.fatal else f.key == target.key for f in found)
