"""Keeping each flow on one datapath worker, in both directions, with two tiny eBPF programs.

With several worker processes every worker has its own flow cache, so the return of a flow must reach
the worker that saw the flow arrive. Both choices are made by the kernel with the same function of the
inner packet's *symmetric* flow identity (so that a flow's two directions agree):

* GENEVE datagrams: the workers' UDP sockets form an SO_REUSEPORT group; a program attached with
  SO_ATTACH_REUSEPORT_EBPF picks the socket (the packet data starts at the GENEVE header);
* packets out of a tunnel device: the devices are multi-queue TUNs, one queue per worker; a program
  attached with TUNSETSTEERINGEBPF picks the queue (the data starts at the inner IP header).

The function, :func:`worker_of`: IPv4: source address XOR destination address, XOR (source port XOR
destination port) for unfragmented TCP and UDP; IPv6: the XOR of the eight address words; then a
multiplicative mix, modulo the worker count. Anything else goes to worker 0. It is a function of the flow
key the core uses (gwlbsim.reference.core keys a flow on the same fields), so both directions of a flow land on
the same worker.

The programs are written here as eBPF instructions (LD_ABS/LD_IND loads; no maps, no helpers) and loaded
with the bpf(2) system call through ctypes; root (CAP_BPF / CAP_NET_ADMIN) is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
SO_ATTACH_REUSEPORT_EBPF = 52
TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)
MIX = 0x9E3779B1

# instruction fields
_LD, _LDX, _ALU, _JMP, _ALU64 = 0x00, 0x01, 0x04, 0x05, 0x07
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND = 0x20, 0x40
_K, _X = 0x00, 0x08
_ADD, _MUL, _AND, _LSH, _RSH, _MOD, _XOR, _MOV = 0x00, 0x20, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0
_JA, _JEQ, _JNE, _EXIT = 0x00, 0x10, 0x50, 0x90
_SIZE = {1: _B, 2: _H, 4: _W}


class SteeringError(OSError):
    pass


class _Asm:
    """Just enough of an eBPF assembler: 32-bit ALU, packet loads, jumps to labels."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, int, int, int | str]] = []  # op, dst, src, imm, jump target
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def _emit(self, op: int, dst: int = 0, src: int = 0, imm: int = 0, target: int | str = 0) -> None:
        self.code.append((op, dst, src, imm, target))

    def alu(self, op: int, dst: int, imm: int | None = None, src: int | None = None, wide: bool = False) -> None:
        cls = _ALU64 if wide else _ALU
        if src is not None:
            self._emit(cls | op | _X, dst, src)
        else:
            self._emit(cls | op | _K, dst, 0, imm if imm is not None else 0)

    def load(self, size: int, offset: int, index: int | None = None) -> None:
        """r0 = the packet's big-endian integer of ``size`` bytes at ``offset`` (+ register ``index``)."""
        if index is None:
            self._emit(_LD | _ABS | _SIZE[size], 0, 0, offset)
        else:
            self._emit(_LD | _IND | _SIZE[size], 0, index, offset)

    def jump(self, op: int, target: str, dst: int = 0, imm: int = 0) -> None:
        self._emit(_JMP | op | _K, dst, 0, imm, target)

    def exit(self) -> None:
        self._emit(_JMP | _EXIT)

    def assemble(self) -> bytes:
        out = []
        for pc, (op, dst, src, imm, target) in enumerate(self.code):
            off = self.labels[target] - pc - 1 if isinstance(target, str) else 0
            if imm >= 1 << 31:
                imm -= 1 << 32
            out.append(struct.pack("<BBhi", op, (src << 4) | dst, off, imm))
        return b"".join(out)


