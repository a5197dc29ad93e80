"""Hook scripts for gwlbtun-style appliances (handlers with -c/-r hooks that create gwi-/gwo- devices).

``passthrough.sh`` makes such an appliance a one-arm passthrough (tc ingress on gwi- with a mirred redirect
to gwo-), which is what the conformance suite needs to see traffic come back.
"""

from __future__ import annotations

from pathlib import Path

HOOK_DIR = Path(__file__).parent
PASSTHROUGH = HOOK_DIR / "passthrough.sh"


def path(name: str) -> Path:
    p = HOOK_DIR / f"{name}.sh"
    if not p.exists():
        raise FileNotFoundError(f"no hook script {name!r} in {HOOK_DIR}")
    return p
