"""Network namespaces owned by one run: created with a per-run prefix, removed on every way out.

A :class:`Lab` creates namespaces named ``gs<6 hex>-<role>`` (the prefix is unique per run, so parallel runs
never collide), links them with veth pairs (configured through pyroute2, never visible in the root
namespace), starts processes inside them, and opens sockets inside them. Closing it (success, exception,
Ctrl-C, or SIGTERM through :func:`sigterm_raises`) kills its processes and removes its namespaces.

Each lab records its owner's PID in ``/run/gwlbsim/<prefix>.json``; :func:`cleanup` removes the leftovers of
runs whose owner is dead (a crashed or killed run), and ``gwlbsim cleanup`` calls it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("gwlbsim.linuxio.netns")

NETNS_DIR = Path("/run/netns")
STATE_DIR = Path("/run/gwlbsim")
PREFIX_RE = re.compile(r"^gs[0-9a-f]{6}$")
NAME_RE = re.compile(r"^(gs[0-9a-f]{6})-[A-Za-z0-9_.]+$")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
#: Prefixes of the labs this process created (tests check that their namespaces are all gone).
CREATED_PREFIXES: set[str] = set()


class NetnsError(RuntimeError):
    pass


def require_root(what: str = "network namespaces") -> None:
    if os.geteuid() != 0:
        raise NetnsError(f"{what} need root (or CAP_NET_ADMIN and CAP_SYS_ADMIN): run as root")
    if shutil.which("ip") is None:
        raise NetnsError("the 'ip' command (iproute2) is missing: apt-get install iproute2")


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name`` (other threads are unaffected)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            there = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsError(f"network namespace {name} does not exist") from None
        try:
            if _libc.setns(there, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns into {name}: {os.strerror(e)}")
        finally:
            os.close(there)
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail for our own namespace
                e = ctypes.get_errno()
                raise OSError(e, f"setns back: {os.strerror(e)}")
    finally:
        os.close(here)


def socket_in(name: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ``name`` (usable from any thread afterwards)."""
    with entered(name):
        return socket.socket(family, type, proto)


def _ns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


def kill_namespace_processes(name: str, grace: float = 3.0) -> None:
    pids = _ns_pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def remove_namespace(name: str) -> None:
    from pyroute2 import netns as pyroute2_netns

    kill_namespace_processes(name)
    try:
        pyroute2_netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove namespace %s: %s", name, e)


