/* The .pth reader: zip directory, pickle machine, tensor views. An input that
 * starts with "PK" is a whole archive. Anything else is a data.pkl: it is
 * stored into an archive built here, with a CRC that matches (so mutations
 * reach the pickle machine instead of the CRC check) and storage records
 * "0".."19" sized as in tests/data/ckpt-small.pth (so its pickle, the seed,
 * resolves every tensor). Then every tensor the pickle holds is checked and,
 * when small, read; a view that comes back must lie inside the archive. */
#include <string.h>

#include "fuzz.h"
#include "io/pth.h"

#define MAX_WALK_DEPTH 64
#define MAX_READ_ELEMS 4096

static const uint16_t RECORD_SIZES[] = {48, 16, 144, 4, 48, 48, 4, 16, 16, 48,
                                        16, 144, 10, 12, 48, 32, 4, 0, 160, 12};
enum { N_RECORDS = sizeof RECORD_SIZES / sizeof *RECORD_SIZES };

typedef struct {
    uint8_t *p;
    size_t len, cap;
} zbuf;

static void put(zbuf *z, const void *src, size_t n)
{
    if (z->len + n > z->cap)
        return; /* sized up front; never reached */
    memcpy(z->p + z->len, src, n);
    z->len += n;
}

static void put16(zbuf *z, unsigned v) { put(z, (uint8_t[]){(uint8_t)v, (uint8_t)(v >> 8)}, 2); }
static void put32(zbuf *z, uint32_t v) { put16(z, v & 0xFFFF), put16(z, v >> 16); }

/* Local header + data; returns the header's offset. */
static uint32_t put_local(zbuf *z, const char *name, const uint8_t *data, uint32_t n, uint32_t crc)
{
    uint32_t at = (uint32_t)z->len;
    put32(z, 0x04034b50u), put16(z, 20), put16(z, 0), put16(z, 0), put32(z, 0);
    put32(z, crc), put32(z, n), put32(z, n), put16(z, (unsigned)strlen(name)), put16(z, 0);
    put(z, name, strlen(name));
    put(z, data, n);
    return at;
}

static void put_central(zbuf *z, const char *name, uint32_t n, uint32_t crc, uint32_t at)
{
    put32(z, 0x02014b50u), put16(z, 20), put16(z, 20), put16(z, 0), put16(z, 0), put32(z, 0);
    put32(z, crc), put32(z, n), put32(z, n), put16(z, (unsigned)strlen(name)), put16(z, 0), put16(z, 0);
    put16(z, 0), put16(z, 0), put32(z, 0), put32(z, at);
    put(z, name, strlen(name));
}

static uint8_t *wrap_pickle(const uint8_t *pkl, size_t n, size_t *out_len)
{
    uint8_t rec[256];
    for (size_t i = 0; i < sizeof rec; i++)
        rec[i] = (uint8_t)(i * 37 + 11);
    zbuf z = {NULL, 0, n + 4096 + (N_RECORDS + 1) * 160};
    if (n > UINT32_MAX / 2 || !(z.p = malloc(z.cap)))
        return NULL;
    char name[N_RECORDS + 1][32];
    uint32_t at[N_RECORDS + 1], size[N_RECORDS + 1], crc[N_RECORDS + 1];
    snprintf(name[0], sizeof name[0], "archive/data.pkl");
    size[0] = (uint32_t)n, crc[0] = pth_crc32(0, pkl, n);
    at[0] = put_local(&z, name[0], pkl, size[0], crc[0]);
    for (int k = 0; k < N_RECORDS; k++) {
        snprintf(name[k + 1], sizeof name[k + 1], "archive/data/%d", k);
        size[k + 1] = RECORD_SIZES[k], crc[k + 1] = pth_crc32(0, rec, RECORD_SIZES[k]);
        at[k + 1] = put_local(&z, name[k + 1], rec, size[k + 1], crc[k + 1]);
    }
    uint32_t cd = (uint32_t)z.len;
    for (int k = 0; k <= N_RECORDS; k++)
        put_central(&z, name[k], size[k], crc[k], at[k]);
    uint32_t cd_size = (uint32_t)z.len - cd;
    put32(&z, 0x06054b50u), put16(&z, 0), put16(&z, 0), put16(&z, N_RECORDS + 1), put16(&z, N_RECORDS + 1);
    put32(&z, cd_size), put32(&z, cd), put16(&z, 0);
    *out_len = z.len;
    return z.p;
}

static void check_tensor(pth_file *f, const pth_tensor *t, const uint8_t *base, size_t len)
{
    hadm_error err = {0};
    if (pth_tensor_check(f, t, &err))
        return;
    const float *view = NULL;
    if (!pth_tensor_view_f32(f, t, &view, &err) && view) {
        const uint8_t *p = (const uint8_t *)view;
        FUZZ_CHECK(t->numel >= 0 && p >= base && (size_t)t->numel <= len / 4 &&
                   (size_t)(p - base) <= len - (size_t)t->numel * 4);
    }
    if (t->numel < 0 || t->numel > MAX_READ_ELEMS)
        return;
    float *out = malloc(sizeof(float) * (size_t)(t->numel + 1));
    if (out)
        pth_tensor_read_f32(f, t, out, &err);
    free(out);
}

static void walk(pth_file *f, const pth_obj *o, int depth, const uint8_t *base, size_t len)
{
    if (!o || depth > MAX_WALK_DEPTH)
        return;
    switch (o->kind) {
    case PTH_TENSOR:
        check_tensor(f, &o->u.tensor, base, len);
        break;
    case PTH_TUPLE:
    case PTH_LIST:
        for (size_t i = 0; i < o->u.seq.n; i++)
            walk(f, o->u.seq.items[i], depth + 1, base, len);
        break;
    case PTH_DICT:
        for (size_t i = 0; i < o->u.dict.n; i++) {
            walk(f, o->u.dict.keys[i], depth + 1, base, len);
            walk(f, o->u.dict.vals[i], depth + 1, base, len);
        }
        break;
    default:
        break;
    }
}

int fuzz_pth(const uint8_t *data, size_t size)
{
    const uint8_t *buf = data;
    size_t len = size;
    uint8_t *owned = NULL;
    if (size < 2 || memcmp(data, "PK", 2)) {
        if (!(owned = wrap_pickle(data, size, &len)))
            return 0;
        buf = owned;
    }
    pth_file *f = NULL;
    hadm_error err = {0};
    if (pth_open_buffer(buf, len, "<fuzz>", &f, &err) == HADM_OK) {
        FUZZ_CHECK(pth_root(f) && pth_archive_name(f));
        walk(f, pth_root(f), 0, buf, len);
        pth_dict_get(pth_root(f), "model");
        pth_close(f);
    } else {
        FUZZ_CHECK(!f && err.msg[0]);
    }
    free(owned);
    return 0;
}

FUZZ_ENTRY(fuzz_pth)
