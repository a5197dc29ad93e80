"""OSS-Fuzz / ClusterFuzzLite entry point of the ``codec`` target (:mod:`gwlbsim.fuzz.atheris_codec`): built by
``.clusterfuzzlite/build.sh`` with ``compile_python_fuzzer``, run with libFuzzer's flags and corpus directories
(``python fuzz/fuzz_codec.py -max_total_time=60 -dict=fuzz/geneve.dict CORPUS_DIR`` does the same by hand)."""

import sys

from gwlbsim.fuzz.coverage import libfuzzer_main

if __name__ == "__main__":
    libfuzzer_main("codec", sys.argv[1:])
