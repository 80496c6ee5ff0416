/* Internal to the CPU backend. */
#ifndef HADM_OPS_CPU_H
#define HADM_OPS_CPU_H
#include "ops/ops.h"

/* Applies the context's thread count to the calling thread's OpenMP teams. */
void ops_ctx_enter(ops_ctx *c);

#endif
