#!/usr/bin/env bash
# Scale-out (issue 8): deploy/nginx.conf in front of three `hadm serve`
# instances on loopback, run by Debian's nginx started by the current user with its
# own prefix (pid, logs, temp files in a temp dir; the system service is not
# touched). Concurrent clients send detect requests through nginx while one
# instance is killed with SIGKILL and another is restarted with SIGTERM; every
# request must get exactly one final 200 (clients retry 502/503 after
# Retry-After, nginx resends what an instance dropped). Prints the accounting.
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR, nginx, curl, python3.
# HADM_NGINX_REQUESTS / HADM_NGINX_CLIENTS size the run (default 120 / 8);
# HADM_NGINX_KEEP=DIR keeps the logs (instances, nginx, load) there.
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
CONF=$SRC_DIR/deploy/nginx.conf
LOAD="python3 $SRC_DIR/tests/server/lb_load.py"
L=$GOLDEN/tiny-local/model.safetensors
IMG=$GOLDEN/tiny-global/landscape_640x427.jpg
REQUESTS=${HADM_NGINX_REQUESTS:-120}
CLIENTS=${HADM_NGINX_CLIENTS:-8}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-nginx.XXXXXX")
# Run as root, nginx's workers drop to `nobody` and must reach their temp dirs.
chmod 755 "$T"
declare -A PID PORT
NGINX_PID=""
LOAD_PID=""

