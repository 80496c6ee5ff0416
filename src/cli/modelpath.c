/* Resolving the model files named on the command line (see modelpath.h). */
#include "cli/modelpath.h"
#include "cli/modelcache.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(int rc, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int rc, char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir), m = strlen(name);
    int slash = n > 0 && dir[n - 1] != '/';
    char *p = malloc(n + (size_t)slash + m + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, n);
    if (slash)
        p[n] = '/';
    memcpy(p + n + (size_t)slash, name, m + 1);
    return p;
}

/* A file named directly by --local/--global must exist and be readable
 * (safetensors, or an original .pth that modelcache converts once). */
static int check_named_file(const char *flag, const char *path, char *errbuf, size_t errlen)
{
    struct stat st;
    if (!*path)
        return fail(MODELPATH_USAGE, errbuf, errlen, "%s needs a file name", flag);
    if (stat(path, &st) != 0)
        return fail(MODELPATH_FAIL, errbuf, errlen, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(MODELPATH_FAIL, errbuf, errlen, "%s: not a regular file", path);
    if (access(path, R_OK) != 0)
        return fail(MODELPATH_FAIL, errbuf, errlen, "%s: %s", path, strerror(errno));
    return MODELPATH_OK;
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The last (by name, i.e. highest iteration) "<PREFIX>*.pth" in dir, or NULL. */
static char *find_checkpoint(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char *best = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || !ends_with_ci(e->d_name, ".pth"))
            continue;
        if (best && strcmp(e->d_name, best) <= 0)
            continue;
        char *copy = strdup(e->d_name);
        if (copy) {
            free(best);
            best = copy;
        }
    }
    closedir(d);
    return best;
}

/* Looks for one variant in dir: the safetensors file, else the newest
 * original checkpoint (converted later through the cache). */
static int find_in_dir(const char *dir, const char *name, const char *pth_prefix, char **out,
                       char *errbuf, size_t errlen)
{
    *out = NULL;
    char *path = path_join(dir, name);
    if (!path)
        return fail(MODELPATH_FAIL, errbuf, errlen, "out of memory");
    if (is_regular_file(path)) {
        *out = path;
        return MODELPATH_OK;
    }
    free(path);
    char *pth = find_checkpoint(dir, pth_prefix);
    if (!pth)
        return MODELPATH_OK;
    *out = path_join(dir, pth);
    free(pth);
    return *out ? MODELPATH_OK : fail(MODELPATH_FAIL, errbuf, errlen, "out of memory");
}

static int resolve_dir(const char *dir, int explicit_dir, char **local_out, char **global_out,
                       char *errbuf, size_t errlen)
{
    struct stat st;
    int found = stat(dir, &st) == 0;
    if (!found || !S_ISDIR(st.st_mode)) {
        const char *why = found ? "not a directory" : strerror(errno);
        if (!explicit_dir)
            return fail(MODELPATH_NONE, errbuf, errlen,
                        "no models: ./%s: %s and $HADM_MODELS is not set "
                        "(use --models DIR or --local F / --global F)", dir, why);
        return fail(MODELPATH_FAIL, errbuf, errlen, "models directory %s: %s", dir, why);
    }
    int rc = find_in_dir(dir, MODELPATH_LOCAL_NAME, "HADM-L_", local_out, errbuf, errlen);
    if (rc == MODELPATH_OK)
        rc = find_in_dir(dir, MODELPATH_GLOBAL_NAME, "HADM-G_", global_out, errbuf, errlen);
    if (rc == MODELPATH_OK && !*local_out && !*global_out)
        rc = fail(explicit_dir ? MODELPATH_FAIL : MODELPATH_NONE, errbuf, errlen,
                  "no model files in %s (expected %s and/or %s)", dir, MODELPATH_LOCAL_NAME,
                  MODELPATH_GLOBAL_NAME);
    return rc;
}

/* An original .pth becomes its converted copy in the cache (done once). */
static int through_cache(char **path, char *errbuf, size_t errlen)
{
    if (!*path)
        return MODELPATH_OK;
    char *resolved = NULL;
    if (modelcache_resolve(*path, &resolved, errbuf, errlen) != 0)
        return MODELPATH_FAIL;
    free(*path);
    *path = resolved;
    return MODELPATH_OK;
}

int modelpath_resolve(const char *models_dir, const char *local, const char *global,
                      char **local_out, char **global_out, char *errbuf, size_t errlen)
{
    *local_out = *global_out = NULL;
    if (errbuf && errlen)
        errbuf[0] = 0;
    int rc = MODELPATH_OK;
    if (local || global) {
        if (models_dir)
            return fail(MODELPATH_USAGE, errbuf, errlen,
                        "--models cannot be combined with --local/--global");
        if (local && (rc = check_named_file("--local", local, errbuf, errlen)))
            return rc;
        if (global && (rc = check_named_file("--global", global, errbuf, errlen)))
            return rc;
        *local_out = local ? strdup(local) : NULL;
        *global_out = global ? strdup(global) : NULL;
        if ((local && !*local_out) || (global && !*global_out))
            rc = fail(MODELPATH_FAIL, errbuf, errlen, "out of memory");
    } else {
        const char *env = getenv("HADM_MODELS");
        int explicit_dir = 1;
        if (models_dir && !*models_dir)
            return fail(MODELPATH_USAGE, errbuf, errlen, "--models needs a directory");
        if (!models_dir)
            models_dir = env && *env ? env : NULL;
        if (!models_dir) {
            models_dir = "models";
            explicit_dir = 0;
        }
        rc = resolve_dir(models_dir, explicit_dir, local_out, global_out, errbuf, errlen);
    }
    if (rc == MODELPATH_OK)
        rc = through_cache(local_out, errbuf, errlen);
    if (rc == MODELPATH_OK)
        rc = through_cache(global_out, errbuf, errlen);
    if (rc != MODELPATH_OK) {
        free(*local_out);
        free(*global_out);
        *local_out = *global_out = NULL;
    }
    return rc;
}

int modelpath_exit_code(int rc)
{
    switch (rc) {
    case MODELPATH_OK: return 0;
    case MODELPATH_USAGE: return 2;
    default: return 1;
    }
}
