/* Box arithmetic shared by rpn.c, roi_heads.c and postprocess.c. Every
 * formula is written in float with detectron2's operation order (the
 * original decodes and clips in float32 even in a float64 run), and the
 * source is compiled as ISO C, so no multiply-add is contracted. */
#include "engine/boxes.h"

#include <math.h>
#include <stdlib.h>

#include "util/err.h"

void boxes_cell_anchors(const hadm_config *cfg, int level, float cell[][4])
{
    double size = cfg->anchor_sizes[level];
    for (int a = 0; a < cfg->n_ratios; a++) {
        double r = cfg->aspect_ratios[a];
        double w = sqrt(size * size / r), h = r * w;
        cell[a][0] = (float)(-w / 2), cell[a][1] = (float)(-h / 2);
        cell[a][2] = (float)(w / 2), cell[a][3] = (float)(h / 2);
    }
}

void boxes_anchor(const float cell[][4], int A, int W, int stride, float offset, int64_t i,
                  float out[4])
{
    int a = (int)(i % A);
    int64_t p = i / A;
    float sx = (float)(p % W) * (float)stride + offset * (float)stride;
    float sy = (float)(p / W) * (float)stride + offset * (float)stride;
    out[0] = cell[a][0] + sx, out[1] = cell[a][1] + sy;
    out[2] = cell[a][2] + sx, out[3] = cell[a][3] + sy;
}

void boxes_decode(const float box[4], const float delta[4], const float weights[4],
                  float scale_clamp, float out[4])
{
    float w = box[2] - box[0], h = box[3] - box[1];
    float cx = box[0] + 0.5f * w, cy = box[1] + 0.5f * h;
    float dx = delta[0] / weights[0], dy = delta[1] / weights[1];
    float dw = delta[2] / weights[2], dh = delta[3] / weights[3];
    /* upper clamp only; written so that NaN stays NaN as in torch.clamp */
    if (dw > scale_clamp)
        dw = scale_clamp;
    if (dh > scale_clamp)
        dh = scale_clamp;
    float pcx = dx * w + cx, pcy = dy * h + cy;
    float pw = expf(dw) * w, ph = expf(dh) * h;
    out[0] = pcx - 0.5f * pw, out[1] = pcy - 0.5f * ph;
    out[2] = pcx + 0.5f * pw, out[3] = pcy + 0.5f * ph;
}

static inline float clampf(float v, float hi)
{
    if (v < 0.0f)
        return 0.0f;
    return v > hi ? hi : v;
}

void boxes_clip(float b[4], int h, int w)
{
    b[0] = clampf(b[0], (float)w), b[1] = clampf(b[1], (float)h);
    b[2] = clampf(b[2], (float)w), b[3] = clampf(b[3], (float)h);
}

int boxes_finite(const float b[4])
{
    return isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]);
}

int boxes_ranks_before(float sa, int64_t ia, float sb, int64_t ib)
{
    int na = isnan(sa), nb = isnan(sb);
    if (na || nb)
        return na && nb ? ia < ib : na;
    if (sa != sb)
        return sa > sb;
    return ia < ib;
}

/* ---- heap sort on index arrays (no allocation, deterministic) ---------- */

typedef int (*before_fn)(const void *ctx, int a, int b);

static int by_score(const void *ctx, int a, int b)
{
    const float *s = ctx;
    return boxes_ranks_before(s[a], a, s[b], b);
}

/* Max-heap on "ranks after": the root is the element that sorts last. */
static void sift_down(int *idx, int n, int root, before_fn before, const void *ctx)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && before(ctx, idx[child], idx[child + 1]))
            child++;
        if (!before(ctx, idx[root], idx[child]))
            return;
        int t = idx[root];
        idx[root] = idx[child], idx[child] = t;
        root = child;
    }
}

static void heap_sort(int *idx, int n, before_fn before, const void *ctx)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(idx, n, i, before, ctx);
    for (int end = n - 1; end > 0; end--) {
        int t = idx[0];
        idx[0] = idx[end], idx[end] = t;
        sift_down(idx, end, 0, before, ctx);
    }
}

void boxes_sort_by_score(const float *score, int *idx, int n)
{
    heap_sort(idx, n, by_score, score);
}

hadm_status boxes_topk(const float *score, int64_t n, int k, int *idx, hadm_error *err)
{
    if (k < 0 || k > n || n > INT32_MAX)
        return hadm_fail(err, HADM_ERR_ARG, "top-k: k=%d out of range for %lld values", k, (long long)n);
    if (k == 0)
        return HADM_OK;
    /* idx[0..size) is a heap whose root is the worst of the current best k;
     * indices arrive in increasing order, so an equal score never displaces
     * an earlier one (lower index first on ties). */
    int size = 0;
    for (int64_t i = 0; i < n; i++) {
        if (size < k) {
            idx[size] = (int)i;
            for (int c = size++; c > 0;) { /* sift up */
                int parent = (c - 1) / 2;
                if (!by_score(score, idx[parent], idx[c]))
                    break;
                int t = idx[parent];
                idx[parent] = idx[c], idx[c] = t;
                c = parent;
            }
        } else if (boxes_ranks_before(score[i], i, score[idx[0]], idx[0])) {
            idx[0] = (int)i;
            sift_down(idx, size, 0, by_score, score);
        }
    }
    heap_sort(idx, size, by_score, score);
    return HADM_OK;
}

typedef struct {
    const float *score;
    const int *group;
} group_ctx;

static int by_group_then_score(const void *ctx, int a, int b)
{
    const group_ctx *g = ctx;
    if (g->group[a] != g->group[b])
        return g->group[a] < g->group[b];
    return boxes_ranks_before(g->score[a], a, g->score[b], b);
}

hadm_status boxes_batched_nms(const float *boxes, const float *score, const int *group, int n,
                              float iou_thresh, int *keep, int *nkeep, hadm_error *err)
{
    *nkeep = 0;
    if (n <= 0)
        return HADM_OK;
    int *order = malloc((size_t)n * sizeof *order);
    if (!order)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (nms)");
    for (int i = 0; i < n; i++)
        order[i] = i;
    group_ctx gc = {score, group};
    heap_sort(order, n, by_group_then_score, &gc);
    /* each group is now a contiguous run, best first; its survivors are
     * appended to keep (ops_nms needs len slots there: nk <= start holds) */
    int nk = 0;
    for (int start = 0; start < n;) {
        int end = start + 1;
        while (end < n && group[order[end]] == group[order[start]])
            end++;
        nk += ops_nms(boxes, order + start, end - start, iou_thresh, keep + nk);
        start = end;
    }
    free(order);
    boxes_sort_by_score(score, keep, nk);
    *nkeep = nk;
    return HADM_OK;
}
