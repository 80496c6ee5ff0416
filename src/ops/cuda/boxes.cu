// Box work on the GPU: radix sort (CUB), RPN decoding, NMS, ROIAlign, the
// cascade stage tail and the detection candidates. Formulas and operation
// order follow engine/boxes.c and ops/cpu/nms_roialign.c; this file is built
// with --fmad=false so no multiply-add is contracted, as in the ISO C build
// of those files. Data-dependent counts stay on the device (counts[]):
//   counts[0] kept by the last NMS, counts[1] proposals, counts[2] valid candidates.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>
#include <math.h>

#include "ops/cuda/cuda_internal.h"
extern "C" {
#include "util/err.h"
}

#define THREADS 256

static inline cudaStream_t stream_of(cuda_dev *d) { return (cudaStream_t)cuda_dev_stream(d); }
static inline unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS > 0 ? (n + THREADS - 1) / THREADS : 1); }

extern "C" size_t cuda_sort_temp_bytes(int64_t n)
{
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairsDescending((void *)NULL, bytes, (const float *)NULL, (float *)NULL,
                                              (const int *)NULL, (int *)NULL, (int)n);
    return bytes;
}

extern "C" hadm_status cuda_sort_desc(cuda_dev *d, void *temp, size_t temp_bytes, const float *keys_in,
                                      float *keys_out, const int *vals_in, int *vals_out, int n, hadm_error *err)
{
    size_t need = cuda_sort_temp_bytes(n);
    if (need > temp_bytes)
        return hadm_fail(err, HADM_ERR_INTERNAL, "cuda sort: %zu bytes of scratch needed, %zu planned", need,
                         temp_bytes);
    cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out,
                                                              n, 0, (int)sizeof(float) * 8, stream_of(d));
    if (e != cudaSuccess)
        return hadm_fail(err, HADM_ERR_INTERNAL, "cuda sort: %s", cudaGetErrorString(e));
    return HADM_OK;
}

__global__ void k_iota(int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        v[i] = i;
}

extern "C" void cuda_iota(cuda_dev *d, int *v, int n)
{
    if (n > 0)
        k_iota<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(v, n);
}

__global__ void k_gather_cols(const float *x, int64_t rows, int cols, int64_t ld, float *keys)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < rows * cols)
        keys[i] = x[(i / cols) * ld + i % cols];
}

extern "C" void cuda_gather_cols(cuda_dev *d, const float *x, int64_t rows, int cols, int64_t ld, float *keys)
{
    if (rows * cols > 0)
        k_gather_cols<<<blocks_for(rows * cols), THREADS, 0, stream_of(d)>>>(x, rows, cols, ld, keys);
}

// ---- box arithmetic (engine/boxes.c) ----
__device__ void decode_box(const float *box, const float *delta, const float *wt, float clamp, float *out)
{
    float w = box[2] - box[0], h = box[3] - box[1];
    float cx = box[0] + 0.5f * w, cy = box[1] + 0.5f * h;
    float dx = delta[0] / wt[0], dy = delta[1] / wt[1];
    float dw = delta[2] / wt[2], dh = delta[3] / wt[3];
    if (dw > clamp)
        dw = clamp;
    if (dh > clamp)
        dh = clamp;
    float pcx = dx * w + cx, pcy = dy * h + cy;
    float pw = expf(dw) * w, ph = expf(dh) * h;
    out[0] = pcx - 0.5f * pw, out[1] = pcy - 0.5f * ph;
    out[2] = pcx + 0.5f * pw, out[3] = pcy + 0.5f * ph;
}

__device__ __forceinline__ float clampf(float v, float hi) { return v < 0.0f ? 0.0f : v > hi ? hi : v; }

__device__ void clip_box(float *b, int h, int w)
{
    b[0] = clampf(b[0], (float)w), b[1] = clampf(b[1], (float)h);
    b[2] = clampf(b[2], (float)w), b[3] = clampf(b[3], (float)h);
}

__device__ bool finite4(const float *b) { return isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]); }

