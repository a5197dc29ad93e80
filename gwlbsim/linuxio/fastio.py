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


# Pointers are passed as plain integers (addresses of buffers allocated once): no per-call conversions.
_recvmmsg = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                             ctypes.c_void_p, use_errno=True)(("recvmmsg", _libc))
_sendmmsg_addr = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                  use_errno=True)(("sendmmsg", _libc))

_CMSG_SPACE = 32  # CMSG_SPACE(sizeof(struct in_pktinfo)): the only control message asked for
_MMSG = ctypes.sizeof(_Mmsghdr)
# Fields of message i, read and written through integer views of the mmsghdr array (no ctypes objects).
_LEN_U32 = (_Mmsghdr.msg_len.offset, _Mmsghdr.msg_hdr.offset + _Msghdr.msg_flags.offset)
_CTRLLEN_U64 = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_controllen.offset
_NAMELEN_U32 = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_namelen.offset
_SOCKADDR = ctypes.sizeof(_SockaddrIn)
_CACHE_LIMIT = 1 << 16


def _oserror() -> OSError:
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e))


SO_SNDBUFFORCE = 32  # SO_SNDBUF and SO_RCVBUF past net.core.wmem_max / rmem_max (needs CAP_NET_ADMIN)
SO_RCVBUFFORCE = 33
_FORCE = {socket.SO_SNDBUF: SO_SNDBUFFORCE, socket.SO_RCVBUF: SO_RCVBUFFORCE}


