"""Coverage-guided fuzzing with atheris (libFuzzer for Python), time-limited: ``python -m gwlbsim.fuzz.coverage``.

Targets (each a module with ``check(data: bytes)``):

* ``codec``: :mod:`gwlbsim.fuzz.atheris_codec`, the GENEVE codec on arbitrary bytes;
* ``core``: :mod:`gwlbsim.fuzz.atheris_core`, the reference appliance core's inbound/return path, against a model;
* ``canary``: :mod:`gwlbsim.fuzz.atheris_canary`, a planted bug that checks the pipeline itself (not in ``all``).

Each target runs in its own process, with ``gwlbsim`` and ``reference`` instrumented for coverage, starting
from the committed seed corpus ``fuzz/corpus/<target>/`` (read only; new inputs go to a work directory).
A failing input is written to ``fuzz/crashes/<target>/`` (``crash-*``, ``timeout-*``, ``oom-*``), where
``tests/fuzz/test_regressions.py`` replays it: commit it with the fix.

Examples::

    python -m gwlbsim.fuzz.coverage --time 60                 # codec and core, 60 s each, in parallel
    python -m gwlbsim.fuzz.coverage --target core --time 600 --merge   # and add new coverage to the seed corpus
    python -m gwlbsim.fuzz.coverage --replay fuzz/crashes/core/crash-0123abcd   # run one input, show the error

Exit status: 0 when no target failed, 1 when a failure was found (its file is printed), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gwlbsim import cliargs

FUZZ_DIR = Path(__file__).parent
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASH_DIR = FUZZ_DIR / "crashes"
TARGETS = {"codec": "gwlbsim.fuzz.atheris_codec", "core": "gwlbsim.fuzz.atheris_core",
           "canary": "gwlbsim.fuzz.atheris_canary"}
DEFAULT_TARGETS = ("codec", "core")
#: Packages whose code is instrumented for coverage feedback (the code under test).
INSTRUMENTED = ("gwlbsim",)
MAX_LEN = {"codec": 9000, "core": 20000, "canary": 64}
_ARTIFACT_RE = re.compile(r"Test unit written to (\S+)")
_STATUS_RE = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


def load_check(target: str) -> Callable[[bytes], None]:
    """The ``check`` function of a target (uninstrumented: for replaying inputs)."""
    return importlib.import_module(TARGETS[target]).check


@dataclass
class RunResult:
    target: str
    returncode: int
    seconds: float
    executions: int = 0
    execs_per_second: float = 0.0
    coverage: int = 0  #: libFuzzer's "cov": coverage counters (edges) hit
    features: int = 0  #: libFuzzer's "ft"
    corpus: int = 0
    new_units: int = 0
    artifacts: list[Path] = field(default_factory=list)
    log: Path | None = None

    @property
    def failed(self) -> bool:
        return bool(self.artifacts) or self.returncode not in (0,)

    def summary(self) -> str:
        line = (f"{self.target}: {self.executions:,} executions in {self.seconds:.0f} s "
                f"({self.execs_per_second:,.0f}/s), coverage {self.coverage} edges / {self.features} features, "
                f"corpus {self.corpus} (+{self.new_units} new)")
        if self.artifacts:
            line += "\n  FAILURE: " + ", ".join(str(a) for a in self.artifacts)
        elif self.returncode:
            line += f"\n  FAILURE: the fuzzer exited {self.returncode}; see {self.log}"
        return line


def parse_output(target: str, text: str, returncode: int, seconds: float) -> RunResult:
    """Read libFuzzer's output (status lines, final stats, artifact paths)."""
    r = RunResult(target, returncode, seconds)
    for line in text.splitlines():
        if m := _STATUS_RE.match(line):
            r.executions = int(m.group(1))
            r.coverage, r.features, r.corpus = int(m.group(2)), int(m.group(3)), int(m.group(4))
        elif line.startswith("stat::number_of_executed_units:"):
            r.executions = int(line.split(":")[-1])
        elif line.startswith("stat::average_exec_per_sec:"):
            r.execs_per_second = float(line.split(":")[-1])
        elif line.startswith("stat::new_units_added:"):
            r.new_units = int(line.split(":")[-1])
        elif m := _ARTIFACT_RE.search(line):
            r.artifacts.append(Path(m.group(1)))
    if not r.execs_per_second and seconds > 0:
        r.execs_per_second = r.executions / seconds
    return r


def libfuzzer_args(target: str, *, seconds: float, work: Path, crashes: Path, seed: int | None,
                   corpus: Path | None) -> list[str]:
    args = [f"-max_total_time={max(1, int(seconds))}", f"-artifact_prefix={crashes}/", "-print_final_stats=1",
            f"-max_len={MAX_LEN[target]}", "-timeout=20", "-rss_limit_mb=2048", str(work)]
    if seed is not None:
        args.insert(0, f"-seed={seed}")
    if corpus is not None and corpus.is_dir():
        args.append(str(corpus))
    return args


