"""The benchmark's in-kernel generator (``--generator xdp``): ``gwlbsim/bench/bpf/gen.bpf.c`` run by BPF_PROG_RUN
in live-frames mode, which sends the same traffic as the socket generator (the same frames, flows in the same
order, the same stamps) several times faster: the socket generator tops out near 1.2 Mpps on this machine, below
twice what the kernel datapaths take.

The frames go out of a veth device; its peer receives them only with NAPI on, so the benchmark's topology
switches the peer's GRO on (:func:`gwlbsim.linuxio.linkpath.gro`, in :func:`gwlbsim.bench.topology.build`).
Paced frames go out in bursts of at most :data:`BURST`, as the socket generator sends them.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gwlbsim.bench.traffic import Traffic
from gwlbsim.linuxio.bpfobj import BpfObject, LiveFrames, Unavailable
from gwlbsim.linuxio.linkpath import LinkRoute

SOURCE = Path(__file__).parent / "bpf" / "gen.bpf.c"
PREFIX_MAX = 128  #: as in the program: bytes before the stamp, at most
#: the largest inner packet sent: a live frame is one page less the kernel's headroom and tail (3,082 bytes
#: of frame pass on Linux 6.18, 3,482 do not)
XDP_MAX_SIZE = 3000
#: as in the program: seq, due, period, start, stop, s0 (u64); flows, next flow, prefix length, burst, left, pad
#: (u32)
_STATE = struct.Struct("=6Q6I")
BURST = 32  #: paced frames go out in bursts of at most this many, as the socket generator sends them
_NONE = (1 << 64) - 1
REPEAT = (1 << 31) - 1  #: runs per system call (it is interrupted at the stop time long before)
KICK = 0.01  #: how often the stop signal is repeated until the sending call has returned


@dataclass
class Window:
    """What a run sent: sequence numbers [s0, s1) in the measured window [t0, t1) (CLOCK_MONOTONIC seconds)."""

    s0: int
    s1: int
    t0: float
    t1: float


def _load(flows: int = 1) -> BpfObject:
    return BpfObject(SOURCE, ("generate",), ("prefixes", "state"), {"prefixes": flows})


def check() -> None:
    """Raise :class:`Unavailable` (saying why) when the generator cannot be loaded here."""
    _load().close()


class XdpGenerator:
    """The loaded generator for one traffic pattern, sending out of ``link``'s device."""

    def __init__(self, traffic: Traffic, link: LinkRoute, batch: int = 64) -> None:
        length = len(link.frame) + traffic.stamp_offset
        if length > PREFIX_MAX:
            raise Unavailable(f"the XDP generator writes at most {PREFIX_MAX} header bytes, this traffic has {length}")
        self.flows, self._length, self.batch = traffic.flows, length, batch
        self.obj = _load(traffic.flows)
        try:
            for fid in range(traffic.flows):
                head = (link.frame + traffic.packet(fid))[:length]
                self.obj.update("prefixes", struct.pack("=I", fid), head.ljust(PREFIX_MAX, b"\0"))
            self.sender: LiveFrames = self.obj.live_frames("generate", link.frame + traffic.packet(0),
                                                           socket.if_nametoindex(link.ifname), batch)
        except BaseException:
            self.obj.close()
            raise

    def run(self, rate: float, warmup: float, duration: float, at_start: Callable[[], None]) -> Window:
        """Send for ``warmup`` + ``duration`` seconds at ``rate`` packets/s (flat out if not above 0), calling
        ``at_start`` (from another thread) when the measured window begins. Call from the main thread: the
        sending system call is ended by a signal."""
        begin = time.monotonic_ns() + 1_000_000
        start = begin + int(warmup * 1e9)
        stop = start + int(duration * 1e9)
        period = int(256e9 / rate) if rate > 0 else 0
        burst = max(1, min(BURST, self.batch))
        self.obj.update("state", bytes(4), _STATE.pack(0, begin * 256, period, start, stop, _NONE, self.flows, 0,
                                                       self._length, burst, 0, 0))
        main, returned = threading.get_ident(), threading.Event()
        failed: list[BaseException] = []

        def watch() -> None:  # the window's start, then the stop signal until the sending call has returned
            try:
                if not _wait_until(returned, start):
                    at_start()
            except BaseException as e:  # raised again in the caller's thread, which stops at once
                failed.append(e)
            finally:
                if not failed:
                    _wait_until(returned, stop + 1_000_000)
                while not returned.is_set():
                    signal.pthread_kill(main, signal.SIGALRM)
                    returned.wait(KICK)

        old = signal.signal(signal.SIGALRM, lambda *_: None)
        watcher = threading.Thread(target=watch, name="xdp-generator-stop", daemon=True)
        watcher.start()
        try:
            while time.monotonic_ns() < stop and not failed:
                try:
                    self.sender.send(REPEAT)
                except InterruptedError:
                    pass
        finally:
            returned.set()
            watcher.join()
            signal.signal(signal.SIGALRM, old)
        if failed:
            raise failed[0]
        state = _STATE.unpack(self.obj.lookup("state", bytes(4), _STATE.size) or bytes(_STATE.size))
        seq, s0 = state[0], state[5]
        return Window(seq if s0 == _NONE else s0, seq, start / 1e9, stop / 1e9)

    def close(self) -> None:
        self.obj.close()


def _wait_until(event: threading.Event, ns: int) -> bool:
    """Wait until CLOCK_MONOTONIC reaches ``ns`` or ``event`` is set; whether it was set."""
    while (left := ns - time.monotonic_ns()) > 0:
        if event.wait(left / 1e9):
            return True
    return event.is_set()
