#!/usr/bin/env bash
# Fault injection against `hadm serve` and `hadm convert`: each case prints
# what it injected and what it observed, then asserts. Model files changed
# under a running server, out of memory on load, clients that vanish or
# dribble, SIGTERM while a batch gathers, and a full or unwritable disk.
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR, curl, python3 (standard library only).
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
PY="python3 $SRC_DIR/tests/server/client.py"
FAULTS="python3 $SRC_DIR/tests/server/faults.py"
IMG=$GOLDEN/tiny-global/landscape_640x427.jpg
T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-faults.XXXXXX")
PID=""
URL=""

STOP_TIMEOUT_S=120   # stop_server (lib.sh): a server draining slow clients
cleanup() { stop_server KILL; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# start_server [--ulimit-v KB] ARGS...
start_server() {
    local lim=""
    [ "${1:-}" = "--ulimit-v" ] && { lim=$2; shift 2; }
    rm -f "$T/port"
    ( [ -n "$lim" ] && ulimit -v "$lim"; exec "$BIN" serve --host 127.0.0.1 --port 0 --port-file "$T/port" --threads 1 "$@" ) \
        2>>"$T/server.log" &
    PID=$!
    server_started "$@"
}
req() { local out=$1; shift; curl -s --max-time 60 -o "$out" -D "$out.h" -w '%{http_code}' "$@"; }
detect() { req "$1" -F "file=@$IMG" "$URL/api/v1/detect?mode=$2"; }
wait_state() { # wait_state MODEL STATE: polls /models/status for up to 10 s
    for _ in $(seq 1 200); do
        req "$T/st" "$URL/models/status" >/dev/null
        [ "$($PY field "$T/st" "d['models']['$1']['state']" "$2" 2>/dev/null; echo $?)" = 0 ] && return 0
        sleep 0.05
    done
    return 1
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1" 2>&1 | head -c 300; }
metric() { curl -s "$URL/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
alive() { kill -0 "$PID" 2>/dev/null && [ "$(req "$T/h" "$URL/health")" = 200 ]; }

[ -x "$BIN" ] && [ -r "$IMG" ] || { echo "FAIL need $BIN and $IMG"; exit 1; }
# A sanitizer build cannot start under ulimit -v, and its RSS says little about leaks
# (freed memory is held in quarantine; LeakSanitizer checks leaks at exit instead).
SANITIZED=0
{ (ulimit -v $((4 * 1024 * 1024)); exec "$BIN" --version) >/dev/null 2>&1; } 2>/dev/null || SANITIZED=1
cp "$GOLDEN/tiny-local/model.safetensors" "$T/l.safetensors"
cp "$GOLDEN/tiny-global/model.safetensors" "$T/g.safetensors"

# ---- model file truncated, rewritten in place, replaced by rename ------------------------
start_server --local "$T/l.safetensors" --global "$T/g.safetensors" || exit 1
check "both models ready" wait_state hadm-g ready
expect "local detect before the fault" 200 "$(detect "$T/before" local)"
truncate -s 100000 "$T/l.safetensors"
note "injected: HADM-L's file truncated to 100000 bytes while mapped"
code=$(detect "$T/e" local)
note "observed: local detect -> $code: $(head -c 200 "$T/e")"
expect "detect on a truncated model -> 500, no SIGBUS" 500 "$code"
check "the error says the file was truncated" grep -q "truncated while in use" "$T/e"
check "server alive" alive
expect "global detect unaffected" 200 "$(detect "$T/e" global)"
req "$T/s" -X POST "$URL/api/control/unload_l" >/dev/null
req "$T/s" -X POST "$URL/api/control/load_l" >/dev/null
check "reload of the truncated file: failed" wait_state hadm-l failed
note "observed: reload error: $(field "$T/st" "['models']['hadm-l']['error']")"
grep -q "l.safetensors" "$T/st"; expect "the load error names the file" 0 $?
cp "$GOLDEN/tiny-local/model.safetensors" "$T/l.new" && mv "$T/l.new" "$T/l.safetensors"
req "$T/s" -X POST "$URL/api/control/load_l" >/dev/null
check "reload after a good file is renamed in: ready" wait_state hadm-l ready
expect "local detect after the reload" 200 "$(detect "$T/after" local)"
check "same answer as before the fault" $PY same "$T/after" "$T/before"

cp "$GOLDEN/tiny-global/model.safetensors" "$T/g.new" && mv "$T/g.new" "$T/g.safetensors"
note "injected: a new HADM-G file renamed over the mapped one"
expect "global detect after a rename over its file" 200 "$(detect "$T/g1" global)"
sleep 0.02
cp "$GOLDEN/tiny-local/model.safetensors" "$T/l.safetensors"
note "injected: HADM-L's file rewritten in place (cp over it)"
code=$(detect "$T/e" local)
note "observed: local detect -> $code: $(head -c 200 "$T/e")"
expect "detect after an in-place rewrite -> 500" 500 "$code"
check "the error says it was modified in place" grep -q "modified in place" "$T/e"
req "$T/s" -X POST "$URL/api/control/unload_l" >/dev/null
req "$T/s" -X POST "$URL/api/control/load_l" >/dev/null
check "reload picks up the rewritten file" wait_state hadm-l ready
expect "local detect after that reload" 200 "$(detect "$T/after2" local)"
stop_server TERM
expect "SIGTERM: exit 0" 0 "$SERVER_RC"

# ---- out of memory on load: a model too big for the address-space limit ------------------
# A sparse copy of HADM-L, 8 GiB long (the tail is never referenced), cannot be mapped
# under ulimit -v; HADM-G still loads and serves.
cp "$GOLDEN/tiny-local/model.safetensors" "$T/big-l.safetensors"
truncate -s 8G "$T/big-l.safetensors"
if [ "$SANITIZED" = 1 ]; then
    echo "skip out-of-memory on load: this build cannot run under ulimit -v (sanitizer shadow memory)"
else
    start_server --ulimit-v $((4 * 1024 * 1024)) --local "$T/big-l.safetensors" --global "$T/g.safetensors" || exit 1
    note "injected: ulimit -v 4 GiB on the server, HADM-L file 8 GiB (sparse)"
    check "HADM-L: failed" wait_state hadm-l failed
    note "observed: HADM-L state failed, error: $(field "$T/st" "['models']['hadm-l']['error']")"
    grep -q "Cannot allocate memory\|out of memory" "$T/st"; expect "the error says memory ran out" 0 $?
    check "HADM-G: ready" wait_state hadm-g ready
    expect "global detect still served" 200 "$(detect "$T/e" global)"
    code=$(detect "$T/e" local)
    expect "local detect -> 503" 503 "$code"
    check "the 503 says HADM-L failed to load" grep -q "HADM-L failed to load" "$T/e"
    stop_server TERM
fi
rm -f "$T/big-l.safetensors"

# ---- clients that disconnect mid-upload and mid-inference; slow clients -------------------
start_server --local "$T/l.safetensors" --max-batch 1 --idle-timeout-s 2 --timeout-ms 4000 || exit 1
check "HADM-L ready" wait_state hadm-l ready
expect "a detect before the faulty clients (buffers warm)" 200 "$(detect "$T/e" local)"
rss0=$(metric hadm_process_resident_memory_bytes)
a0=$(metric hadm_http_requests_aborted_total)
$FAULTS abort-upload "$URL" 20 | sed 's/^/     /'
$FAULTS abort-inference "$URL" "$IMG" 3 | sed 's/^/     /'
for _ in $(seq 1 100); do [ "$(metric hadm_requests_in_flight)" = 1 ] && break; sleep 0.1; done
a1=$(metric hadm_http_requests_aborted_total)
inflight=$(metric hadm_requests_in_flight)
note "observed: aborted requests counted ${a0:-?} -> ${a1:-?}, in flight afterwards $inflight (the /metrics call)"
check "server alive after 23 vanished clients" alive
check "every cut-off upload counted as aborted" test "$((a1 - a0))" -ge 20
expect "no request left in flight" 1 "$inflight"
expect "a normal detect after them" 200 "$(detect "$T/e" local)"

$FAULTS idle "$URL" >"$T/idle"
note "observed: connection stopped mid-headers closed after $(sed -n 's/closed_after_s=//p' "$T/idle") s (--idle-timeout-s 2)"
check "idle connection closed within 1..10 s" \
    python3 -c "import sys; v=float(open('$T/idle').read().split('closed_after_s=')[1].split()[0]); sys.exit(not 1 <= v <= 10)"

$FAULTS slowloris "$URL" "$IMG" 100 10 5 >"$T/slow"
sed 's/^/     /' "$T/slow"
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$T/slow"; }
expect "every normal request answered 200 under slow-loris" "$(val normal_requests)" "$(val normal_ok)"
check "normal latency bounded (max $(val normal_max_s) s vs $(val baseline_max_s) s alone)" \
    python3 -c "import sys; sys.exit(not $(val normal_max_s) < max(2.0, 5 * $(val baseline_max_s)))"
expect "slow bodies cut off at --timeout-ms" 10 "$(val body_closed_by_server)"
for _ in $(seq 1 100); do [ "$(metric hadm_requests_in_flight)" = 1 ] && break; sleep 0.1; done
expect "no request left in flight after the slow clients" 1 "$(metric hadm_requests_in_flight)"
rss1=$(metric hadm_process_resident_memory_bytes)
note "observed: RSS $((rss0 / 1048576)) MiB before the faulty clients, $((rss1 / 1048576)) MiB after"
if [ "$SANITIZED" = 0 ]; then
    check "RSS grew less than 64 MiB" test $((rss1 - rss0)) -lt $((64 * 1048576))
fi
stop_server TERM
expect "SIGTERM after the faulty clients: exit 0" 0 "$SERVER_RC"

# ---- SIGTERM while a batch is gathering -----------------------------------------------------
start_server --local "$T/l.safetensors" --max-batch 8 --batch-timeout-ms 5000 || exit 1
check "HADM-L ready" wait_state hadm-l ready
WS=()
for i in 1 2 3 4; do
    detect "$T/b$i" local >"$T/b$i.code" &
    WS+=($!)
done
for _ in $(seq 1 200); do
    req "$T/h" "$URL/health" >/dev/null
    [ "$(field "$T/h" "['queue_depth']")" = 4 ] && break
    sleep 0.05
done
expect "4 requests queued for the batch" 4 "$(field "$T/h" "['queue_depth']")"
stop_server TERM
note "injected: SIGTERM with 4 requests waiting for a batch (--max-batch 8, --batch-timeout-ms 5000)"
wait "${WS[@]}"
codes=$(for i in 1 2 3 4; do printf '%s ' "$(cat "$T/b$i.code")"; done)
note "observed: answers $codes, exit $SERVER_RC, $(grep -o '"event":"shutting_down"[^}]*' "$T/server.log" | tail -1)"
expect "every batched request answered 200" "200 200 200 200 " "$codes"
expect "exit 0 after draining the batch" 0 "$SERVER_RC"

# ---- disk full / unwritable output for convert (and quantize when built) -----------------------
python3 "$SRC_DIR/tools/make_pth_fixture.py" from-safetensors "$GOLDEN/tiny-local/model.safetensors" \
    "$T/HADM-L_0249999.pth" --backend emulate >/dev/null
mkdir -p "$T/out"
no_partial() { [ -z "$(ls -A "$T/out")" ]; }
(ulimit -f 512; exec "$BIN" convert "$T/HADM-L_0249999.pth" "$T/out/l.safetensors") 2>"$T/err"
rc=$?
note "injected: ulimit -f 512 KiB for a ~3 MiB output; observed exit $rc: $(cat "$T/err")"
expect "convert past the file-size limit exits 1" 1 "$rc"
check "the error says why" grep -q "File too large" "$T/err"
check "no partial or temporary file left" no_partial
mkfifo "$T/out/fifo"
"$BIN" convert "$T/HADM-L_0249999.pth" "$T/out/fifo" 2>"$T/err"
rc=$?
note "injected: output path is a FIFO; observed exit $rc: $(cat "$T/err")"
expect "convert onto a non-regular file exits 1" 1 "$rc"
check "the FIFO is still a FIFO" test -p "$T/out/fifo"
rm -f "$T/out/fifo"
check "no temporary file left" no_partial
touch "$T/notadir"
"$BIN" convert "$T/HADM-L_0249999.pth" "$T/notadir/l.safetensors" 2>"$T/err"
expect "convert into a path under a file exits 1" 1 $?
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups)   # root ignores directory modes
else
    AS_USER=()
fi
chmod 755 "$T"; chmod 555 "$T/out"; chmod 644 "$T/HADM-L_0249999.pth"
"${AS_USER[@]}" "$BIN" convert "$T/HADM-L_0249999.pth" "$T/out/l.safetensors" 2>"$T/err"
rc=$?
chmod 755 "$T/out"
note "injected: read-only output directory; observed exit $rc: $(cat "$T/err")"
expect "convert into a read-only directory exits 1" 1 "$rc"
check "no file created there" no_partial
if "$BIN" quantize --help >/dev/null 2>&1; then
    (ulimit -f 256; exec "$BIN" quantize --type bf16 "$GOLDEN/tiny-local/model.safetensors" "$T/out/q.safetensors") 2>"$T/err"
    rc=$?
    note "injected: ulimit -f 256 KiB for quantize; observed exit $rc: $(cat "$T/err")"
    expect "quantize past the file-size limit exits 1" 1 "$rc"
    check "quantize leaves no partial file" no_partial
else
    echo "skip quantize: not in this build"
fi

finish
