/* The model on the GPU: its weights in device memory and its execution
 * contexts (stream, activation arena, captured graphs). Internal to engine/cuda. */
#ifndef HADM_ENGINE_CUDA_MODEL_H
#define HADM_ENGINE_CUDA_MODEL_H

#include <pthread.h>

#include "engine/cuda_hooks.h"
#include "engine/device_plan.h"
#include "ops/cuda/cuda_ops.h"

typedef struct { const bf16_t *w; const float *b; } dlin;             /* W[N][K] bf16, bias f32 or NULL */
typedef struct { const bf16_t *w; const float *g, *b; } dconv_ln;     /* conv [Cout][kh][kw][Cin] + LN2d */

typedef struct {
    const float *norm1_g, *norm1_b, *norm2_g, *norm2_b, *ffn_g, *ffn_b;
    dlin q, k, v, proj, w1, w2, w3;
} dblock;

typedef struct {
    dlin patch;
    const float *pos, *rope_win_cos, *rope_win_sin, *rope_glb_cos, *rope_glb_sin;
    dblock blocks[CFG_MAX_BLOCKS];
    dlin p2_up0, p2_up1, p3_up0;          /* conv-transposes as W[Cout*4][Cin] */
    const float *p2_ln_g, *p2_ln_b;
    dconv_ln p2_lat, p2_out, p3_lat, p3_out, p4_lat, p4_out, p5_lat, p5_out;
    dlin rpn_conv[CFG_MAX_CONVS];
    dlin rpn_head;                        /* objectness | deltas | zero rows: [NR][C] */
    struct {
        dconv_ln conv[CFG_MAX_CONVS];
        dlin fc[CFG_MAX_CONVS];
        dlin pred;                        /* cls | bbox | zero rows: [NP][fc] */
    } stage[CFG_MAX_STAGES];
} dweights;

typedef struct cuda_exec {
    cuda_dev *dev;
    unsigned char *arena;                 /* device, layout below */
    cuda_arena lay;
    float *pin_in;                        /* pinned staging: inputs, geometry, results */
    int *pin_geom;
    unsigned char *pin_res;
    cuda_graph *graph[CUDA_MAX_BATCH + 1];
    cuda_timer *timer;
    struct cuda_exec *next;
} cuda_exec;

typedef struct cuda_model {
    int device;
    unsigned char *wblock;                /* every weight, one allocation */
    size_t wsize, wused;
    dweights w;
    cuda_plan plan;
    int use_graphs;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    cuda_exec *idle;
    cuda_exec *all[CUDA_CONTEXTS];
    int n_exec;
} cuda_model;

/* The device pointer of arena buffer b in context x. */
static inline void *arena_ptr(const cuda_exec *x, arena_buf b) { return x->arena + x->lay.off[b]; }
#define AF(x, b) ((float *)arena_ptr(x, b))
#define AH(x, b) ((bf16_t *)arena_ptr(x, b))
#define AI(x, b) ((int *)arena_ptr(x, b))

/* weights_cuda.c */
hadm_status cuda_upload_weights(cuda_model *cm, const struct hadm_model *m, hadm_error *err);

/* backbone_cuda.c: queues patch embed .. last block for B images (AR_INPUT -> AR_X) */
hadm_status cuda_backbone(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int B, hadm_error *err);
/* heads_cuda.c: queues pyramid, RPN, cascade and detections of image b of the batch */
hadm_status cuda_heads(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int b, hadm_error *err);

#endif
