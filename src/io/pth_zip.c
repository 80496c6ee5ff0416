/* The zip side of torch.save archives: the central directory (ZIP64 when the
 * archive passes 4 GiB, which the real HADM checkpoints do), every field
 * bounds-checked against the mapping. Local headers are read only for the
 * entries actually used, so skipped storages are never touched. */
#include <stdlib.h>
#include <string.h>

#include "io/pth.h"
#include "util/err.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define U32_MAX 0xFFFFFFFFu

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

/* Slicing-by-8: the checkpoint's weights are about a gigabyte. */
uint32_t pth_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    static int ready;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        crc_init();   /* idempotent: a race only computes the same table twice */
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t a = crc ^ rd32(p), b = rd32(p + 4);
        crc = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF] ^ crc_table[5][(a >> 16) & 0xFF] ^
              crc_table[4][a >> 24] ^ crc_table[3][b & 0xFF] ^ crc_table[2][(b >> 8) & 0xFF] ^
              crc_table[1][(b >> 16) & 0xFF] ^ crc_table[0][b >> 24];
    }
    while (n--)
        crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

typedef struct {
    uint64_t count, cd_offset, cd_size;
} zip_dir;

/* End of central directory, then the ZIP64 record when the locator is there. */
static hadm_status find_directory(const uint8_t *b, size_t len, zip_dir *d, hadm_error *err)
{
    if (len < 22)
        return hadm_fail(err, HADM_ERR_FORMAT, "not a zip archive (%zu bytes)", len);
    size_t lowest = len > 22 + 65535 ? len - 22 - 65535 : 0, eocd = (size_t)-1;
    for (size_t i = len - 22 + 1; i-- > lowest;)
        if (rd32(b + i) == SIG_EOCD && i + 22 + rd16(b + i + 20) == len) {
            eocd = i;
            break;
        }
    if (eocd == (size_t)-1)
        return hadm_fail(err, HADM_ERR_FORMAT, "not a zip archive (no end-of-directory record)");
    d->count = rd16(b + eocd + 10);
    d->cd_size = rd32(b + eocd + 12);
    d->cd_offset = rd32(b + eocd + 16);
    if (rd16(b + eocd + 4) != 0 || rd16(b + eocd + 6) != 0)
        return hadm_fail(err, HADM_ERR_FORMAT, "multi-disk zip archives are not supported");
    if (eocd >= 20 && rd32(b + eocd - 20) == SIG_LOC64) {
        uint64_t rec = rd64(b + eocd - 20 + 8);
        if (rec > len || len - rec < 56 || rd32(b + rec) != SIG_EOCD64)
            return hadm_fail(err, HADM_ERR_FORMAT, "bad ZIP64 end-of-directory offset %llu",
                             (unsigned long long)rec);
        d->count = rd64(b + rec + 32);
        d->cd_size = rd64(b + rec + 40);
        d->cd_offset = rd64(b + rec + 48);
    }
    if (d->cd_offset > len || d->cd_size > len - d->cd_offset)
        return hadm_fail(err, HADM_ERR_FORMAT, "central directory (offset %llu, %llu bytes) lies outside "
                         "the %zu-byte file (truncated download?)", (unsigned long long)d->cd_offset,
                         (unsigned long long)d->cd_size, len);
    if (d->count > PTH_MAX_ENTRIES || d->count > d->cd_size / 46)
        return hadm_fail(err, HADM_ERR_FORMAT, "implausible zip entry count %llu", (unsigned long long)d->count);
    return HADM_OK;
}

/* The ZIP64 extra field replaces exactly the header fields that read 0xFFFFFFFF. */
static hadm_status read_zip64_extra(const uint8_t *x, size_t xlen, pth_entry *e, uint64_t *csize,
                                    int need_usize, int need_csize, int need_offset, hadm_error *err)
{
    for (size_t i = 0; i + 4 <= xlen;) {
        uint16_t id = rd16(x + i), sz = rd16(x + i + 2);
        if (sz > xlen - i - 4)
            break;
        if (id == 1) {
            const uint8_t *f = x + i + 4;
            size_t need = 8u * (size_t)(need_usize + need_csize + need_offset);
            if (sz < need)
                return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s': short ZIP64 field", e->name);
            if (need_usize)
                e->size = rd64(f), f += 8;
            if (need_csize)
                *csize = rd64(f), f += 8;
            if (need_offset)
                e->local_offset = rd64(f);
            return HADM_OK;
        }
        i += 4 + (size_t)sz;
    }
    return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s': ZIP64 field missing", e->name);
}

