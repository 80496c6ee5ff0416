#!/bin/bash
# hadm monitor: the three modes write a JSON and a self-contained HTML report;
# startup's numbers agree with the server's own /metrics within 10%; the HTML
# renders in headless Chromium and shows the timeline.
set -u
BIN=${HADM_BIN:?HADM_BIN not set}
SRC=${HADM_SOURCE_DIR:-$(dirname "$0")/..}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC/../shared/golden}
L=$GOLDEN/tiny-local/model.safetensors G=$GOLDEN/tiny-global/model.safetensors
TMP=$(mktemp -d /tmp/hadm-monitor-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }
py() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

"$BIN" monitor 2> /dev/null; check '[ $? = 2 ]' "--mode is required"
"$BIN" monitor --mode nonsense 2> /dev/null; check '[ $? = 2 ]' "unknown mode is a usage error"

# startup: exec -> listening -> ready -> first detect -> 3 more
"$BIN" monitor --mode startup --local "$L" --global "$G" --runs 3 --report "$TMP/startup" > "$TMP/startup.txt" 2>&1
check '[ $? = 0 ]' "startup mode runs ($(tail -3 "$TMP/startup.txt"))"
for k in "listening_s (from exec)" "ready_s (from exec)" first_detect_s detect_p50_s detect_p95_s both_models_loaded_s; do
    check '[ "$(py "$TMP/startup.json" "d[\"metrics\"][\"'"$k"'\"][\"value\"] > 0")" = True ]' "startup metric $k"
done
check '[ "$(py "$TMP/startup.json" "d[\"metrics\"][\"listening_s (from exec)\"][\"value\"] <= d[\"metrics\"][\"ready_s (from exec)\"][\"value\"]")" = True ]' \
    "listening comes before ready"
for k in "detect_mean_s (all requests)" "rss_mb (at /metrics)"; do
    check '[ "$(py "$TMP/startup.json" "d[\"metrics\"][\"'"$k"'\"][\"deviation\"] < 0.10")" = True ]' \
        "$k within 10% of /metrics ($(py "$TMP/startup.json" "d[\"metrics\"][\"$k\"]"))"
done
check '[ "$(py "$TMP/startup.json" "len(d[\"rss_mb\"]) > 3 and len(d[\"timeline\"]) >= 6")" = True ]' "RSS samples and timeline spans"
check 'grep -q "<svg id=\"timeline\"" "$TMP/startup.html" && ! grep -qiE "<script|https?://" "$TMP/startup.html"' \
    "HTML is self-contained with an SVG timeline"

# load: each model timed, then both in parallel
"$BIN" monitor --mode load --local "$L" --global "$G" --report "$TMP/load.json" > "$TMP/load.txt" 2>&1
check '[ $? = 0 ] && [ -s "$TMP/load.html" ]' "load mode writes both reports"
check '[ "$(py "$TMP/load.json" "all(k in d[\"metrics\"] for k in (\"hadm-l.open_s\",\"hadm-g.open_s\",\"parallel_both_s\"))")" = True ]' \
    "load metrics"

# inference: per-stage times
"$BIN" monitor --mode inference --local "$L" --runs 2 --report "$TMP/inf" > "$TMP/inf.txt" 2>&1
check '[ $? = 0 ]' "inference mode runs"
check '[ "$(py "$TMP/inf.json" "all(\"hadm-l.%s_p50_ms\" % s in d[\"metrics\"] for s in (\"preprocess\",\"backbone\",\"fpn\",\"rpn\",\"roi_heads\",\"postprocess\"))")" = True ]' \
    "a p50 for every stage"
check 'grep -qE "^  hadm-l.backbone_p50_ms" "$TMP/inf.txt"' "terminal table"

# The HTML in a real browser.
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
# no network here: keep Chromium from trying to reach anything
CHROME_QUIET="--no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir=$TMP/chrome"
if [ -n "$BROWSER" ]; then
    timeout 120 "$BROWSER" --headless --no-sandbox --disable-gpu $CHROME_QUIET --dump-dom "file://$TMP/startup.html" > "$TMP/dom.html" 2> /dev/null
    check 'grep -q "<svg id=\"timeline\"" "$TMP/dom.html" && [ $(grep -o "<rect class=\"span\"" "$TMP/dom.html" | wc -l) -ge 4 ]' \
        "headless browser renders the timeline"
    timeout 120 "$BROWSER" --headless --no-sandbox --disable-gpu $CHROME_QUIET --window-size=1100,800 \
        --screenshot="$TMP/shot.png" "file://$TMP/startup.html" > /dev/null 2>&1
    check '[ "$(head -c 4 "$TMP/shot.png" | od -An -c | tr -d " ")" = "211PNG" ] && [ $(stat -c %s "$TMP/shot.png") -gt 20000 ]' \
        "screenshot of the report"
else
    # scripts/install-deps.sh installs Debian's chromium: its absence is a broken setup
    check 'false' "chromium is installed (scripts/install-deps.sh) for the browser check"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
