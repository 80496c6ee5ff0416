#!/usr/bin/env bash
# Load and soak: tests/server/soak.py offers `hadm serve` twice the rate it can
# serve, with good, corrupt, oversized and unauthorised requests, for
# $HADM_SOAK_SECONDS (default 60; CI runs 15), and accounts for every request:
# each gets exactly one response, the client's counts by status equal the
# server's, 503 comes only from a full queue, RSS stays flat.
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR, curl, python3 (standard library only).
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
SECONDS_=${HADM_SOAK_SECONDS:-60}
IMG=$GOLDEN/tiny-global/landscape_640x427.jpg
KEY=soak-key-$$-$RANDOM
RSS_BOUND_MIB=24   # growth allowed between the first and last third of the run
T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-soak.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

[ -x "$BIN" ] && [ -r "$IMG" ] || { echo "FAIL need $BIN and $IMG"; exit 1; }
head -c 3000 "$IMG" >"$T/corrupt.jpg"
launch_server --local "$GOLDEN/tiny-local/model.safetensors" \
    --threads 1 --api-key "$KEY" --max-queue 2 --max-batch 2 --max-body-mb 1 || exit 1
wait_ready "$URL"

python3 "$SRC_DIR/tests/server/soak.py" "$URL" "$KEY" "$IMG" "$T/corrupt.jpg" "$SECONDS_" | tee "$T/out"
S=$(sed -n 's/^SOAK //p' "$T/out")
q() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($1)" "$S"; }
[ -n "$S" ] || { echo "FAIL the soak client printed no summary"; exit 1; }

check "lost = 0 (every request got a response)" test "$(q "d['lost']")" = 0
check "sent = sum of responses by status" test "$(q "d['sent'] == sum(d['by_status'].values())")" = True
check "server counted each status exactly as the client saw it" \
    test "$(q "all(d['server_by_status'].get(s) == n for s, n in d['by_status'].items())")" = True
check "good -> 200 or 503 only" test "$(q "set(d['by_kind'].get('good', {})) <= {'200', '503'}")" = True
check "corrupt -> 400 or 503 only" test "$(q "set(d['by_kind'].get('corrupt', {})) <= {'400', '503'}")" = True
check "huge -> 413 only" test "$(q "list(d['by_kind'].get('huge', {'413': 0})) == ['413']")" = True
check "unauthorised -> 401 only" test "$(q "list(d['by_kind'].get('unauthorised', {'401': 0})) == ['401']")" = True
check "every 503 says queue full and has Retry-After" test "$(q "d['bad_503']")" = 0
check "client 503s = server's queue-full rejections" \
    test "$(q "d['by_status'].get('503', 0) == d['server_queue_rejected']")" = True
check "twice the capacity did fill the queue (some 503)" test "$(q "d['by_status'].get('503', 0) > 0")" = True
check "RSS flat: last third within $RSS_BOUND_MIB MiB of the first ($(q "d['rss_first_max_mib']") -> $(q "d['rss_last_max_mib']") MiB)" \
    test "$(q "d['rss_last_max_mib'] - d['rss_first_max_mib'] < $RSS_BOUND_MIB")" = True
echo "     p99 latency of accepted requests: $(q "d['p99_ok_s']") s (p50 $(q "d['p50_ok_s']") s)"

kill -TERM "$PID"
wait "$PID"
rc=$?
PID=""
check "SIGTERM after the soak: exit 0" test "$rc" = 0
check "the key never reached the log" bash -c "! grep -qF '$KEY' '$T/server.log'"
finish
