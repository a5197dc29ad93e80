"""The fake GWLB's pure model: configuration in, packets and probe results and the time in, actions out."""

from gwlbsim.model.gwlb import (
    Dropped,
    Encapsulation,
    Endpoint,
    Flow,
    GwlbModel,
    ProbeRequest,
    Reset,
    ToEndpoint,
    ToTarget,
    Verdict,
)
from gwlbsim.model.targets import DRAINING, HEALTHY, INITIAL, UNHEALTHY, UNUSED, Target

__all__ = [
    "DRAINING",
    "HEALTHY",
    "INITIAL",
    "UNHEALTHY",
    "UNUSED",
    "Dropped",
    "Encapsulation",
    "Endpoint",
    "Flow",
    "GwlbModel",
    "ProbeRequest",
    "Reset",
    "Target",
    "ToEndpoint",
    "ToTarget",
    "Verdict",
]