def program(workers: int, encapsulated: bool) -> bytes:
    """The steering program: returns :func:`worker_of` of the packet (``encapsulated``: a GENEVE payload)."""
    if not 1 <= workers <= 1024:
        raise ValueError(f"worker count {workers} out of range")
    a = _Asm()
    R0, R1, R6, R7, R8, R9 = 0, 1, 6, 7, 8, 9
    a.alu(_MOV, R6, src=R1, wide=True)  # the packet (context) for the loads
    if encapsulated:  # the inner packet starts after the GENEVE header: 8 + option length
        a.load(1, 0)
        a.alu(_AND, R0, 0x3F)
        a.alu(_LSH, R0, 2)
        a.alu(_ADD, R0, 8)
        a.alu(_MOV, R7, src=R0)
    else:
        a.alu(_MOV, R7, 0)
    a.alu(_MOV, R8, 0)  # the hash
    a.load(1, 0, R7)
    a.alu(_RSH, R0, 4)
    a.jump(_JEQ, "v4", R0, 4)
    a.jump(_JEQ, "v6", R0, 6)
    a.alu(_MOV, R0, 0)
    a.exit()
    a.label("v4")
    a.load(4, 12, R7)
    a.alu(_MOV, R8, src=R0)
    a.load(4, 16, R7)
    a.alu(_XOR, R8, src=R0)
    a.load(1, 9, R7)
    a.alu(_MOV, R9, src=R0)
    a.jump(_JEQ, "ports", R9, 6)
    a.jump(_JEQ, "ports", R9, 17)
    a.jump(_JA, "mix")
    a.label("ports")
    a.load(2, 6, R7)
    a.alu(_AND, R0, 0x3FFF)
    a.jump(_JNE, "mix", R0, 0)  # a fragment: no ports (the core keys it on addresses and protocol)
    a.load(1, 0, R7)
    a.alu(_AND, R0, 0x0F)
    a.alu(_LSH, R0, 2)
    a.alu(_ADD, R0, src=R7)
    a.alu(_MOV, R7, src=R0)  # the transport header
    a.load(2, 0, R7)
    a.alu(_MOV, R9, src=R0)
    a.load(2, 2, R7)
    a.alu(_XOR, R9, src=R0)
    a.alu(_XOR, R8, src=R9)
    a.jump(_JA, "mix")
    a.label("v6")
    for off in range(8, 40, 4):
        a.load(4, off, R7)
        a.alu(_XOR, R8, src=R0)
    a.label("mix")
    a.alu(_MOV, R0, src=R8)
    a.alu(_MUL, R0, MIX)
    a.alu(_RSH, R0, 16)
    a.alu(_MOD, R0, workers)
    a.exit()
    return a.assemble()


def worker_of(inner: bytes | bytearray | memoryview, workers: int) -> int:
    """What the programs compute, for an inner IP packet (tests, and the driver's own checks)."""
    if not inner:
        return 0
    version = inner[0] >> 4
    if version == 4 and len(inner) >= 20:
        src, dst = struct.unpack_from("!II", inner, 12)
        h = src ^ dst
        ihl = (inner[0] & 0x0F) * 4
        if inner[9] in (6, 17) and not struct.unpack_from("!H", inner, 6)[0] & 0x3FFF:
            if len(inner) < ihl + 4:
                return 0  # the program's load runs past the packet: it returns 0
            sp, dp = struct.unpack_from("!HH", inner, ihl)
            h ^= sp ^ dp
    elif version == 6 and len(inner) >= 40:
        h = 0
        for w in struct.unpack_from("!8I", inner, 8):
            h ^= w
    else:
        return 0
    return (((h * MIX) & 0xFFFFFFFF) >> 16) % workers


def load(prog: bytes, name: str = "gwlb_steer") -> int:
    """Load a socket-filter program; returns its file descriptor."""
    insns = ctypes.create_string_buffer(prog, len(prog))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("<IIQQIIQ", BPF_PROG_TYPE_SOCKET_FILTER, len(prog) // 8, ctypes.addressof(insns),
                       ctypes.addressof(lic), 1, len(log), ctypes.addressof(log))
    attr += struct.pack("<II16s", 0, 0, name.encode()[:15])  # kern_version, prog_flags, prog_name
    buf = ctypes.create_string_buffer(attr, 128)
    fd = _libc.syscall(SYS_BPF, BPF_PROG_LOAD, buf, 128)
    if fd < 0:
        e = ctypes.get_errno()
        raise SteeringError(e, f"cannot load the steering program: {os.strerror(e)}\n"
                               f"{log.value.decode(errors='replace')}")
    return int(fd)


def attach_reuseport(sock: socket.socket, prog_fd: int) -> None:
    """Steer the SO_REUSEPORT group ``sock`` belongs to with the program (index = bind order)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog_fd)


def attach_tun(tun_fd: int, prog_fd: int) -> None:
    """Steer the multi-queue TUN device of ``tun_fd`` with the program (queue = attach order)."""
    fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog_fd))
