/* The CUDA backend's ops (built with -DHADM_CUDA=ON only).
 *
 * Same conventions as ops/ops.h: row-major, NHWC feature maps, PyTorch weight
 * layouts turned into "W[N][K]" GEMM operands at upload. GEMM operands are
 * bf16 (tensor cores, f32 accumulation); everything else is f32. Every call
 * is asynchronous on the context's stream and never synchronises, so a whole
 * forward can be captured into a CUDA graph; sizes that depend on the data
 * (number of proposals, of candidates) live in device counters, never on the
 * host. bf16 values are passed as uint16_t bit patterns so that host C code
 * needs no CUDA C++ headers. Ops know nothing of HADM. */
#ifndef HADM_OPS_CUDA_OPS_H
#define HADM_OPS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t;
typedef struct cuda_dev cuda_dev;   /* one stream + cuBLASLt handle + workspace */

/* Detections of one image as cuda_write_detections leaves them. */
typedef struct {
    int count;
    int pad_[3];
    float det[][6];   /* x1, y1, x2, y2, score, class */
} cuda_dets;

/* ---- device, memory ---------------------------------------------------- */
hadm_status cuda_device_count(int *n, hadm_error *err);
hadm_status cuda_device_memory(int device, size_t *free_b, size_t *total_b, char *name, size_t name_len,
                               hadm_error *err);
hadm_status cuda_dev_new(int device, size_t workspace, cuda_dev **out, hadm_error *err);
void cuda_dev_free(cuda_dev *d);
void *cuda_dev_stream(cuda_dev *d);     /* cudaStream_t */
int cuda_dev_index(const cuda_dev *d);
hadm_status cuda_dev_sync(cuda_dev *d, hadm_error *err);
/* Makes the context's device current on the calling thread: kernel launches
 * and cuBLASLt go to the current device, and workers are arbitrary threads. */
hadm_status cuda_dev_activate(cuda_dev *d, hadm_error *err);
/* Catches launch errors of the kernels queued so far (no synchronisation). */
hadm_status cuda_dev_check(cuda_dev *d, const char *what, hadm_error *err);

hadm_status cuda_malloc(int device, size_t bytes, void **p, hadm_error *err);
void cuda_free(void *p);
hadm_status cuda_host_alloc(size_t bytes, void **p, hadm_error *err);   /* pinned */
void cuda_host_free(void *p);
hadm_status cuda_copy_to_device(cuda_dev *d, void *dst, const void *src, size_t bytes, hadm_error *err);
hadm_status cuda_copy_to_host(cuda_dev *d, void *dst, const void *src, size_t bytes, hadm_error *err);
hadm_status cuda_memset(cuda_dev *d, void *dst, int v, size_t bytes, hadm_error *err);
/* Blocking upload on the legacy stream (weights at load). */
hadm_status cuda_upload(void *dst, const void *src, size_t bytes, hadm_error *err);

/* ---- graphs ------------------------------------------------------------ */
typedef struct cuda_graph cuda_graph;
hadm_status cuda_capture_begin(cuda_dev *d, hadm_error *err);
hadm_status cuda_capture_end(cuda_dev *d, cuda_graph **out, hadm_error *err);
hadm_status cuda_graph_launch(cuda_dev *d, cuda_graph *g, hadm_error *err);
void cuda_graph_free(cuda_graph *g);

/* ---- timing ------------------------------------------------------------ */
typedef struct cuda_timer cuda_timer;
hadm_status cuda_timer_new(cuda_timer **out, hadm_error *err);
void cuda_timer_start(cuda_dev *d, cuda_timer *t);
/* Records the end and waits for it; returns milliseconds since start. */
double cuda_timer_stop_ms(cuda_dev *d, cuda_timer *t);
void cuda_timer_free(cuda_timer *t);

/* ---- dense ------------------------------------------------------------- */
/* C[M,N] (f32) = A[M,K] (bf16) · W[N,K]ᵀ (bf16) (+ bias[N]) (+ beta·C), then
 * ReLU if relu. cuBLASLt with f32 accumulation; a plain CUDA kernel when
 * cuBLASLt has no algorithm for the shape (odd leading dimensions). */