static hadm_status read_central_entry(const uint8_t *b, size_t len, size_t *pos, size_t end,
                                      pth_entry *e, hadm_error *err)
{
    size_t p = *pos;
    if (end - p < 46 || rd32(b + p) != SIG_CENTRAL)
        return hadm_fail(err, HADM_ERR_FORMAT, "bad central directory entry at offset %zu", p);
    size_t nlen = rd16(b + p + 28), xlen = rd16(b + p + 30), clen = rd16(b + p + 32);
    if (end - p - 46 < nlen + xlen + clen)
        return hadm_fail(err, HADM_ERR_FORMAT, "central directory entry at offset %zu overruns it", p);
    if (!(e->name = malloc(nlen + 1)))
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    memcpy(e->name, b + p + 46, nlen);
    e->name[nlen] = 0;
    if (strlen(e->name) != nlen)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry name with a NUL byte at offset %zu", p);
    e->flags = rd16(b + p + 8);
    e->method = rd16(b + p + 10);
    e->crc = rd32(b + p + 16);
    uint64_t csize = rd32(b + p + 20);
    e->size = rd32(b + p + 24);
    e->local_offset = rd32(b + p + 42);
    int nu = e->size == U32_MAX, nc = csize == U32_MAX, no = e->local_offset == U32_MAX;
    if (nu || nc || no) {
        hadm_status s = read_zip64_extra(b + p + 46 + nlen, xlen, e, &csize, nu, nc, no, err);
        if (s)
            return s;
    }
    if (e->method == 0 && csize != e->size)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s': stored sizes disagree", e->name);
    if (e->local_offset > len || e->size > len)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s' (offset %llu, %llu bytes) lies outside the "
                         "%zu-byte file (truncated?)", e->name, (unsigned long long)e->local_offset,
                         (unsigned long long)e->size, len);
    *pos = p + 46 + nlen + xlen + clen;
    return HADM_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const pth_entry *)a)->name, ((const pth_entry *)b)->name);
}

hadm_status pth_zip_index(const uint8_t *base, size_t len, pth_entry **entries, size_t *n,
                          hadm_error *err)
{
    *entries = NULL;
    *n = 0;
    zip_dir d = {0};
    hadm_status s = find_directory(base, len, &d, err);
    if (s)
        return s;
    pth_entry *es = calloc(d.count ? d.count : 1, sizeof *es);
    if (!es)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    size_t pos = (size_t)d.cd_offset, end = (size_t)(d.cd_offset + d.cd_size), k = 0;
    for (; k < d.count && !s; k++)
        s = read_central_entry(base, len, &pos, end, &es[k], err);
    *entries = es;
    *n = k;
    if (s)
        return s;
    qsort(es, k, sizeof *es, cmp_entry);
    for (size_t i = 1; i < k; i++)
        if (!strcmp(es[i].name, es[i - 1].name))
            return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s' appears twice", es[i].name);
    return HADM_OK;
}

const pth_entry *pth_zip_find(const pth_entry *entries, size_t n, const char *name)
{
    pth_entry key = {.name = (char *)name};
    return n ? bsearch(&key, entries, n, sizeof *entries, cmp_entry) : NULL;
}

hadm_status pth_zip_data(const uint8_t *base, size_t len, const pth_entry *e, const uint8_t **data,
                         hadm_error *err)
{
    if (e->method != 0)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s' is compressed (method %u); torch.save "
                         "stores entries uncompressed: was the archive re-zipped?", e->name, e->method);
    if (e->flags & 1)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s' is encrypted", e->name);
    uint64_t off = e->local_offset;
    if (off > len || len - off < 30 || rd32(base + off) != SIG_LOCAL)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s': no local header at offset %llu", e->name,
                         (unsigned long long)off);
    uint64_t start = off + 30 + rd16(base + off + 26) + rd16(base + off + 28);
    if (start > len || e->size > len - start)
        return hadm_fail(err, HADM_ERR_FORMAT, "entry '%s': %llu bytes at offset %llu run past the end "
                         "of the %zu-byte file (truncated?)", e->name, (unsigned long long)e->size,
                         (unsigned long long)start, len);
    *data = base + start;
    return HADM_OK;
}
