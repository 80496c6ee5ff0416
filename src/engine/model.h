/* The loaded model: config, weights (pointers into the mapped file, plus the
 * few tables computed at load), and a pool of execution contexts. */
#ifndef HADM_ENGINE_MODEL_H
#define HADM_ENGINE_MODEL_H

#include <pthread.h>

#include "engine/config.h"
#include "io/safetensors.h"
#include "ops/ops.h"

/* A bf16 model on a CPU that computes it in f32 widens each weight to f32
 * for its matmul: the box heads' first fc (12.8M weights, 51 MB widened)
 * is packed in this many blocks of output columns, widened one at a time
 * (two are held: the widening cache has two slots). */
#define FC_BLOCKS 8

/* Linear/conv + bias (b may be NULL); conv without bias + LN2d(g, b). wt is
 * w's element type: convolution weights of a bf16/f16 file are read in
 * place (ops_conv.w_type, ops_gemm.b_type), everything else is f32. */
typedef struct { const float *w, *b; ops_src_type wt; } linear_w;
typedef struct { const float *w, *g, *b; ops_src_type wt; } conv_ln_w;

typedef struct {
    const float *norm1_g, *norm1_b;
    const float *q_w, *k_w, *v_w, *q_bias, *v_bias;
    linear_w proj;
    const float *norm2_g, *norm2_b;
    linear_w w1, w2;
    const float *ffn_ln_g, *ffn_ln_b;
    linear_w w3;
    /* The Linear weights reordered for the matmul kernel, in the model's
     * precision, on the block's first use; q|k|v and w1|w2 are stacked so
     * each pair/triple is one matmul (with their biases stacked, k's zero).
     * In reduced precision the plain pointers above are NULL: these are the
     * only copy. Guarded by pack_lock. */
    ops_packed *qkv_pk, *proj_pk, *w12_pk, *w3_pk;
    float *qkv_b, *w12_b;
    int packed;
} vit_block_w;

typedef struct {
    /* ViT */
    linear_w patch;                   /* [D][3][P][P] */
    const float *pos_src;             /* [g*g][D], the stored grid (model_pos_embed) */
    float *rope_win_cos, *rope_win_sin; /* [WS*WS][HD] (owned) */
    float *rope_glb_cos, *rope_glb_sin; /* [G*G][HD]   (owned) */
    vit_block_w blocks[CFG_MAX_BLOCKS];
    /* pyramid, branch by branch (spec MODEL.md section 3) */
    linear_w p2_up0;                  /* ConvT D -> D/2 */
    const float *p2_ln_g, *p2_ln_b;   /* LN2d(D/2) */
    linear_w p2_up1;                  /* ConvT D/2 -> D/4 */
    conv_ln_w p2_lat, p2_out;         /* 1x1, 3x3 */
    linear_w p3_up0;
    conv_ln_w p3_lat, p3_out;
    conv_ln_w p4_lat, p4_out;
    conv_ln_w p5_lat, p5_out;
    /* RPN */
    linear_w rpn_conv[CFG_MAX_CONVS];
    linear_w rpn_obj, rpn_delta;
    /* cascade */
    struct {
        conv_ln_w conv[CFG_MAX_CONVS];
        linear_w fc[CFG_MAX_CONVS];
        /* fc weights packed in the model's precision on first use, like the
         * ViT's (in a reduced-precision file fc[j].w is NULL), in fc_blocks[j]
         * blocks of output columns (see FC_BLOCKS) */
        ops_packed *fc_pk[CFG_MAX_CONVS][FC_BLOCKS];
        int fc_blocks[CFG_MAX_CONVS];
        linear_w cls, bbox;
    } stage[CFG_MAX_STAGES];
} hadm_weights;

typedef struct ctx_slot {
    ops_ctx *ops;
    struct ctx_slot *next;
} ctx_slot;

struct hadm_model {
    hadm_config cfg;
    st_file *file;
    void *owned_buf;          /* file image when built in memory (demo models) */
    hadm_weights w;
    int threads;
    hadm_precision precision;   /* resolved at open */
    int64_t params;
    void **owned;               /* f32 copies of reduced-precision tensors */
    int n_owned, cap_owned;
    pthread_mutex_t pool_lock;
    ctx_slot *free_ctx;
    pthread_mutex_t pack_lock;
    int heads_packed;           /* model_pack_heads done (guarded by pack_lock) */
    struct cuda_model *cuda;    /* the model on the GPU (engine/cuda), NULL on the CPU */
};

/* Looks up a tensor, checks dtype F32 and the exact shape (ndim values follow). */
/* A weight tensor as an ops source part (F32, BF16, F16, or I8 with its
 * `<name>_scale` per-row scales), checked for the given shape. */
hadm_status model_weight_part(const struct hadm_model *m, const char *name, int ndim,
                              const int64_t *shape, ops_wpart *out, hadm_error *err);

hadm_status model_tensor(const struct hadm_model *m, const char *name, const float **out,
                         hadm_error *err, int ndim, ...);

/* Reorders block i's ViT weights for the matmul kernel the first time the
 * block runs (thread-safe; later calls return at once). Done lazily so that
 * opening a model is only mapping and validating: a server is ready in
 * milliseconds and the first forward pays the ~1 s of packing. */
hadm_status model_pack_block(const struct hadm_model *m, int i, ops_ctx *c, hadm_error *err);
/* ROIs go through the box heads this many at a time. */
#define ROI_CHUNK 256
/* The same for the box heads' fully connected layers (12.8M weights per
 * stage: the largest outside the ViT). */
hadm_status model_pack_heads(const struct hadm_model *m, ops_ctx *c, hadm_error *err);

/* Drops the mapped pages of the convolution weights, after each stage
 * that uses them: a context that ran the stage holds them packed (or, for a
 * bf16 model, packs them again next forward), so the file's copy only costs
 * memory until then; pages needed again fault back in from the page cache. */
void model_release_conv_sources(const struct hadm_model *m);
/* Between pipeline stages: the context's scratch (ops_scratch_release) and
 * the pages of the weights the stage read in place go back. */
void model_stage_end(const struct hadm_model *m, ops_ctx *c);

/* Frees every packed weight (model_pack.c; at close). */
void model_unpack_all(struct hadm_model *m);
/* A buffer the model owns until it is closed (NULL when out of memory). */
float *model_own(struct hadm_model *m, size_t bytes);
/* The absolute position embedding resized to the model's grid: [G*G][D]. */
void model_pos_embed(const struct hadm_model *m, float *out);

/* Borrow / return an execution context (thread-safe). */
hadm_status model_ctx_acquire(struct hadm_model *m, ops_ctx **out, hadm_error *err);
void model_ctx_release(struct hadm_model *m, ops_ctx *c);

#endif
