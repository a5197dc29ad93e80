"""Fuzzing GENEVE parsers: ours (``gwlbsim.wire.geneve``, ``gwlbsim.reference.core``) and the one inside an appliance.

* the traffic (valid, malformed and flow packets and their Hypothesis strategies) is the shared layer
  :mod:`gwlbsim.traffic`, which the conformance suite uses too.
* :mod:`gwlbsim.fuzz.oracles`: scapy and tshark as independent decoders; :mod:`gwlbsim.fuzz.core_model`: a model of an
  appliance core.
* :mod:`gwlbsim.fuzz.coverage`: coverage-guided fuzzing with atheris (targets :mod:`gwlbsim.fuzz.atheris_codec`,
  :mod:`gwlbsim.fuzz.atheris_core`; seed corpus written by :mod:`gwlbsim.fuzz.corpus_seed`).
* :mod:`gwlbsim.fuzz.cli` (``gwlb-fuzz``): the network fuzzer (:mod:`gwlbsim.fuzz.netfuzz`,
  :mod:`gwlbsim.fuzz.traffic_pool`, :mod:`gwlbsim.fuzz.watchdog`, :mod:`gwlbsim.fuzz.minimize`,
  :mod:`gwlbsim.fuzz.reproducer`).

See docs/fuzzing.md.
"""
