"""BPF objects: compiled with clang, loaded and attached through Debian's libbpf (ctypes), their maps read and
written. Used by the reference's kernel fast path and by the benchmark's in-kernel return counter.

Programs attach with tcx (a bpf_link per device, no qdisc), so classic tc qdiscs and filters on the same
devices keep working. libbpf 1.1 predates its tcx helpers: ``bpf_link_create`` is called with the kernel's
attach types.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47  # enum bpf_attach_type, Linux 6.6 (newer than Debian's uapi headers)
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1  # BPF_PROG_RUN flag, Linux 5.18


class Unavailable(RuntimeError):
    """A BPF program cannot run here; the message says why."""


def compiled_object(source: Path) -> Path:
    """``source`` compiled: the object beside it (``scripts/setup`` builds it) when not older than the source,
    else one compiled now into a cache (by the source's hash), which needs clang and libbpf's headers."""
    prebuilt = source.with_suffix(".o")
    if prebuilt.exists() and prebuilt.stat().st_mtime >= source.stat().st_mtime:
        return prebuilt
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gwlbsim"
    out = cache / f"{source.name.split('.')[0]}-{digest}.bpf.o"
    if out.exists():
        return out
    clang = shutil.which("clang")
    if clang is None:
        raise Unavailable(f"clang is not installed (scripts/setup installs it), so {source.name} cannot be built")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise Unavailable("libbpf's headers are missing (Debian: libbpf-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".o", delete=False) as tmp:
        pass
    res = subprocess.run([clang, "-O2", "-g", "-target", "bpf", f"-I{arch}", "-c", str(source), "-o", tmp.name],
                         capture_output=True, text=True)
    if res.returncode != 0:
        os.unlink(tmp.name)
        raise Unavailable(f"clang could not build {source.name}: {res.stderr.strip()[-300:]}")
    os.replace(tmp.name, out)
    return out


def _stride(size: int) -> int:
    """How far apart the kernel lays out the per-CPU copies of a ``size``-byte value (8-byte aligned)."""
    return (size + 7) // 8 * 8


class _Libbpf:
    """The few libbpf calls used, through ctypes."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf")
        if name is None:
            raise Unavailable("libbpf is not installed (Debian: libbpf1)")
        lib = ctypes.CDLL(name, use_errno=True)
        vp, cp, i, u = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint
        for fn, res, args in (
                ("bpf_object__open_file", vp, [cp, vp]), ("bpf_object__load", i, [vp]),
                ("bpf_object__close", None, [vp]), ("bpf_object__find_program_by_name", vp, [vp, cp]),
                ("bpf_program__fd", i, [vp]), ("bpf_object__find_map_fd_by_name", i, [vp, cp]),
                ("bpf_link_create", i, [i, i, u, vp]), ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
                ("bpf_map_lookup_elem", i, [i, vp, vp]), ("bpf_map_delete_elem", i, [i, vp]),
                ("bpf_map_lookup_and_delete_elem", i, [i, vp, vp]),
                ("bpf_map_get_next_key", i, [i, vp, vp]), ("libbpf_get_error", ctypes.c_long, [vp]),
                ("libbpf_num_possible_cpus", i, []), ("bpf_object__find_map_by_name", vp, [vp, cp]),
                ("bpf_map__set_max_entries", i, [vp, ctypes.c_uint32]),
                ("bpf_map_lookup_batch", i, [i, vp, vp, vp, vp, vp, vp]),
                ("bpf_map_delete_batch", i, [i, vp, vp, vp]), ("bpf_prog_test_run_opts", i, [i, vp])):
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        self.lib = lib


