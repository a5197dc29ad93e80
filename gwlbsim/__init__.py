"""gwlbsim: a fake AWS Gateway Load Balancer, and the wire format every part of the project shares."""

__version__ = "0.1.0"
