"""Fuzzing GENEVE parsers: ours (``gwlbsim.wire.geneve``, ``reference.core``) and the one inside an appliance.

* the traffic (valid, malformed and flow packets and their Hypothesis strategies) is the shared layer
  :mod:`gwlbsim.traffic`, which the conformance suite uses too.
* :mod:`fuzz.oracles`: scapy and tshark as independent decoders; :mod:`fuzz.core_model`: a model of an
  appliance core.
* :mod:`fuzz.coverage`: coverage-guided fuzzing with atheris (targets :mod:`fuzz.atheris_codec`,
  :mod:`fuzz.atheris_core`; seed corpus written by :mod:`fuzz.corpus_seed`).
* :mod:`fuzz.cli` (``gwlb-fuzz``): the network fuzzer (:mod:`fuzz.netfuzz`, :mod:`fuzz.traffic_pool`,
  :mod:`fuzz.watchdog`, :mod:`fuzz.minimize`, :mod:`fuzz.reproducer`).

See docs/fuzzing.md.
"""
