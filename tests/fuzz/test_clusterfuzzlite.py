"""The ClusterFuzzLite / OSS-Fuzz build (.clusterfuzzlite/): build.sh run as the base image runs it (its
``compile_python_fuzzer`` and ``pip3`` stood in for), then every harness it built run for a few seconds with
its seed corpus and dictionary, as ClusterFuzzLite runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BUILD = ROOT / ".clusterfuzzlite" / "build.sh"

pytest.importorskip("atheris", reason="atheris (a dev dependency) is not installed")


def test_build_script_makes_harnesses_that_fuzz(tmp_path: Path) -> None:
    assert (ROOT / ".clusterfuzzlite" / "project.yaml").read_text().split() == ["language:", "python"]
    assert "base-builder-python" in (ROOT / ".clusterfuzzlite" / "Dockerfile").read_text()
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    # the base image's tools: pip3 installs the project (here: it is installed already), compile_python_fuzzer
    # bundles a script into $OUT/<its name> (here: a launcher of the same script)
    (bin_dir / "pip3").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/pip3.log\n')
    (bin_dir / "compile_python_fuzzer").write_text(
        f'#!/bin/sh\nname=$(basename "$1" .py)\nprintf \'#!/bin/sh\\nexec {sys.executable} {ROOT}/%s "$@"\\n\' '
        f'"$1" > "$OUT/$name"\nchmod +x "$OUT/$name"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "OUT": str(out), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(BUILD)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "pip3.log").read_text().split() == ["install", "."]
    runs = {}
    for target in ("codec", "core"):
        harness = out / f"fuzz_{target}"
        seeds = zipfile.ZipFile(out / f"fuzz_{target}_seed_corpus.zip").namelist()
        assert len(seeds) == len(list((ROOT / "fuzz" / "corpus" / target).iterdir())) > 0
        corpus = tmp_path / f"corpus-{target}"
        zipfile.ZipFile(out / f"fuzz_{target}_seed_corpus.zip").extractall(corpus)
        argv = [str(harness), "-max_total_time=2", f"-dict={out}/fuzz_{target}.dict", str(corpus)]
        runs[target] = len(seeds), subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for target, (seeded, proc) in runs.items():
        text = proc.communicate(timeout=120)[0].decode(errors="replace")
        assert proc.returncode == 0, f"{target}:\n{text[-3000:]}"
        dict_entries = sum(1 for line in (out / f"fuzz_{target}.dict").read_text().splitlines()
                           if line.startswith('"'))
        assert f"Dictionary: {dict_entries} entries" in text, f"{target}: the dictionary was not used\n{text[-2000:]}"
        loaded = re.search(r"seed corpus: files: (\d+) ", text)  # libFuzzer counts distinct inputs
        assert loaded and 0 < int(loaded.group(1)) <= seeded, f"{target}: seed corpus not used\n{text[-2000:]}"
        assert "INITED cov:" in text and "Done " in text, f"{target}:\n{text[-2000:]}"
