/* Opening a torch.save archive: map it, index the zip, find <archive>/data.pkl
 * and run the pickle; storages are resolved to their records on demand. */
#include "io/pth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"

#define ARENA_CHUNK (1u << 20)
#define ARENA_LIMIT (UINT64_C(4) << 30)

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} chunk;

struct pth_arena {
    chunk *head;
    uint64_t total;
};

void *pth_arena_alloc(pth_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!n)
        n = 16;
    chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        if (a->total + cap > ARENA_LIMIT || !(c = malloc(sizeof *c + cap)))
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->total += cap;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(pth_arena *a)
{
    while (a->head) {
        chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

struct pth_file {
    char *label;
    const uint8_t *base;
    size_t len;
    void *map;              /* set when we mapped the file */
    pth_entry *entries;
    size_t n_entries;
    char *archive;          /* top directory, e.g. "archive" */
    pth_arena arena;
    pth_obj *root;
    uint64_t bytes_read;
};

void pth_close(pth_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_entries; i++)
        free(f->entries[i].name);
    free(f->entries);
    if (f->map)
        munmap(f->map, f->len);
    arena_free(&f->arena);
    free(f->archive);
    free(f->label);
    free(f);
}

/* A file that is no zip may still be an old checkpoint: say so. */
static hadm_status explain_not_zip(const pth_file *f, hadm_status s, hadm_error *err)
{
    if (f->len >= 2 && f->base[0] == 0x80 && f->base[1] <= 5)
        return hadm_fail(err, HADM_ERR_FORMAT, "legacy torch.save format (torch < 1.6): load and re-save "
                         "it with torch >= 1.6");
    if (f->len > 262 && !memcmp(f->base + 257, "ustar", 5))
        return hadm_fail(err, HADM_ERR_FORMAT, "legacy tar torch.save format is not supported");
    return s;
}

static hadm_status find_pickle(pth_file *f, const pth_entry **pkl, hadm_error *err)
{
    *pkl = NULL;
    for (size_t i = 0; i < f->n_entries; i++) {
        const char *name = f->entries[i].name, *slash = strchr(name, '/');
        if (!slash || strcmp(slash, "/data.pkl") != 0)
            continue;
        if (*pkl)
            return hadm_fail(err, HADM_ERR_FORMAT, "two pickles in one archive ('%s', '%s')", (*pkl)->name, name);
        *pkl = &f->entries[i];
        if (!(f->archive = strndup(name, (size_t)(slash - name))))
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    if (!*pkl)
        return hadm_fail(err, HADM_ERR_FORMAT, "zip archive without <name>/data.pkl: not a torch.save checkpoint");
    return HADM_OK;
}

static hadm_status parse(pth_file *f, hadm_error *err)
{
    hadm_status s = pth_zip_index(f->base, f->len, &f->entries, &f->n_entries, err);
    if (s)
        return explain_not_zip(f, s, err);
    const pth_entry *pkl;
    const uint8_t *p;
    if ((s = find_pickle(f, &pkl, err)) || (s = pth_zip_data(f->base, f->len, pkl, &p, err)))
        return s;
    if (pth_crc32(0, p, (size_t)pkl->size) != pkl->crc)
        return hadm_fail(err, HADM_ERR_FORMAT, "'%s' fails its CRC check (corrupt file)", pkl->name);
    return pth_unpickle(p, (size_t)pkl->size, &f->arena, &f->root, err);
}

static hadm_status open_common(pth_file *f, hadm_error *err, pth_file **out)
{
    hadm_status s = parse(f, err);
    if (s) {
        hadm_error_prefix(err, "%s", f->label);
        pth_close(f);
        return s;
    }
    *out = f;
    return HADM_OK;
}

hadm_status pth_open_buffer(const void *buf, size_t len, const char *label, pth_file **out, hadm_error *err)
{
    *out = NULL;
    pth_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label ? label : "<buffer>"))) {
        free(f);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    f->base = buf;
    f->len = len;
    return open_common(f, err, out);
}

