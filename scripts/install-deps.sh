#!/usr/bin/env bash
# The one list of Debian packages hadm needs to build, test and run.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libdnnl-dev                 # oneDNN: matmul and convolution on the CPU
  libcjson-dev                # JSON: model config, API bodies
  libjpeg62-turbo-dev         # JPEG decode (libjpeg-turbo, PIL-identical pixels)
  libspng-dev zlib1g-dev      # PNG decode
  libwebp-dev                 # WebP decode
  libexif-dev                 # EXIF orientation
  libmicrohttpd-dev           # HTTP server
  libcurl4-openssl-dev        # server: /api/v1/detect-url fetches (off unless allowed)
  libcairo2-dev               # annotated images: boxes and text labels (cairo + FreeType)
  fonts-dejavu-core           # the annotation labels' font
  curl                        # server integration tests
  nginx                       # test: deploy/nginx.conf balancing 3 instances (own prefix; the system service is left alone)
  clang libclang-rt-14-dev libomp-dev  # fuzz targets (tools/fuzz.sh): libFuzzer, sanitizers, OpenMP for clang
  python3                     # test helpers (no third-party modules)
  chromium                    # test: monitor's HTML report renders in a headless browser
)
# Browser test (tests/test_console.sh): the machine's Node.js/npm, else Debian's.
command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
