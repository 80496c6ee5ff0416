/* Element conversions for reduced-precision weights: bf16, f16 and int8
 * with per-row scales, to and from f32, and the plain [N][K] matrices that
 * ops_pack_parts hands to oneDNN's reorder. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu/cpu.h"

float ops_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t ops_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);   /* NaN stays a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ops_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
uint16_t ops_f32_to_f16(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

size_t ops_src_size(ops_src_type t) { return t == OPS_SRC_F32 ? 4 : t == OPS_SRC_S8 ? 1 : 2; }

static float part_value(const ops_wpart *p, int64_t K, int64_t i)
{
    switch (p->type) {
    case OPS_SRC_F32: return ((const float *)p->data)[i];
    case OPS_SRC_BF16: return ops_bf16_to_f32(((const uint16_t *)p->data)[i]);
    case OPS_SRC_F16: return ops_f16_to_f32(((const uint16_t *)p->data)[i]);
    case OPS_SRC_S8: return ((const int8_t *)p->data)[i] * p->scale[i / K];
    }
    return 0;
}

void ops_part_to_f32(const ops_wpart *p, int64_t K, int64_t n, float *dst)
{
    const uint16_t *h = p->data;
    int64_t i = 0;
    switch (p->type) {
    case OPS_SRC_F32:
        memcpy(dst, p->data, (size_t)n * sizeof *dst);
        return;
    case OPS_SRC_BF16:   /* the widened weights of every use: a loop the compiler vectorises */
        for (; i < n; i++) {
            uint32_t u = (uint32_t)h[i] << 16;
            memcpy(&dst[i], &u, sizeof u);
        }
        return;
    case OPS_SRC_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
        break;
    case OPS_SRC_S8:
        break;
    }
    for (; i < n; i++)
        dst[i] = part_value(p, K, i);
}

const float *ops_as_f32(const void *w, ops_src_type t, size_t n, float **owned)
{
    *owned = NULL;
    if (t == OPS_SRC_F32)
        return w;
    if ((*owned = malloc(n * sizeof **owned))) {
        ops_wpart p = {w, t, NULL, 1};
        ops_part_to_f32(&p, (int64_t)n, (int64_t)n, *owned);
    }
    return *owned;
}

/* Writes `rows` rows of part p, as element type `to`, at dst (and their
 * scales at scale for S8). row_f32 is scratch for one row of K floats. */
void ops_part_convert(const ops_wpart *p, int64_t K, ops_dtype to, void *dst, float *scale,
                      float *row_f32)
{
    for (int64_t r = 0; r < p->rows; r++) {
        if (to == OPS_S8 && p->type == OPS_SRC_S8) {
            memcpy((int8_t *)dst + r * K, (const int8_t *)p->data + r * K, (size_t)K);
            scale[r] = p->scale[r];
            continue;
        }
        float *row = to == OPS_F32 ? (float *)dst + r * K : row_f32;
        ops_wpart one = *p;
        one.data = (const char *)p->data + r * K * (int64_t)ops_src_size(p->type);
        one.scale = p->scale ? p->scale + r : NULL;
        ops_part_to_f32(&one, K, K, row);
        if (to == OPS_BF16)
            for (int64_t i = 0; i < K; i++)
                ((uint16_t *)dst)[r * K + i] = ops_f32_to_bf16(row[i]);
        else if (to == OPS_S8)
            ops_row_to_s8(row, (int)K, (int8_t *)dst + r * K, &scale[r], &(int32_t){0});
    }
}