struct decode_args {
    cuda_level lv;
    int A, k, group;
    int64_t ld;
    float offset, clamp, min_size, wt[4];
};

__global__ void k_rpn_decode(decode_args a, const float *sorted_keys, const int *sorted_idx, const float *deltas,
                             const int *geom, float *cand_box, float *cand_key, int *cand_grp)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= a.k)
        return;
    int idx = sorted_idx[j];
    int an = idx % a.A;
    int64_t p = idx / a.A;
    float sx = (float)(p % a.lv.W) * (float)a.lv.stride + a.offset * (float)a.lv.stride;
    float sy = (float)(p / a.lv.W) * (float)a.lv.stride + a.offset * (float)a.lv.stride;
    float anchor[4] = {a.lv.cell[an][0] + sx, a.lv.cell[an][1] + sy, a.lv.cell[an][2] + sx, a.lv.cell[an][3] + sy};
    float b[4];
    decode_box(anchor, deltas + p * a.ld + a.A + an * 4, a.wt, a.clamp, b);
    float key = sorted_keys[j];
    bool ok = finite4(b) && isfinite(key);
    if (ok) {
        clip_box(b, geom[1], geom[0]);
        ok = b[2] - b[0] > a.min_size && b[3] - b[1] > a.min_size;
    }
    for (int c = 0; c < 4; c++)
        cand_box[j * 4 + c] = b[c];
    cand_key[j] = ok ? key : -INFINITY;
    cand_grp[j] = a.group;
}

extern "C" void cuda_rpn_decode(cuda_dev *d, const cuda_level *lv, int A, const float *sorted_keys,
                                const int *sorted_idx, int k, const float *deltas, int64_t ld, float offset,
                                const float weights[4], float clamp, float min_size, const int *geom, int group,
                                float *cand_box, float *cand_key, int *cand_grp)
{
    if (k <= 0)
        return;
    decode_args a;
    a.lv = *lv, a.A = A, a.k = k, a.group = group, a.ld = ld;
    a.offset = offset, a.clamp = clamp, a.min_size = min_size;
    for (int i = 0; i < 4; i++)
        a.wt[i] = weights[i];
    k_rpn_decode<<<blocks_for(k), THREADS, 0, stream_of(d)>>>(a, sorted_keys, sorted_idx, deltas, geom, cand_box,
                                                             cand_key, cand_grp);
}

// ---- NMS: count valid, suppression bit mask, one-warp greedy scan ----
__global__ void k_count_valid(const float *sorted_keys, int n, int *counts)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    bool here = isfinite(sorted_keys[i]);
    if (here && (i + 1 == n || !isfinite(sorted_keys[i + 1])))
        counts[2] = i + 1;
    if (i == 0 && !here)
        counts[2] = 0;
}

__device__ __forceinline__ float iou_xyxy(const float *a, float area_a, const float *b)
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

// Block (cb, rb): bit j of word cb of row i (sorted positions) says that
// candidate order[i] suppresses order[j] (j > i, same group, IoU > thresh).
__global__ void k_nms_mask(const float *boxes, const int *groups, const int *order, const int *counts, int nwords,
                           float thresh, unsigned long long *mask)
{
    int n = counts[2];
    int i = blockIdx.y * 64 + threadIdx.x, j0 = blockIdx.x * 64;
    if (i >= n)
        return;
    unsigned long long bits = 0;
    if (j0 + 63 > i && j0 < n) {
        const float *bi = boxes + (int64_t)order[i] * 4;
        float area_i = (bi[2] - bi[0]) * (bi[3] - bi[1]);
        int gi = groups[order[i]];
        for (int t = 0; t < 64 && j0 + t < n; t++) {
            int j = j0 + t;
            if (j <= i || groups[order[j]] != gi)
                continue;
            if (iou_xyxy(bi, area_i, boxes + (int64_t)order[j] * 4) > thresh)
                bits |= 1ull << t;
        }
    }
    mask[(int64_t)i * nwords + blockIdx.x] = bits;
}

