/* Where a model runs, and whether it fits there: the host-side planning of
 * the CUDA backend. Compiled in every build (no CUDA headers) so that the
 * device-string parsing, the activation-arena layout and the memory check
 * are unit-tested on machines without a GPU; engine/cuda carves its device
 * arena with exactly this layout. */
#ifndef HADM_ENGINE_DEVICE_PLAN_H
#define HADM_ENGINE_DEVICE_PLAN_H

#include <stddef.h>

#include "engine/config.h"

/* Images per backbone pass on the GPU; the arena is laid out for this many. */
#define CUDA_MAX_BATCH 8
/* Execution contexts (stream + arena) per model on the GPU. Two let one
 * request's CPU preprocessing overlap another's GPU work. */
#define CUDA_CONTEXTS 2
/* cuBLASLt workspace per context. */
#define CUDA_GEMM_WORKSPACE ((size_t)32 << 20)
/* When --gpu-memory-fraction is not given: leave room for the CUDA context,
 * the driver and other processes' allocations. */
#define CUDA_DEFAULT_MEMORY_FRACTION 0.95f

/* "cpu", "cuda", "cuda:N" (N in 0..63). */
hadm_status device_parse(const char *s, hadm_device_kind *kind, int *index, hadm_error *err);
/* A fraction in (0, 1]. */
hadm_status device_parse_fraction(const char *s, float *out, hadm_error *err);

/* The activation buffers of one CUDA execution context. Backbone buffers hold
 * a whole batch; the pyramid/RPN/cascade buffers hold one image (the heads run
 * image after image on the same stream); GEOM and RESULT hold one entry per image. */
typedef enum {
    AR_INPUT,      /* f32  [B][3][S][S] preprocessed images */
    AR_X,          /* f32  [B*T][D] residual stream */
    AR_NORM,       /* f32  [rows][D] normed tokens (window order for window blocks) */
    AR_Q, AR_K, AR_V,   /* f32 [rows][D] */
    AR_ABF,        /* bf16 GEMM A operand of the backbone (patches, normed tokens, MLP hidden) */
    AR_HA, AR_HB,  /* f32  [B*T][F] MLP hidden */
    AR_MAP0, AR_MAP1, AR_MAP2, AR_MAP3, AR_MAP4,   /* f32 p2..p6, NHWC */
    AR_UP,         /* f32  conv-transpose GEMM output before the pixel scatter */
    AR_FMAP,       /* f32  intermediate pyramid map */
    AR_FBF,        /* bf16 GEMM A operand of the pyramid / RPN 1x1 */
    AR_MID,        /* f32  lateral conv output */
    AR_COLS,       /* bf16 im2col of the largest 3x3 conv */
    AR_RPN_A, AR_RPN_B, /* f32 RPN conv outputs */
    AR_RPN_OUT,    /* f32  [sum_l H*W][NR] objectness logits | anchor deltas, all levels */
    AR_SORT_KEY_IN, AR_SORT_KEY_OUT, AR_SORT_VAL_IN, AR_SORT_VAL_OUT,
    AR_SORT_TEMP,  /* device radix-sort scratch */
    AR_CAND_BOX,   /* f32 [NQ][4] candidates (RPN per-level top-k, or (row, class) pairs) */
    AR_CAND_KEY,   /* f32 [NQ] score, -inf where not a candidate */
    AR_CAND_GRP,   /* i32 [NQ] NMS group (pyramid level, or class) */
    AR_NMS_MASK,   /* u64 [NQ][ceil(NQ/64)] suppression bits */
    AR_KEEP,       /* i32 [NQ] kept candidates in score order */
    AR_COUNTS,     /* i32 small counters (valid candidates, kept, proposals) */
    AR_BOXES_IN,   /* f32 [Rmax][4] proposals / a stage's input boxes */
    AR_LEVEL,      /* i32 [Rmax] */
    AR_POOL, AR_CONV, /* f32 [Rmax][res*res][Cb] */
    AR_FLAT,       /* bf16 [Rmax][res*res*Cb] */
    AR_FC_A, AR_FC_B, /* f32 [Rmax][fc] */
    AR_FC_BF,      /* bf16 [Rmax][fc] */
    AR_PRED,       /* f32 [Rmax][NP] class logits | box deltas */
    AR_SCORES,     /* f32 [Rmax][K+1] running sum of the stages' probabilities */
    AR_BOXES_OUT,  /* f32 [Rmax][4] last stage decode */
    AR_GEOM,       /* i32 [B][4] new_w, new_h, orig_w, orig_h */
    AR_RESULT,     /* per image: int count, 3 ints padding, float det[max_dets][6] */
    AR_COUNT
} arena_buf;

/* Model dimensions the layout and the device forward share. */
typedef struct {
    int B, S, P, G, T, D, F, WS, nw, rows, Kp;
    int C, Cr, Cb, A, NR, levels, side[CFG_MAX_LEVELS];
    int64_t anchors[CFG_MAX_LEVELS], max_level_anchors, n_anchor_pos;
    int pre_k[CFG_MAX_LEVELS], NC;   /* per-level top-k, their sum */
    int Rmax, K, K1, NP, res, fc, NQ, max_dets;
} cuda_dims;

typedef struct {
    cuda_dims d;
    size_t off[AR_COUNT], size[AR_COUNT];
    size_t result_stride;   /* bytes per image in AR_RESULT */
    size_t total;           /* bytes, every buffer 256-byte aligned */
} cuda_arena;

void cuda_dims_of(const hadm_config *cfg, int batch, cuda_dims *d);
/* sort_temp: bytes the device radix sort asked for (0 = use the estimate). */
void cuda_arena_layout(const hadm_config *cfg, int batch, size_t sort_temp, cuda_arena *a);
/* A safe upper bound of the radix-sort scratch for n key/value pairs. */
size_t cuda_sort_temp_estimate(int64_t n);
/* Device bytes of the uploaded weights: GEMM operands in bf16, vectors and
 * tables in f32, each tensor 256-byte aligned, plus the fused head weights. */
size_t cuda_weight_bytes(const hadm_config *cfg);

typedef struct {
    size_t weights, arena, workspace, total;
    int contexts, batch;
} cuda_plan;

void cuda_plan_model(const hadm_config *cfg, int batch, int contexts, cuda_plan *p);
/* Fails with a message naming `what` when the plan does not fit into
 * fraction * total_mem after `reserved` bytes taken by other models of this
 * process, or into the memory the device reports free. */
hadm_status cuda_plan_fit(const cuda_plan *p, size_t reserved, size_t total_mem, size_t free_mem,
                          float fraction, const char *what, hadm_error *err);

/* Dense FLOPs of one image's forward on the device (GEMMs, convs, attention),
 * with R proposals in the cascade: the numerator of the FLOP-floor ratio. */
double cuda_forward_flops(const hadm_config *cfg, int R);

#endif
