/* The .pth conversion cache (see modelcache.h). */
#include "cli/modelcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/convert.h"

static int fail(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int modelcache_is_checkpoint(const char *path)
{
    unsigned char magic[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, magic, sizeof magic);
    close(fd);
    return n == 4 && !memcmp(magic, "PK\3\4", 4);
}

/* mkdir -p, each missing level 0700 (a cache is private). */
static int make_dirs(char *dir)
{
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int bad = mkdir(dir, 0700) != 0 && errno != EEXIST;
        *p = '/';
        if (bad)
            return -1;
    }
    return mkdir(dir, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static int cache_dir(char *out, size_t n, char *errbuf, size_t errlen)
{
    const char *own = getenv("HADM_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int len;
    if (own && *own)
        len = snprintf(out, n, "%s", own);
    else if (xdg && *xdg == '/')
        len = snprintf(out, n, "%s/hadm", xdg);
    else if (home && *home)
        len = snprintf(out, n, "%s/.cache/hadm", home);
    else
        return fail(errbuf, errlen, "no cache directory for converted checkpoints: set HADM_CACHE_DIR, "
                    "XDG_CACHE_HOME or HOME, or convert it yourself with hadm convert");
    if (len < 0 || (size_t)len >= n)
        return fail(errbuf, errlen, "cache directory path too long");
    return 0;
}

/* <stem>-<size>-<mtime s>.<mtime ns>.safetensors: a new or touched checkpoint gets a new entry. */
static int cache_path(const char *path, const struct stat *st, const char *dir, char *out, size_t n)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t stem = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base)
        stem = (size_t)(dot - base);
    if (stem > 120)
        stem = 120;
    int len = snprintf(out, n, "%s/%.*s-%lld-%lld.%09ld.safetensors", dir, (int)stem, base,
                       (long long)st->st_size, (long long)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec);
    return len < 0 || (size_t)len >= n ? -1 : 0;
}

int modelcache_path(const char *path, char *out, size_t n, char *errbuf, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fail(errbuf, errlen, "%s: %s", path, strerror(errno));
    char dir[2048];
    if (cache_dir(dir, sizeof dir, errbuf, errlen) != 0)
        return -1;
    if (cache_path(path, &st, dir, out, n) != 0)
        return fail(errbuf, errlen, "cache path too long for %s", path);
    return 0;
}

int modelcache_resolve(const char *path, char **safetensors_path, char *errbuf, size_t errlen)
{
    *safetensors_path = NULL;
    if (!modelcache_is_checkpoint(path)) {
        if (!(*safetensors_path = strdup(path)))
            return fail(errbuf, errlen, "out of memory");
        return 0;
    }
    char cached[4096];
    if (modelcache_path(path, cached, sizeof cached, errbuf, errlen) != 0)
        return -1;
    struct stat cst;
    if (stat(cached, &cst) != 0 || !S_ISREG(cst.st_mode) || cst.st_size < 16) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", cached);
        *strrchr(dir, '/') = 0;
        if (make_dirs(dir) != 0)
            return fail(errbuf, errlen, "cache directory %s: %s", dir, strerror(errno));
        fprintf(stderr, "hadm: converting %s once into %s\n", path, cached);
        hadm_error err = {0};
        if (convert_pth(path, cached, NULL, &err) != HADM_OK)
            return fail(errbuf, errlen, "%s", err.msg);
    }
    if (!(*safetensors_path = strdup(cached)))
        return fail(errbuf, errlen, "out of memory");
    return 0;
}
