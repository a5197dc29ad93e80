"""The worked example of the pytest fixtures for vendors' own tests (docs/examples/test_my_appliance.py) runs,
as its docstring says, against the reference appliance."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "test_my_appliance.py"


def test_the_example_module_passes_against_the_reference(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLE), "--gwlb-instances", "1", "-q",
                          "-p", "no:cacheprovider", "--rootdir", str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0 and "3 passed" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    fixtures = subprocess.run([sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider",
                               "--rootdir", str(tmp_path), str(EXAMPLE)], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    for name in ("gwlb", "gwlb_send", "gwlb_inject", "gwlb_targets", "gwlb_drops", "gwlb_capture"):
        assert re.search(rf"\n{name}( \[\w+ scope\])? -- ", fixtures.stdout), f"pytest --fixtures does not list {name}"
