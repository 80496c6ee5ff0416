#!/bin/bash
# hadm doctor: every check ok/warn/fail, valid --json, exit code 0 unless a
# check fails; a model on tmpfs is flagged; corrupt model files fail.
set -u
BIN=${HADM_BIN:?HADM_BIN not set}
SRC=${HADM_SOURCE_DIR:-$(dirname "$0")/..}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC/../shared/golden}
MODEL=$GOLDEN/tiny-local/model.safetensors
TMP=$(mktemp -d /tmp/hadm-doctor-XXXXXX)
SHM=""
trap 'rm -rf "$TMP" ${SHM:+"$SHM"}' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }
# json_get FILE EXPR: evaluates a Python expression on the parsed JSON `d`
json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

"$BIN" doctor --bogus 2> /dev/null; check '[ $? = 2 ]' "unknown option is a usage error"

# A healthy setup: the golden model named directly.
"$BIN" doctor --json --local "$MODEL" > "$TMP/ok.json"; rc=$?
check 'json_get "$TMP/ok.json" "len(d[\"checks\"])" > /dev/null' "--json is valid JSON"
check '[ "$(json_get "$TMP/ok.json" "all(c[\"status\"] in (\"ok\",\"warn\",\"fail\") and c[\"name\"] and c[\"detail\"] for c in d[\"checks\"])")" = True ]' \
    "every check has a name, a status and a detail"
check '[ "$(json_get "$TMP/ok.json" "all(\"fix\" in c for c in d[\"checks\"] if c[\"status\"] != \"ok\")")" = True ]' \
    "every warning and failure carries a fix"
for name in cpu threads memory gpu environment model-l storage-l; do
    check '[ "$(json_get "$TMP/ok.json" "[c[\"name\"] for c in d[\"checks\"]].count(\"'$name'\")")" = 1 ]' "check $name present"
done
nfail=$(json_get "$TMP/ok.json" 'd["fail"]')
check '[ "$rc" = 0 ] && [ "$nfail" = 0 ] || { [ "$rc" = 1 ] && [ "$nfail" -gt 0 ]; }' "exit code follows the failures (rc $rc, $nfail failures)"
check 'json_get "$TMP/ok.json" "[c for c in d[\"checks\"] if c[\"name\"]==\"model-l\"][0][\"detail\"]" | grep -q "HADM-L, F32.*sha256 $(sha256sum "$MODEL" | cut -c1-64)"' \
    "model check names variant, dtype and the right SHA-256"

# Text output: one status per check line.
"$BIN" doctor --quick --local "$MODEL" > "$TMP/ok.txt"
check '[ $(grep -cE "^  (ok|warn|fail) " "$TMP/ok.txt") -ge 7 ] && tail -1 "$TMP/ok.txt" | grep -qE "^[0-9]+ ok, [0-9]+ warnings?, [0-9]+ failures?$"' "text report"

# A model on tmpfs is flagged.
for d in /dev/shm /run/user/$(id -u) /run; do
    if [ -d "$d" ] && [ -w "$d" ] && [ "$(stat -f -c %T "$d" 2> /dev/null)" = tmpfs ]; then SHM=$(mktemp -d "$d/hadm-doctor-XXXXXX"); break; fi
done
if [ -n "$SHM" ]; then
    cp "$MODEL" "$SHM/hadm-l.safetensors"
    "$BIN" doctor --json --quick --models "$SHM" > "$TMP/shm.json"
    check '[ "$(json_get "$TMP/shm.json" "[c[\"status\"] for c in d[\"checks\"] if c[\"name\"]==\"storage-l\"][0]")" = warn ]' "tmpfs model flagged"
    check 'json_get "$TMP/shm.json" "d[\"checks\"]" | grep -q tmpfs' "the warning says tmpfs"
else
    echo "note: no writable tmpfs mount here; the tmpfs check was not exercised"
fi

