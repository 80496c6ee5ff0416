#!/usr/bin/env bash
# Integration tests of `hadm serve`: starts the real server on a free loopback
# port with the tiny golden models and exercises every route, start-up mode
# and error status of DESIGN.md "HTTP API" with curl and tests/server/client.py.
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR (default ../shared/golden from the source
# root), curl, python3 (standard library only).
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
PY="python3 $SRC_DIR/tests/server/client.py"
L=$GOLDEN/tiny-local/model.safetensors
G=$GOLDEN/tiny-global/model.safetensors
IMG=$GOLDEN/tiny-local/test6.jpeg
IMG2=$GOLDEN/tiny-global/landscape_640x427.jpg

T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-server.XXXXXX")
PID=""
URL=""

FETCH_PIDS=""  # helper servers of the detect-url section
cleanup() { stop_server KILL; for p in $FETCH_PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

for f in "$L" "$G" "$IMG" "$IMG2"; do
    [ -r "$f" ] || { echo "FAIL missing golden file $f (HADM_GOLDEN_DIR=$GOLDEN)"; exit 1; }
done
[ -x "$BIN" ] || { echo "FAIL no hadm binary at $BIN"; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")   # the demo test runs from another directory

# start_server ARGS...: env vars for the server go in SERVER_ENV (array).
SERVER_ENV=()
start_server() {
    rm -f "$T/port"
    env "${SERVER_ENV[@]}" "$BIN" serve --host 127.0.0.1 --port 0 --port-file "$T/port" "$@" \
        2>>"$T/server.log" &
    PID=$!
    server_started "$@"
}

# req OUT [curl args...]: prints the status; body in OUT, headers in OUT.h
req() {
    local out=$1; shift
    curl -s --max-time 60 -o "$out" -D "$out.h" -w '%{http_code}' "$@"
}

# ---- inputs -------------------------------------------------------------------
head -c 3000 "$IMG" >"$T/corrupt.jpg"                      # valid header, truncated data
printf 'this is not an image\n' >"$T/notes.txt"
: >"$T/empty.jpg"
$PY png-header 60000 60000 "$T/huge.png"
head -c $((3 * 1024 * 1024)) /dev/zero >"$T/big.bin"
python3 -c "import base64,sys; sys.stdout.write(base64.b64encode(open('$IMG','rb').read()).decode())" >"$T/img.b64"
printf '{"image_base64": "%s", "mode": "local"}' "$(cat "$T/img.b64")" >"$T/b64.json"
printf '{"image_base64": "data:image/jpeg;base64,%s"}' "$(cat "$T/img.b64")" >"$T/b64data.json"

# ---- command line ---------------------------------------------------------------
"$BIN" serve --help >"$T/help" 2>&1; expect "serve --help exits 0" 0 $?
grep -q -- "--batch-timeout-ms" "$T/help"; expect "--help lists the flags" 0 $?
"$BIN" serve --bogus >/dev/null 2>&1; expect "unknown flag exits 2" 2 $?
"$BIN" serve --models "$T/nowhere" --port 0 >/dev/null 2>&1; expect "--models without files exits 2" 2 $?
"$BIN" serve --lazy --preload >/dev/null 2>&1; expect "--lazy with --preload exits 2" 2 $?

# ---- default mode: every route ------------------------------------------------------
start_server --local "$L" --global "$G" --max-body-mb 2 || exit 1
expect "/health 200" 200 "$(req "$T/h" "$URL/health")"
check "/health lists model states" $PY field "$T/h" "sorted(d['models'])" "['hadm-g', 'hadm-l']"
check "/ready turns 200" wait_ready "$URL"

expect "detect 200" 200 "$(req "$T/d_both" -F "file=@$IMG" "$URL/api/v1/detect")"
check "detect fields in DESIGN.md order" $PY order "$T/d_both"
check "detect mode=both" $PY field "$T/d_both" "d['results']['mode']" both
check "detect image_size" $PY field "$T/d_both" "d['results']['image_size']" "[2048, 2048]"
check "detect totals match lists" $PY field "$T/d_both" \
    "d['results']['total_local_detections'] == len(d['local_detections']) and d['results']['total_global_detections'] == len(d['global_detections'])" True
expect "detect mode=local (query)" 200 "$(req "$T/d_local" -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
check "mode=local: global list present and empty" $PY field "$T/d_local" "d['global_detections']" "[]"
expect "detect mode=global (form)" 200 "$(req "$T/d_global" -F "file=@$IMG" -F mode=global "$URL/api/v1/detect")"
check "mode=global: local list present and empty" $PY field "$T/d_global" "d['local_detections']" "[]"
check "mode=global from the form" $PY field "$T/d_global" "d['results']['mode']" global
expect "bad mode -> 400" 400 "$(req "$T/e" -F "file=@$IMG" "$URL/api/v1/detect?mode=sideways")"
check "error body {success:false, detail}" $PY field "$T/e" "list(d) == ['success', 'detail'] and d['success'] is False" True
for p in /api/detect /detect; do
    expect "$p 200" 200 "$(req "$T/d_alias" -F "file=@$IMG" "$URL$p")"
    check "$p equals /api/v1/detect" $PY same "$T/d_alias" "$T/d_both"
done
expect "raw image body 200" 200 "$(req "$T/d_raw" -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$URL/api/v1/detect")"
check "raw body equals multipart" $PY same "$T/d_raw" "$T/d_both"
expect "detect-base64 200" 200 "$(req "$T/d_b64" -H 'Content-Type: application/json' --data-binary "@$T/b64.json" "$URL/api/v1/detect-base64")"
check "detect-base64 equals multipart (mode=local)" $PY same "$T/d_b64" "$T/d_local"
expect "detect-base64 data: prefix 200" 200 "$(req "$T/d_b64d" -H 'Content-Type: application/json' --data-binary "@$T/b64data.json" "$URL/api/v1/detect-base64")"
check "data: prefix equals multipart" $PY same "$T/d_b64d" "$T/d_both"
expect "detect-base64 missing field -> 400" 400 "$(req "$T/e" -H 'Content-Type: application/json' -d '{"mode":"both"}' "$URL/api/v1/detect-base64")"
expect "detect-base64 bad base64 -> 400" 400 "$(req "$T/e" -H 'Content-Type: application/json' -d '{"image_base64":"@@@"}' "$URL/api/v1/detect-base64")"
expect "detect-base64 not JSON -> 400" 400 "$(req "$T/e" -H 'Content-Type: application/json' -d '{oops' "$URL/api/v1/detect-base64")"
expect "detect-url disabled -> 403" 403 "$(req "$T/e" -H 'Content-Type: application/json' -d '{"image_url":"http://example.com/a.jpg"}' "$URL/api/v1/detect-url")"

# the same image through `hadm detect`, when that command is built
if "$BIN" detect --help >/dev/null 2>&1; then
    for mode in local global; do
        M=$L; [ $mode = global ] && M=$G
        flag=--local; [ $mode = global ] && flag=--global
        "$BIN" detect $flag "$M" --mode $mode --format json "$IMG" >"$T/cli_$mode.json" 2>"$T/cli.err"
        expect "hadm detect --mode $mode runs" 0 $?
        check "/api/v1/detect equals hadm detect ($mode)" $PY cli "$T/d_$mode" "$T/cli_$mode.json" $mode
    done
else
    echo "skip /api/v1/detect vs hadm detect: the detect command is not in this build"
fi

# bad inputs
expect "truncated JPEG -> 400" 400 "$(req "$T/e" -F "file=@$T/corrupt.jpg" "$URL/api/v1/detect")"
expect "text file -> 415" 415 "$(req "$T/e" -F "file=@$T/notes.txt" "$URL/api/v1/detect")"
expect "empty file -> 400" 400 "$(req "$T/e" -F "file=@$T/empty.jpg" "$URL/api/v1/detect")"
expect "60000x60000 PNG header -> 422" 422 "$(req "$T/e" -F "file=@$T/huge.png" "$URL/api/v1/detect")"
check "422 names the pixel count" grep -q "60000x60000" "$T/e"
expect "no file field -> 400" 400 "$(req "$T/e" -F "mode=local" "$URL/api/v1/detect")"
expect "body over the limit -> 413 (Content-Length)" 413 "$(req "$T/e" -F "file=@$T/big.bin" "$URL/api/v1/detect")"
RSS0=$(curl -s "$URL/metrics" | awk '/^hadm_process_resident_memory_bytes/ {print $2}')
expect "body over the limit -> 413 (chunked, 40 MB)" 413 "$($PY chunked "$URL" /api/v1/detect $((40 * 1024 * 1024)))"
RSS1=$(curl -s "$URL/metrics" | awk '/^hadm_process_resident_memory_bytes/ {print $2}')
check "memory bounded while refusing a 40 MB body (RSS +$(( (RSS1 - RSS0) / 1048576 )) MB)" \
    test $((RSS1 - RSS0)) -lt $((16 * 1024 * 1024))
expect "unknown route -> 404" 404 "$(req "$T/e" "$URL/nope")"
expect "wrong method -> 405" 405 "$(req "$T/e" "$URL/api/v1/detect")"

# batch
check "/detect/batch: one corrupt and one non-image among good ones" \
    $PY batch "$URL" "$IMG" "$IMG2" "$T/corrupt.jpg" "$T/notes.txt"
expect "/detect/batch without files -> 400" 400 "$(req "$T/e" -F mode=local "$URL/detect/batch")"

# operational routes
expect "/models/status 200" 200 "$(req "$T/s" "$URL/models/status")"
check "/models/status: both ready" $PY field "$T/s" "[d['models'][m]['state'] for m in ('hadm-l', 'hadm-g')]" "['ready', 'ready']"
check "/models/status: load time kept" $PY field "$T/s" "d['models']['hadm-l']['load_seconds'] > 0" True
expect "/api/diagnostics 200" 200 "$(req "$T/s" "$URL/api/diagnostics")"
check "/api/diagnostics: cpu, memory, gpu, models, queue" $PY field "$T/s" "[k in d for k in ('cpu','memory','gpu','models','queue')]" "[True, True, True, True, True]"
expect "/openapi.json 200" 200 "$(req "$T/s" "$URL/openapi.json")"
check "/openapi.json describes every route" $PY field "$T/s" \
    "all(p in d['paths'] for p in ['/','/health','/ready','/models/status','/api/control/{action}','/api/diagnostics','/metrics','/openapi.json','/api/v1/detect','/api/detect','/api/v1/detect-base64','/api/v1/detect-url','/detect','/detect/batch','/v2/health/live','/v2/health/ready','/v2/models/{name}','/v2/models/{name}/ready','/v2/models/{name}/infer'])" True
expect "GET / 200" 200 "$(req "$T/s" "$URL/")"
check "GET / is HTML" grep -qi "text/html" "$T/s.h"
expect "GET /console.js 200" 200 "$(req "$T/s" "$URL/console.js")"
check "console.js: type and ETag" grep -qi "^Content-Type: text/javascript" "$T/s.h"
ETAG=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *\("[0-9a-f]*"\).*/\1/p' "$T/s.h")
expect "console.js with If-None-Match -> 304" 304 "$(req "$T/s" -H "If-None-Match: $ETAG" "$URL/console.js")"
expect "GET /console.css 200" 200 "$(req "$T/s" "$URL/console.css")"
expect "/metrics 200" 200 "$(req "$T/m" "$URL/metrics")"
for pat in 'hadm_http_requests_total{route="/api/v1/detect",status="200"}' \
    'hadm_http_request_duration_seconds_bucket{route="/api/v1/detect",status="422",le=' \
    'hadm_queue_depth{model="hadm-l"}' 'hadm_batch_size_bucket{model="hadm-l",le="1"}' \
    'hadm_inference_seconds_count{model="hadm-g"}' 'hadm_stage_seconds_total{model="hadm-l",stage="backbone"}' \
    'hadm_model_state{model="hadm-l",state="ready"} 1' 'hadm_model_load_seconds{model="hadm-g"}' \
    'hadm_process_resident_memory_bytes'; do
    check "/metrics has $pat" grep -qF "$pat" "$T/m"
done

# KServe v2
expect "/v2/health/live 200" 200 "$(req "$T/s" "$URL/v2/health/live")"
expect "/v2/health/ready 200" 200 "$(req "$T/s" "$URL/v2/health/ready")"
expect "/v2 200" 200 "$(req "$T/s" "$URL/v2")"
expect "/v2/models/hadm-l 200" 200 "$(req "$T/s" "$URL/v2/models/hadm-l")"
check "/v2/models/hadm-l metadata" $PY field "$T/s" "(d['name'], d['inputs'][0]['name'])" "('hadm-l', 'image')"
expect "/v2/models/hadm-g/ready 200" 200 "$(req "$T/s" "$URL/v2/models/hadm-g/ready")"
expect "/v2/models/nope -> 404" 404 "$(req "$T/s" "$URL/v2/models/nope")"
check "v2 infer hadm-l (JSON, binary in/out) equals /api/v1/detect" $PY kserve "$URL" "$IMG" "$T/d_both" hadm-l
check "v2 infer hadm-g equals /api/v1/detect" $PY kserve "$URL" "$IMG" "$T/d_both" hadm-g

# control: unload then detect -> 503, load again -> 200
expect "unload_l 200" 200 "$(req "$T/s" -X POST "$URL/api/control/unload_l")"
expect "detect local after unload -> 503" 503 "$(req "$T/e" -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
check "503 has Retry-After" grep -qi "^Retry-After:" "$T/e.h"
check "503 says why" grep -q "HADM-L is not loaded" "$T/e"
expect "detect global still 200" 200 "$(req "$T/e" -F "file=@$IMG" "$URL/api/v1/detect?mode=global")"
expect "/ready 503 with HADM-L unloaded" 503 "$(req "$T/e" "$URL/ready")"
expect "load_l 200" 200 "$(req "$T/s" -X POST "$URL/api/control/load_l")"
check "/ready 200 after load_l" wait_ready "$URL"
expect "detect local after reload 200" 200 "$(req "$T/d_again" -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
check "reloaded model gives the same answer" $PY same "$T/d_again" "$T/d_local"
expect "unknown control action -> 404" 404 "$(req "$T/s" -X POST "$URL/api/control/explode")"

# concurrency
check "8 clients x 25 requests, mixed good/bad" \
    $PY concurrency "$URL" "$IMG2" "$T/corrupt.jpg" "$T/notes.txt" "$T/huge.png" 8 25
stop_server TERM
expect "SIGTERM: exit 0" 0 "$SERVER_RC"
check "one log line per request, with id, route, status, bytes, ms" \
    grep -q '"event":"request","id":[0-9]*,"method":"POST","route":"/api/v1/detect","status":200,"bytes_in":[0-9]*,"bytes_out":[0-9]*,"ms":' "$T/server.log"

# ---- API keys ----------------------------------------------------------------------
printf '# keys\nsecret-two\n' >"$T/keys"
SERVER_ENV=(HADM_API_KEY=secret-three)
start_server --local "$L" --api-key secret-one --api-key-file "$T/keys" \
    --cors-origin https://ui.example --url-allow images.example || exit 1
SERVER_ENV=()
wait_ready "$URL"
expect "auth: /health without key 200" 200 "$(req "$T/s" "$URL/health")"
expect "auth: /ready without key 200" 200 "$(req "$T/s" "$URL/ready")"
expect "auth: /v2/health/live without key 200" 200 "$(req "$T/s" "$URL/v2/health/live")"
expect "auth: /models/status without key -> 401" 401 "$(req "$T/s" "$URL/models/status")"
expect "auth: GET / without key -> 401" 401 "$(req "$T/s" "$URL/")"
check "auth: ... JSON for a non-browser" grep -q '"success":false' "$T/s"
expect "auth: GET / from a browser without key -> 401" 401 "$(req "$T/s" -H 'Accept: text/html' "$URL/")"
check "auth: ... the sign-in page, without the key" bash -c "grep -q 'id=\"signin\"' '$T/s' && ! grep -q secret- '$T/s'"
expect "auth: /console.js without key -> 401" 401 "$(req "$T/s" -H 'Accept: text/html' "$URL/console.js")"
expect "auth: GET / with key 200" 200 "$(req "$T/s" -H 'X-API-Key: secret-one' "$URL/")"
expect "auth: detect without key -> 401" 401 "$(req "$T/s" -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
expect "auth: 401 reaches a client sending its body at once (x5)" "401 401 401 401 401" \
    "$($PY post-status "$URL" "/api/v1/detect?mode=local" "$IMG" 5)"
expect "404 reaches a client sending its body at once" "404" "$($PY post-status "$URL" /nope "$IMG")"
expect "auth: wrong key -> 401" 401 "$(req "$T/s" -H 'X-API-Key: secret-onf' "$URL/models/status")"
expect "auth: key prefix -> 401" 401 "$(req "$T/s" -H 'X-API-Key: secret-on' "$URL/models/status")"
expect "auth: X-API-Key (flag) 200" 200 "$(req "$T/s" -H 'X-API-Key: secret-one' "$URL/models/status")"
expect "auth: Bearer (file) 200" 200 "$(req "$T/s" -H 'Authorization: Bearer secret-two' "$URL/models/status")"
expect "auth: ?api_key= (env) 200" 200 "$(req "$T/s" "$URL/models/status?api_key=secret-three")"
expect "auth: detect with key 200" 200 "$(req "$T/s" -H 'X-API-Key: secret-one' -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
expect "CORS preflight 204 without a key" 204 "$(req "$T/s" -X OPTIONS "$URL/api/v1/detect")"
check "CORS preflight allows X-API-Key" grep -qi "^Access-Control-Allow-Headers:.*X-API-Key" "$T/s.h"
req "$T/s" "$URL/health" >/dev/null
check "CORS origin on answers" grep -qi "^Access-Control-Allow-Origin: https://ui.example" "$T/s.h"
expect "detect-url with a key, host not on the allow-list -> 403" 403 "$(req "$T/s" -H 'X-API-Key: secret-one' -H 'Content-Type: application/json' -d '{"image_url":"http://other.example/a.jpg"}' "$URL/api/v1/detect-url")"
check "the 403 names the allow-list" grep -q "not on the --url-allow list" "$T/s"
stop_server TERM
check "keys never logged" bash -c "! grep -q secret- '$T/server.log'"

# ---- slowed load: /ready 503 -> 200, waiting requests, queue full, deadline ---------------
SERVER_ENV=(HADM_TEST_LOAD_DELAY_MS=2500)
start_server --local "$L" --global "$G" --max-queue 2 --max-batch 1 || exit 1
SERVER_ENV=()
expect "slow load: /health 200 at once" 200 "$(req "$T/s" "$URL/health")"
expect "slow load: /ready 503" 503 "$(req "$T/s" "$URL/ready")"
check "slow load: /ready says loading" grep -q "loading" "$T/s"
expect "slow load: /v2/health/ready 503" 503 "$(req "$T/s" "$URL/v2/health/ready")"
req "$T/w1" -F "file=@$IMG2" "$URL/api/v1/detect?mode=local" >"$T/w1.code" &
W1=$!
sleep 0.2
req "$T/w2" -H 'X-Timeout-Ms: 300' -F "file=@$IMG2" "$URL/api/v1/detect?mode=local" >"$T/w2.code" &
W2=$!
sleep 0.2
expect "queue full -> 503" 503 "$(req "$T/e" -F "file=@$IMG2" "$URL/api/v1/detect?mode=local")"
check "queue full 503 has Retry-After" grep -qi "^Retry-After:" "$T/e.h"
check "queue full says so" grep -q "queue full" "$T/e"
wait $W2
expect "deadline passed while waiting -> 504" 504 "$(cat "$T/w2.code")"
check "/ready 200 after the slowed load" wait_ready "$URL"
wait $W1
expect "request waiting for the load -> 200" 200 "$(cat "$T/w1.code")"
stop_server TERM

# ---- SIGTERM with requests in flight --------------------------------------------------
SERVER_ENV=(HADM_TEST_LOAD_DELAY_MS=1500)
start_server --local "$L" --global "$G" || exit 1
SERVER_ENV=()
WS=()
for i in 1 2 3 4; do
    req "$T/t$i" -F "file=@$IMG2" "$URL/api/v1/detect?mode=local" >"$T/t$i.code" &
    WS+=($!)
done
sleep 0.4
stop_server TERM
expect "SIGTERM with 4 requests in flight: exit 0" 0 "$SERVER_RC"
wait "${WS[@]}"
for i in 1 2 3 4; do
    expect "in-flight request $i answered 200" 200 "$(cat "$T/t$i.code")"
done

# ---- lazy -----------------------------------------------------------------------------
start_server --lazy --local "$L" --global "$G" || exit 1
expect "lazy: /models/status 200" 200 "$(req "$T/s" "$URL/models/status")"
check "lazy: nothing loaded at start" $PY field "$T/s" "[d['models'][m]['state'] for m in ('hadm-l', 'hadm-g')]" "['unloaded', 'unloaded']"
expect "lazy: /ready 200 (loadable on demand)" 200 "$(req "$T/s" "$URL/ready")"
expect "lazy: first local detect loads HADM-L" 200 "$(req "$T/d_lazy" -F "file=@$IMG" "$URL/api/v1/detect?mode=local")"
check "lazy: same answer as preloaded" $PY same "$T/d_lazy" "$T/d_local"
req "$T/s" "$URL/models/status" >/dev/null
check "lazy: HADM-L ready, HADM-G still unloaded" $PY field "$T/s" "[d['models'][m]['state'] for m in ('hadm-l', 'hadm-g')]" "['ready', 'unloaded']"
stop_server TERM

# ---- preload ---------------------------------------------------------------------------
SERVER_ENV=(HADM_TEST_LOAD_DELAY_MS=300)
start_server --preload --local "$L" || exit 1
SERVER_ENV=()
expect "preload: /ready 200 as soon as it listens" 200 "$(req "$T/s" "$URL/ready")"
check "preload: HADM-G not configured" $PY field "$T/s" "d['models']['hadm-g']" not_configured
expect "preload: global detect -> 503 (not configured)" 503 "$(req "$T/e" -F "file=@$IMG" "$URL/api/v1/detect?mode=global")"
stop_server TERM

# ---- a model file that fails to load -----------------------------------------------------
"$BIN" serve --preload --local "$T/notes.txt" --port 0 >/dev/null 2>"$T/bad.log"
expect "preload with a bad model file exits 1" 1 $?
check "preload failure names the file" grep -q "notes.txt" "$T/bad.log"
start_server --local "$T/notes.txt" --global "$G" || exit 1
for _ in $(seq 1 100); do req "$T/s" "$URL/models/status" >/dev/null; grep -q '"failed"' "$T/s" && break; sleep 0.05; done
check "bad model: state failed, error kept" $PY field "$T/s" "(d['models']['hadm-l']['state'], bool(d['models']['hadm-l']['error']))" "('failed', True)"
expect "bad model: /ready 503" 503 "$(req "$T/e" "$URL/ready")"
expect "bad model: local detect -> 503" 503 "$(req "$T/e" -F "file=@$IMG2" "$URL/api/v1/detect?mode=local")"
check "bad model: 503 says it failed to load" grep -q "HADM-L failed to load" "$T/e"
expect "bad model: global detect still 200" 200 "$(req "$T/e" -F "file=@$IMG2" "$URL/api/v1/detect?mode=global")"
stop_server TERM

# ---- truncated JPEGs: 400 by default, decoded with --allow-truncated (as the original) -----
python3 -c "import sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(d[:len(d)//2])" "$IMG2" "$T/half.jpg"
start_server --local "$L" || exit 1
check "/ready" wait_ready "$URL"
expect "JPEG cut in its data -> 400" 400 "$(req "$T/e" -F "file=@$T/half.jpg" "$URL/api/v1/detect?mode=local")"
check "the 400 says how to accept it" grep -q "allow-truncated" "$T/e"
stop_server TERM
start_server --local "$L" --allow-truncated || exit 1
check "/ready (--allow-truncated)" wait_ready "$URL"
expect "--allow-truncated: JPEG cut in its data -> 200" 200 "$(req "$T/e" -F "file=@$T/half.jpg" "$URL/api/v1/detect?mode=local")"
stop_server TERM

# ---- detect-url: fetching from an allowed loopback server ------------------------------------
# A static file server (python3 -m http.server) and a listener that never answers, both on
# loopback with ports chosen by the kernel; each is bounded by `timeout` and killed by the trap.
mkdir -p "$T/www/sub"
cp "$IMG2" "$T/www/img.jpg"
cp "$T/notes.txt" "$T/www/notes.txt"
cp "$T/big.bin" "$T/www/big.bin"                                   # 3 MiB, over --max-body-mb 2
timeout 300 python3 -u -m http.server --bind 127.0.0.1 0 --directory "$T/www" >"$T/www.log" 2>&1 &
FETCH_PIDS="$FETCH_PIDS $!"
timeout 300 python3 -u -c "import socket,time
s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(16); print(s.getsockname()[1], flush=True); time.sleep(300)" >"$T/mute.port" &
FETCH_PIDS="$FETCH_PIDS $!"
CLOSED=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
for _ in $(seq 1 100); do grep -q "port" "$T/www.log" && [ -s "$T/mute.port" ] && break; sleep 0.05; done
WWW_PORT=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$T/www.log" | head -1)
MUTE_PORT=$(cat "$T/mute.port")
WWW="http://127.0.0.1:$WWW_PORT"
url_req() { # url_req OUT URL [curl args...]: POSTs {"image_url": URL, "mode": "local"}
    local out=$1 u=$2; shift 2
    req "$out" -H 'Content-Type: application/json' -d "{\"image_url\":\"$u\",\"mode\":\"local\"}" "$@" \
        "$URL/api/v1/detect-url"
}
if [ -z "$WWW_PORT" ] || [ -z "$MUTE_PORT" ]; then
    fail "detect-url: helper servers did not start"
else
    start_server --local "$L" --max-body-mb 2 --url-allow 127.0.0.1 --url-allow files.example.invalid || exit 1
    check "detect-url: /ready" wait_ready "$URL"
    expect "detect-url image -> 200" 200 "$(url_req "$T/u_img" "$WWW/img.jpg")"
    expect "same image uploaded -> 200" 200 "$(req "$T/u_up" -F "file=@$IMG2" "$URL/api/v1/detect?mode=local")"
    check "detect-url equals the multipart upload" $PY same "$T/u_img" "$T/u_up"
    check "detect-url fields in DESIGN.md order" $PY order "$T/u_img"
    expect "detect-url text file -> 415" 415 "$(url_req "$T/e" "$WWW/notes.txt")"
    expect "detect-url over --max-body-mb -> 413" 413 "$(url_req "$T/e" "$WWW/big.bin")"
    expect "detect-url missing file (404 upstream) -> 502" 502 "$(url_req "$T/e" "$WWW/nothing.jpg")"
    expect "detect-url redirect not followed -> 502" 502 "$(url_req "$T/e" "$WWW/sub")"
    check "the 502 says redirects are not followed" grep -q "not followed" "$T/e"
    expect "detect-url connection refused -> 502" 502 "$(url_req "$T/e" "http://127.0.0.1:$CLOSED/a.jpg")"
    expect "detect-url silent server -> 504" 504 "$(url_req "$T/e" "http://127.0.0.1:$MUTE_PORT/a.jpg" -H 'X-Timeout-Ms: 700')"
    expect "detect-url host not on the list -> 403" 403 "$(url_req "$T/e" "http://localhost:$WWW_PORT/img.jpg")"
    expect "detect-url unknown host -> 403" 403 "$(url_req "$T/e" "http://no-such-host.invalid/img.jpg")"
    expect "detect-url ftp:// -> 403" 403 "$(url_req "$T/e" "ftp://127.0.0.1:$WWW_PORT/img.jpg")"
    expect "detect-url not a URL -> 400" 400 "$(url_req "$T/e" "not a url")"
    expect "detect-url without image_url -> 400" 400 "$(req "$T/e" -H 'Content-Type: application/json' -d '{"mode":"local"}' "$URL/api/v1/detect-url")"
    expect "detect-url bad mode -> 400" 400 "$(req "$T/e" -H 'Content-Type: application/json' -d "{\"image_url\":\"$WWW/img.jpg\",\"mode\":\"x\"}" "$URL/api/v1/detect-url")"
    expect "/health still answers" 200 "$(req "$T/h" "$URL/health")"
    stop_server TERM
    expect "detect-url server: SIGTERM exit 0" 0 "$SERVER_RC"

    # a host name that is allowed, but resolves to loopback: refused unless 127.0.0.1 is listed
    start_server --local "$L" --url-allow localhost || exit 1
    check "detect-url (localhost allowed): /ready" wait_ready "$URL"
    expect "detect-url 127.0.0.1 when only localhost is allowed -> 403" 403 "$(url_req "$T/e" "$WWW/img.jpg")"
    expect "detect-url localhost resolving to loopback -> 403" 403 "$(url_req "$T/e" "http://localhost:$WWW_PORT/img.jpg")"
    check "the 403 names the private address" grep -q "private, loopback" "$T/e"
    stop_server TERM
fi

# ---- no model files: demo models ----------------------------------------------------------
mkdir -p "$T/empty_cwd"
rm -f "$T/port"
(cd "$T/empty_cwd" && exec env -u HADM_MODELS "$BIN" serve --port 0 --port-file "$T/port" 2>"$T/demo.log") &
PID=$!
wait_port_file "$T/port" "$PID"
URL="http://127.0.0.1:$(cat "$T/port" 2>/dev/null)"
check "demo: loud warning" grep -q "DEMO" "$T/demo.log"
check "demo: models become ready" wait_ready "$URL" 600
req "$T/s" "$URL/models/status" >/dev/null
check "demo: status names the demo source" grep -q "demo" "$T/s"
expect "demo: detect works" 200 "$(req "$T/s" -F "file=@$IMG2" "$URL/api/v1/detect")"
stop_server TERM
expect "demo: SIGTERM exit 0" 0 "$SERVER_RC"

finish
