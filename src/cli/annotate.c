/* Writing annotated images for `hadm detect --annotate` (see annotate.h);
 * the drawing itself is io/annotate.c, shared with the server. */
#include "cli/annotate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/annotate.h"
#include "util/err.h"

hadm_status annotator_init(annotator *a, const char *dir, image_format format, hadm_error *err)
{
    memset(a, 0, sizeof *a);
    a->dir = dir;
    a->format = format;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return hadm_fail(err, HADM_ERR_IO, "--annotate %s: not a directory", dir);
        return HADM_OK;
    }
    if (mkdir(dir, 0777) != 0)
        return hadm_fail(err, HADM_ERR_IO, "--annotate %s: cannot create: %s", dir, strerror(errno));
    return HADM_OK;
}

void annotator_free(annotator *a)
{
    for (int i = 0; i < a->count; i++)
        free(a->written[i]);
    free(a->written);
    memset(a, 0, sizeof *a);
}

static hadm_status write_file(const char *path, const uint8_t *data, size_t len, hadm_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return hadm_fail(err, HADM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t put = fwrite(data, 1, len, f);
    int bad = put != len || ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(path);
        return hadm_fail(err, HADM_ERR_IO, "%s: write error", path);
    }
    return HADM_OK;
}

static int name_used(const annotator *a, const char *name)
{
    for (int i = 0; i < a->count; i++)
        if (!strcmp(a->written[i], name))
            return 1;
    return 0;
}

/* OUTDIR/<stem>.<ext>, or <stem>-N.<ext> when this run already wrote <stem>.<ext>. */
static hadm_status output_path(annotator *a, const char *image_path, const char *ext, char **out,
                               hadm_error *err)
{
    const char *base = strrchr(image_path, '/');
    base = base ? base + 1 : image_path;
    const char *dot = strrchr(base, '.');
    int stem = (int)(dot && dot != base ? (size_t)(dot - base) : strlen(base));
    stem = stem > 400 ? 400 : stem;
    char name[512];
    snprintf(name, sizeof name, "%.*s.%s", stem, base, ext);
    for (int n = 2; name_used(a, name); n++)
        snprintf(name, sizeof name, "%.*s-%d.%s", stem, base, n, ext);
    if (a->count == a->cap) {
        int cap = a->cap ? 2 * a->cap : 16;
        char **w = realloc(a->written, (size_t)cap * sizeof *w);
        if (!w)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        a->written = w;
        a->cap = cap;
    }
    size_t len = strlen(a->dir) + strlen(name) + 2;
    char *path = malloc(len), *copy = strdup(name);
    if (!path || !copy) {
        free(path);
        free(copy);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    snprintf(path, len, "%s/%s", a->dir, name);
    a->written[a->count++] = copy;
    *out = path;
    return HADM_OK;
}

hadm_status annotator_write(annotator *a, const char *image_path, hadm_image *img,
                            const hadm_result *local, const hadm_result *global, hadm_error *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    image_format used = a->format;
    hadm_status s = annotate_encode(img, local, global, a->format, &data, &len, &used, err);
    char *path = NULL;
    if (!s)
        s = output_path(a, image_path, image_format_extension(used), &path, err);
    if (!s)
        s = write_file(path, data, len, err);
    if (s)
        hadm_error_prefix(err, "--annotate %s: ", image_path);
    free(path);
    free(data);
    return s;
}