typedef struct {
    int M, N, K;
    const bf16_t *A; int64_t lda;
    const bf16_t *W; int64_t ldw;
    const float *bias;
    float *C; int64_t ldc;
    float beta;
    int relu;
} cuda_gemm;
hadm_status cuda_matmul(cuda_dev *d, const cuda_gemm *g, hadm_error *err);
/* The same with the fallback kernel only (cross-checks cuBLASLt). */
hadm_status cuda_matmul_simple(cuda_dev *d, const cuda_gemm *g, hadm_error *err);
/* FLOPs queued by cuda_matmul on this context since the last reset. */
double cuda_dev_flops(const cuda_dev *d);
void cuda_dev_reset_flops(cuda_dev *d);

/* ---- elementwise and row ops (kernels.cu) ------------------------------ */
void cuda_f32_to_bf16(cuda_dev *d, const float *x, bf16_t *y, int64_t n);
void cuda_bf16_to_f32(cuda_dev *d, const bf16_t *x, float *y, int64_t n);
enum { CUDA_ACT_NONE = 0, CUDA_ACT_GELU = 1, CUDA_ACT_RELU = 2 };
/* LayerNorm of each row (statistics in double as the CPU does), then the
 * activation; writes y (f32) and/or ybf (bf16), either may be NULL; y may be x. */
void cuda_layernorm(cuda_dev *d, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                    const float *b, float eps, int act, float *y, int64_t ldy, bf16_t *ybf, int64_t ldyb);
void cuda_rope(cuda_dev *d, int64_t rows, int heads, int hd, float *x, int64_t ld, const float *cos,
               const float *sin, int64_t period);
void cuda_silu_mul(cuda_dev *d, int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb);
/* y[r * n + i] += x[i] for r < reps */
void cuda_add_broadcast(cuda_dev *d, float *y, const float *x, int64_t n, int reps);
void cuda_softmax_rows(cuda_dev *d, int64_t rows, int n, float *x, int64_t ld);
/* normed tokens [B][G*G][D] -> window order [B][nw*nw][WS*WS][D] as bf16, zero padding */
void cuda_window_partition(cuda_dev *d, const float *x, bf16_t *win, int B, int G, int D, int WS, int nw);
/* x[B][G*G][D] += window-ordered rows, padding dropped */
void cuda_window_unpartition_add(cuda_dev *d, const float *win, float *x, int B, int G, int D, int WS,
                                 int nw);
/* CHW [B][Cin][S][S] -> rows [(b, ty, tx)][(c, ky, kx)] of P x P patches */
void cuda_patch_im2col(cuda_dev *d, const float *chw, int B, int Cin, int S, int P, bf16_t *cols);
/* NHWC [N][H][W][Cin], 3x3, stride 1, pad 1 -> [N*H*W][(ky, kx, c)] */
void cuda_im2col3x3(cuda_dev *d, const float *x, int N, int H, int W, int Cin, bf16_t *cols);
/* tmp [H*W][Cout*4] (column o*4 + dy*2 + dx) + bias -> y [2H][2W][Cout] */
void cuda_conv_transpose_scatter(cuda_dev *d, const float *tmp, int H, int W, int Cout, const float *bias,
                                 float *y);
void cuda_maxpool2(cuda_dev *d, const float *x, int H, int W, int C, float *y);
void cuda_subsample2(cuda_dev *d, const float *x, int W, int C, float *y, int Ho, int Wo);
/* [n][P][C] f32 -> [n][C][P] bf16 (PyTorch's c-major flatten of NCHW) */
void cuda_flatten_cmajor(cuda_dev *d, const float *x, int n, int P, int C, bf16_t *y);

/* ---- attention (attention.cu) ------------------------------------------ */
/* `units` independent problems of N tokens; unit u's q/k/v rows start at
 * row u*N (row stride ld, head h in columns [h*hd, (h+1)*hd)); RoPE already
 * applied. out: bf16 rows, same layout, row stride ldo. Fused flash attention
 * on tensor cores for hd == 64; a plain kernel otherwise. */
hadm_status cuda_attention(cuda_dev *d, int units, int N, int heads, int hd, float scale, const float *q,
                           const float *k, const float *v, int64_t ld, bf16_t *out, int64_t ldo,
                           hadm_error *err);
/* The plain kernel for any hd <= 128 (cross-checks the fused one). */
hadm_status cuda_attention_simple(cuda_dev *d, int units, int N, int heads, int hd, float scale,
                                  const float *q, const float *k, const float *v, int64_t ld, bf16_t *out,
                                  int64_t ldo, hadm_error *err);

