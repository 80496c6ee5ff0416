#!/usr/bin/env bash
# Annotated images from the server's detect routes: ?annotate=1 and
# Accept: image/... answer with the image (a whole JPEG or PNG of the
# input's size), annotated_image=1 adds it in base64 to the JSON, a batch
# carries one per entry, and bad parameters are 400s. The pixels themselves
# are checked by test_annotate (CLI); here the server's PNG must be the very
# file `hadm detect --annotate --annotate-format png` writes.
# Needs: $HADM_BIN, $HADM_GOLDEN_DIR, curl, python3 (standard library only).
set -u
source "$(dirname "$0")/lib.sh"

SRC_DIR=${HADM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GOLDEN=${HADM_GOLDEN_DIR:-$SRC_DIR/../shared/golden}
BIN=${HADM_BIN:-$SRC_DIR/build/hadm}
G=$GOLDEN/tiny-global/model.safetensors
IMG=$GOLDEN/tiny-global/landscape_640x427.jpg   # 640x427: small, so model runs stay cheap

T=$(mktemp -d "${TMPDIR:-/tmp}/hadm-test-annot.XXXXXX")
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

for f in "$G" "$IMG"; do
    [ -r "$f" ] || { echo "FAIL missing golden file $f (HADM_GOLDEN_DIR=$GOLDEN)"; exit 1; }
done
[ -x "$BIN" ] || { echo "FAIL no hadm binary at $BIN"; exit 1; }

cat >"$T/util.py" <<'PYEOF'
import base64, json, struct, sys, zlib

def png_size(data):
    """Decodes a PNG far enough to prove it whole: chunk CRCs, IHDR, and the
    inflated rows (filter byte + 3 bytes a pixel for 8-bit RGB)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, "bad CRC in %r" % kind
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2), "not 8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    rows = zlib.decompress(idat)
    assert len(rows) == h * (1 + 3 * w), "pixel data of the wrong length"
    assert all(rows[y * (1 + 3 * w)] <= 4 for y in range(h)), "bad row filter"
    return w, h

def cmd_png(path, w, h):
    return png_size(open(path, "rb").read()) == (int(w), int(h))

def cmd_field(path, out_path, want_type):
    """The JSON answer with annotated_image: fields after the usual ones,
    base64 that decodes to an image of want_type, written to out_path."""
    d = json.load(open(path))
    keys = list(d)
    assert keys[-2:] == ["annotated_image", "annotated_image_type"], keys
    assert d["success"] is True and d["annotated_image_type"] == want_type, d["annotated_image_type"]
    raw = base64.b64decode(d["annotated_image"], validate=True)
    open(out_path, "wb").write(raw)
    magic = b"\x89PNG" if want_type == "image/png" else b"\xff\xd8\xff"
    return raw.startswith(magic)

def cmd_same_dets(a, b):
    """Same detections (and image size) in two detect answers."""
    da, db = json.load(open(a)), json.load(open(b))
    k = lambda d: (d["results"], d["local_detections"], d["global_detections"])
    return k(da) == k(db)

def cmd_batch(path, n, want_type):
    d = json.load(open(path))["batch_results"]
    return len(d) == int(n) and all(
        r["result"]["success"] and r["result"]["annotated_image_type"] == want_type
        and len(base64.b64decode(r["result"]["annotated_image"])) > 1000 for r in d)

def cmd_jpeg(path, w, h):
    """A whole baseline JPEG of w x h: SOI, a SOF0 frame of that size, scan
    data, EOI. (Decoding our encoder's output pixel by pixel is test_annotate's.)"""
    data = open(path, "rb").read()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "no SOI/EOI"
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, "bad marker at %d" % pos
        marker, (n,) = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xC0:
            hh, ww = struct.unpack(">HH", data[pos + 5:pos + 9])
            return (ww, hh) == (int(w), int(h))
        pos += 2 + n
    return False

def cmd_header(path, name, value_prefix):
    for line in open(path, encoding="latin-1"):
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip().startswith(value_prefix)
    return False

sys.exit(0 if globals()["cmd_" + sys.argv[1]](*sys.argv[2:]) else 1)
PYEOF
py() { python3 "$T/util.py" "$@"; }

# req OUT [curl args...]: prints the status; body in OUT, headers in OUT.h
req() { local out=$1; shift; curl -s --max-time 120 -o "$out" -D "$out.h" -w '%{http_code}' "$@"; }

# HADM-G only: model runs are what this test spends (the pixels of both
# kinds of boxes are test_annotate's). Accept negotiation in detail is there
# too (annot_accept_image).
launch_server --global "$G" || exit 1
wait_ready "$URL" 600

D="$URL/api/v1/detect"
expect "?annotate=1 -> 200" 200 "$(req "$T/a.jpg" -F "file=@$IMG" "$D?annotate=1&mode=global")"
check "?annotate=1: Content-Type image/jpeg" py header "$T/a.jpg.h" Content-Type image/jpeg
check "?annotate=1: a whole 640x427 JPEG" py jpeg "$T/a.jpg" 640 427
check "?annotate=1: X-HADM-Detections header" py header "$T/a.jpg.h" X-HADM-Detections "local=0, global="

expect "Accept: image/png -> 200" 200 "$(req "$T/b.png" -H 'Accept: image/png' -F "file=@$IMG" -F mode=global "$D")"
check "Accept: image/png: Content-Type image/png" py header "$T/b.png.h" Content-Type image/png
check "Accept: image/png: decodes to 640x427" py png "$T/b.png" 640 427

expect "?annotated_image=1 -> 200" 200 "$(req "$T/c.json" -F "file=@$IMG" "$URL/detect?annotated_image=1&mode=global")"
check "?annotated_image=1: JPEG in base64 after the usual fields" py field "$T/c.json" "$T/c.jpg" image/jpeg
check "base64 JPEG is the same file as the ?annotate=1 answer" cmp -s "$T/c.jpg" "$T/a.jpg"
expect "form annotated_image=true, annotate_format=png -> 200" 200 \
    "$(req "$T/d.json" -F "file=@$IMG" -F annotated_image=true -F annotate_format=png -F mode=global "$URL/api/detect")"
check "form annotated_image: PNG in base64" py field "$T/d.json" "$T/d.png" image/png
check "annotated JSON answers carry the same detections" py same_dets "$T/c.json" "$T/d.json"
check "base64 PNG is the same file as the Accept: image/png answer" cmp -s "$T/d.png" "$T/b.png"

python3 -c "import base64,json,sys; json.dump({'image_base64': base64.b64encode(open(sys.argv[1],'rb').read()).decode(), 'mode': 'global', 'annotate': True}, open(sys.argv[2],'w'))" "$IMG" "$T/b64.json"
expect "detect-base64 {\"annotate\": true} + Accept: image/* -> 200" 200 \
    "$(req "$T/e.jpg" -H 'Content-Type: application/json' -H 'Accept: image/*' --data-binary "@$T/b64.json" "$URL/api/v1/detect-base64")"
check "detect-base64 annotate: Content-Type image/jpeg" py header "$T/e.jpg.h" Content-Type image/jpeg
check "detect-base64 annotate: the same JPEG as a multipart upload" cmp -s "$T/e.jpg" "$T/a.jpg"

expect "batch ?annotated_image=1 -> 200" 200 \
    "$(req "$T/g.json" -F "file=@$IMG" "$URL/detect/batch?annotated_image=1&annotate_format=png&mode=global")"
check "batch: the entry has a PNG" py batch "$T/g.json" 1 image/png

expect "batch ?annotate=1 -> 400" 400 "$(req "$T/x" -F "file=@$IMG" "$URL/detect/batch?annotate=1")"
expect "annotate=maybe -> 400" 400 "$(req "$T/x" -F "file=@$IMG" "$D?annotate=maybe")"
expect "annotate_format=gif -> 400" 400 "$(req "$T/x" -F "file=@$IMG" "$D?annotate=1&annotate_format=gif")"
expect "annotate=1 on a text file -> 415" 415 "$(req "$T/x" -F "file=@$T/util.py" "$D?annotate=1")"
check "  ... answered in JSON" py header "$T/x.h" Content-Type application/json

kill "$PID"; wait "$PID" 2>/dev/null
expect "server exits 0 on SIGTERM (under ASan: no leaks)" 0 $?
PID=""
grep -q "ERROR: \(Address\|Leak\)Sanitizer\|runtime error" "$T/server.log" && fail "sanitizer report in the server log"

# The CLI draws the very PNG the server sent.
"$BIN" detect --global "$G" --annotate "$T/cli" --annotate-format png "$IMG" >/dev/null 2>"$T/cli.err"
expect "hadm detect --annotate exits 0" 0 $?
check "server PNG == hadm detect --annotate PNG" cmp -s "$T/b.png" "$T/cli/landscape_640x427.png"

finish