// One warp walks the candidates in score order; `removed` lives in shared memory.
__global__ void k_nms_scan(const unsigned long long *mask, const int *order, int nwords, int max_keep, int *keep,
                           int *counts)
{
    extern __shared__ unsigned long long removed[];
    int n = counts[2], lane = threadIdx.x;
    for (int w = lane; w < nwords; w += 32)
        removed[w] = 0;
    __syncwarp();
    int kept = 0;
    for (int i = 0; i < n && kept < max_keep; i++) {
        bool sup = (removed[i >> 6] >> (i & 63)) & 1ull;
        __syncwarp();
        if (sup)
            continue;
        if (lane == 0)
            keep[kept] = order[i];
        kept++;
        const unsigned long long *row = mask + (int64_t)i * nwords;
        for (int w = (i >> 6) + lane; w < nwords; w += 32)
            removed[w] |= row[w];
        __syncwarp();
    }
    if (lane == 0)
        counts[0] = kept;
}

extern "C" void cuda_nms(cuda_dev *d, const float *boxes, const int *groups, const float *sorted_keys,
                         const int *order, int n, float iou_thresh, int max_keep, unsigned long long *mask, int *keep,
                         int *counts)
{
    cudaStream_t s = stream_of(d);
    if (n <= 0) {
        cudaMemsetAsync(counts, 0, sizeof(int), s);
        cudaMemsetAsync(counts + 2, 0, sizeof(int), s);
        return;
    }
    int nwords = (n + 63) / 64;
    k_count_valid<<<blocks_for(n), THREADS, 0, s>>>(sorted_keys, n, counts);
    k_nms_mask<<<dim3((unsigned)nwords, (unsigned)nwords), 64, 0, s>>>(boxes, groups, order, counts, nwords,
                                                                     iou_thresh, mask);
    k_nms_scan<<<1, 32, (size_t)nwords * sizeof(unsigned long long), s>>>(mask, order, nwords, max_keep, keep,
                                                                         counts);
}


__global__ void k_gather_proposals(const float *boxes, const int *keep, int *counts, int Rmax, float *props)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    int R = counts[0] < Rmax ? counts[0] : Rmax;
    if (r == 0)
        counts[1] = R;
    if (r >= Rmax)
        return;
    for (int c = 0; c < 4; c++)
        props[r * 4 + c] = r < R ? boxes[(int64_t)keep[r] * 4 + c] : 0.0f;
}

extern "C" void cuda_gather_proposals(cuda_dev *d, const float *boxes, const int *keep, int *counts, int Rmax,
                                      float *props)
{
    k_gather_proposals<<<blocks_for(Rmax), THREADS, 0, stream_of(d)>>>(boxes, keep, counts, Rmax, props);
}

// ---- ROIAlign (ops/cpu/nms_roialign.c), one block per (box, bin) ----
__device__ int box_level(const cuda_pooler &p, const float *b)
{
    double w = (double)b[2] - b[0], h = (double)b[3] - b[1];
    double lvl = floor(p.canonical_level + log2(sqrt(w * h) / p.canonical_size + 1e-8));
    if (!(lvl >= p.min_level))
        return p.min_level;
    return lvl > p.max_level ? p.max_level : (int)lvl;
}

__device__ int grid_count(float roi_size, int res, int sampling_ratio)
{
    if (sampling_ratio > 0)
        return sampling_ratio;
    float g = ceilf(roi_size / (float)res);
    if (!(g > 0))
        return 0;
    return g > 1024.0f ? 1024 : (int)g;
}

