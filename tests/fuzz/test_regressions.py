"""Every input the coverage-guided fuzzers ever broke a target with (``fuzz/crashes/<target>/``), and the seed
corpus, replayed through the target's checks: once fixed, a bug stays fixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from gwlbsim.fuzz.coverage import CORPUS_DIR, CRASH_DIR, DEFAULT_TARGETS, load_check


def _reproducers() -> list[object]:
    found = [pytest.param(target, path, id=f"{target}/{path.name}")
             for target in DEFAULT_TARGETS
             for path in sorted((CRASH_DIR / target).glob("*"))
             if path.is_file() and path.name.split("-")[0] in ("crash", "timeout", "oom", "leak", "slow")]
    return found or [pytest.param(None, None, marks=pytest.mark.skip(reason="no reproducer recorded in "
                                                                           "fuzz/crashes yet"))]


@pytest.mark.parametrize(("target", "path"), _reproducers())
def test_recorded_failure_stays_fixed(target: str, path: Path) -> None:
    load_check(target)(path.read_bytes())


@pytest.mark.parametrize("target", DEFAULT_TARGETS)
def test_seed_corpus_passes(target: str) -> None:
    files = sorted((CORPUS_DIR / target).glob("*"))
    assert len(files) >= 10, f"the seed corpus of {target} is missing (python -m gwlbsim.fuzz.corpus_seed)"
    check = load_check(target)
    for f in files:
        check(f.read_bytes())
