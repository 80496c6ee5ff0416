#!/usr/bin/env bash
# --device and --gpu-memory-fraction on the command line: bad values are usage
# errors (exit 2); a CUDA request that this build or machine cannot serve is a
# runtime failure (exit 1) with one clear line, never a silent run on the CPU.
set -u
bin=${HADM_BIN:?} case_dir=${HADM_GOLDEN_DIR:?}/tiny-local
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

expect() {   # expect RC WHAT ARGS...: runs hadm ARGS, checks the exit code
    local want=$1 what=$2
    shift 2
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL $what: exit $rc, expected $want: $(head -c 300 "$tmp/err")"
        fails=$((fails + 1))
    fi
}

img=$case_dir/test6.jpeg model=$case_dir/model.safetensors
for bad in gpu cuda:64 cuda:x cuda: CPU ""; do
    expect 2 "detect --device '$bad'" detect --device "$bad" --local "$model" "$img"
    expect 2 "serve --device '$bad'" serve --device "$bad" --port 0
done
for bad in 0 -0.5 1.5 abc nan; do
    expect 2 "detect --gpu-memory-fraction $bad" detect --gpu-memory-fraction "$bad" --local "$model" "$img"
    expect 2 "serve --gpu-memory-fraction $bad" serve --gpu-memory-fraction "$bad" --port 0
done
grep -q -- "--gpu-memory-fraction" <("$bin" detect --help 2>&1) || { echo "FAIL detect --help lacks the flag"; fails=$((fails + 1)); }
grep -q -- "--gpu-memory-fraction" <("$bin" serve --help 2>&1) || { echo "FAIL serve --help lacks the flag"; fails=$((fails + 1)); }

# the fraction is a GPU setting: with the CPU it is accepted and changes nothing
expect 0 "cpu with a fraction" detect --device cpu --gpu-memory-fraction 0.5 --local "$model" "$img"
cp "$tmp/out" "$tmp/cpu_frac.json"
expect 0 "cpu" detect --device cpu --local "$model" "$img"
cmp -s "$tmp/out" "$tmp/cpu_frac.json" || { echo "FAIL --gpu-memory-fraction changed a CPU result"; fails=$((fails + 1)); }

# no GPU here (CI): a clear error naming the reason, exit 1, nothing on stdout
if ! nvidia-smi -L >/dev/null 2>&1; then
    expect 1 "detect --device cuda without a GPU" detect --device cuda --local "$model" "$img"
    if ! grep -Eq '^hadm: .*(rebuild with -DHADM_CUDA=ON|no CUDA device)' "$tmp/err" || [ -s "$tmp/out" ] ||
        [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
        echo "FAIL cuda error message: $(cat "$tmp/err")"
        fails=$((fails + 1))
    fi
fi

[ "$fails" -eq 0 ] && echo "device CLI: all checks passed"
exit $((fails > 0))
