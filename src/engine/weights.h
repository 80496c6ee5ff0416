/* The list of every tensor a HADM model file holds, with its shape derived
 * from the config: one table serves loading (bind and check), `hadm synth`
 * (generate) and `hadm quantize` (rewrite). */
#ifndef HADM_ENGINE_WEIGHTS_H
#define HADM_ENGINE_WEIGHTS_H

#include "engine/model.h"

/* Called once per tensor; *slot is where the loader stores the data pointer
 * (NULL-able for callers that only want names and shapes). type is not NULL
 * for the weights whose users take a bf16/f16 pointer (with its type stored
 * there) as well as an f32 one: the convolutions'. */
typedef hadm_status (*weights_visit_fn)(void *user, const char *name, int ndim,
                                        const int64_t *shape, const float **slot,
                                        ops_src_type *type, hadm_error *err);

hadm_status weights_enumerate(const hadm_config *cfg, hadm_weights *w, weights_visit_fn fn,
                              void *user, hadm_error *err);

/* Parameter count implied by the config (matches spec MODEL.md 7.4 for full size). */
int64_t weights_param_count(const hadm_config *cfg);

#endif
