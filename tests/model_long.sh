#!/usr/bin/env bash
# model_long.sh: the model's long run, in chunks, outside CTest.
#
#   tests/model_long.sh BUILD_DIR [TOTAL] [CHUNK] [GROUP]
#
# Runs `test_model GROUP` (default "long", every feature) CHUNK cases at a
# time (default 1000) until TOTAL cases (default 200000) have passed or one
# fails.  Each chunk draws its own base seed, printed before it starts, so
# any failure is reproduced by the command the model prints.  A summary line
# per chunk goes to stdout; the model's own output goes to BUILD_DIR/model_long/.
# Extra features can be set as usual (KNIT_MODEL_FEATURES=+trig ...);
# KNIT_MODEL_BIN runs another binary (a copy, so rebuilding does not
# replace it under the run).
set -uo pipefail
build=${1:?usage: model_long.sh BUILD_DIR [TOTAL] [CHUNK] [GROUP]}
total=${2:-200000}
chunk=${3:-1000}
group=${4:-long}
bin=${KNIT_MODEL_BIN:-$build/tests/test_model}
[ -x "$bin" ] || { echo "model_long: $bin not built" >&2; exit 2; }
logs=$build/model_long
mkdir -p "$logs"
done_cases=0
t0=$(date +%s)
while [ "$done_cases" -lt "$total" ]; do
    n=$chunk
    [ $((total - done_cases)) -lt "$n" ] && n=$((total - done_cases))
    seed=$(( $(date +%s%N) / 1000 ))
    log=$logs/chunk-$seed.log
    if ! KNIT_SEED=$seed KNIT_CASES=$n "$bin" "$group" >"$log" 2>&1; then
        echo "model_long: FAILED in chunk seed $seed after $done_cases case(s); see $log"
        grep -A3 "reproduce\|KNIT_SEED=" "$log" | head -8
        exit 1
    fi
    done_cases=$((done_cases + n))
    echo "model_long: seed $seed: $n passed; $done_cases/$total in $(( $(date +%s) - t0 )) s"
done
echo "model_long: $done_cases case(s) of $group passed in $(( $(date +%s) - t0 )) s"
