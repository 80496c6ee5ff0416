#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang + ASan + UBSan) and runs each for
# SECONDS (default 60), one after another, then prints per target: executions,
# coverage, corpus size and crashes. Exit status 1 if any target crashed.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     targets: image exif base64
#                                           safetensors pth request kserve
#
# Environment: HADM_FUZZ_BUILD (build dir, default build-fuzz), FUZZ_JOBS
# (targets run at once, default 1), FUZZ_ARGS (extra libFuzzer flags).
#
# The committed seeds (fuzz/corpus/<t>) are read, never written: new inputs go
# to $HADM_FUZZ_BUILD/corpus/<t>, which later runs resume from. Crashes land in
# $HADM_FUZZ_BUILD/artifacts/<t>/ with the log in $HADM_FUZZ_BUILD/logs/<t>.log.
#
# Longer runs: CI runs every target for a few seconds; for real fuzzing, run
# e.g. `nice -n 19 tools/fuzz.sh 3600` (an hour per target), or one target
# with FUZZ_JOBS=1 tools/fuzz.sh 86400 request. A crash is reproduced with
# `$HADM_FUZZ_BUILD/fuzz/fuzz_<t> ARTIFACT`; once fixed, copy the artifact to
# fuzz/regress/<t>/ (a short descriptive name) so that tests/test_fuzz_regress
# replays it in every ctest run, sanitizer pass included.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
all=(image exif base64 safetensors pth request kserve)
targets=("${@:-${all[@]}}")
B=${HADM_FUZZ_BUILD:-build-fuzz}
jobs=${FUZZ_JOBS:-1}

if ! command -v clang >/dev/null; then
    echo "fuzz.sh: clang is needed (scripts/install-deps.sh installs it)" >&2
    exit 2
fi
CC=clang cmake -S . -B "$B" -DHADM_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$B" --target fuzz -j"$(nproc)"

# oneDNN and the OpenMP runtime keep allocations until exit by design.
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$B/logs"

run_one() {
    local t=$1
    mkdir -p "$B/corpus/$t" "$B/artifacts/$t"
    # -rss_limit_mb: a model file may legitimately ask for a few hundred MB.
    "$B/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$B/artifacts/$t/" ${FUZZ_ARGS:-} \
        "$B/corpus/$t" "fuzz/corpus/$t" >"$B/logs/$t.log" 2>&1 || true
}

running=0
for t in "${targets[@]}"; do
    [ -x "$B/fuzz/fuzz_$t" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

status=0
printf '%-12s %12s %8s %8s %8s %8s\n' target executions exec/s cov features crashes
for t in "${targets[@]}"; do
    log="$B/logs/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    crashes=$(find "$B/artifacts/$t" -type f | wc -l)
    printf '%-12s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$crashes"
    if [ "$crashes" -gt 0 ] || grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error\|fuzz invariant broken' "$log"; then
        echo "  $t: findings in $B/artifacts/$t/, see $log" >&2
        status=1
    fi
done
exit $status
