/* Lets `hadm detect` and `hadm serve` take an original .pth checkpoint: it is
 * converted once into a cache directory ($XDG_CACHE_HOME/hadm, else
 * ~/.cache/hadm; $HADM_CACHE_DIR overrides both) and the cached file is used
 * from then on. The cache entry is keyed by the checkpoint's name, size and
 * modification time, so a replaced checkpoint is converted again. */
#ifndef HADM_CLI_MODELCACHE_H
#define HADM_CLI_MODELCACHE_H

#include <stddef.h>

/* If `path` is a torch.save archive (zip magic), converts it unless the cache
 * already holds it and sets *safetensors_path to the cached file; otherwise
 * sets it to a copy of `path`. The caller frees *safetensors_path.
 * Returns 0, or -1 with a one-line message in errbuf (no "hadm: " prefix).
 * Says on stderr when it converts (it takes a few seconds for the real models). */
int modelcache_resolve(const char *path, char **safetensors_path, char *errbuf, size_t errlen);

/* The cache file `path` converts to (whether or not it exists yet); 0 or -1. */
int modelcache_path(const char *path, char *out, size_t n, char *errbuf, size_t errlen);

/* Whether `path` starts like a zip archive (what torch.save writes). */
int modelcache_is_checkpoint(const char *path);

#endif
