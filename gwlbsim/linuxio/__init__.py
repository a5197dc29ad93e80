"""Linux I/O: the kernel interfaces the fake GWLB and the reference appliance both drive.

* :mod:`~gwlbsim.linuxio.fastio`: batched UDP receive and send (recvmmsg/sendmmsg);
* :mod:`~gwlbsim.linuxio.linkpath`: raw sockets on a link, bypassing the IP layer;
* :mod:`~gwlbsim.linuxio.tun`: TUN devices; :mod:`~gwlbsim.linuxio.netns`: network namespaces (pyroute2);
* :mod:`~gwlbsim.linuxio.httpprobe`: the health-check HTTP client.

Imports only :mod:`gwlbsim.wire` of the project.
"""
