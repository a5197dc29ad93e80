"""Bounded runs of the coverage-guided fuzzers (atheris), in subprocesses, as part of the normal test run.

Longer runs: ``python -m gwlbsim.fuzz.coverage --time 600`` (the tox ``fuzz`` environment).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gwlbsim.fuzz.coverage import load_check, parse_output

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")

SECONDS = 8


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gwlbsim.fuzz.coverage", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[2])


@pytest.mark.slow
def test_bounded_run_of_codec_and_core_finds_no_failure(tmp_path: Path) -> None:
    res = run("--time", str(SECONDS), "--jobs", "2", "--work", str(tmp_path / "work"), "--crashes",
              str(tmp_path / "crashes"))
    logs = {t: (tmp_path / "work" / f"{t}.log").read_text(errors="replace") for t in ("codec", "core")}
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n" + "\n".join(v[-3000:] for v in logs.values())
    assert not any((tmp_path / "crashes").rglob("crash-*"))
    for target, log in logs.items():
        r = parse_output(target, log, 0, SECONDS)
        assert r.executions > 100, f"{target} barely ran:\n{log[-2000:]}"
        assert r.coverage > 50, f"{target}: no coverage feedback (is gwlbsim instrumented?)\n{log[-2000:]}"
        assert r.new_units > 0, f"{target}: the fuzzer found no new input at all"
    print(res.stdout)


def test_pipeline_finds_records_and_replays_a_planted_bug(tmp_path: Path) -> None:
    res = run("--target", "canary", "--time", "120", "--work", str(tmp_path / "work"), "--crashes",
              str(tmp_path / "crashes"), "--corpus", str(tmp_path / "no-corpus"))
    assert res.returncode == 1, res.stdout + res.stderr
    found = sorted((tmp_path / "crashes" / "canary").glob("crash-*"))
    assert len(found) == 1 and str(found[0]) in res.stdout
    data = found[0].read_bytes()
    assert data[:4] == b"GWLB"
    with pytest.raises(Exception, match="planted bug"):
        load_check("canary")(data)
    replayed = run("--target", "canary", "--replay", str(found[0]))
    assert replayed.returncode == 1 and "PlantedBug" in replayed.stdout
