#!/usr/bin/env bash
# Browser test of the web console (issue 7): Debian's chromium, headless,
# driven by playwright-core (tests/browser, installed here with `npm ci`)
# against a real `hadm serve` with the tiny golden models. Screenshots of
# each step go to $HADM_CONSOLE_ARTIFACTS (default: artifacts/console/ in
# the build directory, beside the hadm binary).
# Skips (exit 77) only when chromium is missing; anything else missing fails.
set -u

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
BROWSER_DIR=$SRC_DIR/tests/browser

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
    echo "SKIP test_console: no chromium on this machine (scripts/install-deps.sh installs Debian's chromium)"
    exit 77
fi
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "FAIL test_console: $tool is missing"; exit 1; }
done
[ -x "$BIN" ] || { echo "FAIL no hadm binary at $BIN"; exit 1; }
for f in "$GOLDEN/tiny-local/model.safetensors" "$GOLDEN/tiny-global/model.safetensors"; do
    [ -r "$f" ] || { echo "FAIL missing golden file $f (HADM_GOLDEN_DIR=$GOLDEN)"; exit 1; }
done

# `npm ci` (exactly package-lock.json) unless that version is already installed.
if ! (cd "$BROWSER_DIR" && node -e "
    const want = require('./package-lock.json').packages['node_modules/playwright-core'].version;
    process.exit(require('./node_modules/playwright-core/package.json').version === want ? 0 : 1)" 2>/dev/null); then
    echo "npm ci in $BROWSER_DIR"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error) || { echo "FAIL npm ci"; exit 1; }
fi

BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
ARTIFACTS=${HADM_CONSOLE_ARTIFACTS:-$(dirname "$BIN")/artifacts/console}
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
echo "screenshots: $ARTIFACTS"
HADM_BIN=$BIN HADM_GOLDEN_DIR=$GOLDEN CHROMIUM=$CHROMIUM ARTIFACTS=$ARTIFACTS \
    timeout 300 node "$BROWSER_DIR/console.test.mjs"
rc=$?
echo "screenshots: $ARTIFACTS"
exit $rc
