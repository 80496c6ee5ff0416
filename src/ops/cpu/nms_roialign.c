/* Greedy NMS and ROIAlign with torchvision's semantics (its CPU kernels
 * nms_kernel.cpp and roi_align_kernel.cpp), on xyxy boxes and NHWC maps.
 *
 * Both are written in float with the same operation order as torchvision's
 * float instantiation, so the float results agree with the original bit for
 * bit where libm agrees. Neither function allocates: the callers (which may
 * run many of them in parallel) own all memory. */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

/* IoU exactly as torchvision computes it: areas and intersection in float,
 * iou = inter / (area_i + area_j - inter). Zero-area pairs give 0/0 = NaN,
 * which never exceeds the threshold (torchvision behaves the same). */
static inline float iou_xyxy(const float *a, float area_a, const float *b)
{
    float xx1 = a[0] > b[0] ? a[0] : b[0];
    float yy1 = a[1] > b[1] ? a[1] : b[1];
    float xx2 = a[2] < b[2] ? a[2] : b[2];
    float yy2 = a[3] < b[3] ? a[3] : b[3];
    float w = xx2 - xx1, h = yy2 - yy1;
    w = w > 0.0f ? w : 0.0f;
    h = h > 0.0f ? h : 0.0f;
    float inter = w * h;
    float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    return inter / (area_a + area_b - inter);
}

int ops_nms(const float *boxes, const int *order, int n, float iou_thresh, int *keep)
{
    /* `keep` doubles as the "suppressed" flags: keep[p] for p > current
     * position flags order[p]; kept indices are written at keep[kept] with
     * kept <= current position, i.e. only over flags already consumed. */
    if (n <= 0)
        return 0;
    memset(keep, 0, (size_t)n * sizeof *keep);
    int kept = 0;
    for (int p = 0; p < n; p++) {
        if (keep[p])
            continue;
        int i = order[p];
        const float *bi = boxes + (int64_t)i * 4;
        float area_i = (bi[2] - bi[0]) * (bi[3] - bi[1]);
        for (int q = p + 1; q < n; q++) {
            if (keep[q])
                continue;
            if (iou_xyxy(bi, area_i, boxes + (int64_t)order[q] * 4) > iou_thresh)
                keep[q] = 1;
        }
        keep[kept++] = i;
    }
    return kept;
}

/* One bilinear sample of the ROIAlign grid: the four taps (pixel offsets into
 * the map, in channels) and their weights. Outside samples have weights 0. */
typedef struct {
    int64_t p1, p2, p3, p4;
    float w1, w2, w3, w4;
} sample;

/* torchvision's pre_calc_for_bilinear_interpolate for one point; returns 0
 * for a point outside [-1, size] (it still counts in the average). The
 * negated comparison also rejects NaN coordinates. */
static int bilinear_taps(int H, int W, int C, float y, float x, sample *s)
{
    if (!(y >= -1.0f && y <= (float)H && x >= -1.0f && x <= (float)W))
        return 0;
    if (y <= 0)
        y = 0;
    if (x <= 0)
        x = 0;
    int ylo = (int)y, xlo = (int)x, yhi, xhi;
    if (ylo >= H - 1) {
        yhi = ylo = H - 1;
        y = (float)ylo;
    } else {
        yhi = ylo + 1;
    }
    if (xlo >= W - 1) {
        xhi = xlo = W - 1;
        x = (float)xlo;
    } else {
        xhi = xlo + 1;
    }
    float ly = y - (float)ylo, lx = x - (float)xlo;
    float hy = 1.0f - ly, hx = 1.0f - lx;
    s->w1 = hy * hx, s->w2 = hy * lx, s->w3 = ly * hx, s->w4 = ly * lx;
    s->p1 = ((int64_t)ylo * W + xlo) * C;
    s->p2 = ((int64_t)ylo * W + xhi) * C;
    s->p3 = ((int64_t)yhi * W + xlo) * C;
    s->p4 = ((int64_t)yhi * W + xhi) * C;
    return 1;
}

/* Samples per bin along one axis: the fixed ratio, or ceil(size / res).
 * Non-positive and NaN sizes give 0 samples; the cap only guards against
 * absurd (unclipped) boxes turning into endless loops. */
static int grid_count(float roi_size, int res, int sampling_ratio)
{
    if (sampling_ratio > 0)
        return sampling_ratio;
    float g = ceilf(roi_size / (float)res);
    if (!(g > 0))
        return 0;
    return g > 1024.0f ? 1024 : (int)g;
}

void ops_roi_align(const float *map, int H, int W, int C, const float box[4], float spatial_scale,
                   int res, int sampling_ratio, int aligned, float *out)
{
    float offset = aligned ? 0.5f : 0.0f;
    float sx = box[0] * spatial_scale - offset, sy = box[1] * spatial_scale - offset;
    float ex = box[2] * spatial_scale - offset, ey = box[3] * spatial_scale - offset;
    float rw = ex - sx, rh = ey - sy;
    if (!aligned) { /* the legacy mode forces a minimum 1x1 ROI */
        rw = rw > 1.0f ? rw : 1.0f;
        rh = rh > 1.0f ? rh : 1.0f;
    }
    float bh = rh / (float)res, bw = rw / (float)res;
    int gh = grid_count(rh, res, sampling_ratio), gw = grid_count(rw, res, sampling_ratio);
    int cnt = gh * gw;
    float count = (float)(cnt > 1 ? cnt : 1);
    memset(out, 0, (size_t)res * res * C * sizeof *out);
    if (H <= 0 || W <= 0)
        return;
    for (int ph = 0; ph < res; ph++) {
        for (int pw = 0; pw < res; pw++) {
            float *o = out + ((int64_t)ph * res + pw) * C;
            for (int iy = 0; iy < gh; iy++) {
                float y = sy + (float)ph * bh + (float)(iy + 0.5f) * bh / (float)gh;
                for (int ix = 0; ix < gw; ix++) {
                    float x = sx + (float)pw * bw + (float)(ix + 0.5f) * bw / (float)gw;
                    sample s;
                    if (!bilinear_taps(H, W, C, y, x, &s))
                        continue;
                    const float *f1 = map + s.p1, *f2 = map + s.p2, *f3 = map + s.p3, *f4 = map + s.p4;
                    /* channels are contiguous in NHWC: this loop vectorises */
                    for (int c = 0; c < C; c++)
                        o[c] += s.w1 * f1[c] + s.w2 * f2[c] + s.w3 * f3[c] + s.w4 * f4[c];
                }
            }
            for (int c = 0; c < C; c++)
                o[c] /= count;
        }
    }
}
