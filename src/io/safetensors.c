#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/mapguard.h"
#include "util/err.h"

/* A header bigger than this is not a model header, it is an attack or junk. */
#define ST_MAX_HEADER (100u * 1024 * 1024)

struct st_file {
    char *path;
    void *map;          /* whole file when mapped by us */
    size_t map_len;
    int guard;          /* map_guard slot, -1 if none */
    int fd;             /* kept open to notice changes to the mapped file */
    struct stat opened; /* its size and times when mapped */
    const uint8_t *data; /* start of the data section */
    size_t data_len;
    st_tensor *tensors;
    int n;
    cJSON *meta;        /* __metadata__ object (owned by root) */
    cJSON *root;
};

static const struct { const char *name; st_dtype t; size_t size; } DTYPES[] = {
    {"F32", ST_F32, 4}, {"F64", ST_F64, 8}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2},
    {"I64", ST_I64, 8}, {"I32", ST_I32, 4}, {"I8", ST_I8, 1},   {"U8", ST_U8, 1},
    {"BOOL", ST_BOOL, 1},
};

size_t st_dtype_size(st_dtype t)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (DTYPES[i].t == t)
            return DTYPES[i].size;
    return 0;
}

const char *st_dtype_name(st_dtype t)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (DTYPES[i].t == t)
            return DTYPES[i].name;
    return "?";
}

static int dtype_parse(const char *s, st_dtype *t)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (strcmp(DTYPES[i].name, s) == 0) {
            *t = DTYPES[i].t;
            return 1;
        }
    return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->data != y->data)
        return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return 0;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static hadm_status parse_entry(st_file *f, const cJSON *e, st_tensor *t, hadm_error *err)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': entry is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dtype_parse(dt->valuestring, &t->dtype))
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': missing or unknown dtype", name);
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > ST_MAX_DIMS)
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': bad shape", name);
    t->ndim = cJSON_GetArraySize(sh);
    int64_t numel = 1;
    int i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e12 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': bad dimension %d", name, i);
        t->shape[i] = (int64_t)d->valuedouble;
        if (t->shape[i] && numel > INT64_MAX / 16 / t->shape[i])
            return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': shape too large", name);
        numel *= t->shape[i];
    }
    t->numel = numel;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !cJSON_IsNumber(of->child) ||
        !cJSON_IsNumber(of->child->next))
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s': bad data_offsets", name);
    double b = of->child->valuedouble, end = of->child->next->valuedouble;
    if (b < 0 || end < b || end > (double)f->data_len || b != (double)(size_t)b ||
        end != (double)(size_t)end)
        return hadm_fail(err, HADM_ERR_FORMAT,
                         "tensor '%s': data_offsets [%.0f, %.0f] outside the %zu-byte data section",
                         name, b, end, f->data_len);
    t->nbytes = (size_t)end - (size_t)b;
    if ((uint64_t)numel * st_dtype_size(t->dtype) != t->nbytes)
        return hadm_fail(err, HADM_ERR_FORMAT,
                         "tensor '%s': %zu bytes stored but dtype %s x shape needs %llu", name,
                         t->nbytes, st_dtype_name(t->dtype),
                         (unsigned long long)numel * st_dtype_size(t->dtype));
    t->data = f->data + (size_t)b;
    t->name = name;
    return HADM_OK;
}

