#!/usr/bin/env bash
# Accuracy of the reduced-precision modes (hadm detect --precision bf16|int8)
# against f32, over a varied image set.
#
# usage: tools/precision_eval.sh [--models "L:path G:path ..."] [--precisions "bf16 int8"]
#                                [--images DIR | --count N] [--hadm BIN] [--iou T] [--min-score S]
#
#   --models      models to evaluate, each VARIANT:PATH (L = HADM-L, run with
#                 --local; G = HADM-G, --global); paths without spaces.
#                 Default: every ${HADM_GOLDEN_DIR:-../shared/golden}/*/model.safetensors,
#                 its variant read from the file (hadm doctor), else from the
#                 directory name ("global" in it = G).
#   --precisions  candidate precisions compared with f32 (default "bf16 int8").
#                 f16w is a calibration row: f32 compute on the weights rounded
#                 to f16 (hadm quantize --type f16; ~2.4e-4 relative, 16x
#                 finer than bf16), i.e. how much a perturbation far below any
#                 reduced mode's already moves this metric on these models.
#   --images      directory of images (default: N images written to a temporary
#                 directory by hadm-eval-images from the golden test6.jpeg).
#   --count       N for hadm-eval-images (default 16; ignored with --images).
#   --hadm        the hadm binary (default build/hadm); hadm-eval-images is
#                 taken from the same directory (or $HADM_EVAL_IMAGES).
#   --iou         IoU a match needs (default 0.9, as tools/compare_dets.py).
#   --min-score   count only reference detections scoring >= S (default 0: all;
#                 random-weight models give many low, near-tied scores whose
#                 order any rounding changes).
#
# For each model: one f32 run over the images (the reference), one run per
# candidate precision, compared by tools/compare_dets.py (same class, IoU >= T,
# each detection matched once). Prints one row per (model, precision) and a
# total per precision. Exit 0 whatever the accuracy; 1 on a usage error or a
# failed run, with the command and its error output.
set -euo pipefail
export LC_ALL=C   # decimal points in printf/awk whatever the locale

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLDEN=${HADM_GOLDEN_DIR:-$ROOT/../shared/golden}
MODELS=""
PRECISIONS="bf16 int8"
IMAGES=""
COUNT=16
HADM=$ROOT/build/hadm
IOU=0.9
MIN_SCORE=0

die() {
    echo "precision_eval: $*" >&2
    exit 1
}

usage() {
    sed -n '5,6p' "$0" | sed 's/^# //' >&2
    die "$1 (see the header of $0)"
}

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage "$1 needs a value"
    case $1 in
        --models) MODELS=$2 ;;
        --precisions) PRECISIONS=$2 ;;
        --images) IMAGES=$2 ;;
        --count) COUNT=$2 ;;
        --hadm) HADM=$2 ;;
        --iou) IOU=$2 ;;
        --min-score) MIN_SCORE=$2 ;;
        *) usage "unknown option: $1" ;;
    esac
    shift 2
done
[ -x "$HADM" ] || usage "no hadm binary at $HADM (build it, or pass --hadm)"
[ -n "${PRECISIONS// /}" ] || usage "--precisions is empty"
case $COUNT in '' | *[!0-9]*) usage "--count must be a number" ;; esac

# compare_dets.py needs only the standard library, so any Python 3 will do:
# prefer python3 from PATH, but a pyenv shim can refuse to run (no version
# selected here), so fall back to the system one.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for cand in python3 /usr/bin/python3; do
        if "$cand" -c 'import json' >/dev/null 2>&1; then
            PY=$cand
            break
        fi
    done
fi
[ -n "$PY" ] || die "no working python3 (set PYTHON=/path/to/python3)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hadm-precision-eval.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Runs a command, keeping its stderr; on failure shows both and exits 1.
run() {
    if ! "$@" 2>"$TMP/stderr"; then
        echo "precision_eval: failed: $*" >&2
        tail -n 20 "$TMP/stderr" >&2
        exit 1
    fi
}

# HADM-L or HADM-G, as the file itself says (doctor's model check), else
# from the directory name.
variant_of() {
    local v
    # doctor's exit status reflects the whole machine; only its JSON matters here.
    v=$({ "$HADM" doctor --json --quick --local "$1" --global "$1" 2>/dev/null || true; } |
        "$PY" -c 'import json, re, sys
for c in json.load(sys.stdin).get("checks", []):
    m = re.search(r"HADM-([LG])\b", c.get("detail", "")) if c.get("name") == "model-l" else None
    if m:
        print(m.group(1))' 2>/dev/null) || v=""
    if [ -z "$v" ]; then
        case $1 in *global*) v=G ;; *) v=L ;; esac
    fi
    echo "$v"
}

