"""The install names: one import root (gwlbsim) for the repository's four top-level folders."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str) -> Path:
    """Where a package's files are in the repository, by the package-dir mapping (longest prefix first)."""
    mapping = SETUP.get("package-dir", {})
    for name in sorted(mapping, key=len, reverse=True):
        if package == name or package.startswith(name + "."):
            return ROOT / mapping[name] / Path(*package[len(name):].split(".")[1:])
    return ROOT / Path(*package.split("."))


def test_every_package_folder_is_installed_under_gwlbsim() -> None:
    """Setuptools installs exactly the listed packages: every folder with an __init__.py is listed, under gwlbsim
    (reference, conformance and fuzz are other projects' names on PyPI), and nothing else is."""
    listed = set(SETUP["packages"])
    assert all(p == "gwlbsim" or p.startswith("gwlbsim.") for p in listed), listed
    on_disk = {p.parent for top in ("gwlbsim", "reference", "conformance", "fuzz")
               for p in (ROOT / top).rglob("__init__.py")}
    assert {_folder(p) for p in listed} == on_disk


def test_console_scripts_and_plugin_resolve() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    targets = [*project["scripts"].values(), *project["entry-points"]["pytest11"].values()]
    for target in targets:
        module, _, attr = target.partition(":")
        assert module.startswith("gwlbsim."), target
        mod = importlib.import_module(module)
        assert not attr or callable(getattr(mod, attr)), target
