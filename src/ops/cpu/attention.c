/* Multi-head attention, streamed over query tiles.
 *
 * V is first copied head-major ([head][token][hd]), K transposed per head
 * ([head][hd][token]) and each query tile head-major, pre-multiplied by the
 * softmax scale: on those
 * dense layouts oneDNN runs its brgemm kernels (~200-300 GFLOP/s here), while
 * the interleaved-head strides, or an output-scale attribute, send it to a
 * generic kernel at half that speed. Scores are then computed for a group of
 * heads and a tile of queries at a time (at most SCORE_BUDGET floats: 32 MiB),
 * softmaxed in place and multiplied by V straight into the output columns,
 * so a 4096-token block never holds the 1 GiB of all scores at once. */
#include <string.h>

#include "ops/cpu/cpu.h"
#include "util/err.h"

#define SCORE_BUDGET (8u << 20)
#define QUERY_TILE 512

/* out[h][t][d] = scale * x[t0 + t][(h0 + h) * hd + d] for t < n, h < heads */
static void copy_head_major(ops_ctx *c, const float *x, int64_t ld, int t0, int n, int h0, int heads,
                            int hd, float scale, float *out)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)n * heads * hd > 65536)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++) {
            const float *src = x + (int64_t)(t0 + t) * ld + (int64_t)(h0 + h) * hd;
            float *dst = out + ((int64_t)h * n + t) * hd;
            for (int d = 0; d < hd; d++)
                dst[d] = src[d] * scale;
        }
}

/* out[t][h * hd + d] = x[h][t][d] */
static void scatter_heads(const float *x, int n, int heads, int hd, float *out, int64_t ldo)
{
    for (int h = 0; h < heads; h++)
        for (int t = 0; t < n; t++)
            memcpy(out + t * ldo + (int64_t)h * hd, x + ((int64_t)h * n + t) * hd, (size_t)hd * sizeof *out);
}

static void copy_transposed(ops_ctx *c, const float *x, int64_t ld, int N, int heads, int hd, float *out)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)N * heads * hd > 65536)
    for (int h = 0; h < heads; h++)
        for (int t0 = 0; t0 < N; t0 += 64) {
            int t1 = t0 + 64 < N ? t0 + 64 : N;
            for (int d = 0; d < hd; d++) {
                float *dst = out + ((int64_t)h * hd + d) * N;
                for (int t = t0; t < t1; t++)
                    dst[t] = x[t * ld + (int64_t)h * hd + d];
            }
        }
}

hadm_status ops_attention(ops_ctx *c, int N, int heads, int hd, float scale, const float *q,
                          const float *k, const float *v, int64_t ld, float *out, int64_t ldo,
                          hadm_error *err)
{
    int tile = N < QUERY_TILE ? N : QUERY_TILE;
    int group = (int)(SCORE_BUDGET / ((int64_t)tile * N));
    group = group < 1 ? 1 : group > heads ? heads : group;
    int64_t hsz = (int64_t)N * hd;
    size_t qsz = (size_t)group * tile * hd;
    float *S = ops_scratch(c, OPS_SCRATCH_ATTN, (size_t)group * tile * N + qsz + 2 * (size_t)heads * hsz);
    if (!S)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (attention scores)");
    float *qt = S + (size_t)group * tile * N, *kt = qt + qsz, *vh = kt + heads * hsz;
    copy_transposed(c, k, ld, N, heads, hd, kt);
    copy_head_major(c, v, ld, 0, N, 0, heads, hd, 1.0f, vh);
    for (int h0 = 0; h0 < heads; h0 += group) {
        int g = heads - h0 < group ? heads - h0 : group;
        for (int q0 = 0; q0 < N; q0 += tile) {
            int m = N - q0 < tile ? N - q0 : tile;
            /* S[h][i][j] = (scale q[q0+i][h]) . k[j][h] */
            copy_head_major(c, q, ld, q0, m, h0, g, hd, scale, qt);
            ops_gemm qk = {.M = m, .N = N, .K = hd, .A = qt, .lda = hd, .B = kt + h0 * hsz, .ldb = N,
                           .trans_b = 0, .C = S, .ldc = N};
            hadm_status s = ops_matmul_batched(c, &qk, g, (int64_t)m * hd, hsz, (int64_t)m * N, err);
            if (s)
                return s;
            ops_softmax_rows(c, (int64_t)g * m, N, S, N);
            /* out[q0+i][h*hd + d] = sum_j S[h][i][j] v[h][j][d], via the dense qt */
            ops_gemm av = {.M = m, .N = hd, .K = N, .A = S, .lda = N, .B = vh + h0 * hsz, .ldb = hd,
                           .trans_b = 0, .C = qt, .ldc = hd};
            if ((s = ops_matmul_batched(c, &av, g, (int64_t)m * N, hsz, (int64_t)m * hd, err)))
                return s;
            scatter_heads(qt, m, g, hd, out + (int64_t)q0 * ldo + (int64_t)h0 * hd, ldo);
        }
    }
    return HADM_OK;
}
