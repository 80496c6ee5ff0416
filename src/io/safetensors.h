/* safetensors: a mapped, fully validated view of a .safetensors file, and a
 * writer for the files hadm produces (synth, convert, quantize). */
#ifndef HADM_IO_SAFETENSORS_H
#define HADM_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

typedef enum { ST_F32, ST_F64, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I8, ST_U8, ST_BOOL } st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;   /* inside the mapping; valid until st_close */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

/* Maps and validates: header length, JSON syntax, every entry's dtype, shape,
 * offsets (in bounds, size matching dtype x shape, no overlap). Errors name
 * the file and the problem. */
hadm_status st_open(const char *path, st_file **out, hadm_error *err);
/* Same checks on a buffer the caller keeps alive (tests, in-memory models). */
hadm_status st_open_buffer(const void *buf, size_t len, const char *label,
                           st_file **out, hadm_error *err);
void st_close(st_file *f);
/* Tells the kernel the pages wholly inside [p, p+n) of a mapped file are not
 * needed now (they are re-read from the file if touched again). No-op for
 * buffers opened with st_open_buffer. */
void st_release_pages(const st_file *f, const void *p, size_t n);
/* The same for the whole mapping. */
void st_release_all(const st_file *f);

/* After reading weights from a mapped file: an error when the file was
 * truncated (the mapping then reads as zeros, see io/mapguard.h) or written
 * in place since it was opened, so whatever was computed must be dropped.
 * Renaming a new file over the old one is safe and is not an error. */
hadm_status st_check_intact(const st_file *f, hadm_error *err);

int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);
const st_tensor *st_find(const st_file *f, const char *name);
/* __metadata__ value or NULL. */
const char *st_meta(const st_file *f, const char *key);
const char *st_path(const st_file *f);
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);

/* ---- writer ---- */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* Copies name; data is referenced until st_writer_save returns. */
hadm_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
                          const int64_t *shape, const void *data, hadm_error *err);
hadm_status st_writer_meta(st_writer *w, const char *key, const char *value, hadm_error *err);
/* The whole file image in one malloc'd buffer (caller frees). */
hadm_status st_writer_serialize(st_writer *w, void **buf, size_t *len, hadm_error *err);
/* Writes atomically (temp file + rename). */
hadm_status st_writer_save(st_writer *w, const char *path, hadm_error *err);
void st_writer_free(st_writer *w);

#endif
