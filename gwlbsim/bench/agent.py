"""The benchmark's generator and receiver: one process each, inside a namespace, driven over stdin/stdout.

Run as ``python -m gwlbsim.bench.agent`` (in a namespace, through :meth:`gwlbsim.linuxio.netns.Lab.popen`). It
reads one JSON command per line and answers each with one JSON line:

``{"op": "gen", "traffic": {...}, "rate": R, "warmup": W, "duration": D, "batch": B, "window": N, "shm": PATH,``
``"cpu": {...}, "netns": {...}, "generator": "socket"}``
    send the traffic for W + D seconds (straight to the link where the next hop is known, else from a raw
    IP socket), at R packets/s (R > 0), or closed-loop (R = 0:
    as fast as returns come back, with at most N packets unanswered; the receiver's count is read from
    the shared file PATH), or flat out (R < 0: flood, whatever the receiver sees). Answer with the
    sequence numbers and times of the measured window (after the warm-up) and what the CPU and drop
    counters of the watched processes did in it. With ``"generator": "xdp"`` the same frames are sent by an
    XDP program in the kernel (:mod:`gwlbsim.bench.xdpgen`; open-loop rates only, straight to the link).
``{"op": "recv", "traffic": {...}, "bind": [ADDR, PORT], "shm": PATH}``
    start receiving and checking returns (publishing the count of datagrams received in PATH); answers
    ``{"ready": true}`` at once. Then
``{"op": "stop", "s0": S0, "s1": S1, "quiet": Q, "max_wait": M}``
    finish when nothing has arrived for Q seconds (at most M), and answer with the counts and the latency
    of the packets whose sequence number is in [S0, S1).
``{"op": "quit"}``
"""

from __future__ import annotations

import bisect
import contextlib
import json
import mmap
import os
import select
import socket
import struct
import sys
import time
from array import array
from collections import deque
from typing import Any

from gwlbsim.bench import procstat
from gwlbsim.bench.traffic import STAMP, Traffic
from gwlbsim.linuxio import linkpath
from gwlbsim.linuxio.fastio import BatchReceiver, PacketRing, set_buffer
from gwlbsim.linuxio.linkpath import LinkRoute

_SEQ_TS = struct.Struct("!IQ")  # the stamp without its flow index (which is prebuilt)
_PORT = struct.Struct("!H")
_COUNT = struct.Struct("=Q")
RING_MIN = 256  # datagrams prebuilt at least, so that one flow still goes out in full batches
WINDOW_BYTES = 4 << 20  # closed loop: at most this many bytes unanswered
LOST_AFTER = 0.05  # closed loop: a packet unanswered for this long counts as lost (frees its window place)
#: receiver: after emptying its socket, wait this long before reading again, so that each read takes many
#: datagrams (interrupt moderation): the receiver then costs the shared CPUs far less than polling would,
#: for up to this much more measured latency
COALESCE = 0.0002


class Counter:
    """A packet count in a small shared file: the receiver writes it, the generator reads it."""

    def __init__(self, path: str | None) -> None:
        self._map: mmap.mmap | None = None
        if path:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), _COUNT.size)

    def set(self, n: int) -> None:
        if self._map is not None:
            _COUNT.pack_into(self._map, 0, n)

    def get(self) -> int:
        return _COUNT.unpack_from(self._map, 0)[0] if self._map is not None else 0

    def close(self) -> None:
        if self._map is not None:
            self._map.close()


# -------------------------------------------------------------------------------------------- generator


