#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: gwlbsim's coverage-guided targets as libFuzzer binaries in $OUT, each with
# its seed corpus (fuzz/corpus/TARGET, zipped) and the GENEVE dictionary (fuzz/geneve.dict).
# The targets: codec (gwlbsim.fuzz.atheris_codec: the GENEVE codec on any bytes) and core
# (gwlbsim.fuzz.atheris_core: the reference appliance's core against its model).
# tests/unit/test_clusterfuzzlite.py runs this script with stand-ins for the base image's tools, then each
# harness it built for a few seconds.
pip3 install .
for target in codec core; do
    compile_python_fuzzer "fuzz/fuzz_${target}.py"
    (cd "fuzz/corpus/${target}" && python3 -m zipfile -c "$OUT/fuzz_${target}_seed_corpus.zip" ./*)
    cp fuzz/geneve.dict "$OUT/fuzz_${target}.dict"
done
