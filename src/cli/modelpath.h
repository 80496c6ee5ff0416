/* Where the model files are: `--models DIR` (default $HADM_MODELS, then
 * ./models) holding hadm-l.safetensors / hadm-g.safetensors, or
 * `--local F` / `--global F` naming files directly; an original HADM-L_*.pth /
 * HADM-G_*.pth checkpoint is accepted too and converted once into the cache
 * (modelcache.h). Shared by `hadm detect` and `hadm serve`. */
#ifndef HADM_CLI_MODELPATH_H
#define HADM_CLI_MODELPATH_H

#include <stddef.h>

enum {
    MODELPATH_OK = 0,     /* at least one model path was found */
    MODELPATH_NONE = 1,   /* the default directory (./models) has no model at all */
    MODELPATH_FAIL = 2,   /* runtime failure: missing file, bad .pth, unreadable dir */
    MODELPATH_USAGE = 3   /* bad flag combination (--models with --local/--global) */
};

#define MODELPATH_LOCAL_NAME "hadm-l.safetensors"
#define MODELPATH_GLOBAL_NAME "hadm-g.safetensors"

/* models_dir: the --models value or NULL (then $HADM_MODELS, then ./models);
 * local/global: the --local/--global values or NULL. On MODELPATH_OK,
 * *local_out and *global_out are malloc'd paths (free them) or NULL for a
 * model that is not available; at least one is set. Otherwise both are NULL
 * and errbuf holds a one-line message (without the "hadm: " prefix).
 * An explicitly named directory ($HADM_MODELS counts) that is missing or
 * holds no model is MODELPATH_FAIL; only the implicit ./models gives
 * MODELPATH_NONE, so `hadm serve` can fall back to its demo models. */
int modelpath_resolve(const char *models_dir, const char *local, const char *global,
                      char **local_out, char **global_out, char *errbuf, size_t errlen);

/* Maps a modelpath_resolve result to a process exit code (0, 1 or 2). */
int modelpath_exit_code(int rc);

#endif
