"""A fuzz target with a planted bug, to check that the fuzzing pipeline finds, records and replays crashes.

``check`` raises on inputs starting with the bytes ``GWLB``; the coverage-guided fuzzer finds that within
seconds. Used by tests/fuzz/test_atheris.py; not part of ``--target all``.
"""

from __future__ import annotations


class PlantedBug(Exception):
    pass


def check(data: bytes) -> None:
    if len(data) >= 4 and data[0] == 0x47 and data[1] == 0x57 and data[2] == 0x4C and data[3] == 0x42:
        raise PlantedBug("the canary input reached the planted bug")
