/* Multi-head attention, streamed over query tiles: for each tile of queries
 * the scores of all heads (heads x tile x N) are computed with one batched
 * matmul, softmaxed in place, and multiplied by V. With a 128-query tile the
 * score buffer of a 4096-token global block is 16 x 128 x 4096 floats (32 MiB)
 * instead of the 1 GiB a full 4096 x 4096 matrix per head would take. */
#include "ops/cpu/cpu.h"
#include "util/err.h"

#define SCORE_BUDGET (8u << 20)   /* floats in the score tile (32 MiB) */

hadm_status ops_attention(ops_ctx *c, int N, int heads, int hd, float scale, const float *q,
                          const float *k, const float *v, int64_t ld, float *out, int64_t ldo,
                          hadm_error *err)
{
    int64_t per_query = (int64_t)heads * N;
    int tile = (int)(SCORE_BUDGET / (per_query > 0 ? per_query : 1));
    if (tile > N)
        tile = N;
    if (tile < 1)
        tile = 1;
    float *S = ops_scratch(c, OPS_SCRATCH_ATTN, (size_t)per_query * tile);
    if (!S)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (attention scores)");
    for (int q0 = 0; q0 < N; q0 += tile) {
        int m = N - q0 < tile ? N - q0 : tile;
        /* S[h][i][j] = scale * q[q0+i][h*hd:] . k[j][h*hd:] */
        ops_gemm qk = {.M = m, .N = N, .K = hd, .A = q + (int64_t)q0 * ld, .lda = ld,
                       .B = k, .ldb = ld, .trans_b = 1, .C = S, .ldc = N, .alpha = scale};
        hadm_status s = ops_matmul_batched(c, &qk, heads, hd, hd, (int64_t)m * N, err);
        if (s)
            return s;
        ops_softmax_rows(c, (int64_t)heads * m, N, S, N);
        /* out[q0+i][h*hd + d] = sum_j S[h][i][j] v[j][h*hd + d] */
        ops_gemm av = {.M = m, .N = hd, .K = N, .A = S, .lda = N, .B = v, .ldb = ld, .trans_b = 0,
                       .C = out + (int64_t)q0 * ldo, .ldc = ldo};
        if ((s = ops_matmul_batched(c, &av, heads, (int64_t)m * N, hd, hd, err)))
            return s;
    }
    return HADM_OK;
}
