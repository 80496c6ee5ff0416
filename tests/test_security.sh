#!/usr/bin/env bash
# Security checks of `hadm serve` from outside: the API key never appears in
# logs, pages or headers; CORS and URL fetching are off by default; fetching,
# once enabled, refuses hosts that resolve to loopback in any spelling and
# does not follow a redirect to the cloud metadata address; oversized headers,
# form parts, JSON nesting and base64 bodies get a clear 4xx. (The constant-
# time key compare is tests/test_auth_limits.c.)
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR, curl, python3 (standard library only).
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
FAULTS="python3 $SRC_DIR/tests/server/faults.py"
IMG=$GOLDEN/tiny-global/landscape_640x427.jpg
KEY="k3y-$$-$RANDOM$RANDOM"
T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-security.XXXXXX")
PID=""
HELPER=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; [ -n "$HELPER" ] && kill "$HELPER" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

start_server() { launch_server --threads 1 "$@" || exit 1; wait_ready "$URL"; }
# req [curl args...]: prints the status; keeps every body and header block in $T/pages
# (numbered through a file: req mostly runs in a command substitution's subshell)
req() {
    local n=$(($(cat "$T/n") + 1))
    echo "$n" >"$T/n"
    curl -s --max-time 60 -o "$T/pages/$n.body" -D "$T/pages/$n.head" -w '%{http_code}' "$@"
}
last() { echo "$T/pages/$(cat "$T/n").body"; }
mkdir -p "$T/pages"
echo 0 >"$T/n"
[ -x "$BIN" ] && [ -r "$IMG" ] || { echo "FAIL need $BIN and $IMG"; exit 1; }

# ---- the key stays secret; CORS and URL fetching are off by default ---------------------------
start_server --local "$GOLDEN/tiny-local/model.safetensors" --api-key "$KEY" --max-body-mb 1
H="X-API-Key: $KEY"
for p in / /health /ready /models/status /api/diagnostics /metrics /openapi.json /v2 /v2/models/hadm-l; do
    req -H "$H" "$URL$p" >/dev/null
done
req "$URL/models/status?api_key=$KEY" >/dev/null
req -H "Authorization: Bearer $KEY" "$URL/nope?api_key=$KEY" >/dev/null
req -H "X-API-Key: ${KEY}x" "$URL/models/status" >/dev/null
req "$URL/?api_key=${KEY}x" >/dev/null
expect "detect with the key 200" 200 "$(req -H "$H" -F "file=@$IMG" "$URL/api/v1/detect?mode=local&api_key=$KEY")"
expect "detect with a wrong key 401" 401 "$(req -H "X-API-Key: ${KEY%?}" -F "file=@$IMG" "$URL/api/v1/detect")"
check "the 401 does not echo the key" bash -c "! grep -qF '${KEY%?}' '$(last)'"
expect "CORS off: OPTIONS preflight is not answered 204" 1 "$([ "$(req -X OPTIONS -H 'Origin: https://evil.example' \
    -H 'Access-Control-Request-Method: POST' "$URL/api/v1/detect")" = 204 ]; echo $?)"
req -H "$H" -H 'Origin: https://evil.example' "$URL/health" >/dev/null
check "CORS off: no Access-Control-* header on any answer" bash -c "! grep -qi '^Access-Control-' '$T'/pages/*.head"
expect "URL fetch off by default -> 403" 403 "$(req -H "$H" -H 'Content-Type: application/json' \
    -d '{"image_url":"http://127.0.0.1:9/a.jpg"}' "$URL/api/v1/detect-url")"
check "the 403 says how to enable it" grep -q "url-allow" "$(last)"
stop_server
echo "     $(ls "$T/pages" | wc -l) pages and header blocks, $(wc -l <"$T/server.log") log lines searched for the key"
check "the key is in no page or header" bash -c "! grep -rqF '$KEY' '$T/pages'"
check "the key is in no log line" bash -c "! grep -qF '$KEY' '$T/server.log'"
check "a wrong key is in no log line either" bash -c "! grep -qF '${KEY%?}' '$T/server.log'"