class _TestRunOpts(ctypes.Structure):
    """libbpf's ``struct bpf_test_run_opts`` (bpf/bpf.h, libbpf 1.1)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


#: the start of ``struct __sk_buff`` up to ``ifindex``: len, pkt_type, mark, queue_mapping, protocol, vlan_present,
#: vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex (a test run takes the rest as zero)
_SKB_CTX = struct.Struct("=11I")


class _XdpMd(ctypes.Structure):
    """The kernel's ``struct xdp_md``: an XDP run's context."""

    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


@dataclass
class Link:
    """An attached program (a bpf_link): detached when closed."""

    fd: int
    where: str

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BpfObject:
    """A loaded BPF object: its programs and maps by name, and the links it attached."""

    def __init__(self, source: Path, programs: tuple[str, ...], maps: tuple[str, ...],
                 max_entries: dict[str, int] | None = None) -> None:
        """Open, size (``max_entries``: maps whose size is chosen at load) and load ``source``'s object."""
        obj_path = compiled_object(source)
        self._bpf = _Libbpf()
        lib = self._bpf.lib
        self.links: list[Link] = []
        obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
        if not obj or lib.libbpf_get_error(obj):
            raise Unavailable(f"libbpf cannot open {obj_path}")
        self._obj = obj
        for name, n in (max_entries or {}).items():
            m = lib.bpf_object__find_map_by_name(obj, name.encode())
            if not m or lib.bpf_map__set_max_entries(m, n) != 0:
                self.close()
                raise Unavailable(f"cannot size BPF map {name} to {n} entries")
        if lib.bpf_object__load(obj) != 0:
            err = ctypes.get_errno()
            lib.bpf_object__close(obj)
            self._obj = None
            why = "needs root or CAP_BPF + CAP_NET_ADMIN" if err in (errno.EPERM, errno.EACCES) else \
                os.strerror(err) if err else "see the libbpf messages above"
            raise Unavailable(f"the kernel refused the BPF programs of {source.name}: {why}")
        self.programs = {p: lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, p.encode()))
                         for p in programs}
        self.maps = {m: lib.bpf_object__find_map_fd_by_name(obj, m.encode()) for m in maps}
        if min([*self.maps.values(), *self.programs.values()]) < 0:
            self.close()
            raise Unavailable(f"{obj_path.name} lacks a program or map it should have")
        self.cpus = max(1, lib.libbpf_num_possible_cpus())

    def attach(self, program: str, ifindex: int, ingress: bool, where: str) -> Link:
        """Attach ``program`` to the device ``ifindex`` (of the calling thread's namespace) with tcx."""
        fd = self._bpf.lib.bpf_link_create(self.programs[program], ifindex,
                                           BPF_TCX_INGRESS if ingress else BPF_TCX_EGRESS, None)
        if fd < 0:
            raise OSError(-fd, f"cannot attach to {where} with tcx: {os.strerror(-fd)}")
        link = Link(fd, where)
        self.links.append(link)
        return link

    def update(self, name: str, key: bytes, value: bytes) -> None:
        if self._bpf.lib.bpf_map_update_elem(self.maps[name], key, value, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF map {name}: {os.strerror(err)}")

    def delete(self, name: str, key: bytes) -> None:
        self._bpf.lib.bpf_map_delete_elem(self.maps[name], key)

    def lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        if self._bpf.lib.bpf_map_lookup_elem(self.maps[name], key, buf) != 0:
            return None
        return buf.raw

    def keys(self, name: str, size: int) -> list[bytes]:
        lib, fd = self._bpf.lib, self.maps[name]
        out, prev, nxt = [], None, ctypes.create_string_buffer(size)
        while lib.bpf_map_get_next_key(fd, prev, nxt) == 0:
            out.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, size)
        return out

    def items(self, name: str, key_size: int, value_size: int, chunk: int = 4096) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of a hash map, ``chunk`` at a time (BPF_MAP_LOOKUP_BATCH: one system call per
        chunk, not two per entry); a kernel without batch operations gets the entry-by-entry walk."""
        lib, fd = self._bpf.lib, self.maps[name]
        keys = ctypes.create_string_buffer(key_size * chunk)
        values = ctypes.create_string_buffer(value_size * chunk)
        token_in, token_out = ctypes.c_uint64(0), ctypes.c_uint64(0)  # a hash map's position: a bucket index
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib.bpf_map_lookup_batch(fd, None if first else ctypes.byref(token_in), ctypes.byref(token_out),
                                          keys, values, ctypes.byref(count), None)
            err = ctypes.get_errno() if rc != 0 else 0
            if rc != 0 and err != errno.ENOENT:
                if first and err in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    for k in self.keys(name, key_size):
                        v = self.lookup(name, k, value_size)
                        if v is not None:
                            yield k, v
                    return
                raise OSError(err, f"BPF map {name}: batch lookup: {os.strerror(err)}")
            raw_k, raw_v = keys.raw, values.raw
            for j in range(count.value):
                yield raw_k[j * key_size:(j + 1) * key_size], raw_v[j * value_size:(j + 1) * value_size]
            if rc != 0:  # ENOENT: that was the last chunk
                return
            token_in.value, first = token_out.value, False

    def delete_many(self, name: str, keys: list[bytes]) -> None:
        """Delete these keys (BPF_MAP_DELETE_BATCH; those already gone are skipped one by one)."""
        if not keys:
            return
        buf = ctypes.create_string_buffer(b"".join(keys))
        count = ctypes.c_uint32(len(keys))
        if self._bpf.lib.bpf_map_delete_batch(self.maps[name], buf, ctypes.byref(count), None) != 0:
            for k in keys[count.value:]:  # the batch stops at the first key that is not there (any more)
                self.delete(name, k)

    def percpu_lookup(self, name: str, key: bytes, size: int) -> list[bytes] | None:
        """A per-CPU map's ``size``-byte value at ``key``, one copy per possible CPU (None when absent)."""
        raw = self.lookup(name, key, _stride(size) * self.cpus)
        return None if raw is None else self._copies(raw, size)

    def percpu_take(self, name: str, key: bytes, size: int) -> list[bytes] | None:
        """Look a per-CPU map's value up and delete it in one step (BPF_MAP_LOOKUP_AND_DELETE_ELEM), as
        :meth:`percpu_lookup` gives it; None when absent. A kernel without that step for hash maps (before 5.14)
        gets a lookup and then a delete."""
        buf = ctypes.create_string_buffer(_stride(size) * self.cpus)
        if self._bpf.lib.bpf_map_lookup_and_delete_elem(self.maps[name], key, buf) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                return None
            copies = self.percpu_lookup(name, key, size)
            self.delete(name, key)
            return copies
        return self._copies(buf.raw, size)

    def _copies(self, raw: bytes, size: int) -> list[bytes]:
        stride = _stride(size)
        return [raw[i * stride:i * stride + size] for i in range(self.cpus)]

    def percpu_update(self, name: str, key: bytes, value: bytes) -> None:
        """Set a per-CPU map's value at ``key`` to ``value`` in every CPU's copy."""
        self.update(name, key, value.ljust(_stride(len(value)), b"\0") * self.cpus)

    def percpu_sum(self, name: str, key: bytes) -> int:
        """The sum over CPUs of a per-CPU map's u64 value at ``key`` (0 when absent)."""
        copies = self.percpu_lookup(name, key, 8)
        return sum(int.from_bytes(c, "little") for c in copies) if copies is not None else 0

    def test_run(self, program: str, frame: bytes, *, ifindex: int = 0, ingress_ifindex: int = 0) -> tuple[int, int]:
        """Run a tc ``program`` once over ``frame`` (BPF_PROG_RUN: a fresh packet, nothing sent), as if on the
        device ``ifindex`` (0: loopback) having come in on ``ingress_ifindex``: (its verdict, the kernel's own
        timing of the run in ns). The kernel takes ``frame`` as an Ethernet frame whatever the device."""
        data = ctypes.create_string_buffer(frame, len(frame))
        out = ctypes.create_string_buffer(len(frame) + 256)  # room for what the program adds
        ctx = ctypes.create_string_buffer(_SKB_CTX.pack(*([0] * 9), ingress_ifindex, ifindex), _SKB_CTX.size)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data), data_size_in=len(frame),
                            data_out=ctypes.addressof(out), data_size_out=len(out), ctx_in=ctypes.addressof(ctx),
                            ctx_size_in=_SKB_CTX.size, repeat=1)
        if self._bpf.lib.bpf_prog_test_run_opts(self.programs[program], ctypes.byref(opts)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_RUN of {program}: {os.strerror(err)}")
        return opts.retval, opts.duration

    def live_frames(self, program: str, frame: bytes, ifindex: int, batch: int = 64) -> LiveFrames:
        """A sender of ``frame``, as rewritten by the XDP ``program``, out of device ``ifindex`` (of the calling
        thread's namespace): see :class:`LiveFrames`."""
        return LiveFrames(self._bpf.lib, self.programs[program], frame, ifindex, batch)

    def mapped(self, name: str, size: int) -> mmap.mmap:
        """An array map created with BPF_F_MMAPABLE, ``size`` bytes of it, shared with the kernel."""
        return mmap.mmap(self.maps[name], size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        if self._obj:
            self._bpf.lib.bpf_object__close(self._obj)
            self._obj = None


class LiveFrames:
    """BPF_PROG_RUN in live-frames mode: each :meth:`send` runs an XDP program ``n`` times over copies of one
    frame, and the kernel transmits each frame the program returns XDP_TX for out of the device (through its
    ``ndo_xdp_xmit``: a veth delivers it to its peer's receive queue when that peer has NAPI, i.e. GRO on or an
    XDP program)."""

    def __init__(self, lib: ctypes.CDLL, prog_fd: int, frame: bytes, ifindex: int, batch: int) -> None:
        self._lib, self._fd = lib, prog_fd
        self._data = ctypes.create_string_buffer(frame, len(frame))
        self._ctx = _XdpMd(0, len(frame), 0, ifindex, 0, 0)
        self._opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(self._data),
                                  data_size_in=len(frame), ctx_in=ctypes.addressof(self._ctx),
                                  ctx_size_in=ctypes.sizeof(_XdpMd), flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                                  batch_size=max(1, min(batch, 256)))
        self._ref = ctypes.byref(self._opts)

    def send(self, n: int) -> None:
        """Run the program ``n`` times (``n`` frames offered)."""
        self._opts.repeat = n
        if self._lib.bpf_prog_test_run_opts(self._fd, self._ref) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_RUN with live frames: {os.strerror(err)}")