__global__ void k_roi_align(cuda_pooler p, const float *boxes, const int *nrows, int *level, float *out)
{
    int r = blockIdx.x, bin = blockIdx.y, ph = bin / p.res, pw = bin % p.res, C = p.C;
    float *o = out + ((int64_t)r * p.res * p.res + bin) * C;
    if (r >= nrows[1]) {
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            o[c] = 0.0f;
        return;
    }
    const float *box = boxes + r * 4;
    int lv = box_level(p, box), li = lv - p.min_level;
    if (bin == 0 && threadIdx.x == 0)
        level[r] = lv;
    int H = p.H[li], W = p.W[li];
    const float *map = p.map[li];
    float scale = p.scale[li], off = p.aligned ? 0.5f : 0.0f;
    float sx = box[0] * scale - off, sy = box[1] * scale - off;
    float ex = box[2] * scale - off, ey = box[3] * scale - off;
    float rw = ex - sx, rh = ey - sy;
    if (!p.aligned) {
        rw = rw > 1.0f ? rw : 1.0f;
        rh = rh > 1.0f ? rh : 1.0f;
    }
    float bh = rh / (float)p.res, bw = rw / (float)p.res;
    int gh = grid_count(rh, p.res, p.sampling_ratio), gw = grid_count(rw, p.res, p.sampling_ratio);
    int cnt = gh * gw;
    float count = (float)(cnt > 1 ? cnt : 1);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = 0.0f;
        for (int iy = 0; iy < gh && H > 0 && W > 0; iy++) {
            float y = sy + (float)ph * bh + (float)(iy + 0.5f) * bh / (float)gh;
            for (int ix = 0; ix < gw; ix++) {
                float x = sx + (float)pw * bw + (float)(ix + 0.5f) * bw / (float)gw;
                float yy = y, xx = x;
                if (!(yy >= -1.0f && yy <= (float)H && xx >= -1.0f && xx <= (float)W))
                    continue;
                if (yy <= 0)
                    yy = 0;
                if (xx <= 0)
                    xx = 0;
                int ylo = (int)yy, xlo = (int)xx, yhi, xhi;
                if (ylo >= H - 1) {
                    yhi = ylo = H - 1;
                    yy = (float)ylo;
                } else {
                    yhi = ylo + 1;
                }
                if (xlo >= W - 1) {
                    xhi = xlo = W - 1;
                    xx = (float)xlo;
                } else {
                    xhi = xlo + 1;
                }
                float ly = yy - (float)ylo, lx = xx - (float)xlo, hy = 1.0f - ly, hx = 1.0f - lx;
                float f1 = map[((int64_t)ylo * W + xlo) * C + c], f2 = map[((int64_t)ylo * W + xhi) * C + c];
                float f3 = map[((int64_t)yhi * W + xlo) * C + c], f4 = map[((int64_t)yhi * W + xhi) * C + c];
                acc += hy * hx * f1 + hy * lx * f2 + ly * hx * f3 + ly * lx * f4;
            }
        }
        o[c] = acc / count;
    }
}

extern "C" void cuda_roi_align(cuda_dev *d, const cuda_pooler *p, const float *boxes, const int *nrows, int Rmax,
                               int *level, float *out)
{
    if (Rmax <= 0)
        return;
    dim3 grid((unsigned)Rmax, (unsigned)(p->res * p->res));
    k_roi_align<<<grid, p->C < 128 ? 32 * ((p->C + 31) / 32) : 128, 0, stream_of(d)>>>(*p, boxes, nrows, level, out);
}

// ---- cascade stage tail, final candidates, output ----
struct tail_args {
    int ld, K1, use_sigmoid, first, Rmax;
    float clamp, wt[4];
};

__global__ void k_stage_tail(tail_args a, const float *pred, const float *in_boxes, const int *geom,
                             const int *nrows, float *scores, float *out_boxes, float *next_in)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= a.Rmax)
        return;
    const float *x = pred + (int64_t)r * a.ld;
    float *s = scores + (int64_t)r * a.K1;
    if (r >= nrows[1]) {
        for (int k = 0; k < a.K1; k++)
            s[k] = 0.0f;
        for (int c = 0; c < 4; c++) {
            out_boxes[r * 4 + c] = 0.0f;
            if (next_in)
                next_in[r * 4 + c] = 0.0f;
        }
        return;
    }
    float mx = -INFINITY;
    double sum = 0;
    if (!a.use_sigmoid) {
        for (int k = 0; k < a.K1; k++)
            mx = fmaxf(mx, x[k]);
        for (int k = 0; k < a.K1; k++)
            sum += expf(x[k] - mx);
    }
    for (int k = 0; k < a.K1; k++) {
        float p = a.use_sigmoid ? 1.0f / (1.0f + expf(-x[k])) : expf(x[k] - mx) * (float)(1.0 / sum);
        s[k] = a.first ? p : s[k] + p;
    }
    float b[4];
    decode_box(in_boxes + r * 4, x + a.K1, a.wt, a.clamp, b);
    for (int c = 0; c < 4; c++)
        out_boxes[r * 4 + c] = b[c];
    if (next_in) {
        clip_box(b, geom[1], geom[0]);
        for (int c = 0; c < 4; c++)
            next_in[r * 4 + c] = b[c];
    }
}

