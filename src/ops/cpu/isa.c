/* Instruction throughput probes (isa.h) and the one decision the backend
 * takes from them: whether bf16 weights are multiplied in bf16 or in f32. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/cpu/cpu.h"
#include "ops/cpu/isa.h"

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

double ops_isa_rate(int kind, long iters)
{
    static const double ops_per_insn[3] = {32, 64, 128};   /* per 512-bit instruction */
    __builtin_cpu_init();
    if (kind < 0 || kind > 2 || !__builtin_cpu_supports("avx512f") ||
        (kind == OPS_ISA_BF16_DOT && !__builtin_cpu_supports("avx512bf16")) ||
        (kind == OPS_ISA_U8S8_DOT && !__builtin_cpu_supports("avx512vnni")))
        return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        long n = iters;
        const float one = 1.0f;
        double t0 = seconds();
        if (kind == OPS_ISA_F32_FMA)
            OPS_ISA_LOOP("vfmadd231ps", n, one);
        else if (kind == OPS_ISA_BF16_DOT)
            OPS_ISA_LOOP("vdpbf16ps", n, one);
        else
            OPS_ISA_LOOP("vpdpbusd", n, one);
        double rate = iters * 10.0 * ops_per_insn[kind] / (seconds() - t0);
        best = rate > best ? rate : best;
    }
    return best;
}

static int bf16_native;
static pthread_once_t bf16_once = PTHREAD_ONCE_INIT;

/* bf16 pays only where its dot product outruns the f32 FMA by a clear
 * margin (2x on Zen 4/5 and with AMX; on Xeons without AMX it runs at half
 * the FMA rate, and oneDNN's bf16 matmul at ~0.6x f32). ~3 ms, once. */
static void decide_bf16(void)
{
    const char *env = getenv("HADM_BF16_COMPUTE");
    if (env && !strcmp(env, "native")) {
        bf16_native = 1;
        return;
    }
    if (env && !strcmp(env, "f32"))
        return;
    double f32 = ops_isa_rate(OPS_ISA_F32_FMA, 100000), bf16 = ops_isa_rate(OPS_ISA_BF16_DOT, 100000);
    bf16_native = f32 > 0 && bf16 > 1.3 * f32;
}

int ops_bf16_native(void)
{
    pthread_once(&bf16_once, decide_bf16);
    return bf16_native;
}
