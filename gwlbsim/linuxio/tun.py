"""Layer-3 TUN devices (no packet information header), created in the calling thread's network namespace.

A device lives as long as a file descriptor for it is open: closing the last one removes it, so a crashed
process leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCSIFTXQLEN = 0x8943
IFF_UP = 0x1
IFNAMSIZ = 16


class TunError(OSError):
    pass


def open_tun(name: str, *, mtu: int | None = None, up: bool = True, multi_queue: bool = False,
             nonblocking: bool = True, rp_filter: int | None = None, ipv6_link_local: bool = True,
             txqueuelen: int | None = None) -> int:
    """Create (or attach a queue to) TUN device ``name`` and return its file descriptor.

    ``ipv6_link_local=False`` keeps the kernel from giving the device an IPv6 link-local address, and so
    from sending router solicitations out of it on its own: IPv6 still passes through the device.
    ``txqueuelen`` sets how many packets the device holds for its reader (per queue; the kernel's default
    is 500, which a burst of batched writes through a passthrough can overflow).
    """
    if not name or len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must have 1 to {IFNAMSIZ - 1} characters")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | (os.O_NONBLOCK if nonblocking else 0) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError(f"/dev/net/tun does not exist: load the tun module to create {name}") from None
    except PermissionError:
        raise TunError(f"no permission to open /dev/net/tun for {name}: needs root or CAP_NET_ADMIN") from None
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if rp_filter is not None:
            set_sysctl(f"net/ipv4/conf/{name}/rp_filter", str(rp_filter))
        if not ipv6_link_local:
            try:
                set_sysctl(f"net/ipv6/conf/{name}/addr_gen_mode", "1")
            except FileNotFoundError:  # IPv6 disabled on this machine
                pass
        if mtu is not None:
            set_mtu(name, mtu)
        if txqueuelen is not None:
            set_txqueuelen(name, txqueuelen)
        if up:
            set_up(name)
    except OSError as e:
        os.close(fd)
        raise TunError(e.errno, f"cannot create TUN device {name}: {e.strerror}") from e
    return fd


def _ifreq_ioctl(request: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s.fileno(), request, data)


def set_mtu(name: str, mtu: int) -> None:
    _ifreq_ioctl(SIOCSIFMTU, struct.pack("16si20x", name.encode(), mtu))


def set_txqueuelen(name: str, qlen: int) -> None:
    _ifreq_ioctl(SIOCSIFTXQLEN, struct.pack("16si20x", name.encode(), qlen))


def set_up(name: str) -> None:
    res = _ifreq_ioctl(SIOCGIFFLAGS, struct.pack("16sH22x", name.encode(), 0))
    flags = struct.unpack_from("H", res, 16)[0]
    _ifreq_ioctl(SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))


def set_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", key).write_text(value)


def exists(name: str) -> bool:
    """Whether an interface of that name exists in the calling thread's network namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True
