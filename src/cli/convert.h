/* Converting an original HADM checkpoint (.pth, torch.save zip) into the
 * hadm safetensors format; used by `hadm convert` and by the model cache that
 * lets `hadm detect` / `hadm serve` take a .pth directly. */
#ifndef HADM_CLI_CONVERT_H
#define HADM_CLI_CONVERT_H

#include <stdio.h>

#include "hadm.h"

/* Reads in_path (EMA weights when present, else `model`), writes out_path
 * atomically (temp file + rename). When report is not NULL, prints what it
 * took and what it ignored there. */
hadm_status convert_pth(const char *in_path, const char *out_path, FILE *report, hadm_error *err);

#endif
