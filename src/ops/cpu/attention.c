/* Multi-head attention, streamed over query tiles.
 *
 * V is first copied head-major ([head][token][hd]), K transposed per head
 * ([head][hd][token]) and each query tile head-major, pre-multiplied by the
 * softmax scale: on those dense layouts oneDNN runs its brgemm kernels, while
 * the interleaved-head strides, or an output-scale attribute, send it to a
 * generic kernel at half that speed. Scores are then computed for a group of
 * heads and a tile of queries at a time (at most SCORE_BUDGET floats: 32 MiB),
 * exponentiated (max-subtracted) and multiplied by V; the softmax's division
 * by the row sum is applied to the 64-wide output rows, which saves a pass
 * over the 4096-wide probabilities. A 4096-token block never holds the
 * 1 GiB of all scores at once.
 *
 * With a BF16 context the copies write bf16 (the conversion is free there),
 * the softmax writes bf16 probabilities, and both products run on bf16
 * inputs with f32 accumulation; scores and the softmax itself stay f32.
 * With an S8 context Q·Kᵀ runs in u8 x s8 (attention_int8). */
#include <math.h>
#include <string.h>

#include "ops/cpu/cpu.h"
#include "util/err.h"

/* floats of scores per matmul: one head's 512 x 4096 in a global block
 * (8 MB; the scores never fit the caches anyway, so larger groups of
 * heads only cost memory) */
#define SCORE_BUDGET (2u << 20)
#define QUERY_TILE 512

/* Element e of an output that is f32 or bf16. */
static inline void put(void *out, int bf16, int64_t e, float v)
{
    if (bf16)
        ((uint16_t *)out)[e] = ops_f32_to_bf16(v);
    else
        ((float *)out)[e] = v;
}

/* out[h][t][d] = scale * x[t0 + t][(h0 + h) * hd + d] for t < n, h < heads */
static void copy_head_major(ops_ctx *c, const float *x, int64_t ld, int t0, int n, int h0, int heads,
                            int hd, float scale, void *out, int bf16)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)n * heads * hd > 65536)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++) {
            const float *src = x + (int64_t)(t0 + t) * ld + (int64_t)(h0 + h) * hd;
            int64_t dst = ((int64_t)h * n + t) * hd;
            for (int d = 0; d < hd; d++)
                put(out, bf16, dst + d, src[d] * scale);
        }
}

/* out[t][h * hd + d] = x[h][t][d] * inv_sum[h][t]: the softmax's
 * normalisation, applied to the 64-wide output rows. */
static void scatter_heads(const float *x, const float *inv_sum, int n, int heads, int hd, float *out,
                          int64_t ldo)
{
    for (int h = 0; h < heads; h++)
        for (int t = 0; t < n; t++) {
            const float *src = x + ((int64_t)h * n + t) * hd;
            float *dst = out + t * ldo + (int64_t)h * hd, s = inv_sum[(int64_t)h * n + t];
            for (int d = 0; d < hd; d++)
                dst[d] = src[d] * s;
        }
}

/* out[h][d][t] = x[t][(h0 + h) * hd + d] for h < heads */
static void copy_transposed(ops_ctx *c, const float *x, int64_t ld, int N, int h0, int heads, int hd,
                            void *out, int bf16)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)N * heads * hd > 65536)
    for (int h = 0; h < heads; h++)
        for (int t0 = 0; t0 < N; t0 += 64) {
            int t1 = t0 + 64 < N ? t0 + 64 : N;
            for (int d = 0; d < hd; d++) {
                int64_t row = ((int64_t)h * hd + d) * N;
                for (int t = t0; t < t1; t++)
                    put(out, bf16, row + t, x[t * ld + (int64_t)(h0 + h) * hd + d]);
            }
        }
}

/* Queries per tile, and the number of heads whose scores for one tile fit
 * the score budget (returned). */
static int score_tiles(int N, int heads, int *tile)
{
    *tile = N < QUERY_TILE ? N : QUERY_TILE;
    int group = (int)(SCORE_BUDGET / ((int64_t)*tile * N));
    return group < 1 ? 1 : group > heads ? heads : group;
}

/* V of every head as s8 for the int8 P·V, head-major ([head][token][hd]),
 * symmetric with one scale per head and channel (vs[head][d]): a scale per
 * channel is what factors out of the sum over tokens, as a Linear's per
 * output channel weight scale does. */