cleanup() {
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null
    for i in "${!PID[@]}"; do kill -KILL "${PID[$i]}" 2>/dev/null; done
    [ -n "$NGINX_PID" ] && wait "$NGINX_PID" 2>/dev/null
    [ -n "${HADM_NGINX_KEEP:-}" ] && cp -r "$T" "$HADM_NGINX_KEEP"  # logs, for a failed run
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

req() { local out=$1; shift; curl -s --max-time 30 -o "$out" -D "$out.h" -w '%{http_code}' "$@"; }

for f in "$L" "$IMG" "$CONF"; do
    [ -r "$f" ] || { echo "FAIL missing file $f"; exit 1; }
done
[ -x "$BIN" ] || { echo "FAIL no hadm binary at $BIN"; exit 1; }
[ -x "$NGINX" ] || { echo "FAIL nginx is not installed (scripts/install-deps.sh installs it)"; exit 1; }

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# start_instance NAME: `hadm serve` on PORT[NAME] (kept across restarts, as
# nginx's upstream list is fixed). One inference thread each: three instances
# share the machine; a small queue so that overload (503) happens too.
start_instance() {
    "$BIN" serve --host 127.0.0.1 --port "${PORT[$1]}" --local "$L" --threads 1 \
        --max-batch 2 --max-queue 3 --url-allow 127.0.0.1 2>>"$T/$1.log" &
    PID[$1]=$!
}
metric() { # metric NAME PORT: the value of one hadm-l series on an instance
    curl -s --max-time 2 "http://127.0.0.1:$2/metrics" | awk -v m="$1{model=\"hadm-l\"}" '$1 == m {print $2}'
}

# ---- the shipped file as it is ------------------------------------------------------
mkdir -p "$T/verbatim"
"$NGINX" -t -q -p "$T/verbatim/" -c "$CONF" -e "$T/verbatim/error.log" >"$T/t.out" 2>&1
expect "nginx -t accepts deploy/nginx.conf" 0 $?
grep -q '' "$T/t.out" && sed 's/^/     /' "$T/t.out"
help=$("$BIN" serve --help 2>&1)
body_mb=$(sed -n 's/.*--max-body-mb N.*(default \([0-9]*\)).*/\1/p' <<<"$help")
timeout_ms=$(sed -n 's/.*--timeout-ms N.*(default \([0-9]*\)).*/\1/p' <<<"$help")
expect "client_max_body_size = hadm's --max-body-mb default" "client_max_body_size ${body_mb}m;" \
    "$(grep -o 'client_max_body_size [^;]*;' "$CONF")"
read_s=$(sed -n 's/^ *proxy_read_timeout \([0-9]*\)s;$/\1/p' "$CONF" | sort -n | tail -1)
check "proxy_read_timeout ${read_s}s outlasts hadm's --timeout-ms $timeout_ms" \
    test "$((read_s * 1000))" -gt "${timeout_ms:-999999999}"
control=$(sed -n '/location \/api\/control\//,/}/p' "$CONF")
check "control routes have their own location, never resent once sent (no non_idempotent)" \
    bash -c "[ -n \"\$1\" ] && ! grep -q non_idempotent <<<\"\$1\"" _ "$control"

# ---- three instances behind nginx --------------------------------------------------------
for i in a b c; do PORT[$i]=$(free_port); start_instance $i; done
for i in a b c; do
    check "instance $i ready on port ${PORT[$i]}" wait_ready "http://127.0.0.1:${PORT[$i]}" 600
done
curl -s "http://127.0.0.1:${PORT[a]}/metrics" >"$T/metrics"
for name in $(cat "$SRC_DIR/deploy/README.md" "$SRC_DIR/deploy/k8s-hpa.yaml" | grep -o 'hadm_[a-z_]*' | sort -u); do
    check "deploy docs name a real metric: $name" grep -q "^# TYPE $name " "$T/metrics"
done
LB_PORT=$(free_port)
mkdir -p "$T/nginx"
# Only the addresses change: the listen port and the three upstream servers.
sed -e "s/listen 127\.0\.0\.1:8080;/listen 127.0.0.1:$LB_PORT;/" \
    -e "s/server 127\.0\.0\.1:8081 /server 127.0.0.1:${PORT[a]} /" \
    -e "s/server 127\.0\.0\.1:8082 /server 127.0.0.1:${PORT[b]} /" \
    -e "s/server 127\.0\.0\.1:8083 /server 127.0.0.1:${PORT[c]} /" "$CONF" >"$T/nginx/nginx.conf"
changed=$(diff "$CONF" "$T/nginx/nginx.conf" | grep -c '^>')
expect "test config differs from deploy/nginx.conf in 4 address lines only" 4 "$changed"
"$NGINX" -p "$T/nginx/" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" -g 'daemon off;' \
    2>>"$T/nginx/stderr.log" &
NGINX_PID=$!
LB="http://127.0.0.1:$LB_PORT"
check "nginx answers /ready" wait_ready "$LB"

expect "/health through nginx 200" 200 "$(req "$T/h" "$LB/health")"
check "/health through nginx is hadm's" grep -q '"hadm-l"' "$T/h"
expect "/ready through nginx 200" 200 "$(req "$T/h" "$LB/ready")"
expect "detect through nginx 200" 200 "$(req "$T/d" -F "file=@$IMG" "$LB/api/v1/detect?mode=local")"
check "detect through nginx carries hadm's X-Request-Id" grep -qi '^X-Request-Id:' "$T/d.h"
expect "body over client_max_body_size -> 413 from nginx" 413 \
    "$($LOAD too-large "$LB" /api/v1/detect $(((body_mb << 20) + 1)))"
CLOSED=$(free_port)   # nothing listens there: the instance's fetch fails, a 502 of its own
expect "detect-url whose image host refuses -> hadm's 502" 502 \
    "$(req "$T/e" -H 'Content-Type: application/json' -d "{\"image_url\":\"http://127.0.0.1:$CLOSED/a.jpg\",\"mode\":\"local\"}" "$LB/api/v1/detect-url")"
check "that 502 is hadm's answer, not nginx's" bash -c "grep -q '\"success\":false' '$T/e' && ! grep -q 'no hadm instance' '$T/e'"
check "that 502 was not resent to another instance" \
    bash -c "grep '\"POST /api/v1/detect-url\" 502 ' '$T/nginx/access.log' | grep -q 'up=127[.0-9]*:[0-9]* us=502 '"
expect "unknown route -> hadm's 404" 404 "$(req "$T/e" "$LB/nope")"
check "404 is hadm's JSON" grep -q '"success":false' "$T/e"

# ---- load; SIGKILL one instance while it runs requests; SIGTERM-restart another -----
progress() { cat "$T/progress" 2>/dev/null || echo 0; }
wait_progress() { # wait_progress N: until N requests are finished (or the driver ended)
    while [ "$(progress)" -lt "$1" ] && kill -0 "$LOAD_PID" 2>/dev/null; do sleep 0.05; done
}
wait_busy() { # wait_busy PORT: until the instance runs or queues a job (up to ~5 s); prints 1 if so
    for _ in $(seq 1 200); do
        local running queued
        running=$(metric hadm_running_jobs "$1")
        queued=$(metric hadm_queue_depth "$1")
        if [ "${running:-0}" -gt 0 ] || [ "${queued:-0}" -gt 0 ]; then echo 1; return; fi
        sleep 0.02
    done
    echo 0
}

echo "load: $REQUESTS requests from $CLIENTS clients through nginx"
$LOAD load "$LB" "$IMG" "$REQUESTS" "$CLIENTS" "$T/progress" >"$T/load.out" 2>&1 &
LOAD_PID=$!

wait_progress $((REQUESTS / 3))
busy_b=$(wait_busy "${PORT[b]}")
KILL_AT=$(progress)
kill -KILL "${PID[b]}"
wait "${PID[b]}" 2>/dev/null
unset 'PID[b]'
echo "injected: SIGKILL to instance b (port ${PORT[b]}) after $KILL_AT requests, while busy: $busy_b"

wait_progress $((2 * REQUESTS / 3))
busy_c=$(wait_busy "${PORT[c]}")
TERM_AT=$(progress)
kill -TERM "${PID[c]}"
wait "${PID[c]}"
expect "instance c: SIGTERM, exit 0 after draining" 0 $?
inflight_c=$(sed -n 's/.*"shutting_down".*"in_flight":\([0-9]*\).*/\1/p' "$T/c.log" | head -1)
echo "injected: SIGTERM to instance c (port ${PORT[c]}) after $TERM_AT requests, while busy: $busy_c, requests in flight: ${inflight_c:-?}; restarted on the same port"
start_instance c
check "instance c ready again" wait_ready "http://127.0.0.1:${PORT[c]}" 600

wait "$LOAD_PID"
LOAD_RC=$?
LOAD_PID=""
cat "$T/load.out"
expect "every request got exactly one final 200 (lost = 0)" 0 "$LOAD_RC"

# nginx's view: one 200 per request, and what it resent to another instance.
ACC=$T/nginx/access.log
detect_200=$(grep -c '"POST /api/v1/detect" 200 ' "$ACC")
expect "nginx answered 200 once per request (+2 before the load)" $((REQUESTS + 2)) "$detect_200"
resent=$(grep '"POST /api/v1/detect"' "$ACC" | grep -c 'up=[^ ]*, ')
rescued=$(grep '"POST /api/v1/detect" 200 ' "$ACC" | grep -c "up=127.0.0.1:${PORT[b]}, [^ ]* us=50[24], 200")
echo "nginx: $(grep -c '"POST /api/v1/detect"' "$ACC") detect answers; by status: $(grep '"POST /api/v1/detect"' "$ACC" |
    awk '{print $5}' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
echo "nginx: $resent requests resent to another instance ($rescued of them from b to a 200 elsewhere)"
# A request that b was running when it died shows as its connection closed
# before the response header; every such request still got its one 200 above.
cut=$(grep -c "upstream prematurely closed connection.*upstream: \"http://127.0.0.1:${PORT[b]}/" "$T/nginx/error.log")
echo "nginx: $cut requests cut off by the SIGKILL of b (each still got its one 200 above)"
if [ "$busy_b" = 1 ]; then
    check "requests in flight on the killed instance were resent" test "$cut" -ge 1
else
    echo "note: b had no work at the moment of the kill; no in-flight resend to check"
fi
check "instance c drained without dropping a request" bash -c "! grep -q 'request_aborted\|shutdown_forced' '$T/c.log'"

"$NGINX" -p "$T/nginx/" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" -s quit
wait "$NGINX_PID"
expect "nginx quits cleanly" 0 $?
NGINX_PID=""
for i in a c; do
    kill -TERM "${PID[$i]}"
    wait "${PID[$i]}"
    expect "instance $i: SIGTERM, exit 0" 0 $?
    unset "PID[$i]"
done

finish
