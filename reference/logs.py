"""The reference appliance's logging set-up, shared by its command line and its datapath workers."""

from __future__ import annotations

import logging
import sys


def configure_logging(debug: bool, spec: str | None) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not spec:
        return
    for item in spec.split(","):
        section, _, level = item.rpartition("=")
        name = "gwlb-reference" + (f".{section}" if section and section != "core" else "")
        lvl = logging.getLevelName(level.strip().upper())
        if not isinstance(lvl, int):
            raise ValueError(f"unknown log level {level!r} in --logging")
        logging.getLogger(name).setLevel(lvl)