def run_target(target: str, *, seconds: float, work_root: Path, crash_root: Path, seed: int | None = None,
               corpus_root: Path | None = CORPUS_DIR) -> subprocess.Popen[bytes]:
    """Start one target's fuzzing process (its output goes to ``work_root/<target>.log``)."""
    work = work_root / target
    work.mkdir(parents=True, exist_ok=True)
    crashes = crash_root / target
    crashes.mkdir(parents=True, exist_ok=True)
    corpus = corpus_root / target if corpus_root is not None else None
    args = libfuzzer_args(target, seconds=seconds, work=work, crashes=crashes, seed=seed, corpus=corpus)
    log = open(work_root / f"{target}.log", "wb")  # noqa: SIM115 - owned by the child, closed after wait()
    proc = subprocess.Popen([sys.executable, "-m", "gwlbsim.fuzz.coverage", "--child", target, "--", *args],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    proc.log_file = log  # type: ignore[attr-defined]  # the log travels with its process
    return proc


def fuzz(targets: Sequence[str], *, seconds: float, work_root: Path, crash_root: Path, seed: int | None = None,
         corpus_root: Path | None = CORPUS_DIR, jobs: int = 2, merge: bool = False,
         out: Callable[[str], None] = print) -> list[RunResult]:
    """Run each target for ``seconds`` (``jobs`` at a time) and return what each found."""
    results: list[RunResult] = []
    pending = list(targets)
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                t = pending.pop(0)
                out(f"fuzzing {t} for {seconds:g} s ...")
                running[t] = (run_target(t, seconds=seconds, work_root=work_root, crash_root=crash_root, seed=seed,
                                         corpus_root=corpus_root), time.monotonic())
            for t, (proc, started) in list(running.items()):
                if proc.poll() is None:
                    if time.monotonic() - started > seconds + 120:  # libFuzzer ignores its limit: stop it
                        _kill(proc)
                    continue
                proc.log_file.close()  # type: ignore[attr-defined]  # set at its start, above
                log = work_root / f"{t}.log"
                r = parse_output(t, log.read_text(errors="replace"), proc.returncode, time.monotonic() - started)
                r.log = log
                results.append(r)
                out(r.summary())
                del running[t]
                if merge and corpus_root is not None and not r.failed:
                    _merge(t, work_root, corpus_root)
            time.sleep(0.2)
    finally:
        for proc, _ in running.values():
            _kill(proc)
    return results


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(10)


def _merge(target: str, work_root: Path, corpus_root: Path) -> None:
    """Add the inputs that bring new coverage to the committed seed corpus (libFuzzer's -merge=1)."""
    dest = corpus_root / target
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "gwlbsim.fuzz.coverage", "--child", target, "--", "-merge=1",
                    f"-max_len={MAX_LEN[target]}", str(dest), str(work_root / target)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)


def replay(target: str, paths: Sequence[Path]) -> int:
    """Run inputs through a target's check, uninstrumented; returns how many failed."""
    check = load_check(target)
    failed = 0
    for p in paths:
        try:
            check(p.read_bytes())
        except Exception as e:  # a failure of the target is the point: report it
            failed += 1
            print(f"{p}: {type(e).__name__}: {e}")
        else:
            print(f"{p}: ok")
    return failed


def libfuzzer_main(target: str, args: list[str]) -> None:
    """Inside the fuzzing process: instrument the code under test, then hand over to libFuzzer with ``args``
    (its own flags and corpus directories). The OSS-Fuzz / ClusterFuzzLite entry points (``fuzz_codec.py``,
    ``fuzz_core.py``) call this."""
    import atheris

    with atheris.instrument_imports(include=[*INSTRUMENTED, TARGETS[target]]):
        for mod in ("gwlbsim.wire.geneve", "gwlbsim.wire.flowkey", "gwlbsim.wire.outer", "gwlbsim.wire.checksum",
                    "gwlbsim.reference.core", TARGETS[target]):
            importlib.import_module(mod)
    check = load_check(target)
    atheris.Setup([sys.argv[0], *args], check)
    atheris.Fuzz()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gwlbsim.fuzz.coverage", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", choices=[*TARGETS, "all"],
                   help="what to fuzz (repeatable; default: all = codec and core)")
    p.add_argument("--time", type=cliargs.positive, default=60.0, metavar="SECONDS",
                   help="time per target (default 60)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="targets run at once")
    p.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    p.add_argument("--corpus", type=Path, default=CORPUS_DIR, help="seed corpus root (one directory per target)")
    p.add_argument("--crashes", type=Path, default=CRASH_DIR, help="where failing inputs are written")
    p.add_argument("--work", type=Path, help="work directory for new inputs and logs (default: a temporary one)")
    p.add_argument("--merge", action="store_true", help="add inputs with new coverage to the seed corpus")
    p.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs and report")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        i = argv.index("--child")
        rest = argv[argv.index("--") + 1:] if "--" in argv else []
        libfuzzer_main(argv[i + 1], rest)
        return 0
    args = build_parser().parse_args(argv)
    targets = [t for t in (args.target or ["all"]) for t in (DEFAULT_TARGETS if t == "all" else (t,))]
    targets = list(dict.fromkeys(targets))
    if args.replay:
        if len(targets) != 1:
            print("--replay needs exactly one --target (the directory under fuzz/crashes names it)",
                  file=sys.stderr)
            return 2
        return 1 if replay(targets[0], args.replay) else 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris (a wheel exists for CPython 3.11 on Linux)",
              file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="gwlbsim-fuzz-"))
    results = fuzz(targets, seconds=args.time, work_root=work, crash_root=args.crashes, seed=args.seed,
                   corpus_root=args.corpus, jobs=args.jobs, merge=args.merge)
    failed = [r for r in results if r.failed]
    if failed:
        print(f"{len(failed)} target(s) failed; logs in {work}; replay with: "
              f"python -m gwlbsim.fuzz.coverage --target T --replay FILE")
        return 1
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