hadm_status pth_open(const char *path, pth_file **out, hadm_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hadm_fail(err, HADM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return hadm_fail(err, HADM_ERR_IO, "%s: not a regular non-empty file", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return hadm_fail(err, HADM_ERR_IO, "%s: mmap: %s", path, strerror(e));
    pth_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(path))) {
        free(f);
        munmap(map, (size_t)st.st_size);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    f->map = map;
    f->base = map;
    f->len = (size_t)st.st_size;
    return open_common(f, err, out);
}

const pth_obj *pth_root(const pth_file *f) { return f->root; }
const char *pth_archive_name(const pth_file *f) { return f->archive; }
size_t pth_file_size(const pth_file *f) { return f->len; }
uint64_t pth_bytes_read(const pth_file *f) { return f->bytes_read; }

const pth_obj *pth_dict_get(const pth_obj *d, const char *key)
{
    if (!d || d->kind != PTH_DICT)
        return NULL;
    for (size_t i = d->u.dict.n; i-- > 0;) {   /* the last assignment wins, as in Python */
        const pth_obj *k = d->u.dict.keys[i];
        if (k->kind == PTH_STR && !strcmp(k->u.str.s, key))
            return d->u.dict.vals[i];
    }
    return NULL;
}

hadm_status pth_storage_bytes(pth_file *f, const pth_storage *st, const uint8_t **data, hadm_error *err)
{
    size_t es = pth_dtype_size(st->dtype);
    if (!es)
        return hadm_fail(err, HADM_ERR_FORMAT, "storage %s has unknown type torch.%s", st->key, st->type_name);
    char name[400];
    if ((size_t)snprintf(name, sizeof name, "%s/data/%s", f->archive, st->key) >= sizeof name)
        return hadm_fail(err, HADM_ERR_FORMAT, "archive name too long");
    pth_entry *e = (pth_entry *)pth_zip_find(f->entries, f->n_entries, name);
    if (!e)
        return hadm_fail(err, HADM_ERR_FORMAT, "record '%s' for storage %s is missing", name, st->key);
    if (e->size != (uint64_t)st->numel * es)
        return hadm_fail(err, HADM_ERR_FORMAT, "record '%s' holds %llu bytes, storage of %lld x %zu expects %llu",
                         name, (unsigned long long)e->size, (long long)st->numel, es,
                         (unsigned long long)st->numel * es);
    hadm_status s = pth_zip_data(f->base, f->len, e, data, err);
    if (s || e->crc_ok)
        return s;
    if (pth_crc32(0, *data, (size_t)e->size) != e->crc)
        return hadm_fail(err, HADM_ERR_FORMAT, "record '%s' fails its CRC check (corrupt file)", name);
    e->crc_ok = 1;
    f->bytes_read += e->size;
    return HADM_OK;
}

const char *pth_kind_name(pth_kind k)
{
    static const char *names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                  "dict", "global", "storage", "tensor", "object"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

static const struct { const char *name; size_t size; } DTYPES[] = {
    [PTH_F32] = {"float32", 4}, [PTH_F64] = {"float64", 8}, [PTH_F16] = {"float16", 2},
    [PTH_BF16] = {"bfloat16", 2}, [PTH_I64] = {"int64", 8}, [PTH_I32] = {"int32", 4},
    [PTH_I16] = {"int16", 2},   [PTH_I8] = {"int8", 1},     [PTH_U8] = {"uint8", 1},
    [PTH_BOOL] = {"bool", 1},   [PTH_C64] = {"complex64", 8}, [PTH_C128] = {"complex128", 16},
    [PTH_DTYPE_UNKNOWN] = {"unknown", 0},
};

const char *pth_dtype_name(pth_dtype t) { return (unsigned)t <= PTH_DTYPE_UNKNOWN ? DTYPES[t].name : "?"; }
size_t pth_dtype_size(pth_dtype t) { return (unsigned)t <= PTH_DTYPE_UNKNOWN ? DTYPES[t].size : 0; }