class Lab:
    """Namespaces, links and processes of one run. Use as a context manager."""

    def __init__(self, prefix: str | None = None) -> None:
        require_root()
        self.prefix = prefix or f"gs{secrets.token_hex(3)}"
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must look like gs + 6 hex digits")
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._closed = False
        self._owner = os.getpid()
        CREATED_PREFIXES.add(self.prefix)
        self._state = STATE_DIR / f"{self.prefix}.json"
        self._write_state()

    # ---------------------------------------------------------------------------------------------- state

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "started": time.time(), "namespaces": self.namespaces}))
        tmp.replace(self._state)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ namespaces

    def namespace(self, role: str) -> str:
        """Create namespace ``<prefix>-<role>`` with loopback up; returns its name."""
        name = f"{self.prefix}-{role}"
        if not NAME_RE.match(name):
            raise ValueError(f"bad namespace role {role!r}")
        self.namespaces.append(name)
        self._write_state()
        from pyroute2 import netns as pyroute2_netns

        try:
            pyroute2_netns.create(name)
        except OSError as e:
            raise NetnsError(f"cannot create network namespace {name}: {e}") from e
        with self.ipr(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def ipr(self, ns: str) -> Any:
        from pyroute2 import IPRoute

        return IPRoute(netns=ns, flags=0)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, *, addr_a: str | None = None,
             addr_b: str | None = None, mtu: int | None = None) -> None:
        """A veth pair from ``ns_a`` (end ``if_a``) to ``ns_b`` (end ``if_b``), addresses as CIDR, both up."""
        with self.ipr(ns_a) as ipr:
            peer: dict[str, Any] = {"ifname": if_b, "net_ns_fd": ns_b}
            if mtu:
                peer["mtu"] = mtu
            kw: dict[str, Any] = {"mtu": mtu} if mtu else {}
            ipr.link("add", ifname=if_a, kind="veth", peer=peer, **kw)
        for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            self.configure(ns, ifname, addr)

    def configure(self, ns: str, ifname: str, *addrs: str | None) -> None:
        with self.ipr(ns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                links = subprocess.run(["ip", "netns", "exec", ns, "ip", "-br", "link"], capture_output=True,
                                       text=True).stdout
                raise NetnsError(f"no interface {ifname} in {ns}; it has:\n{links}")
            idx = found[0]
            for addr in addrs:
                if addr:
                    iface = ipaddress.ip_interface(addr)
                    extra = {"flags": 0x80} if iface.version == 6 else {}  # IFA_F_NODAD: usable at once
                    ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen, **extra)
            ipr.link("set", index=idx, state="up")

    def route(self, ns: str, dst: str, *, gateway: str | None = None, dev: str | None = None,
              table: int | None = None, mtu: int | None = None) -> None:
        """Add a route (``dst`` "default" or a CIDR; IPv6 when the destination or gateway is IPv6)."""
        v6 = ":" in dst or bool(gateway and ":" in gateway)
        with self.ipr(ns) as ipr:
            kw: dict[str, Any] = {"dst": "::/0" if v6 and dst == "default" else "0.0.0.0/0" if dst == "default"
                                  else dst}
            if v6:
                kw["family"] = socket.AF_INET6
            if gateway:
                kw["gateway"] = gateway
            if dev:
                kw["oif"] = ipr.link_lookup(ifname=dev)[0]
            if table:
                kw["table"] = table
            if mtu:
                kw["metrics"] = {"mtu": mtu}
            ipr.route("add", **kw)

    def rule(self, ns: str, iif: str, table: int, *, family: int = socket.AF_INET, priority: int = 100) -> None:
        """Policy routing: packets arriving on ``iif`` use routing table ``table``."""
        with self.ipr(ns) as ipr:
            ipr.rule("add", iifname=iif, table=table, family=family, priority=priority)

    def bridge(self, ns: str, name: str, *addrs: str, mtu: int | None = None) -> None:
        with self.ipr(ns) as ipr:
            ipr.link("add", ifname=name, kind="bridge", **({"mtu": mtu} if mtu else {}))
        self.configure(ns, name, *addrs)

    def enslave(self, ns: str, ifname: str, bridge: str) -> None:
        with self.ipr(ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0],
                     master=ipr.link_lookup(ifname=bridge)[0])

    def sysctl(self, ns: str, key: str, value: str | int) -> None:
        with entered(ns):
            Path("/proc/sys", key.replace(".", "/")).write_text(str(value))

    def socket(self, ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> socket.socket:
        return socket_in(ns, family, type, proto)

    # ------------------------------------------------------------------------------------------- processes

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside ``ns`` to completion."""
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=timeout,
                             input=input)
        if check and res.returncode:
            raise NetnsError(f"in {ns}: {' '.join(argv)} exited {res.returncode}: "
                             f"{res.stderr.decode(errors='replace').strip()}")
        return res

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a long-running process inside ``ns``; it is killed when the lab closes."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], start_new_session=True, **kw)
        self.processes.append(proc)
        return proc

    @staticmethod
    def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0,
                     sig: int = signal.SIGTERM) -> int | None:
        """Signal a process started by :meth:`popen` (its whole group), wait, kill if it will not stop."""
        if proc.poll() is not None:
            return proc.returncode
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
            return None

    # ------------------------------------------------------------------------------------------------ end

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner:
            # a forked copy of this process (pyroute2 forks helpers) unwinding its stack must not tear down
            # what belongs to its parent
            return
        self._closed = True
        for proc in reversed(self.processes):
            self.stop_process(proc, timeout=5)
        for ns in reversed(self.namespaces):
            remove_namespace(ns)
        with contextlib.suppress(FileNotFoundError):
            self._state.unlink()


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt (which libraries such as Hypothesis let through
    untouched, where a SystemExit would be wrapped), so that context managers clean up; ``status`` is the
    process's exit status for it (128 + the signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.status = 128 + signum


def redelivering(inner: Callable[[Any], object]) -> Callable[[Any], object]:
    """An unraisable-exception hook around ``inner``: a signal's KeyboardInterrupt (Ctrl-C, or a handler's
    :class:`Stopped`) raised where Python cannot propagate it (an at-fork callback, a finaliser) would be
    printed and lost, and the run would go on; this sends the signal again instead, from another thread a
    moment later (sent at once, it would be raised inside this hook, where it is lost as well), so that it is
    raised at the next point that can take it."""

    def hook(unraisable: Any) -> object:
        e = unraisable.exc_value
        if isinstance(e, KeyboardInterrupt):
            again = threading.Timer(0.005, os.kill, (os.getpid(), getattr(e, "signum", signal.SIGINT)))
            again.daemon = True
            again.start()
            return None
        return inner(unraisable)

    return hook


def exit_status(e: KeyboardInterrupt) -> int:
    """The exit status for a run stopped by ``e``: 128 + its signal (130 for Ctrl-C)."""
    return e.status if isinstance(e, Stopped) else 128 + signal.SIGINT


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the body, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (SIGINT raises
    KeyboardInterrupt already), so context managers clean up before the process exits (see
    :func:`exit_status`)."""
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked helper inherited this handler: just die
            os._exit(128 + signum)
        raise Stopped(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    old_hook, sys.unraisablehook = sys.unraisablehook, redelivering(sys.unraisablehook)
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        for sig, previous in old.items():
            signal.signal(sig, previous)


OWNER_FILE = ".gwlbsim-owner"


@contextlib.contextmanager
def owned_tempdir(prefix: str) -> Iterator[Path]:
    """A temporary directory that :func:`cleanup` removes if its owner process is killed outright."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        # whole or not at all: a cleanup running meanwhile must not read an empty file as a dead owner's
        tmp = Path(d) / (OWNER_FILE + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(Path(d) / OWNER_FILE)
        yield Path(d)


def _stale_tempdirs(everything: bool) -> list[Path]:
    import tempfile

    stale = []
    for d in Path(tempfile.gettempdir()).glob("*/" + OWNER_FILE):
        try:
            pid = int(d.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if everything or not (pid and _alive(pid) and _is_ours(pid)):
            stale.append(d.parent)
    return stale


#: where the shipped routing hooks keep a namespace's saved sysctls while it has tunnels (see
#: gwlbsim/data/hooks/hooklib.sh): one file per namespace, named after the namespace's device and inode
HOOK_STATE = "/run/gwlbsim-*-hook/*.sysctl"


def _stale_hook_state() -> list[Path]:
    """Saved sysctls of namespaces that are gone (their last tunnel was never destroyed: a killed run)."""
    live = set()
    for ns in [*Path("/proc").glob("[0-9]*/ns/net"), *Path("/run/netns").glob("*")]:
        try:
            st = os.stat(ns)
        except OSError:
            continue
        live.add(f"{st.st_dev}-{st.st_ino}")
    return [f for f in Path("/").glob(HOOK_STATE.lstrip("/")) if f.name.removesuffix(".sysctl") not in live]


def cleanup(everything: bool = False) -> list[str]:
    """Remove namespaces (and working directories made by :func:`owned_tempdir`, and the hooks' saved state of
    namespaces that are gone) left by runs whose owner process is gone (all gwlbsim ones with ``everything``).

    Returns the names (and paths) removed.
    """
    require_root()
    live_prefixes: set[str] = set()
    removed: list[str] = []
    if STATE_DIR.exists():
        for f in STATE_DIR.glob("gs*.json"):
            try:
                state = json.loads(f.read_text())
            except (OSError, ValueError):
                state = {}
            if not everything and state.get("pid") and _alive(int(state["pid"])) and _is_ours(int(state["pid"])):
                live_prefixes.add(f.stem)
                continue
            f.unlink(missing_ok=True)
    for name in list_namespaces():
        m = NAME_RE.match(name)
        if m and m.group(1) not in live_prefixes:
            remove_namespace(name)
            removed.append(name)
    for d in _stale_tempdirs(everything):  # the working directories of runs that were killed outright
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    for f in _stale_hook_state():  # after the namespaces: theirs are gone now
        f.unlink(missing_ok=True)
        removed.append(str(f))
        with contextlib.suppress(OSError):
            f.parent.rmdir()  # when it was the last
    return removed


def _is_ours(pid: int) -> bool:
    """The PID still belongs to a Python process (not a recycled PID of something else)."""
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
