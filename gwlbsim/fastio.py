"""Batched datagram I/O for the live datapaths: recvmmsg/sendmmsg through ctypes (Linux, CPython).

One system call moves up to ``batch`` datagrams, into and out of buffers allocated once. The receiver can
also report each datagram's destination address (IP_PKTINFO), which an appliance needs in order to answer
from the address GWLB sent to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from collections.abc import Sequence

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

IP_PKTINFO = 8
MSG_DONTWAIT = 0x40
_SOL_IP = 0


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int))


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


class _SockaddrIn(ctypes.Structure):
    _fields_ = (("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4), ("sin_zero", ctypes.c_uint8 * 8))


_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int
_sendmmsg_addr = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                  use_errno=True)(("sendmmsg", _libc))

_CMSG_SPACE = 64
_PKTINFO_ADDR = struct.Struct("4s")  # ipi_addr: the header destination address


def _oserror() -> OSError:
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e))


class BatchReceiver:
    """Receives up to ``batch`` IPv4 datagrams per call into preallocated buffers.

    After :meth:`recv` returns n, for i < n: ``views[i][:lengths[i]]`` is the datagram, ``source(i)`` its
    (address, port), and ``destination(i)`` the address it was sent to (needs ``pktinfo=True``).
    """

    def __init__(self, sock: socket.socket, batch: int = 64, size: int = 65536, pktinfo: bool = False) -> None:
        self.sock = sock
        self.batch = batch
        self.size = size
        self._pktinfo = pktinfo
        if pktinfo:
            sock.setsockopt(_SOL_IP, IP_PKTINFO, 1)
        self._bufs = (ctypes.c_char * (size * batch))()
        self._names = (_SockaddrIn * batch)()
        self._ctrl = (ctypes.c_char * (_CMSG_SPACE * batch))()
        self._iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        base = ctypes.addressof(self._bufs)
        for i in range(batch):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            h = self._msgs[i].msg_hdr
            h.msg_name = ctypes.addressof(self._names[i])
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
            if pktinfo:
                h.msg_control = ctypes.addressof(self._ctrl) + i * _CMSG_SPACE
        mem = memoryview(self._bufs).cast("B")
        self.buffer = mem
        self.views = [mem[i * size:(i + 1) * size] for i in range(batch)]
        self._ctrl_view = memoryview(self._ctrl).cast("B")
        #: the source addresses as ``sockaddr_in`` records of 16 bytes (port at +2, address at +4)
        self.names = memoryview(self._names).cast("B")
        self.lengths = [0] * batch
        self.truncated = 0  #: datagrams cut short because they were larger than ``size``
        self._fd = sock.fileno()

    def recv(self, max_count: int | None = None) -> int:
        """Receive what is queued (without waiting), up to the batch size. Returns the count (0 if none)."""
        msgs = self._msgs
        n = min(self.batch, max_count or self.batch)
        for i in range(n):
            h = msgs[i].msg_hdr
            h.msg_namelen = ctypes.sizeof(_SockaddrIn)
            if self._pktinfo:
                h.msg_controllen = _CMSG_SPACE
        got = _recvmmsg(self._fd, msgs, n, MSG_DONTWAIT, None)
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise _oserror()
        lengths = self.lengths
        for i in range(got):
            m = msgs[i]
            lengths[i] = m.msg_len
            if m.msg_hdr.msg_flags & 0x20:  # MSG_TRUNC
                self.truncated += 1
        return got

    def source(self, i: int) -> tuple[str, int]:
        a = self._names[i]
        return socket.inet_ntoa(bytes(a.sin_addr)), socket.ntohs(a.sin_port)

    def destination(self, i: int) -> str | None:
        """The destination address of datagram ``i`` (from IP_PKTINFO), or None if not reported."""
        h = self._msgs[i].msg_hdr
        off = i * _CMSG_SPACE
        end = off + h.msg_controllen
        cv = self._ctrl_view
        while off + 16 <= end:
            clen, level, ctype = struct.unpack_from("=Qii", cv, off)
            if clen < 16:
                return None
            if level == _SOL_IP and ctype == IP_PKTINFO and clen >= 28:
                return socket.inet_ntoa(_PKTINFO_ADDR.unpack_from(cv, off + 24)[0])
            off += (clen + 7) & ~7
        return None


class BatchSender:
    """Sends queued datagrams (each one or more byte strings, gathered) in batches of up to ``batch``.

    For raw IPv4 sockets the address is the destination host (port ignored by the kernel).
    """

    MAX_PARTS = 4

    def __init__(self, sock: socket.socket, batch: int = 64) -> None:
        self.sock = sock
        self.batch = batch
        self._fd = sock.fileno()
        self._names = (_SockaddrIn * batch)()
        self._iov = (_Iovec * (batch * self.MAX_PARTS))()
        self._msgs = (_Mmsghdr * batch)()
        for i in range(batch):
            h = self._msgs[i].msg_hdr
            h.msg_name = ctypes.addressof(self._names[i])
            h.msg_namelen = ctypes.sizeof(_SockaddrIn)
            h.msg_iov = ctypes.pointer(self._iov[i * self.MAX_PARTS])
            self._names[i].sin_family = socket.AF_INET
        self._keep: list[object] = []
        self.count = 0
        self.sent = 0
        self.errors: dict[str, int] = {}

    def add(self, parts: Sequence[bytes], addr: tuple[str, int]) -> None:
        """Queue one datagram made of ``parts`` (bytes objects, kept alive until flushed)."""
        i = self.count
        if i == self.batch:
            self.flush()
            i = 0
        name = self._names[i]
        name.sin_addr[:] = socket.inet_aton(addr[0])
        name.sin_port = socket.htons(addr[1])
        base = i * self.MAX_PARTS
        iov = self._iov
        for j, p in enumerate(parts):
            iov[base + j].iov_base = ctypes.cast(ctypes.c_char_p(p), ctypes.c_void_p).value
            iov[base + j].iov_len = len(p)
        self._msgs[i].msg_hdr.msg_iovlen = len(parts)
        self._keep.append(parts)
        self.count = i + 1

    def flush(self) -> int:
        """Send everything queued. Datagrams the kernel refuses are counted in ``errors`` by errno name."""
        n = self.count
        start = 0
        while start < n:
            got = _sendmmsg(self._fd, ctypes.byref(self._msgs[start]), n - start, 0)
            if got < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                # the first datagram of the rest failed: count it and go on with the others
                name = errno.errorcode.get(err, str(err))
                self.errors[name] = self.errors.get(name, 0) + 1
                start += 1
                continue
            self.sent += got
            start += got
        self.count = 0
        self._keep.clear()
        return n


class PacketRing:
    """Prebuilt datagrams in one buffer, sent by index ranges with sendmmsg: the generators' sender.

    All go to ``dest``. ``buffer[offsets[i]:offsets[i] + len(packets[i])]`` is datagram ``i``: patch it in
    place (e.g. a sequence number) before sending it.
    """

    def __init__(self, sock: socket.socket, packets: Sequence[bytes], dest: tuple[str, int]) -> None:
        count = len(packets)
        if not count:
            raise ValueError("no packets")
        self.sock = sock
        self.count = count
        self._fd = sock.fileno()
        self.offsets = []
        total = 0
        for p in packets:
            self.offsets.append(total)
            total += (len(p) + 63) & ~63
        self._buf = (ctypes.c_char * total)()
        self.buffer = memoryview(self._buf).cast("B")
        self._name = _SockaddrIn(socket.AF_INET, socket.htons(dest[1]))
        self._name.sin_addr[:] = socket.inet_aton(dest[0])
        self._iov = (_Iovec * count)()
        self._msgs = (_Mmsghdr * count)()
        base = ctypes.addressof(self._buf)
        for i, p in enumerate(packets):
            off = self.offsets[i]
            self.buffer[off:off + len(p)] = p
            self._iov[i].iov_base = base + off
            self._iov[i].iov_len = len(p)
            h = self._msgs[i].msg_hdr
            h.msg_name = ctypes.addressof(self._name)
            h.msg_namelen = ctypes.sizeof(_SockaddrIn)
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
        self._msg_size = ctypes.sizeof(_Mmsghdr)
        self._msgs_addr = ctypes.addressof(self._msgs)
        self.errors = 0

    def send(self, start: int, n: int) -> int:
        """Send datagrams ``start .. start + n - 1`` (within the ring). Returns how many the kernel took."""
        if start < 0 or n < 0 or start + n > self.count:
            raise IndexError(f"datagrams {start}..{start + n} outside the ring of {self.count}")
        done = 0
        while done < n:
            got = _sendmmsg_addr(self._fd, self._msgs_addr + (start + done) * self._msg_size, n - done, 0)
            if got < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                self.errors += 1
                done += 1  # skip the datagram the kernel refused
                continue
            done += got
        return done
