#!/usr/bin/env bash
# The GPU acceptance check of the CUDA backend, in two halves.
#
# The device machine (H200, reached through the session's `run` tool) starts
# bare: it has nvcc/CUDA 13 but not oneDNN, libmicrohttpd, cJSON, libspng, ...
# and the golden cases (../shared) do not travel. So the build happens HERE
# and what the GPU needs travels in one ignored folder, .cuda-carry/:
#
#   1. here (the dev machine, deps installed; 2-3 min on 2 cores, measured):
#        bash tools/cuda_check.sh prepare
#      builds build-gpu/ (Release, -DHADM_CUDA=ON, sm_90), then packs into
#      .cuda-carry/: the binaries, the shared libraries they need that a CUDA
#      image lacks (.tar.gz), and the golden cases (.tar.gz); ~45 MiB in all.
#   2. on the device machine (one call, timeout_s 600, about 6-8 minutes):
#        run(command="bash tools/cuda_check.sh run", carry=[".cuda-carry"], timeout_s=600)
#      writes under $OUT:
#        summary.txt   one line per step: PASS / FAIL / SKIP and its wall time
#        env.txt       nvidia-smi, driver, library paths
#        xcheck.log    test_backend_ops: every CUDA op vs the CPU (errors and
#                      tolerances printed per op), backbone/pyramid errors and
#                      detections of each golden case vs golden and vs the CPU
#        detect.log    hadm detect --device cuda vs --device cpu on the golden images
#        bench.log     hadm-cuda-bench --size full: table + JSON (ms/image for
#                      HADM-L, HADM-G, both, batch 1 and 8, ratio to the bf16
#                      FLOP floor, first request after load vs steady state)
#        xcheck_full.log  the full-size synthetic HADM-L through CPU and GPU
#                      (backbone/pyramid relative errors; flash attention at 4096 tokens)
#      What to look at: summary.txt first; then in bench.log "batch8_ms_per_image"
#      (target <= 25 per model) and "first_over_steady" (target <= 2).
#
# On a GPU machine with the Debian dependencies installed (a user's own box),
#        bash tools/cuda_check.sh local [OUTDIR]
# builds there with -j$(nproc) and runs the same steps.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.cuda-carry
BUILD=${HADM_GPU_BUILD:-build-gpu}   # the build folder prepare/local use
BINS="hadm tests/test_backend_ops tests/test_cuda_plan hadm-cuda-bench"

build() {   # build DIR JOBS
    cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Release -DHADM_WERROR=ON -DHADM_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null &&
        cmake --build "$1" -j"$2" --target hadm test_backend_ops test_cuda_plan hadm-cuda-bench
}

prepare() {
    build "$BUILD" "${JOBS:-2}" || exit 1
    grep -qx '/.cuda-carry/' .git/info/exclude 2>/dev/null || echo '/.cuda-carry/' >>.git/info/exclude
    rm -rf "$CARRY" && mkdir -p "$CARRY/bin" "$CARRY/lib"
    for b in $BINS; do cp "$BUILD/$b" "$CARRY/bin/"; done
    # every shared library outside glibc/gcc and the CUDA driver/cuBLAS, which the image has
    for b in $BINS; do ldd "$BUILD/$b"; done | awk '/=> \//{print $3}' | sort -u |
        grep -Ev '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*|libcuda|libcublas[^/]*)\.so' |
        while read -r l; do cp -L "$l" "$CARRY/lib/"; done
    tar -C "$CARRY" -czf "$CARRY/lib.tar.gz" lib && rm -rf "$CARRY/lib"
    golden=${HADM_GOLDEN_DIR:-$ROOT/../shared/golden}
    tar -C "$(dirname "$golden")" -czf "$CARRY/golden.tar.gz" "$(basename "$golden")"
    cp tools/cuda_check.sh "$CARRY/"
    du -sh "$CARRY"
    echo "now: run(command=\"bash tools/cuda_check.sh run\", carry=[\".cuda-carry\"], timeout_s=600)"
}

