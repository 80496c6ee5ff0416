/* pth: reads PyTorch checkpoints (`torch.save` zip archives, torch >= 1.6)
 * without Python: a bounds-checked zip reader (stored entries, ZIP64) and a
 * strictly bounded pickle machine for the subset torch.save writes. Nothing in
 * the pickle is ever executed: known globals (OrderedDict, the tensor rebuild
 * functions) are interpreted, any other object becomes an opaque value.
 * The archive is mapped; a tensor's bytes are touched only when it is read. */
#ifndef HADM_IO_PTH_H
#define HADM_IO_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

#define PTH_MAX_DIMS 8

typedef enum {
    PTH_F32, PTH_F64, PTH_F16, PTH_BF16, PTH_I64, PTH_I32, PTH_I16, PTH_I8, PTH_U8, PTH_BOOL,
    PTH_C64, PTH_C128, PTH_DTYPE_UNKNOWN
} pth_dtype;

typedef struct {
    char *key;              /* record name under <archive>/data/ */
    char *location;         /* "cpu", "cuda:0", ... as saved */
    char *type_name;        /* e.g. "FloatStorage" */
    pth_dtype dtype;
    int64_t numel;
} pth_storage;

typedef struct {
    pth_storage *storage;
    int64_t offset;         /* in elements */
    int ndim;
    int64_t shape[PTH_MAX_DIMS];
    int64_t stride[PTH_MAX_DIMS];
    int64_t numel;
} pth_tensor;

typedef enum {
    PTH_NONE, PTH_BOOL_V, PTH_INT, PTH_FLOAT, PTH_STR, PTH_BYTES, PTH_TUPLE, PTH_LIST, PTH_DICT,
    PTH_GLOBAL, PTH_STORAGE, PTH_TENSOR, PTH_OBJECT
} pth_kind;

typedef struct pth_obj pth_obj;
struct pth_obj {
    pth_kind kind;
    union {
        int64_t i;                                   /* INT (BIG set when it did not fit), BOOL */
        double f;
        struct { char *s; size_t len; } str;         /* STR, BYTES: NUL-terminated copy */
        struct { pth_obj **items; size_t n, cap; } seq; /* TUPLE, LIST (also sets) */
        struct { pth_obj **keys, **vals; size_t n, cap; } dict;
        struct { char *module, *name; } global;      /* GLOBAL; OBJECT: what built it */
        pth_storage *storage;
        pth_tensor tensor;
    } u;
    int big;                                         /* INT wider than 64 bits */
};

typedef struct pth_file pth_file;

/* Limits on the pickle, so hostile input cannot exhaust memory or time. */
#define PTH_MAX_PICKLE (1024u * 1024 * 1024)   /* data.pkl bytes */
#define PTH_MAX_STACK (1u << 20)              /* values on the machine's stack */
#define PTH_MAX_MARKS 1000                    /* nested MARKs */
#define PTH_MAX_MEMO (1u << 24)               /* memo slots */
#define PTH_MAX_STRING (16u * 1024 * 1024)    /* one string or bytes value */
#define PTH_MAX_OBJECTS (1u << 25)            /* values created in total */
#define PTH_MAX_ENTRIES (1u << 20)            /* zip entries */

/* Maps and parses `path`: zip directory and the whole pickle. Errors name the
 * file and, for the pickle, the opcode and its offset. */
hadm_status pth_open(const char *path, pth_file **out, hadm_error *err);
/* The same on a caller-owned buffer (tests). */
hadm_status pth_open_buffer(const void *buf, size_t len, const char *label, pth_file **out,
                            hadm_error *err);
void pth_close(pth_file *f);

const pth_obj *pth_root(const pth_file *f);
/* Value of a string key in a DICT, or NULL. */
const pth_obj *pth_dict_get(const pth_obj *dict, const char *key);
const char *pth_kind_name(pth_kind k);
const char *pth_dtype_name(pth_dtype t);
size_t pth_dtype_size(pth_dtype t);
/* The archive's top directory, e.g. "archive". */
const char *pth_archive_name(const pth_file *f);
size_t pth_file_size(const pth_file *f);
/* Bytes of tensor data read so far (CRC checks and copies). */
uint64_t pth_bytes_read(const pth_file *f);

/* Checks the tensor's record exists, its size matches the storage, and every
 * element the view addresses lies inside it. */
hadm_status pth_tensor_check(pth_file *f, const pth_tensor *t, hadm_error *err);
/* Contiguous float32 data straight from the mapping (no copy), or NULL in
 * *data when the tensor is another dtype, strided or misaligned. */
hadm_status pth_tensor_view_f32(pth_file *f, const pth_tensor *t, const float **data, hadm_error *err);
/* Any floating tensor, converted to float32 and made contiguous (t->numel values). */
hadm_status pth_tensor_read_f32(pth_file *f, const pth_tensor *t, float *out, hadm_error *err);

/* ---- internal: shared by pth.c, pth_zip.c, pth_pickle.c ---- */
typedef struct {
    char *name;
    uint64_t local_offset, size;   /* stored entries: compressed size == size */
    uint32_t crc;
    uint16_t method, flags;
    int crc_ok;                    /* CRC-32 verified once */
} pth_entry;

typedef struct pth_arena pth_arena;
void *pth_arena_alloc(pth_arena *a, size_t n);

hadm_status pth_zip_index(const uint8_t *base, size_t len, pth_entry **entries, size_t *n,
                          hadm_error *err);
const pth_entry *pth_zip_find(const pth_entry *entries, size_t n, const char *name);
/* Bounds-checked start of a stored entry's bytes. */
hadm_status pth_zip_data(const uint8_t *base, size_t len, const pth_entry *e, const uint8_t **data,
                         hadm_error *err);
uint32_t pth_crc32(uint32_t crc, const uint8_t *p, size_t n);

/* The meaning of BINPERSID and REDUCE (pth_tensor.c): fill `out` (a fresh
 * value) or return nonzero with a reason in `why`. */
int pth_persistent_load(pth_arena *a, const pth_obj *pid, pth_obj *out, char *why, size_t whylen);
int pth_reduce(pth_arena *a, const pth_obj *callable, const pth_obj *args, pth_obj *out, char *why,
               size_t whylen);

/* A storage's bytes in the mapping: record present, size = numel x element
 * size, CRC-32 verified on first use (pth.c). */
hadm_status pth_storage_bytes(pth_file *f, const pth_storage *st, const uint8_t **data, hadm_error *err);

hadm_status pth_unpickle(const uint8_t *p, size_t n, pth_arena *arena, pth_obj **root,
                         hadm_error *err);

#endif
