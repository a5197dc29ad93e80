"""Traffic: the packets the suite, the fuzzers, the simulator and the benchmark send, built in one place.

A layer of its own above the wire format (it imports only :mod:`gwlbsim`'s codecs) and below every consumer:

* :mod:`gwlbsim.traffic.inner`: the inner-packet builder (IPv4/IPv6, TCP/UDP/ICMP, extension headers);
* :mod:`gwlbsim.traffic.packets`: what is sent (a valid GWLB datagram of a flow, a labelled malformed one);
* :mod:`gwlbsim.traffic.malformations`: every way a GENEVE datagram is broken, each with its label;
* :mod:`gwlbsim.traffic.strategies`: Hypothesis strategies over all of these;
* :mod:`gwlbsim.traffic.record`: a pcap of the datagrams sent toward an appliance;
* :mod:`gwlbsim.traffic.reprs`: short reprs for shrunk examples.
"""