def build_ring(traffic: Traffic, sock: socket.socket, link: LinkRoute | None = None) -> PacketRing:
    """The traffic's packets, repeated to at least RING_MIN; as frames for ``link`` when given."""
    reps = max(1, -(-RING_MIN // traffic.flows))
    if link is not None:
        frames = [link.frame + traffic.packet(f) for f in range(traffic.flows)]
        return PacketRing(sock, frames * reps, link.address)
    templates = [traffic.packet(f) for f in range(traffic.flows)]
    return PacketRing(sock, templates * reps, (traffic.destination, 0))


def sender(traffic: Traffic) -> tuple[socket.socket, LinkRoute | None]:
    """The generator's socket: a packet socket straight to the link where the next hop is known (the IP
    layer costs a microsecond per packet, which the appliance would then not get), else a raw IP socket."""
    link = None
    with contextlib.suppress(OSError):
        link = linkpath.route_to(traffic.destination)
    if link is not None:
        return linkpath.link_socket(16 << 20), link
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    set_buffer(sock, socket.SO_SNDBUF, 16 << 20)
    return sock, None


def _watched(cmd: dict[str, Any]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The ``gen`` command's processes whose CPU time is measured (by group, this generator's too) and those
    whose namespaces' drop counters are read."""
    groups = {k: [int(p) for p in v] for k, v in cmd.get("cpu", {}).items()}
    groups["generator"] = [os.getpid()]
    return groups, {k: int(v) for k, v in cmd.get("netns", {}).items()}


def generate_xdp(cmd: dict[str, Any]) -> dict[str, Any]:
    """The ``gen`` command with the in-kernel generator."""
    from gwlbsim.bench.xdpgen import XdpGenerator

    traffic = Traffic(**cmd["traffic"])
    rate = float(cmd.get("rate") or 0)
    if rate == 0:
        raise ValueError("the XDP generator sends open-loop only (a rate, or flat out), not closed-loop")
    groups, netns_pids = _watched(cmd)
    link = linkpath.route_to(traffic.destination)
    if link is None:
        raise RuntimeError(f"the XDP generator needs {traffic.destination}'s link address, which did not resolve")
    before: list[Any] = []
    gen = XdpGenerator(traffic, link, int(cmd.get("batch", 64)))
    try:
        w = gen.run(rate, float(cmd["warmup"]), float(cmd["duration"]),
                    lambda: before.append(procstat.sample(groups, netns_pids)))
    finally:
        gen.close()
    after = procstat.sample(groups, netns_pids)
    return {"s0": w.s0, "s1": w.s1, "t0": w.t0, "t1": w.t1, "sent": w.s1, "send_errors": 0, "sent_via": "xdp",
            **procstat.delta(before[0] if before else after, after)}


def generate(cmd: dict[str, Any]) -> dict[str, Any]:
    if cmd.get("generator", "socket") == "xdp":
        return generate_xdp(cmd)
    traffic = Traffic(**cmd["traffic"])
    rate = float(cmd.get("rate") or 0)
    batch = int(cmd.get("batch", 64))
    warmup, duration = float(cmd["warmup"]), float(cmd["duration"])
    groups, netns_pids = _watched(cmd)

    # the window also stays within a few MiB, so that it fits socket buffers whatever the packet size
    window = max(1, min(int(cmd.get("window", 1024)), WINDOW_BYTES // len(traffic.packet(0))))
    returned = Counter(cmd.get("shm"))
    sock, link = sender(traffic)
    try:
        ring = build_ring(traffic, sock, link)
        frame = len(link.frame) if link else 0
        stamp_at = [off + frame + traffic.stamp_offset + 4 for off in ring.offsets]
        buf, count = ring.buffer, ring.count
        pack_into = _SEQ_TS.pack_into
        monotonic, monotonic_ns, sleep = time.monotonic, time.monotonic_ns, time.sleep

        seq = pos = 0
        s0 = -1
        t0 = 0.0
        before = None
        flight: deque[tuple[int, float]] = deque()  # closed loop: (sequence after a send, its time)
        written_off = 0  # closed loop: packets given up on
        start = monotonic()
        w0, w1 = start + warmup, start + warmup + duration
        while True:
            now = monotonic()
            if s0 < 0 and now >= w0:
                s0, t0 = seq, now
                before = procstat.sample(groups, netns_pids)
            if now >= w1:
                break
            n = batch
            if rate > 0:  # paced: what is due by now, in bursts of at most a batch
                due = int((now - start) * rate) - seq
                if due <= 0:
                    sleep(max(0.0001, (seq + min(batch, 32)) / rate - (now - start)))
                    continue
                n = min(n, due)
            elif rate == 0:  # closed loop: keep at most a window of packets unanswered
                done = returned.get() + written_off
                while flight and (flight[0][0] <= done or now - flight[0][1] > LOST_AFTER):
                    if flight[0][0] > done:
                        written_off += flight[0][0] - done
                        done = flight[0][0]
                    flight.popleft()
                room = window - (seq - done)
                if room < max(1, min(batch, window // 4)):
                    sleep(0.00005)
                    continue
                n = min(n, room)
            n = min(n, count - pos)
            ts = monotonic_ns()
            for k in range(pos, pos + n):
                pack_into(buf, stamp_at[k], seq, ts)
                seq += 1
            ring.send(pos, n)
            if rate == 0:
                flight.append((seq, now))
            pos += n
            if pos == count:
                pos = 0
        t1 = monotonic()
        after = procstat.sample(groups, netns_pids)
        assert before is not None
        return {"s0": s0, "s1": seq, "t0": t0, "t1": t1, "sent": seq, "send_errors": ring.errors,
                "sent_via": "link" if link else "ip",
                **procstat.delta(before, after)}
    finally:
        sock.close()
        returned.close()


# --------------------------------------------------------------------------------------------- receiver


class Receiver:
    """Receives returns, checks each one (length, echoed header bytes, source port), records the stamps."""

    def __init__(self, cmd: dict[str, Any]) -> None:
        traffic = Traffic(**cmd["traffic"])
        exp = traffic.expectation()
        self.flows = traffic.flows
        self.length = exp.length
        self.prefixes = exp.prefixes
        self.prefix_len = len(exp.prefixes[0])
        self.sports = exp.sports
        self.stamp_offset = exp.stamp_offset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            set_buffer(self.sock, socket.SO_RCVBUF, 16 << 20)
            self.sock.bind((cmd["bind"][0], int(cmd["bind"][1])))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.rx = BatchReceiver(self.sock, 64, (exp.length + 64 + 63) & ~63)
        self.seqs = array("I")
        self.lats = array("q")
        self.bad = 0
        self.bad_examples: list[str] = []
        self.last_arrival = time.monotonic()
        self.count = 0
        self.published = Counter(cmd.get("shm"))

    def drain(self) -> int:
        """Receive and check everything queued now. Returns how many datagrams."""
        rx = self.rx
        got = 0
        mem, names, lengths, size = rx.buffer, rx.names, rx.lengths, rx.size
        unpack_stamp, unpack_port = STAMP.unpack_from, _PORT.unpack_from
        prefixes, sports, plen, want, nflows = self.prefixes, self.sports, self.prefix_len, self.length, self.flows
        seqs_append, lats_append = self.seqs.append, self.lats.append
        so = self.stamp_offset
        while True:
            n = rx.recv()
            if not n:
                break
            now = time.monotonic_ns()
            got += n
            self.count += n
            self.published.set(self.count)
            off = 0
            for i in range(n):
                fid, seq, ts = unpack_stamp(mem, off + so)
                if (lengths[i] != want or fid >= nflows or mem[off:off + plen] != prefixes[fid]
                        or unpack_port(names, i * 16 + 2)[0] != sports[fid]):
                    self._bad(mem[off:off + lengths[i]], fid, i)
                else:
                    seqs_append(seq)
                    lats_append(now - ts)
                off += size
            if n < rx.batch:
                break
        if got:
            self.last_arrival = time.monotonic()
        return got

    def _bad(self, data: memoryview, fid: int, i: int) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            port = _PORT.unpack_from(self.rx.names, i * 16 + 2)[0]
            self.bad_examples.append(f"{len(data)} bytes from port {port} (flow {fid}): {bytes(data[:96]).hex()}")

    def finish(self, s0: int, s1: int, late: float | None = None) -> dict[str, Any]:
        """Counts and latency of the packets with sequence numbers in [s0, s1); with ``late`` (seconds), how
        many of those returned took longer."""
        span = max(0, s1 - s0)
        seen = bytearray(span)
        lats = []
        dup = outside = 0
        for seq, lat in zip(self.seqs, self.lats, strict=True):
            k = seq - s0
            if 0 <= k < span:
                if seen[k]:
                    dup += 1
                    continue
                seen[k] = 1
                lats.append(lat)
            else:
                outside += 1
        lats.sort()
        latency = {"p50": _pct(lats, 0.50), "p99": _pct(lats, 0.99), "max": _pct(lats, 1.0)}  # late ones too
        too_late = len(lats) - bisect.bisect_right(lats, late * 1e9) if late is not None else 0
        return {"received": len(self.seqs) + self.bad, "returned": len(lats), "duplicates": dup,
                "outside_window": outside, "late": too_late, "echo_errors": self.bad,
                "echo_error_examples": self.bad_examples, "latency_us": latency}

    def close(self) -> None:
        self.sock.close()
        self.published.close()


def _pct(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return round(sorted_ns[i] / 1000, 1)


def receive(cmd: dict[str, Any], commands: Commands) -> dict[str, Any]:
    r = Receiver(cmd)
    try:
        reply({"ready": True})
        stop: dict[str, Any] | None = None
        checked = 0
        while stop is None:
            got = r.drain()
            checked += got
            if not got:
                readable, _, _ = select.select([r.sock, commands.fd], [], [], 1.0)
                if commands.fd in readable:
                    stop = commands.next()
                continue
            if checked >= 4096:
                checked = 0
                if commands.ready():
                    stop = commands.next()
            time.sleep(COALESCE)
        if stop.get("op") != "stop":
            raise ValueError(f"expected a stop command while receiving, got {stop}")
        quiet, deadline = float(stop.get("quiet", 0.3)), time.monotonic() + float(stop.get("max_wait", 5.0))
        while time.monotonic() < deadline and time.monotonic() - r.last_arrival < quiet:
            if not r.drain():
                select.select([r.sock], [], [], 0.02)
        late = stop.get("late")
        return r.finish(int(stop["s0"]), int(stop["s1"]), None if late is None else float(late))
    finally:
        r.close()


# ----------------------------------------------------------------------------------------------- driver


class Commands:
    """JSON lines from stdin, read without blocking the receive loop."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self._buf = b""

    def ready(self) -> bool:
        return b"\n" in self._buf or bool(select.select([self.fd], [], [], 0)[0])

    def next(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return {"op": "quit"}
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    commands = Commands()
    while True:
        cmd = commands.next()
        op = cmd.get("op")
        try:
            if op == "quit":
                return 0
            if op == "gen":
                reply(generate(cmd))
            elif op == "recv":
                reply(receive(cmd, commands))
            else:
                reply({"error": f"unknown command {op!r}"})
        except Exception as e:  # the driver shows it; the agent stays up for the next command
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    sys.exit(main())
