/* What torch.save's pickle means: persistent ids name storages (records
 * <archive>/data/<key>), _rebuild_tensor_v2 makes a strided view of one, and
 * OrderedDict is a dict. Views are checked against their storage when built;
 * bytes are read (and CRC-checked) only when a tensor is asked for. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "io/pth.h"
#include "util/err.h"

static const struct { const char *name; pth_dtype t; } STORAGE_TYPES[] = {
    {"FloatStorage", PTH_F32},  {"DoubleStorage", PTH_F64}, {"HalfStorage", PTH_F16},
    {"BFloat16Storage", PTH_BF16}, {"LongStorage", PTH_I64}, {"IntStorage", PTH_I32},
    {"ShortStorage", PTH_I16},  {"CharStorage", PTH_I8},    {"ByteStorage", PTH_U8},
    {"BoolStorage", PTH_BOOL},  {"ComplexFloatStorage", PTH_C64}, {"ComplexDoubleStorage", PTH_C128},
};

static int fail(char *why, size_t n, const char *msg)
{
    snprintf(why, n, "%s", msg);
    return 1;
}

static int is_str(const pth_obj *o, const char *s) { return o->kind == PTH_STR && !strcmp(o->u.str.s, s); }
static int is_int(const pth_obj *o) { return o->kind == PTH_INT && !o->big; }
static int is_global(const pth_obj *o, const char *module, const char *name)
{
    return o->kind == PTH_GLOBAL && !strcmp(o->u.global.module, module) && !strcmp(o->u.global.name, name);
}

/* ('storage', torch.<T>Storage, key, location, numel) */
int pth_persistent_load(pth_arena *a, const pth_obj *pid, pth_obj *out, char *why, size_t whylen)
{
    if (pid->kind != PTH_TUPLE || pid->u.seq.n != 5 || !is_str(pid->u.seq.items[0], "storage"))
        return fail(why, whylen, "persistent id is not a torch ('storage', ...) tuple");
    pth_obj *const *it = pid->u.seq.items;
    if (it[1]->kind != PTH_GLOBAL || strcmp(it[1]->u.global.module, "torch") != 0)
        return fail(why, whylen, "storage type is not a torch class");
    if (it[2]->kind != PTH_STR || !it[2]->u.str.len || it[2]->u.str.len > 64 ||
        strspn(it[2]->u.str.s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") !=
            it[2]->u.str.len)
        return fail(why, whylen, "storage key is not a short alphanumeric name");
    if (it[3]->kind != PTH_STR || !is_int(it[4]) || it[4]->u.i < 0 || it[4]->u.i > (INT64_C(1) << 50))
        return fail(why, whylen, "storage location or size malformed");
    pth_storage *st = pth_arena_alloc(a, sizeof *st);
    if (!st)
        return fail(why, whylen, "out of memory");
    st->key = it[2]->u.str.s;
    st->location = it[3]->u.str.s;
    st->type_name = it[1]->u.global.name;
    st->numel = it[4]->u.i;
    st->dtype = PTH_DTYPE_UNKNOWN;
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof *STORAGE_TYPES; i++)
        if (!strcmp(st->type_name, STORAGE_TYPES[i].name))
            st->dtype = STORAGE_TYPES[i].t;
    out->kind = PTH_STORAGE;
    out->u.storage = st;
    return 0;
}