# Corrupt files fail, with exit code 1.
cp "$MODEL" "$TMP/hadm-l.safetensors"
printf '\xff\xff\xff\xff' | dd of="$TMP/hadm-l.safetensors" bs=1 seek=4 conv=notrunc 2> /dev/null
"$BIN" doctor --json --quick --local "$TMP/hadm-l.safetensors" > "$TMP/bad.json"; rc=$?
check '[ $rc = 1 ] && [ "$(json_get "$TMP/bad.json" "[c[\"status\"] for c in d[\"checks\"] if c[\"name\"]==\"model-l\"][0]")" = fail ]' "corrupt header fails (rc $rc)"
head -c 1000000 "$MODEL" > "$TMP/cut.safetensors"
"$BIN" doctor --quick --local "$TMP/cut.safetensors" > "$TMP/cut.txt"; rc=$?
check '[ $rc = 1 ] && grep -qE "^  fail  model-l" "$TMP/cut.txt"' "truncated model fails"
mkdir "$TMP/pth"
python3 "$SRC/tools/make_pth_fixture.py" from-safetensors "$MODEL" "$TMP/pth/HADM-L_0249999.pth" --backend emulate
head -c 3000000 "$TMP/pth/HADM-L_0249999.pth" > "$TMP/cut.pth"
"$BIN" doctor --quick --local "$TMP/cut.pth" > "$TMP/cutpth.txt"; rc=$?
check '[ $rc = 1 ] && grep -qE "^  fail  model-l" "$TMP/cutpth.txt"' "truncated checkpoint fails"
"$BIN" doctor --quick --models "$TMP/pth" > "$TMP/dir.txt"
check 'grep -qE "^  ok    model-l .*HADM-L_0249999.pth: original checkpoint \(HADM-L\), EMA weights" "$TMP/dir.txt"' \
    "a models dir with only the .pth: the checkpoint is found and recognised"

# Environment that hurts.
OMP_NUM_THREADS=1 "$BIN" doctor --json --quick --local "$MODEL" > "$TMP/env.json"
if [ "$(nproc)" -gt 1 ]; then
    check '[ "$(json_get "$TMP/env.json" "[c[\"status\"] for c in d[\"checks\"] if c[\"name\"]==\"environment\"][0]")" = warn ]' "OMP_NUM_THREADS=1 flagged"
fi

# The NVIDIA path, through a stand-in libnvidia-ml.so.1 (no GPU needed): the
# library is only ever loaded at run time, so this is the code a real driver meets.
mkdir "$TMP/nvml"
cat > "$TMP/nvml/fake.c" <<'EOC'
#include <stdio.h>
typedef struct { unsigned long long total, free, used; } mem;
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned n) { snprintf(v, n, "555.42.06"); return 0; }
int nvmlDeviceGetCount_v2(unsigned *c) { *c = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **d) { *d = (void *)(long)(i + 1); return 0; }
int nvmlDeviceGetName(void *d, char *n, unsigned len) { snprintf(n, len, "NVIDIA H200 #%ld", (long)d); return 0; }
int nvmlDeviceGetMemoryInfo(void *d, mem *m) { (void)d; m->total = 150ull << 30; m->free = 140ull << 30; m->used = 10ull << 30; return 0; }
EOC
if ${CC:-cc} -shared -fPIC -o "$TMP/nvml/libnvidia-ml.so.1" "$TMP/nvml/fake.c" 2> "$TMP/nvml/cc.log"; then
    LD_LIBRARY_PATH="$TMP/nvml${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$BIN" doctor --json --quick --local "$MODEL" > "$TMP/gpu.json"
    gpu=$(json_get "$TMP/gpu.json" '[c["detail"] for c in d["checks"] if c["name"]=="gpu"][0]')
    check 'echo "$gpu" | grep -q "driver 555.42.06, 2 GPUs: 0: NVIDIA H200 #1, 140.0 of 150.0 GB free; 1: NVIDIA H200 #2"' "GPU through NVML: $gpu"
else
    bad "cannot build the stand-in NVML library: $(cat "$TMP/nvml/cc.log")"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