def set_buffer(sock: socket.socket, opt: int, size: int) -> None:
    """Set ``sock``'s send or receive buffer (``opt``: SO_SNDBUF or SO_RCVBUF) to ``size`` bytes: past the
    system's limit where allowed, else as far as that limit lets it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _FORCE[opt], size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)


def sockaddr(addr: str, port: int = 0) -> bytes:
    """The ``struct sockaddr_in`` of an IPv4 address and port, as :class:`BatchSender` takes it."""
    return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(addr))




class BatchReceiver:
    """Receives up to ``batch`` IPv4 datagrams per call into preallocated buffers.

    After :meth:`recv` returns n, for i < n: ``views[i][:lengths[i]]`` is the datagram, ``source(i)`` its
    (address, port), and ``destination(i)`` the address it was sent to (needs ``pktinfo=True``). Address
    strings are made once per distinct address and reused (the same ``str`` object each time).
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
            h.msg_namelen = _SOCKADDR
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
            if pktinfo:
                h.msg_control = ctypes.addressof(self._ctrl) + i * _CMSG_SPACE
                h.msg_controllen = _CMSG_SPACE
        mem = memoryview(self._bufs).cast("B")
        self.buffer = mem
        self.views = [mem[i * size:(i + 1) * size] for i in range(batch)]
        #: the source addresses as ``sockaddr_in`` records of 16 bytes (port at +2, address at +4)
        self.names = memoryview(self._names).cast("B")
        self._names_q = self.names.cast("Q")  # first 8 bytes of each: family, port, address
        self._ctrl_i = memoryview(self._ctrl).cast("B").cast("I")
        msgs = memoryview(self._msgs).cast("B")
        self._msgs_i = msgs.cast("I")
        self._msgs_q = msgs.cast("Q")
        self._msgs_addr = ctypes.addressof(self._msgs)
        self.lengths = [0] * batch
        self.truncated = 0  #: datagrams cut short because they were larger than ``size``
        self._fd = sock.fileno()
        self._sources: dict[int, tuple[str, int]] = {}
        self._addresses: dict[int, str] = {}
        self._filled = 0  # messages the last call filled in

    def recv(self, max_count: int | None = None) -> int:
        """Receive what is queued (without waiting), up to the batch size. Returns the count (0 if none)."""
        n = min(self.batch, max_count or self.batch)
        mi, mq = self._msgs_i, self._msgs_q
        stride_i, stride_q = _MMSG // 4, _MMSG // 8
        namelen, ctrllen = _NAMELEN_U32 // 4, _CTRLLEN_U64 // 8
        pktinfo = self._pktinfo
        for i in range(self._filled):  # the kernel shrank these to what it wrote: give the room back
            mi[i * stride_i + namelen] = _SOCKADDR
            if pktinfo:
                mq[i * stride_q + ctrllen] = _CMSG_SPACE
        got = _recvmmsg(self._fd, self._msgs_addr, n, MSG_DONTWAIT, None)
        self._filled = max(got, 0)
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise _oserror()
        lengths = self.lengths
        len_at, flags_at = _LEN_U32[0] // 4, _LEN_U32[1] // 4
        for i in range(got):
            lengths[i] = mi[i * stride_i + len_at]
            if mi[i * stride_i + flags_at] & 0x20:  # MSG_TRUNC
                self.truncated += 1
        return got

    def source(self, i: int) -> tuple[str, int]:
        """(address, port) datagram ``i`` came from."""
        key = self._names_q[2 * i]
        src = self._sources.get(key)
        if src is None:
            if len(self._sources) >= _CACHE_LIMIT:
                self._sources.clear()
            a = self._names[i]
            src = self._sources[key] = (socket.inet_ntoa(bytes(a.sin_addr)), socket.ntohs(a.sin_port))
        return src

    def destination(self, i: int) -> str | None:
        """The destination address of datagram ``i`` (from IP_PKTINFO), or None if not reported."""
        if not self._pktinfo or self._msgs_q[i * (_MMSG // 8) + _CTRLLEN_U64 // 8] < 28:
            return None
        c = self._ctrl_i
        at = i * (_CMSG_SPACE // 4)
        if c[at + 2] != _SOL_IP or c[at + 3] != IP_PKTINFO:  # cmsg_level, cmsg_type
            return None
        key = c[at + 6]  # in_pktinfo.ipi_addr, after cmsg header (16) and ipi_ifindex, ipi_spec_dst
        dst = self._addresses.get(key)
        if dst is None:
            if len(self._addresses) >= _CACHE_LIMIT:
                self._addresses.clear()
            dst = self._addresses[key] = socket.inet_ntoa(key.to_bytes(4, "little"))
        return dst


class BatchSender:
    """Sends up to ``batch`` datagrams per sendmmsg, from the slots of one buffer allocated once.

    Zero-copy use: write datagram bytes into the next slot, ``views[count]`` (e.g. read a packet into it at
    an offset and write a header in front), then :meth:`queue` the part to send. :meth:`add` copies
    given byte strings into the next slot instead. The destination is a ``sockaddr_in`` (:func:`sockaddr`;
    for raw IPv4 sockets the port is ignored). A full batch is sent at once; :meth:`flush` sends the rest.
    """

    def __init__(self, sock: socket.socket, batch: int = 64, size: int = 65536 + 512,
                 address_size: int = _SOCKADDR) -> None:
        """``address_size``: the size of the destinations given to :meth:`queue` (a ``sockaddr_in`` by default;
        e.g. 20 for the ``sockaddr_ll`` of a packet socket)."""
        self.sock = sock
        self.batch = batch
        self.size = size
        self.address_size = address_size
        self._fd = sock.fileno()
        self._bufs = (ctypes.c_char * (size * batch))()
        self._names = (ctypes.c_char * (address_size * batch))()
        self._iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        names = ctypes.addressof(self._names)
        for i in range(batch):
            h = self._msgs[i].msg_hdr
            h.msg_name = names + i * address_size
            h.msg_namelen = address_size
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
        mem = memoryview(self._bufs).cast("B")
        self.views = [mem[i * size:(i + 1) * size] for i in range(batch)]
        self._base = ctypes.addressof(self._bufs)
        self._iov_q = memoryview(self._iov).cast("B").cast("Q")  # iov_base, iov_len of slot i at 2i, 2i+1
        self._names_b = memoryview(self._names).cast("B")
        self._msgs_addr = ctypes.addressof(self._msgs)
        self.count = 0
        self.sent = 0
        self.errors: dict[str, int] = {}  #: datagrams refused, by errno name
        self.failed = 0  #: datagrams refused, a count the caller may reset

    def queue(self, start: int, end: int, dest: bytes) -> None:
        """Send ``views[count][start:end]`` to ``dest`` (a sockaddr_in) with the next batch."""
        i = self.count
        q = self._iov_q
        q[2 * i] = self._base + i * self.size + start
        q[2 * i + 1] = end - start
        a = self.address_size
        self._names_b[i * a:(i + 1) * a] = dest
        self.count = i + 1
        if i + 1 == self.batch:
            self.flush()

    def add(self, parts: Sequence[bytes | bytearray | memoryview], addr: tuple[str, int]) -> None:
        """Queue one datagram made of ``parts`` (copied) for ``addr``."""
        view = self.views[self.count]
        n = 0
        for p in parts:
            view[n:n + len(p)] = p
            n += len(p)
        self.queue(0, n, sockaddr(*addr))

    def flush(self) -> int:
        """Send everything queued. Datagrams the kernel refuses are counted in ``errors`` by errno name."""
        n = self.count
        start = 0
        while start < n:
            got = _sendmmsg_addr(self._fd, self._msgs_addr + start * _MMSG, n - start, 0)
            if got < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                # the first datagram of the rest failed: count it and go on with the others
                name = errno.errorcode.get(err, str(err))
                self.errors[name] = self.errors.get(name, 0) + 1
                self.failed += 1
                start += 1
                continue
            self.sent += got
            start += got
        self.count = 0
        return n


class PacketRing:
    """Prebuilt datagrams in one buffer, sent by index ranges with sendmmsg: the generators' sender.

    All go to ``dest``: an (IPv4 address, port), or a complete socket address as bytes (e.g. the
    ``sockaddr_ll`` of a packet socket, whose packets then start with their frame header).
    ``buffer[offsets[i]:offsets[i] + len(packets[i])]`` is datagram ``i``: patch it in place (e.g. a
    sequence number) before sending it.
    """

    def __init__(self, sock: socket.socket, packets: Sequence[bytes], dest: tuple[str, int] | bytes) -> None:
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
        name = dest if isinstance(dest, bytes) else sockaddr(*dest)
        self._name = (ctypes.c_char * len(name)).from_buffer_copy(name)
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
            h.msg_namelen = len(name)
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
        self._msg_size = _MMSG
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