static hadm_status parse_header(st_file *f, const uint8_t *buf, size_t len, hadm_error *err)
{
    if (len < 8)
        return hadm_fail(err, HADM_ERR_FORMAT, "file too short (%zu bytes) for a safetensors header", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > len - 8)
        return hadm_fail(err, HADM_ERR_FORMAT, "header length %llu is invalid for a %zu-byte file",
                         (unsigned long long)hlen, len);
    f->data = buf + 8 + hlen;
    f->data_len = len - 8 - hlen;
    f->root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    if (!f->root || !cJSON_IsObject(f->root))
        return hadm_fail(err, HADM_ERR_FORMAT, "header is not a JSON object");
    int n = 0;
    for (cJSON *e = f->root->child; e; e = e->next)
        n += strcmp(e->string, "__metadata__") != 0;
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    if (!f->tensors)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    for (cJSON *e = f->root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e))
                return hadm_fail(err, HADM_ERR_FORMAT, "__metadata__ is not an object");
            for (cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m))
                    return hadm_fail(err, HADM_ERR_FORMAT, "__metadata__ value '%s' is not a string", m->string);
            f->meta = e;
            continue;
        }
        hadm_status s = parse_entry(f, e, &f->tensors[f->n], err);
        if (s)
            return s;
        f->n++;
    }
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_by_offset);
    for (int i = 1; i < f->n; i++) {
        const st_tensor *a = &f->tensors[i - 1], *b = &f->tensors[i];
        if ((const uint8_t *)a->data + a->nbytes > (const uint8_t *)b->data)
            return hadm_fail(err, HADM_ERR_FORMAT, "tensors '%s' and '%s' overlap", a->name, b->name);
    }
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_by_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' appears twice", f->tensors[i].name);
    return HADM_OK;
}

static st_file *file_new(const char *label)
{
    st_file *f = calloc(1, sizeof *f);
    if (f && !(f->path = strdup(label ? label : "<buffer>"))) {
        free(f);
        return NULL;
    }
    if (f)
        f->guard = f->fd = -1;
    return f;
}

hadm_status st_open_buffer(const void *buf, size_t len, const char *label, st_file **out,
                           hadm_error *err)
{
    *out = NULL;
    st_file *f = file_new(label);
    if (!f)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = parse_header(f, buf, len, err);
    if (s) {
        hadm_error_prefix(err, "%s", f->path);
        st_close(f);
        return s;
    }
    *out = f;
    return HADM_OK;
}

hadm_status st_open(const char *path, st_file **out, hadm_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hadm_fail(err, HADM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return hadm_fail(err, HADM_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (map == MAP_FAILED) {
        close(fd);
        return hadm_fail(err, len ? HADM_ERR_IO : HADM_ERR_FORMAT, "%s: %s", path,
                         len ? strerror(errno) : "empty file");
    }
    st_file *f = file_new(path);
    if (!f) {
        munmap(map, len);
        close(fd);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    f->map = map;
    f->map_len = len;
    f->fd = fd;
    f->opened = st;
    f->guard = map_guard_add(map, len);
    hadm_status s = parse_header(f, map, len, err);
    if (s) {
        hadm_error_prefix(err, "%s", path);
        st_close(f);
        return s;
    }
    *out = f;
    return HADM_OK;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    map_guard_remove(f->guard);
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->fd >= 0)
        close(f->fd);
    cJSON_Delete(f->root);
    free(f->tensors);
    free(f->path);
    free(f);
}

void st_release_pages(const st_file *f, const void *p, size_t n)
{
    if (!f->map || (const uint8_t *)p < (const uint8_t *)f->map ||
        (const uint8_t *)p + n > (const uint8_t *)f->map + f->map_len)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void st_release_all(const st_file *f)
{
    if (f->map)
        st_release_pages(f, f->map, f->map_len);
}

hadm_status st_check_intact(const st_file *f, hadm_error *err)
{
    static const char how[] = "reload the model (to update a model file, write the new one "
                              "elsewhere and rename it over the old)";
    if (!f->map)
        return HADM_OK;
    if (map_guard_hit(f->guard))
        return hadm_fail(err, HADM_ERR_IO, "%s: the file was truncated while in use and its weights "
                         "are gone; %s", f->path, how);
    struct stat now;
    if (fstat(f->fd, &now) == 0 &&
        (now.st_size != f->opened.st_size || now.st_mtim.tv_sec != f->opened.st_mtim.tv_sec ||
         now.st_mtim.tv_nsec != f->opened.st_mtim.tv_nsec))
        return hadm_fail(err, HADM_ERR_IO, "%s: the file was modified in place while in use, so the "
                         "weights read from it may mix old and new; %s", f->path, how);
    return HADM_OK;
}

int st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->tensors[i] : NULL; }
const char *st_path(const st_file *f) { return f->path; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof key, cmp_by_name);
}

const char *st_meta(const st_file *f, const char *key)
{
    const cJSON *v = f->meta ? cJSON_GetObjectItemCaseSensitive(f->meta, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- writer ---------------------------------------------------------- */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_entry;

struct st_writer {
    st_entry *e;
    int n, cap;
    cJSON *meta;
};

st_writer *st_writer_new(void)
{
    st_writer *w = calloc(1, sizeof *w);
    if (w && !(w->meta = cJSON_CreateObject())) {
        free(w);
        return NULL;
    }
    return w;
}

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name);
    free(w->e);
    cJSON_Delete(w->meta);
    free(w);
}

hadm_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
                          const int64_t *shape, const void *data, hadm_error *err)
{
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return hadm_fail(err, HADM_ERR_ARG, "tensor '%s': %d dimensions", name, ndim);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        st_entry *e = realloc(w->e, (size_t)cap * sizeof *e);
        if (!e)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        w->e = e;
        w->cap = cap;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name)))
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    e->data = data;
    e->nbytes = numel * st_dtype_size(dtype);
    w->n++;
    return HADM_OK;
}

