/* Throughput probes of 512-bit multiply-add instructions, shared by the
 * backend (is bf16 worth computing in?) and `hadm bench` (instruction
 * peaks). Ten independent accumulators per loop, more than latency x ports
 * on any AVX-512 core, so the loop runs at the unit's throughput. Operands
 * are 1.0: denormal inputs would take a microcode assist on every FMA. */
#ifndef HADM_OPS_CPU_ISA_H
#define HADM_OPS_CPU_ISA_H

#define OPS_ISA_LOOP(insn, n, one)                                                               \
    __asm__ volatile("vbroadcastss %1, %%zmm14\n vbroadcastss %1, %%zmm15\n"                   \
                     "vpxord %%zmm0, %%zmm0, %%zmm0\n vmovaps %%zmm0, %%zmm1\n"                     \
                     "vmovaps %%zmm0, %%zmm2\n vmovaps %%zmm0, %%zmm3\n vmovaps %%zmm0, %%zmm4\n"    \
                     "vmovaps %%zmm0, %%zmm5\n vmovaps %%zmm0, %%zmm6\n vmovaps %%zmm0, %%zmm7\n"    \
                     "vmovaps %%zmm0, %%zmm8\n vmovaps %%zmm0, %%zmm9\n"                            \
                     "1:\n" insn " %%zmm14, %%zmm15, %%zmm0\n" insn " %%zmm14, %%zmm15, %%zmm1\n"  \
                     insn " %%zmm14, %%zmm15, %%zmm2\n" insn " %%zmm14, %%zmm15, %%zmm3\n"          \
                     insn " %%zmm14, %%zmm15, %%zmm4\n" insn " %%zmm14, %%zmm15, %%zmm5\n"          \
                     insn " %%zmm14, %%zmm15, %%zmm6\n" insn " %%zmm14, %%zmm15, %%zmm7\n"          \
                     insn " %%zmm14, %%zmm15, %%zmm8\n" insn " %%zmm14, %%zmm15, %%zmm9\n"          \
                     "dec %0\n jnz 1b\n"                                                        \
                     : "+r"(n) : "m"(one) : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", \
                       "zmm9", "zmm14", "zmm15", "cc")

enum { OPS_ISA_F32_FMA, OPS_ISA_BF16_DOT, OPS_ISA_U8S8_DOT };

/* Operations per second of one kind of instruction on the calling thread,
 * best of 3 runs of `iters` x 10 instructions; 0 when the CPU lacks it. */
double ops_isa_rate(int kind, long iters);

#endif
