"""``gwlbsim bench``: how fast an appliance returns GWLB traffic, next to the kernel and a naive handler.

Modules:

* :mod:`gwlbsim.bench.traffic`: the test traffic (flows, prebuilt packets, the payload stamp) and what a
  correct return of it looks like;
* :mod:`gwlbsim.bench.agent`: the generator and receiver, run as processes inside namespaces;
* :mod:`gwlbsim.bench.topology`: the namespaces, links and subjects (kernel forwarding, appliances);
* :mod:`gwlbsim.bench.runner`: one measurement, the matrix, repeats;
* :mod:`gwlbsim.bench.memory`: the reference core's flow-cache cost per flow;
* :mod:`gwlbsim.bench.naive`: a deliberately naive one-packet-per-syscall appliance, the floor;
* :mod:`gwlbsim.bench.report`: the table and the JSON;
* :mod:`gwlbsim.bench.extra`: where further benchmarks (the fake GWLB's own rate, simulation speed) plug in;
* :mod:`gwlbsim.bench.cli`: the command line.
"""
