/* Seeded random-weight models in the real file format (`hadm synth`, the
 * built-in demo models, benchmarks). Weights are scaled by 1/sqrt(fan_in) so
 * activations keep a sane range through all blocks. */
#ifndef HADM_ENGINE_SYNTH_H
#define HADM_ENGINE_SYNTH_H

#include "engine/config.h"
#include "io/safetensors.h"

typedef struct {
    st_writer *writer;
    float *data;     /* backing store of every tensor (owned) */
} synth_model;

hadm_status synth_build(const hadm_config *cfg, uint64_t seed, synth_model *out, hadm_error *err);
void synth_free(synth_model *s);

#endif