# ---- limits: headers, form parts, JSON depth, base64 size -----------------------------------------
start_server --local "$GOLDEN/tiny-local/model.safetensors" --max-body-mb 1
show() { echo "     $1 -> $(head -c 160 "$T/r")"; }
$FAULTS big-header "$URL" 300000 >"$T/r"; show "one 300 kB header"
expect "a 300 kB header -> 431" 431 "$(cut -d' ' -f1 "$T/r")"
$FAULTS many-headers "$URL" 20000 >"$T/r"; show "20000 headers"
expect "20000 headers -> 431" 431 "$(cut -d' ' -f1 "$T/r")"
$FAULTS many-parts "$URL" /api/v1/detect 300 >"$T/r"; show "300 form parts"
expect "300 form parts -> 413" 413 "$(cut -d' ' -f1 "$T/r")"
check "the 413 names the part limit" grep -q "more than 256 form parts" "$T/r"
python3 -c "print('{\"image_base64\":' + '['*100 + ']'*100 + '}')" >"$T/deep.json"
expect "JSON nested 100 deep -> 400" 400 "$(req -H 'Content-Type: application/json' --data-binary "@$T/deep.json" \
    "$URL/api/v1/detect-base64")"
check "the 400 names the depth limit" grep -q "nested deeper than" "$(last)"
python3 -c "print('{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":' + '['*100 + ']'*100 + '}]}')" >"$T/deep2.json"
expect "KServe request nested 100 deep -> 400" 400 "$(req -H 'Content-Type: application/json' \
    --data-binary "@$T/deep2.json" "$URL/v2/models/hadm-l/infer")"
check "the 400 says it is nested too deeply" grep -q "nested too deeply" "$(last)"
python3 -c "import base64,os; print('{\"image_base64\":\"' + base64.b64encode(os.urandom(900000)).decode() + '\"}')" >"$T/b64.json"
expect "base64 body over --max-body-mb -> 413" 413 "$(req -H 'Content-Type: application/json' \
    --data-binary "@$T/b64.json" "$URL/api/v1/detect-base64")"
check "the 413 names the limit" grep -q "over the limit" "$(last)"
expect "server still healthy" 200 "$(req "$URL/health")"
stop_server
expect "SIGTERM after the limits: exit 0" 0 "$SERVER_RC"

# ---- URL fetching enabled: loopback in other spellings, redirect to link-local -------------------
timeout 120 python3 -u -c "
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302); self.send_header('Location', 'http://169.254.169.254/latest/meta-data/')
        self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
s = socketserver.TCPServer(('127.0.0.1', 0), H); print(s.server_address[1], flush=True); s.serve_forever()
" >"$T/redir.port" &
HELPER=$!
for _ in $(seq 1 100); do [ -s "$T/redir.port" ] && break; sleep 0.05; done
RP=$(cat "$T/redir.port")
# Names that resolve to loopback are allowed as hosts, the loopback address itself is not.
start_server --local "$GOLDEN/tiny-local/model.safetensors" --url-allow localhost --url-allow 2130706433 \
    --url-allow 0x7f.1 --url-allow 127.1
url_req() { req -H 'Content-Type: application/json' -d "{\"image_url\":\"$1\",\"mode\":\"local\"}" "$URL/api/v1/detect-url"; }
for u in "http://localhost:$RP/a.jpg" "http://LOCALHOST.:$RP/a.jpg" "http://2130706433:$RP/a.jpg" \
    "http://0x7f.1:$RP/a.jpg" "http://127.1:$RP/a.jpg"; do
    code=$(url_req "$u")
    echo "     $u -> $code $(head -c 140 "$(last)")"
    expect "fetch of $u refused" 403 "$code"
done
check "a 403 names the private address localhost resolves to" grep -qr "resolves to 127.0.0.1, a private" "$T/pages"
stop_server
# The loopback helper itself allowed literally: its redirect must still not be followed.
start_server --local "$GOLDEN/tiny-local/model.safetensors" --url-allow 127.0.0.1
code=$(url_req "http://127.0.0.1:$RP/a.jpg")
echo "     redirect to 169.254.169.254 -> $code $(head -c 160 "$(last)")"
expect "a redirect to the metadata address is not followed -> 502" 502 "$code"
check "the 502 says redirects are not followed" grep -q "not followed" "$(last)"
stop_server

finish