if [ -z "$MODELS" ]; then
    for f in "$GOLDEN"/*/model.safetensors; do
        [ -f "$f" ] || die "no models given and none under $GOLDEN (set HADM_GOLDEN_DIR or pass --models)"
        MODELS="$MODELS $(variant_of "$f"):$f"
    done
fi

# Checked before any run, so that a typo does not surface minutes later.
read -ra SPECS <<<"$MODELS"
read -ra PRECS <<<"$PRECISIONS"
[ ${#SPECS[@]} -gt 0 ] || usage "--models is empty"
for spec in "${SPECS[@]}"; do
    case $spec in
        [LlGg]:?*) [ -f "${spec#?:}" ] || usage "no model file ${spec#?:}" ;;
        *) usage "--models entries are L:PATH or G:PATH, not '$spec'" ;;
    esac
done

if [ -z "$IMAGES" ]; then
    GEN=${HADM_EVAL_IMAGES:-$(dirname "$HADM")/hadm-eval-images}
    SRC=""
    for s in "$GOLDEN"/*/test6.jpeg; do
        if [ -f "$s" ]; then SRC=$s; break; fi
    done
    [ -n "$SRC" ] || die "no test6.jpeg under $GOLDEN to derive images from (pass --images)"
    [ -x "$GEN" ] || die "no hadm-eval-images at $GEN (make hadm-eval-images, or pass --images)"
    IMAGES=$TMP/images
    run "$GEN" "$SRC" "$IMAGES" "$COUNT"
fi
[ -d "$IMAGES" ] || usage "--images $IMAGES is not a directory"
NIMG=$(find "$IMAGES" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) | wc -l)

# Wall seconds of a run (hadm detect), for the time columns.
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

ROW='%-16s %-3s %-5s %8s %8s %7s %10s %7s %7s\n'
echo "$NIMG images in $IMAGES; a reference (f32) detection (score >= $MIN_SCORE) is matched by one of the same class with IoU >= $IOU"
# shellcheck disable=SC2059  # ROW is this script's own format
printf "$ROW" model var prec ref_dets matched share% max_sdiff f32_s prec_s
: >"$TMP/rows"
i=0
for spec in "${SPECS[@]}"; do
    path=${spec#?:}
    case $spec in [Gg]:*) flag=--global var=G ;; *) flag=--local var=L ;; esac
    name=$(basename "$path" .safetensors)
    [ "$name" != model ] || name=$(basename "$(dirname "$path")")
    i=$((i + 1))
    ref=$TMP/$i-f32.json
    start=$(date +%s.%N)
    run "$HADM" detect "$flag" "$path" --precision f32 --format json "$IMAGES" >"$ref"
    f32_s=$(elapsed "$start")
    for prec in "${PRECS[@]}"; do
        cand=$TMP/$i-$prec.json
        start=$(date +%s.%N)
        if [ "$prec" = f16w ]; then
            run "$HADM" quantize --type f16 "$path" "$TMP/$i-f16.safetensors"
            run "$HADM" detect "$flag" "$TMP/$i-f16.safetensors" --precision f32 --format json "$IMAGES" >"$cand"
        else
            run "$HADM" detect "$flag" "$path" --precision "$prec" --format json "$IMAGES" >"$cand"
        fi
        prec_s=$(elapsed "$start")
        run "$PY" "$ROOT/tools/compare_dets.py" "$ref" "$cand" --iou "$IOU" --min-score "$MIN_SCORE" --json >"$TMP/cmp.json"
        fields=$("$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(d["reference_detections"], d["matched"], d["max_score_diff"])' "$TMP/cmp.json")
        read -r total matched sdiff <<<"$fields"
        echo "$prec $total $matched $sdiff" >>"$TMP/rows"
        share=$(awk -v t="$total" -v m="$matched" 'BEGIN { printf "%.1f", t ? 100 * m / t : 100 }')
        # shellcheck disable=SC2059
        printf "$ROW" "$name" "$var" "$prec" "$total" "$matched" "$share" \
            "$(printf '%.4f' "$sdiff")" "$f32_s" "$prec_s"
    done
done

for prec in "${PRECS[@]}"; do
    awk -v p="$prec" '$1 == p { t += $2; m += $3; if ($4 > d) d = $4 }
        END { printf "%-16s %-3s %-5s %8d %8d %7.1f %10.4f\n", "TOTAL", "", p, t, m, t ? 100 * m / t : 100, d }' \
        "$TMP/rows"
done
