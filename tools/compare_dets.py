#!/usr/bin/env python3
"""Compares two `hadm detect --format json` outputs (a reference, e.g. f32,
and a candidate, e.g. bf16): for each image and model, the share of reference
detections the candidate matches (same class, IoU >= --iou, each candidate
used once, best IoU first) and the largest score difference over matches.

usage: compare_dets.py REF.json CAND.json [--iou 0.9] [--min-score S] [--json]
Exit 0; prints one summary line (or a JSON object)."""
import json
import sys


def load(path):
    v = json.load(open(path))
    return v if isinstance(v, list) else [v]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def match(ref, cand, thr):
    """Returns (matched count, max |score diff| over matches)."""
    pairs = []
    for i, r in enumerate(ref):
        for j, c in enumerate(cand):
            if r["class_id"] == c["class_id"]:
                v = iou(r["bbox"], c["bbox"])
                if v >= thr:
                    pairs.append((v, i, j))
    pairs.sort(reverse=True)
    used_r, used_c, worst = set(), set(), 0.0
    for v, i, j in pairs:
        if i in used_r or j in used_c:
            continue
        used_r.add(i)
        used_c.add(j)
        worst = max(worst, abs(ref[i]["confidence"] - cand[j]["confidence"]))
    return len(used_r), worst


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    thr = float(argv[argv.index("--iou") + 1]) if "--iou" in argv else 0.9
    min_score = float(argv[argv.index("--min-score") + 1]) if "--min-score" in argv else 0.0
    if "--iou" in argv:
        args.remove(argv[argv.index("--iou") + 1])
    if "--min-score" in argv:
        args.remove(argv[argv.index("--min-score") + 1])
    ref, cand = load(args[0]), load(args[1])
    if len(ref) != len(cand):
        sys.exit("compare_dets: %d vs %d images" % (len(ref), len(cand)))
    total = matched = 0
    worst = 0.0
    for r, c in zip(ref, cand):
        for key in ("local_detections", "global_detections"):
            rd = [d for d in r.get(key, []) if d["confidence"] >= min_score]
            cd = c.get(key, [])
            m, w = match(rd, cd, thr)
            total += len(rd)
            matched += m
            worst = max(worst, w)
    share = matched / total if total else 1.0
    out = {"images": len(ref), "reference_detections": total, "matched": matched,
           "matched_share": share, "max_score_diff": worst, "iou": thr}
    if "--json" in argv:
        print(json.dumps(out))
    else:
        print("%d images, %d reference detections, %d matched (%.1f%%), max score diff %.4f (IoU >= %.2f)"
              % (len(ref), total, matched, 100 * share, worst, thr))


if __name__ == "__main__":
    main(sys.argv[1:])