static void v_to_s8(ops_ctx *c, const float *v, int64_t ld, int N, int heads, int hd, int8_t *vq, float *vs)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)N * heads * hd > 65536)
    for (int h = 0; h < heads; h++) {
        float *s = vs + (int64_t)h * hd;
        for (int d = 0; d < hd; d++)
            s[d] = 0.0f;
        for (int t = 0; t < N; t++) {
            const float *x = v + t * ld + (int64_t)h * hd;
            for (int d = 0; d < hd; d++) {
                float a = x[d] < 0.0f ? -x[d] : x[d];
                s[d] = a > s[d] ? a : s[d];   /* not fmaxf: a libm call that does not vectorise */
            }
        }
        for (int d = 0; d < hd; d++)
            s[d] = s[d] > 0.0f && isfinite(s[d]) ? s[d] / 127.0f : 1.0f;
        for (int t = 0; t < N; t++) {
            const float *x = v + t * ld + (int64_t)h * hd;
            int8_t *y = vq + ((int64_t)h * N + t) * hd;
            for (int d = 0; d < hd; d++) {
                float q = nearbyintf(x[d] / s[d]);
                y[d] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
            }
        }
    }
}

/* out[t][h * hd + d] = acc[h][t][d] vs[h][d] / psum[h][t]: the int8 P·V's
 * sums, scaled back and divided by the rounded probabilities' sum. */
static void scatter_heads_s32(ops_ctx *c, const int32_t *acc, const float *vs, const int32_t *psum, int n,
                              int heads, int hd, float *out, int64_t ldo)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)n * heads * hd > 65536)
    for (int64_t r = 0; r < (int64_t)heads * n; r++) {   /* r = h * n + t */
        int64_t h = r / n, t = r % n;
        const int32_t *src = acc + r * hd;
        const float *s = vs + h * hd;
        float *dst = out + t * ldo + h * hd, inv = 1.0f / (float)psum[r];
        for (int d = 0; d < hd; d++)
            dst[d] = (float)src[d] * s[d] * inv;
    }
}

/* The int8 context's attention, both products in u8 x s8 -> s32. Q·Kᵀ:
 * queries per row with a zero point, keys symmetric, one scale per token
 * and head; the queries' scales carry the softmax scale and log2(e), so the
 * softmax works in base 2. It makes the scores row by row from the s32 sums
 * and writes exp(score - max) as u8 (round(e levels), the row's max exactly
 * levels). P·V: those u8 probabilities times V in s8 (per channel), divided
 * by the sum of the rounded probabilities, so that they weigh V exactly as
 * they sum. Probabilities below half a step (1/510 of the row's largest)
 * become 0: a row loses them all, not a share of each. */
static hadm_status attention_int8(ops_ctx *c, int N, int heads, int hd, float scale, const float *q,
                                  const float *k, const float *v, int64_t ld, float *out, int64_t ldo,
                                  hadm_error *err)
{
    int tile, group = score_tiles(N, heads, &tile), levels = ops_u8_levels(c);
    int64_t hsz = (int64_t)N * hd, kn = (int64_t)heads * N;
    size_t ssz = (size_t)group * tile * N, qsz = (size_t)group * tile * hd, isz = (size_t)group * tile;
    /* 4-byte words: scores (s32), output tile (s32), V's channel scales, per
     * key row its scale and scale times s8 sum, per query row the
     * probabilities' sum, scale and zero point; then bytes: u8
     * probabilities, the u8 query tile, s8 K and s8 V */
    size_t nw = ssz + qsz + (size_t)heads * hd + 2 * (size_t)kn + 3 * isz;
    size_t nb = ssz + qsz + 2 * (size_t)kn * hd;
    float *S = ops_scratch(c, OPS_SCRATCH_ATTN, nw + (nb + 3) / 4);
    if (!S)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (attention scores)");
    int32_t *ot = (int32_t *)(S + ssz);
    float *vs = (float *)(ot + qsz), *ks = vs + heads * hd, *kss = ks + kn;
    int32_t *psum = (int32_t *)(kss + kn);
    float *qs = (float *)(psum + isz);
    int32_t *qz = (int32_t *)(qs + isz);
    uint8_t *P = (uint8_t *)(qz + isz), *qt = P + ssz;
    int8_t *kt = (int8_t *)(qt + qsz), *vq = kt + kn * hd;
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (kn * hd > 65536)
    for (int64_t r = 0; r < kn; r++) {   /* r = h * N + token */
        int64_t h = r / N, t = r % N;
        int32_t sum;
        ops_row_to_s8(k + t * ld + h * hd, hd, kt + r * hd, &ks[r], &sum);
        kss[r] = ks[r] * (float)sum;
    }
    v_to_s8(c, v, ld, N, heads, hd, vq, vs);
    float qmul = scale * OPS_EXP_LOG2E;
    for (int h0 = 0; h0 < heads; h0 += group) {
        int g = heads - h0 < group ? heads - h0 : group;
        for (int q0 = 0; q0 < N; q0 += tile) {
            int m = N - q0 < tile ? N - q0 : tile;
            int64_t rows = (int64_t)g * m;
            ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * hd > 65536)
            for (int64_t r = 0; r < rows; r++) {   /* r = h * m + i */
                int64_t h = r / m, i = r % m;
                ops_row_to_u8(q + (q0 + i) * ld + (h0 + h) * hd, hd, levels, qt + r * hd, &qs[r], &qz[r]);
                qs[r] *= qmul;
            }
            ops_gemm qk = {.M = m, .N = N, .K = hd, .A = (const float *)qt, .lda = hd,
                           .B = (const float *)(kt + h0 * hsz), .ldb = hd, .trans_b = 1,
                           .C = S, .ldc = N, .ab_int8 = 1};
            hadm_status s = ops_matmul_batched(c, &qk, g, (int64_t)m * hd, hsz, (int64_t)m * N, err);
            if (s)
                return s;
            ops_softmax2_rows_s32_u8(c, rows, N, (int32_t *)S, N, m, qs, qz, ks + (int64_t)h0 * N,
                                     kss + (int64_t)h0 * N, levels, P, N, psum);
            ops_gemm av = {.M = m, .N = hd, .K = N, .A = (const float *)P, .lda = N,
                           .B = (const float *)(vq + h0 * hsz), .ldb = hd, .C = (float *)ot, .ldc = hd,
                           .ab_int8 = 1};
            if ((s = ops_matmul_batched(c, &av, g, (int64_t)m * N, hsz, (int64_t)m * hd, err)))
                return s;
            scatter_heads_s32(c, ot, vs + (int64_t)h0 * hd, psum, m, g, hd,
                              out + (int64_t)q0 * ldo + (int64_t)h0 * hd, ldo);
        }
    }
    return HADM_OK;
}

