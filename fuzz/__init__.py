"""Fuzzing GENEVE parsers: ours (``gwlbsim.geneve``, ``reference.core``) and the one inside an appliance.

* :mod:`fuzz.strategies`: Hypothesis strategies for valid, malformed (labelled) and flow traffic; the single
  source of generated packets (objects in :mod:`fuzz.packets`, malformations in :mod:`fuzz.malformations`,
  inner packets built by :mod:`fuzz.inner`).
* :mod:`fuzz.oracles`: scapy and tshark as independent decoders; :mod:`fuzz.core_model`: a model of an
  appliance core.
* :mod:`fuzz.coverage`: coverage-guided fuzzing with atheris (targets :mod:`fuzz.atheris_codec`,
  :mod:`fuzz.atheris_core`; seed corpus written by :mod:`fuzz.corpus_seed`).
* :mod:`fuzz.cli` (``gwlb-fuzz``): the network fuzzer (:mod:`fuzz.netfuzz`, :mod:`fuzz.traffic_pool`,
  :mod:`fuzz.watchdog`, :mod:`fuzz.minimize`, :mod:`fuzz.reproducer`).

See docs/fuzzing.md.
"""
