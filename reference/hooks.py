"""Running gwlbtun-style tunnel hooks: ``HOOK CREATE|DESTROY gwi-X gwo-X <eni hex>``.

Hooks run without a shell (the arguments can't inject anything), in their own process group, bounded in
time (the whole group is killed at the deadline), with their output logged line by line.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("gwlb-reference.hooks")


@dataclass(frozen=True)
class HookResult:
    argv: tuple[str, ...]
    ok: bool
    returncode: int | None  #: None when it could not start or was killed at the deadline
    output: str
    seconds: float
    error: str = ""


#: programs that run a script named by their first argument (``-c 'sh /path/hook.sh'``)
_INTERPRETERS = frozenset({"sh", "bash", "dash", "ksh", "zsh", "python", "python3", "perl"})


def parse_hook(command: str) -> list[str]:
    """Split a hook given on the command line (``-c '/path/hook.sh'`` or ``-c 'bash /path/hook.sh'``) and check
    that it can run: the program exists (an executable file, or found on PATH) and so does the script an
    interpreter is given. A hook that cannot run is found here, not at the first packet."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"{command!r}: {e}") from None
    if not argv:
        raise ValueError("empty command")
    prog = argv[0]
    if os.sep in prog:
        if not os.path.isfile(prog) or not os.access(prog, os.X_OK):
            raise ValueError(f"{prog} is not an executable file")
    elif shutil.which(prog) is None:
        raise ValueError(f"{prog}: command not found")
    script = argv[1] if os.path.basename(prog) in _INTERPRETERS and len(argv) > 1 else "-"
    if not script.startswith("-") and not os.path.isfile(script):
        raise ValueError(f"{script}: no such script")
    return argv


def run_hook(command: list[str], action: str, ingress: str, egress: str, eni_hex: str,
             timeout: float = 30.0) -> HookResult:
    argv = (*command, action, ingress, egress, eni_hex)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    except OSError as e:
        result = HookResult(argv, False, None, "", time.monotonic() - start, f"cannot run: {e.strerror}")
        log.error("hook %s could not start: %s", shlex.join(argv), e.strerror)
        return result
    try:
        out, _ = proc.communicate(timeout=timeout)
        error = "" if proc.returncode == 0 else f"exit status {proc.returncode}"
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        error, code = f"killed after {timeout:g} s", None
    text = out.decode(errors="replace")
    for line in text.splitlines():
        log.info("hook %s %s: %s", action, ingress, line)
    result = HookResult(argv, not error, code, text, time.monotonic() - start, error)
    if error:
        log.error("hook %s failed: %s", shlex.join(argv), error)
    else:
        log.info("hook %s %s done in %.3f s", action, ingress, result.seconds)
    return result
