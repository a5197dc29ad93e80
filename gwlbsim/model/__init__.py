"""The fake GWLB's pure model: configuration in, packets and probe results and the time in, actions out."""

from gwlbsim.model.gwlb import Encapsulation, Endpoint, Flow, GwlbModel, ProbeRequest, ToEndpoint, ToTarget
from gwlbsim.model.targets import DRAINING, HEALTHY, INITIAL, UNHEALTHY, UNUSED, Target

__all__ = ["DRAINING", "HEALTHY", "INITIAL", "UNHEALTHY", "UNUSED", "Encapsulation", "Endpoint", "Flow",
           "GwlbModel", "ProbeRequest", "Target", "ToEndpoint", "ToTarget"]
