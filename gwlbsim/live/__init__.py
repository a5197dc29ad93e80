"""The fake GWLB live, in network namespaces: topology, datapath, health checks, sessions."""