hadm_status st_writer_meta(st_writer *w, const char *key, const char *value, hadm_error *err)
{
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    if (!cJSON_AddStringToObject(w->meta, key, value))
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    return HADM_OK;
}

/* Wider elements first (stable otherwise): with the header padded to 8
 * bytes, every tensor then starts on a multiple of its element size, which
 * the loader needs to use the data in place. */
static void order_by_element_size(st_writer *w)
{
    for (int i = 1; i < w->n; i++) {
        st_entry e = w->e[i];
        int j = i;
        for (; j > 0 && st_dtype_size(w->e[j - 1].dtype) < st_dtype_size(e.dtype); j--)
            w->e[j] = w->e[j - 1];
        w->e[j] = e;
    }
}

static char *writer_header(st_writer *w, size_t *len)
{
    order_by_element_size(w);
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddItemReferenceToObject(root, "__metadata__", w->meta);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        st_entry *e = &w->e[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dtype", st_dtype_name(e->dtype));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + e->nbytes)));
        cJSON_AddItemToObject(root, e->name, o);
        off += e->nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        return NULL;
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7;
    char *h = malloc(padded + 1);
    if (h) {
        memcpy(h, json, n);
        memset(h + n, ' ', padded - n);
        h[padded] = 0;
        *len = padded;
    }
    free(json);
    return h;
}

static int write_all(st_writer *w, FILE *fp, const char *header, size_t hlen)
{
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(header, 1, hlen, fp) == hlen;
    for (int i = 0; ok && i < w->n; i++)
        ok = w->e[i].nbytes == 0 || fwrite(w->e[i].data, 1, w->e[i].nbytes, fp) == w->e[i].nbytes;
    return ok;
}

hadm_status st_writer_serialize(st_writer *w, void **buf, size_t *len, hadm_error *err)
{
    size_t hlen = 0;
    char *header = writer_header(w, &hlen);
    char *mem = NULL;
    size_t size = 0;
    FILE *fp = header ? open_memstream(&mem, &size) : NULL;
    int ok = fp && write_all(w, fp, header, hlen);
    if (fp && fclose(fp) != 0)
        ok = 0;
    free(header);
    if (!ok) {
        free(mem);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory serialising a model");
    }
    *buf = mem;
    *len = size;
    return HADM_OK;
}

hadm_status st_writer_save(st_writer *w, const char *path, hadm_error *err)
{
    size_t hlen = 0;
    char *header = writer_header(w, &hlen);
    if (!header)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory building the header");
    size_t plen = strlen(path) + 16;
    char *tmp = malloc(plen);
    if (!tmp) {
        free(header);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, plen, "%s.tmp%d", path, (int)getpid());
    struct stat old;
    hadm_status s = HADM_OK;
    if (stat(path, &old) == 0 && !S_ISREG(old.st_mode)) { /* renaming over /dev/null would replace it */
        s = hadm_fail(err, HADM_ERR_IO, "%s: exists and is not a regular file", path);
        goto out;
    }
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        s = hadm_fail(err, HADM_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    /* Flushed to disk before the rename, so a crash cannot leave the new
     * name on an empty file. */
    int ok = write_all(w, fp, header, hlen) && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fclose(fp) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        s = hadm_fail(err, HADM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    free(header);
    return s;
}