hadm_status ops_attention(ops_ctx *c, int N, int heads, int hd, float scale, const float *q,
                          const float *k, const float *v, int64_t ld, float *out, int64_t ldo,
                          hadm_error *err)
{
    if (ops_ctx_compute(c) == OPS_S8)
        return attention_int8(c, N, heads, hd, scale, q, k, v, ld, out, ldo, err);
    int bf16 = ops_ctx_compute(c) == OPS_BF16;
    int tile, group = score_tiles(N, heads, &tile);
    int64_t hsz = (int64_t)N * hd;
    size_t ssz = (size_t)group * tile * N, qsz = (size_t)group * tile * hd;
    /* floats: scores, bf16 probabilities (bf16 only), query tile, output tile,
     * K and V of a group of heads, 1/sum per score row */
    size_t psz = bf16 ? (ssz + 1) / 2 : 0, isz = (size_t)group * tile;
    float *S = ops_scratch(c, OPS_SCRATCH_ATTN, ssz + psz + 2 * qsz + 2 * (size_t)group * hsz + isz);
    if (!S)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (attention scores)");
    void *P = bf16 ? (void *)(S + ssz) : S;
    float *qt = S + ssz + psz, *ot = qt + qsz, *kt = ot + qsz, *vh = kt + group * hsz;
    float *inv_sum = vh + group * hsz;
    for (int h0 = 0; h0 < heads; h0 += group) {
        int g = heads - h0 < group ? heads - h0 : group;
        copy_transposed(c, k, ld, N, h0, g, hd, kt, bf16);
        copy_head_major(c, v, ld, 0, N, h0, g, hd, 1.0f, vh, bf16);
        for (int q0 = 0; q0 < N; q0 += tile) {
            int m = N - q0 < tile ? N - q0 : tile;
            /* S[h][i][j] = (scale q[q0+i][h]) . k[j][h] */
            copy_head_major(c, q, ld, q0, m, h0, g, hd, scale, qt, bf16);
            ops_gemm qk = {.M = m, .N = N, .K = hd, .A = qt, .lda = hd,
                           .B = kt, .ldb = N,
                           .trans_b = 0, .C = S, .ldc = N, .ab_bf16 = bf16};
            hadm_status s = ops_matmul_batched(c, &qk, g, (int64_t)m * hd, hsz, (int64_t)m * N, err);
            if (s)
                return s;
            ops_softmax_rows_unnorm(c, (int64_t)g * m, N, S, N, bf16 ? P : NULL, N, inv_sum);
            /* out[q0+i][h*hd + d] = sum_j P[h][i][j] v[h][j][d], via the dense ot */
            ops_gemm av = {.M = m, .N = hd, .K = N, .A = P, .lda = N,
                           .B = vh, .ldb = hd,
                           .trans_b = 0, .C = ot, .ldc = hd, .ab_bf16 = bf16};
            if ((s = ops_matmul_batched(c, &av, g, (int64_t)m * N, hsz, (int64_t)m * hd, err)))
                return s;
            scatter_heads(ot, inv_sum, m, g, hd, out + (int64_t)q0 * ldo + (int64_t)h0 * hd, ldo);
        }
    }
    return HADM_OK;
}