step() {    # step NAME LOG TIMEOUT CMD...: runs, records PASS/FAIL/SKIP with the time
    local name=$1 log=$2 limit=$3 t0 rc
    shift 3
    t0=$(date +%s%N)
    timeout "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local verdict=FAIL
    [ $rc -eq 0 ] && verdict=PASS
    [ $rc -eq 77 ] && verdict=SKIP
    [ $rc -eq 124 ] && verdict="FAIL (timeout ${limit}s)"
    printf '%-28s %-22s %6d ms  (%s)\n' "$name" "$verdict" $((($(date +%s%N) - t0) / 1000000)) "$(basename "$log")" |
        tee -a "$OUT/summary.txt"
}

checks() {  # checks BINDIR GOLDEN
    local bin=$1 golden=$2 work=/tmp/hadm-cuda-check
    mkdir -p "$work"
    : >"$OUT/summary.txt"
    { nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
      echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd "$bin/hadm"; } >"$OUT/env.txt" 2>&1
    step "cuda plan (cpu logic)" "$OUT/xcheck.log" 60 "$bin/test_cuda_plan"
    HADM_GOLDEN_DIR=$golden step "backend ops + golden" "$OUT/xcheck.log" 300 "$bin/test_backend_ops"
    for c in "$golden"/*/; do
        img=$(ls "$c" | grep -Ei '\.(jpe?g|png|webp)$' | head -1)
        n=$(basename "$c")
        [ -n "$img" ] || continue
        which=--local
        grep -q '"variant": *"HADM-G"' "$c/expected.json" && which=--global
        for d in cpu cuda; do
            echo "== $n --device $d" >>"$OUT/detect.log"
            step "detect $n --device $d" "$OUT/detect.log" 180 \
                "$bin/hadm" detect --device $d $which "$c/model.safetensors" --format json "$c/$img"
        done
    done
    step "bench (full size)" "$OUT/bench.log" 420 "$bin/hadm-cuda-bench" --size full --reps 10 --dir "$work/models"
    step "bench json" "$OUT/bench.log" 240 "$bin/hadm-cuda-bench" --size full --reps 5 --dir "$work/models" --json
    HADM_XCHECK_SKIP_GOLDEN=1 HADM_XCHECK_MODEL="$work/models/hadm-l-full.safetensors" \
        step "full-size model xcheck" "$OUT/xcheck_full.log" 240 "$bin/test_backend_ops"
}

case "${1:-}" in
prepare)
    prepare ;;
run)
    : "${OUT:?run this on the device machine (OUT is set there)}"
    [ -d "$CARRY/bin" ] || { echo "no $CARRY: run 'bash tools/cuda_check.sh prepare' here first" | tee "$OUT/summary.txt"; exit 1; }
    mkdir -p /tmp/hadm-carry
    tar -C /tmp/hadm-carry -xzf "$CARRY/lib.tar.gz"
    tar -C /tmp/hadm-carry -xzf "$CARRY/golden.tar.gz"
    # keep only the libraries this system lacks: a system tool must never load ours
    for l in /tmp/hadm-carry/lib/*; do
        ldconfig -p | grep -q "^[[:space:]]*$(basename "$l") " && rm -f "$l"
    done
    echo "carried libraries in use: $(ls /tmp/hadm-carry/lib | tr '\n' ' ')"
    # cuBLASLt from the image: the toolkit's, or the one pip installed with PyTorch
    cublas=$(dirname "$(find /usr/local/cuda*/ /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=/tmp/hadm-carry/lib:${cublas:-/usr/local/cuda/lib64}:${LD_LIBRARY_PATH:-}
    export OMP_NUM_THREADS=16
    checks "$CARRY/bin" /tmp/hadm-carry/golden ;;
local)
    export OUT=${2:-$ROOT/cuda-check-out}
    mkdir -p "$OUT"
    build "$BUILD" "$(nproc)" || exit 1
    d=$ROOT/$BUILD
    mkdir -p "$d/flat" && for b in $BINS; do ln -sf "$d/$b" "$d/flat/"; done
    checks "$d/flat" "${HADM_GOLDEN_DIR:-$ROOT/../shared/golden}" ;;
*)
    sed -n '2,38p' "$0"; exit 2 ;;
esac