extern "C" void cuda_stage_tail(cuda_dev *d, const float *pred, int ld, int K1, int use_sigmoid, int first,
                                const float *in_boxes, const float weights[4], float clamp, const int *geom,
                                const int *nrows, int Rmax, float *scores, float *out_boxes, float *next_in)
{
    tail_args a = {ld, K1, use_sigmoid, first, Rmax, clamp, {weights[0], weights[1], weights[2], weights[3]}};
    k_stage_tail<<<blocks_for(Rmax), THREADS, 0, stream_of(d)>>>(a, pred, in_boxes, geom, nrows, scores, out_boxes,
                                                                next_in);
}

__global__ void k_scale(float *x, int64_t n, float s)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= s;
}

extern "C" void cuda_scale(cuda_dev *d, float *x, int64_t n, float s)
{
    if (n > 0)
        k_scale<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, n, s);
}

__global__ void k_det_candidates(const float *scores, const float *boxes, const int *nrows, int Rmax, int K,
                                 float thresh, const int *geom, float *cand_box, float *cand_key, int *cand_grp)
{
    int64_t slot = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (slot >= (int64_t)Rmax * K)
        return;
    int r = (int)(slot / K), k = (int)(slot % K), K1 = K + 1;
    const float *s = scores + (int64_t)r * K1;
    float b[4] = {boxes[r * 4], boxes[r * 4 + 1], boxes[r * 4 + 2], boxes[r * 4 + 3]};
    bool ok = r < nrows[1] && finite4(b);
    for (int j = 0; ok && j < K1; j++)
        ok = isfinite(s[j]);
    ok = ok && s[k] > thresh;
    if (ok)
        clip_box(b, geom[1], geom[0]);
    for (int c = 0; c < 4; c++)
        cand_box[slot * 4 + c] = b[c];
    cand_key[slot] = ok ? s[k] : -INFINITY;
    cand_grp[slot] = k;
}

extern "C" void cuda_detection_candidates(cuda_dev *d, const float *scores, const float *boxes, const int *nrows,
                                          int Rmax, int K, float thresh, const int *geom, float *cand_box,
                                          float *cand_key, int *cand_grp)
{
    int64_t n = (int64_t)Rmax * K;
    if (n > 0)
        k_det_candidates<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(scores, boxes, nrows, Rmax, K, thresh, geom,
                                                                     cand_box, cand_key, cand_grp);
}

__global__ void k_write_detections(const float *cand_box, const float *cand_key, const int *cand_grp,
                                   const int *keep, const int *counts, int max_dets, cuda_dets *res)
{
    int n = counts[0] < max_dets ? counts[0] : max_dets;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i == 0)
        res->count = n;
    if (i >= n)
        return;
    int c = keep[i];
    for (int j = 0; j < 4; j++)
        res->det[i][j] = cand_box[(int64_t)c * 4 + j];
    res->det[i][4] = cand_key[c];
    res->det[i][5] = (float)cand_grp[c];
}

extern "C" void cuda_write_detections(cuda_dev *d, const float *cand_box, const float *cand_key, const int *cand_grp,
                                      const int *keep, const int *counts, int max_dets, void *result)
{
    k_write_detections<<<blocks_for(max_dets > 0 ? max_dets : 1), THREADS, 0, stream_of(d)>>>(
        cand_box, cand_key, cand_grp, keep, counts, max_dets, (cuda_dets *)result);
}
