/* hadm bench internals: the machine ceilings measured in the same run. */
#ifndef HADM_CLI_BENCH_H
#define HADM_CLI_BENCH_H

#include "hadm.h"

typedef struct {
    double f32, bf16, s8;          /* best matmul GFLOP/s (GOP/s for s8) */
    double bw_triad_gbs, bw_copy_gbs;
    /* Multiply-add instruction throughput over all threads, G(FL)OP/s:
     * 512-bit FMA, bf16 dot product, u8 x s8 dot product (0: no AVX-512 /
     * no such instruction on this CPU). */
    double isa_f32, isa_bf16, isa_s8;
    int threads;
} bench_ceilings;

/* Matmul ceilings per element type: the best of a dim^3 product and the ViT
 * MLP's shape, weights packed as the engine holds them, operands already in
 * the type (no conversion pass counted). */
/* want[t]: measure type t (f32, bf16, s8); the others are left 0. */
hadm_status bench_measure_matmul(int threads, int dim, const int want[3], bench_ceilings *c, hadm_error *err);
hadm_status bench_measure_bandwidth(int threads, bench_ceilings *c, hadm_error *err);
void bench_measure_isa(int threads, bench_ceilings *c);
double bench_median(double *v, int n);

#endif
