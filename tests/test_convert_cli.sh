#!/bin/bash
# `hadm convert` as a command: exit codes, one-line errors, no partial output
# on failure, and the conversion cache behind `detect`/`serve` taking a .pth.
set -u
BIN=${HADM_BIN:?HADM_BIN not set}
SRC=${HADM_SOURCE_DIR:-$(dirname "$0")/..}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC/../shared/golden}
TMP=$(mktemp -d /tmp/hadm-convert-sh-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }

"$BIN" convert --help > "$TMP/help" 2>&1; check '[ $? = 0 ] && grep -q "ema_state\|EMA" "$TMP/help"' "--help"
"$BIN" convert only-one 2> "$TMP/err"; check '[ $? = 2 ]' "one argument is a usage error"
"$BIN" convert --bogus a b 2> "$TMP/err"; check '[ $? = 2 ] && grep -q "^hadm: unknown option" "$TMP/err"' "unknown option"
"$BIN" convert "$TMP/missing.pth" "$TMP/out.safetensors" 2> "$TMP/err"
check '[ $? = 1 ] && [ $(wc -l < "$TMP/err") = 1 ] && grep -q "^hadm: .*missing.pth" "$TMP/err"' "missing input: one line naming it"

# A torch.save archive that is no HADM model: refused, nothing written.
"$BIN" convert "$SRC/tests/data/ckpt-small.pth" "$TMP/out.safetensors" 2> "$TMP/err"
check '[ $? = 1 ] && grep -q "not a HADM checkpoint" "$TMP/err" && [ ! -e "$TMP/out.safetensors" ]' "non-HADM archive refused"

# A real-layout HADM checkpoint, then the same file cut short: the old output stays intact, no temp files.
python3 "$SRC/tools/make_pth_fixture.py" from-safetensors "$GOLDEN/tiny-local/model.safetensors" "$TMP/HADM-L_0249999.pth" --backend emulate
"$BIN" convert "$TMP/HADM-L_0249999.pth" "$TMP/out.safetensors" > "$TMP/report"
check '[ $? = 0 ] && grep -q "HADM-L" "$TMP/report" && grep -q "ignored .*model (185 entries)" "$TMP/report"' "convert report"
IMG="$GOLDEN/tiny-local/test6.jpeg"
"$BIN" detect --local "$TMP/out.safetensors" --mode local --format json "$IMG" > "$TMP/det-converted.json"
"$BIN" detect --local "$GOLDEN/tiny-local/model.safetensors" --mode local --format json "$IMG" > "$TMP/det-golden.json"
check '[ -s "$TMP/det-converted.json" ] && cmp -s "$TMP/det-converted.json" "$TMP/det-golden.json"' \
    "hadm detect on the converted file prints exactly the golden model's detections"
cp "$TMP/out.safetensors" "$TMP/before"
head -c 4000000 "$TMP/HADM-L_0249999.pth" > "$TMP/cut.pth"
"$BIN" convert "$TMP/cut.pth" "$TMP/out.safetensors" 2> "$TMP/err"
check '[ $? = 1 ] && cmp -s "$TMP/out.safetensors" "$TMP/before"' "failed conversion leaves the old output"
check '[ -z "$(ls "$TMP" | grep tmp)" ]' "no temporary files left"

# The cache: converted once, reused, converted again when the checkpoint changes.
export HADM_CACHE_DIR="$TMP/cache"
p1=$("$BIN" convert --to-cache "$TMP/HADM-L_0249999.pth" 2> "$TMP/err1")
check '[ $? = 0 ] && [ -f "$p1" ] && grep -q "converting" "$TMP/err1"' "first use converts"
check 'cmp -s "$p1" "$TMP/out.safetensors"' "cached file equals hadm convert's output"
p2=$("$BIN" convert --to-cache "$TMP/HADM-L_0249999.pth" 2> "$TMP/err2")
check '[ "$p1" = "$p2" ] && [ ! -s "$TMP/err2" ]' "second use reuses the cache silently"
touch -d '2001-01-01' "$TMP/HADM-L_0249999.pth"
p3=$("$BIN" convert --to-cache "$TMP/HADM-L_0249999.pth" 2> /dev/null)
check '[ -f "$p3" ] && [ "$p3" != "$p1" ]' "a changed checkpoint is converted again"
p4=$("$BIN" convert --to-cache "$TMP/out.safetensors")
check '[ "$p4" = "$TMP/out.safetensors" ]' "a safetensors path passes through"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