/* ---- boxes (boxes.cu) -------------------------------------------------- */
/* Stable descending sort of n (key, value) pairs: equal keys keep their
 * order, so ties rank the lower index first (spec P22). */
size_t cuda_sort_temp_bytes(int64_t n);
hadm_status cuda_sort_desc(cuda_dev *d, void *temp, size_t temp_bytes, const float *keys_in, float *keys_out,
                           const int *vals_in, int *vals_out, int n, hadm_error *err);
void cuda_iota(cuda_dev *d, int *v, int n);
/* keys[i] = x[(i / cols) * ld + i % cols] for i < rows*cols */
void cuda_gather_cols(cuda_dev *d, const float *x, int64_t rows, int cols, int64_t ld, float *keys);
/* Torchvision NMS per group over candidates whose key is finite:
 * keys/boxes/groups [n] by candidate; sorted_keys/order [n] from cuda_sort_desc;
 * writes keep [<= max_keep] (candidate ids, score order), counts[0] = kept,
 * counts[2] = valid candidates. Stops at max_keep kept (top-k after NMS). */
void cuda_nms(cuda_dev *d, const float *boxes, const int *groups, const float *sorted_keys, const int *order,
              int n, float iou_thresh, int max_keep, unsigned long long *mask, int *keep, int *counts);

/* A pyramid level for the RPN decode and ROIAlign. */
typedef struct {
    int H, W, stride;
    float cell[8][4];     /* cell anchors per aspect ratio */
} cuda_level;
/* Top-k of one level (sorted_idx[0..k) of anchors (y, x, a)), decoded with
 * Box2BoxTransform, clipped to geom (new_w, new_h); invalid ones (non-finite,
 * not larger than min_size) get key -inf. Writes candidate slots [0, k). */
void cuda_rpn_decode(cuda_dev *d, const cuda_level *lv, int A, const float *sorted_keys, const int *sorted_idx,
                     int k, const float *deltas, int64_t ld, float offset, const float weights[4],
                     float clamp, float min_size, const int *geom, int group, float *cand_box,
                     float *cand_key, int *cand_grp);
/* proposals[r] = boxes[keep[r]] for r < min(counts[0], Rmax), zero after;
 * counts[1] = that number. */
void cuda_gather_proposals(cuda_dev *d, const float *boxes, const int *keep, int *counts, int Rmax,
                           float *props);

typedef struct {
    const float *map[4];
    int H[4], W[4];
    float scale[4];
    int C, res, sampling_ratio, aligned;
    int min_level, max_level, canonical_level, canonical_size;
} cuda_pooler;
/* The level of each box (canonical rule, in double) and ROIAlign of it:
 * out [Rmax][res][res][C]; rows >= R = counts[1] are zero. The `counts`
 * arguments below are the counters of cuda_nms / cuda_gather_proposals. */
void cuda_roi_align(cuda_dev *d, const cuda_pooler *p, const float *boxes, const int *nrows, int Rmax,
                    int *level, float *out);
/* Cascade stage tail: probabilities of pred [Rmax][ld] columns 0..K1-1
 * (softmax or sigmoid) added to scores (or stored when first); the deltas in
 * columns K1..K1+3 decoded from in_boxes into out_boxes, and clipped into
 * next_in (may be NULL). */
void cuda_stage_tail(cuda_dev *d, const float *pred, int ld, int K1, int use_sigmoid, int first,
                     const float *in_boxes, const float weights[4], float clamp, const int *geom,
                     const int *nrows, int Rmax, float *scores, float *out_boxes, float *next_in);
void cuda_scale(cuda_dev *d, float *x, int64_t n, float s);
/* (row, class) candidates of the final scores: slot r*K + k keeps the clipped
 * box of row r when scores[r][k] > thresh and the row is finite, else key -inf. */
void cuda_detection_candidates(cuda_dev *d, const float *scores, const float *boxes, const int *nrows,
                               int Rmax, int K, float thresh, const int *geom, float *cand_box,
                               float *cand_key, int *cand_grp);
/* The first min(counts[0], max_dets) kept candidates as
 * {int count; pad; float det[][6]} at result. */
void cuda_write_detections(cuda_dev *d, const float *cand_box, const float *cand_key, const int *cand_grp,
                           const int *keep, const int *counts, int max_dets, void *result);

#ifdef __cplusplus
}
#endif
#endif
