"""The wire format, pure and shared by every part: the one place each piece of it is written down.

* :mod:`~gwlbsim.wire.geneve`: the GENEVE codec in GWLB's layout (one error class per drop reason);
* :mod:`~gwlbsim.wire.reasons`: every drop reason of the project (one ``StrEnum``);
* :mod:`~gwlbsim.wire.outer`: outer IPv4/UDP; :mod:`~gwlbsim.wire.flowkey`: inner flow keys;
  :mod:`~gwlbsim.wire.checksum`: the Internet checksum; :mod:`~gwlbsim.wire.eni`: tunnel device names;
* :mod:`~gwlbsim.wire.pcap`, :mod:`~gwlbsim.wire.vectors` (real captures), :mod:`~gwlbsim.wire.scapy_gwlb`
  (scapy's view, a second decoder), :mod:`~gwlbsim.wire.hexdump`.

Imports nothing of the project outside this package.
"""
