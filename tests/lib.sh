# Shared helpers of the shell tests, sourced by tests/test_*.sh:
#     source "$(dirname "$0")/lib.sh"
# Offers the PASSED/FAILED counters and pass, fail, check, expect, note and
# finish (the "ok   NAME" / "FAIL NAME" lines that logs are grepped for), and
# the polling behind each script's start_server: wait_port_file, wait_ready,
# server_started and launch_server; stop_server (signal, bounded wait, SERVER_RC).
# Expects the caller to set BIN (the hadm binary) and T (the test's temporary
# directory) before it calls server_started or launch_server, which use
# "$T/port" and "$T/server.log" and set the globals PID and URL.

PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; }
check() { # check NAME COMMAND...: passes when the command succeeds
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
expect() { # expect NAME WANT GOT
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (got $3, expected $2)"; fi
}
note() { echo "     $*"; }
finish() { # the last line of a script: the counts; fails when a check did
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# wait_port_file FILE PID [TRIES]: polls every 0.05 s, TRIES times (default
# 200: 10 s), until FILE (a --port-file) is non-empty or PID has exited;
# succeeds when FILE is non-empty.
wait_port_file() {
    local i
    for i in $(seq 1 "${3:-200}"); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$1" ]
}

# wait_ready URL [TRIES]: polls GET URL/ready every 0.05 s, TRIES times
# (default 200: 10 s); succeeds once it answers 200.
wait_ready() {
    local i
    for i in $(seq 1 "${2:-200}"); do
        [ "$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' "$1/ready")" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}

# server_started [WHAT]: after `hadm serve --port 0 --port-file "$T/port" ...
# 2>>"$T/server.log" &` and PID=$!, waits for the port file and sets
# URL=http://127.0.0.1:PORT. When the server exited or wrote no port within
# 10 s: prints "FAIL server did not start: WHAT" and the log's last 5 lines,
# clears PID and returns 1.
server_started() {
    if ! wait_port_file "$T/port" "$PID"; then
        echo "FAIL server did not start: $*"
        tail -5 "$T/server.log"
        PID=""
        return 1
    fi
    URL="http://127.0.0.1:$(cat "$T/port")"
}

# launch_server ARGS...: `hadm serve --host 127.0.0.1 --port 0 ARGS...` in the
# background (stderr appended to $T/server.log), then server_started.
launch_server() {
    rm -f "$T/port"
    "$BIN" serve --host 127.0.0.1 --port 0 --port-file "$T/port" "$@" 2>>"$T/server.log" &
    PID=$!
    server_started "$@"
}

# stop_server [SIGNAL]: signals $PID (default TERM), waits up to
# $STOP_TIMEOUT_S seconds (default 60) before SIGKILL, sets SERVER_RC to its
# exit status (-1 when no server was running) and clears PID.
stop_server() {
    SERVER_RC=-1
    [ -n "${PID:-}" ] || return 0
    local limit=${STOP_TIMEOUT_S:-60}
    kill -"${1:-TERM}" "$PID" 2>/dev/null
    for _ in $(seq 1 $((limit * 20))); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$PID" 2>/dev/null && { echo "server did not stop in $limit s; killing it"; kill -9 "$PID"; }
    wait "$PID" 2>/dev/null
    SERVER_RC=$?
    PID=""
}