static int int_tuple(const pth_obj *o, int64_t *v, int max, int *n)
{
    if (o->kind != PTH_TUPLE || o->u.seq.n > (size_t)max)
        return 0;
    for (size_t i = 0; i < o->u.seq.n; i++) {
        const pth_obj *x = o->u.seq.items[i];
        if (!is_int(x) || x->u.i < 0 || x->u.i > (INT64_C(1) << 40))
            return 0;
        v[i] = x->u.i;
    }
    *n = (int)o->u.seq.n;
    return 1;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static int rebuild_tensor(const pth_obj *args, pth_obj *out, char *why, size_t whylen)
{
    if (args->u.seq.n < 4)
        return fail(why, whylen, "_rebuild_tensor_v2 with fewer than 4 arguments");
    pth_obj *const *a = args->u.seq.items;
    pth_tensor t = {0};
    int nstride = -1;
    if (a[0]->kind != PTH_STORAGE)
        return fail(why, whylen, "tensor without a storage");
    if (!is_int(a[1]) || a[1]->u.i < 0)
        return fail(why, whylen, "tensor storage offset malformed");
    if (!int_tuple(a[2], t.shape, PTH_MAX_DIMS, &t.ndim) || !int_tuple(a[3], t.stride, PTH_MAX_DIMS, &nstride) ||
        nstride != t.ndim)
        return fail(why, whylen, "tensor shape or stride malformed (negative, too large or more than 8 dims)");
    t.storage = a[0]->u.storage;
    t.offset = a[1]->u.i;
    t.numel = 1;
    int64_t last = t.offset;   /* highest element the view addresses */
    for (int i = 0; i < t.ndim; i++) {
        if (t.shape[i] && t.numel > (INT64_C(1) << 50) / t.shape[i])
            return fail(why, whylen, "tensor has too many elements");
        t.numel *= t.shape[i];
        int64_t reach;
        if (t.shape[i] && (__builtin_mul_overflow(t.shape[i] - 1, t.stride[i], &reach) ||
                           __builtin_add_overflow(last, reach, &last)))
            return fail(why, whylen, "tensor view addresses beyond 64-bit offsets");
    }
    if (t.numel && last >= t.storage->numel)
        return fail(why, whylen, "tensor view reaches past the end of its storage");
    out->kind = PTH_TENSOR;
    out->u.tensor = t;
    return 0;
}

int pth_reduce(pth_arena *a, const pth_obj *fn, const pth_obj *args, pth_obj *out, char *why, size_t whylen)
{
    (void)a;
    if (args->kind != PTH_TUPLE)
        return fail(why, whylen, "REDUCE arguments are not a tuple");
    out->kind = PTH_OBJECT;
    if (fn->kind != PTH_GLOBAL)
        return 0;
    out->u.global = fn->u.global;
    if (is_global(fn, "collections", "OrderedDict") && args->u.seq.n == 0) {
        memset(&out->u, 0, sizeof out->u);
        out->kind = PTH_DICT;
    } else if (is_global(fn, "torch._utils", "_rebuild_tensor_v2") ||
               is_global(fn, "torch._utils", "_rebuild_tensor")) {
        return rebuild_tensor(args, out, why, whylen);
    } else if ((is_global(fn, "torch._utils", "_rebuild_parameter") ||
                is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) &&
               args->u.seq.n >= 1 && args->u.seq.items[0]->kind == PTH_TENSOR) {
        out->kind = PTH_TENSOR;
        out->u.tensor = args->u.seq.items[0]->u.tensor;
    }
    return 0;
}

/* ---- reading ---- */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
    if (e == 0x1F) {
        bits = sign | 0x7F800000u | m << 13;
    } else if (e) {
        bits = sign | (e + 112) << 23 | m << 13;
    } else if (!m) {
        bits = sign;
    } else {   /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400)) {
            m <<= 1;
            e--;
        }
        bits = sign | e << 23 | (m & 0x3FF) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float element(const uint8_t *p, pth_dtype t)
{
    switch (t) {
    case PTH_F32: { float f; memcpy(&f, p, 4); return f; }
    case PTH_F64: { double d; memcpy(&d, p, 8); return (float)d; }
    case PTH_F16: return half_to_float((uint16_t)(p[0] | p[1] << 8));
    case PTH_BF16: {
        uint32_t bits = (uint32_t)(p[0] | p[1] << 8) << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    default: return 0;
    }
}

static int is_contiguous(const pth_tensor *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect)
            return 0;
        expect *= t->shape[i];
    }
    return 1;
}

static hadm_status float_source(pth_file *f, const pth_tensor *t, const uint8_t **bytes, hadm_error *err)
{
    pth_dtype d = t->storage->dtype;
    if (d != PTH_F32 && d != PTH_F64 && d != PTH_F16 && d != PTH_BF16)
        return hadm_fail(err, HADM_ERR_FORMAT, "storage %s holds %s, not floating point", t->storage->key,
                         t->storage->type_name);
    return pth_storage_bytes(f, t->storage, bytes, err);
}

hadm_status pth_tensor_check(pth_file *f, const pth_tensor *t, hadm_error *err)
{
    const uint8_t *b;
    return pth_storage_bytes(f, t->storage, &b, err);
}

hadm_status pth_tensor_view_f32(pth_file *f, const pth_tensor *t, const float **data, hadm_error *err)
{
    *data = NULL;
    const uint8_t *b;
    hadm_status s = float_source(f, t, &b, err);
    if (s || t->storage->dtype != PTH_F32 || !is_contiguous(t))
        return s;
    const uint8_t *p = b + t->offset * 4;
    if ((uintptr_t)p % sizeof(float) == 0)
        *data = (const float *)(const void *)p;
    return HADM_OK;
}

hadm_status pth_tensor_read_f32(pth_file *f, const pth_tensor *t, float *out, hadm_error *err)
{
    const uint8_t *b;
    hadm_status s = float_source(f, t, &b, err);
    if (s || !t->numel)
        return s;
    size_t es = pth_dtype_size(t->storage->dtype);
    int64_t idx[PTH_MAX_DIMS] = {0};
    for (int64_t n = 0; n < t->numel; n++) {
        int64_t e = t->offset;
        for (int i = 0; i < t->ndim; i++)
            e += idx[i] * t->stride[i];
        out[n] = element(b + (size_t)e * es, t->storage->dtype);
        for (int i = t->ndim - 1; i >= 0 && ++idx[i] == t->shape[i]; i--)
            idx[i] = 0;
    }
    return HADM_OK;
}
