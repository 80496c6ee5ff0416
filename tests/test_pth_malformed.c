/* The .pth reader on hostile and broken input: truncated archives, bad zip
 * offsets, corrupt records, pickles with wrong opcodes, huge lengths, deep
 * nesting, cycles and bad memo use, and random mutations of a real pickle.
 * Each must give a clear error (or a harmless success), never a crash, hang
 * or leak; run under ASan/UBSan in CI. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/pth.h"
#include "testutil.h"

/* ---- a minimal stored-zip writer for hand-made archives ---- */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put16(buf *b, unsigned v) { unsigned char x[2] = {v & 255, (v >> 8) & 255}; put(b, x, 2); }
static void put32(buf *b, uint32_t v) { put16(b, v & 0xFFFF); put16(b, v >> 16); }

typedef struct { const char *name; const void *data; size_t len; } record;

static buf make_zip(const record *r, int n)
{
    buf z = {0}, cd = {0};
    for (int i = 0; i < n; i++) {
        uint32_t off = (uint32_t)z.n, crc = pth_crc32(0, r[i].data, r[i].len);
        size_t nl = strlen(r[i].name);
        put32(&z, 0x04034b50); put16(&z, 20); put16(&z, 0); put16(&z, 0); put32(&z, 0);
        put32(&z, crc); put32(&z, (uint32_t)r[i].len); put32(&z, (uint32_t)r[i].len);
        put16(&z, (unsigned)nl); put16(&z, 0); put(&z, r[i].name, nl); put(&z, r[i].data, r[i].len);
        put32(&cd, 0x02014b50); put16(&cd, 20); put16(&cd, 20); put16(&cd, 0); put16(&cd, 0); put32(&cd, 0);
        put32(&cd, crc); put32(&cd, (uint32_t)r[i].len); put32(&cd, (uint32_t)r[i].len);
        put16(&cd, (unsigned)nl); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0); put32(&cd, 0);
        put32(&cd, off); put(&cd, r[i].name, nl);
    }
    uint32_t cd_off = (uint32_t)z.n;
    put(&z, cd.p, cd.n);
    put32(&z, 0x06054b50); put16(&z, 0); put16(&z, 0); put16(&z, (unsigned)n); put16(&z, (unsigned)n);
    put32(&z, (uint32_t)cd.n); put32(&z, cd_off); put16(&z, 0);
    free(cd.p);
    return z;
}

/* An archive holding `pickle` and one storage "0" of two floats. The zip
 * buffer must outlive the pth_file, so both travel together. */
typedef struct {
    buf z;
    pth_file *f;
} opened;

static void close_opened(opened *o)
{
    pth_close(o->f);
    free(o->z.p);
    memset(o, 0, sizeof *o);
}

static hadm_status open_pickle(const void *pickle, size_t len, hadm_error *err, opened *keep)
{
    static const float two[2] = {1.5f, -2.0f};
    record r[2] = {{"archive/data.pkl", pickle, len}, {"archive/data/0", two, sizeof two}};
    opened o = {make_zip(r, 2), NULL};
    memset(err, 0, sizeof *err);
    hadm_status s = pth_open_buffer(o.z.p, o.z.n, "test.pth", &o.f, err);
    if (keep)
        *keep = o;
    else
        close_opened(&o);
    return s;
}

static void expect_error(const char *what, const void *pickle, size_t len, const char *needle)
{
    hadm_error err;
    hadm_status s = open_pickle(pickle, len, &err, NULL);
    CHECK(s == HADM_ERR_FORMAT, "%s: accepted (status %d)", what, s);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
    CHECK(!strncmp(err.msg, "test.pth: ", 10), "%s: message does not name the file: %s", what, err.msg);
}

#define PK(s) s, sizeof s - 1

/* A valid tensor pickle: {'w': _rebuild_tensor_v2(storage '0' of 2 floats, off, (n,), (1,), False, OrderedDict())} */
static size_t tensor_pickle(unsigned char *out, int numel_in_pid, int offset, int size)
{
    buf b = {0};
    put(&b, PK("\x80\x02}q\x00X\x01\x00\x00\x00w"));
    put(&b, PK("ctorch._utils\n_rebuild_tensor_v2\n("));
    put(&b, PK("(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK"));
    unsigned char k = (unsigned char)numel_in_pid;
    put(&b, &k, 1);
    put(&b, PK("tQK"));
    k = (unsigned char)offset;
    put(&b, &k, 1);
    put(&b, PK("K"));
    k = (unsigned char)size;
    put(&b, &k, 1);
    put(&b, PK("\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRs."));
    memcpy(out, b.p, b.n);
    size_t n = b.n;
    free(b.p);
    return n;
}

static void test_tensor_pickles(void)
{
    unsigned char p[512];
    hadm_error err;
    opened o;
    size_t n = tensor_pickle(p, 2, 0, 2);
    CHECK(open_pickle(p, n, &err, &o) == HADM_OK, "hand-made tensor pickle: %s", err.msg);
    if (o.f) {
        const pth_obj *w = pth_dict_get(pth_root(o.f), "w");
        float v[2] = {0};
        CHECK(w && w->kind == PTH_TENSOR && pth_tensor_read_f32(o.f, &w->u.tensor, v, &err) == HADM_OK &&
              v[0] == 1.5f && v[1] == -2.0f, "hand-made tensor values: %s", err.msg);
    }
    close_opened(&o);
    n = tensor_pickle(p, 2, 1, 2);
    expect_error("view past its storage", p, n, "past the end of its storage");
    n = tensor_pickle(p, 3, 0, 2);   /* pickle says 3 floats, the record holds 2 */
    CHECK(open_pickle(p, n, &err, &o) == HADM_OK, "size mismatch is found on read: %s", err.msg);
    if (o.f) {
        const pth_obj *w = pth_dict_get(pth_root(o.f), "w");
        float v[3];
        CHECK(w && pth_tensor_read_f32(o.f, &w->u.tensor, v, &err) == HADM_ERR_FORMAT && strstr(err.msg, "holds 8 bytes"),
              "record size mismatch: %s", err.msg);
    }
    close_opened(&o);
}

static void test_bad_pickles(void)
{
    expect_error("text opcode INT", PK("\x80\x02I1\n."), "opcode 0x49 'I' at byte 2");
    expect_error("no STOP", PK("\x80\x02}q\x00"), "no STOP");
    expect_error("empty pickle", PK(""), "no STOP");
    expect_error("huge string", PK("\x80\x02X\xf0\xff\xff\xff"), "exceeds");
    expect_error("string past the end", PK("\x80\x02X\x10\x00\x00\x00" "abc"), "truncated");
    expect_error("huge LONG4", PK("\x80\x02\x8b\xff\xff\xff\x7f"), "exceeds");
    expect_error("stack underflow", PK("\x80\x02" "a."), "stack underflow");
    expect_error("memo never stored", PK("\x80\x02h\x05."), "never stored");
    expect_error("memo index too large", PK("\x80\x02]r\xff\xff\xff\xff."), "beyond the limit");
    expect_error("odd SETITEMS", PK("\x80\x02}(K\x01u."), "odd number");
    expect_error("SETITEM on a list", PK("\x80\x02]K\x01K\x02s."), "SETITEM on a list");
    expect_error("APPENDS without mark", PK("\x80\x02]e."), "no MARK");
    expect_error("two values at STOP", PK("\x80\x02NN."), "left at STOP");
    expect_error("bad persistent id", PK("\x80\x02X\x01\x00\x00\x00xQ."), "persistent id");
    expect_error("GLOBAL without newline", PK("\x80\x02" "cfoo"), "not terminated");
    expect_error("REDUCE args not a tuple", PK("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00lsR."), "not a tuple");
    expect_error("legacy-looking junk", PK("\x80\x02\x8a\x0a"), "truncated");

    /* deep MARK nesting */
    size_t n = 200000;
    unsigned char *p = malloc(n + 3);
    p[0] = 0x80, p[1] = 2;
    memset(p + 2, '(', n);
    p[n + 2] = '.';
    expect_error("100k nested MARKs", p, n + 3, "nested deeper");
    /* two million empty lists: the stack limit */
    n = 2000000;
    p = realloc(p, n + 3);
    memset(p + 2, ']', n);
    p[n + 2] = '.';
    expect_error("2M values on the stack", p, n + 3, "stack deeper");
    /* 500k lists nested in each other: no recursion anywhere, so it is just data */
    size_t depth = 500000;
    p = realloc(p, 2 * depth + 3);
    memset(p + 2, ']', depth);
    memset(p + 2 + depth, 'a', depth - 1);
    p[2 * depth + 1] = '.';
    hadm_error err;
    CHECK(open_pickle(p, 2 * depth + 2, &err, NULL) == HADM_OK, "deeply nested lists: %s", err.msg);
    free(p);
    /* a list that contains itself */
    CHECK(open_pickle(PK("\x80\x02]q\x00h\x00" "a."), &err, NULL) == HADM_OK, "self-containing list: %s", err.msg);
    /* an unknown callable is only named, never called */
    CHECK(open_pickle(PK("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00ls\x85R."), &err, NULL) == HADM_OK, "opaque REDUCE");
}


/* ---- damage to a real torch.save archive ---- */

static unsigned char *fixture(size_t *len)
{
    const char *root = getenv("HADM_SOURCE_DIR");
    char path[1024];
    if (root && *root)
        snprintf(path, sizeof path, "%s/tests/data/ckpt-small.pth", root);
    else   /* run by hand: next to this source file */
        snprintf(path, sizeof path, "%.*s/data/ckpt-small.pth", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__);
    unsigned char *b = test_read_file(path, len);
    CHECK(b != NULL, "cannot read %s", path);
    return b;
}

static uint32_t rd32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr32(unsigned char *p, uint32_t v) { p[0] = v & 255, p[1] = (v >> 8) & 255, p[2] = (v >> 16) & 255, p[3] = v >> 24; }
static void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

static size_t find_sig(const unsigned char *b, size_t n, uint32_t sig, size_t from)
{
    for (size_t i = from; i + 4 <= n; i++)
        if (rd32(b + i) == sig)
            return i;
    return (size_t)-1;
}

/* Applies `damage` to a copy and opens it; reading every ema tensor must not crash. */
static hadm_status open_damaged(const unsigned char *orig, size_t n, void (*damage)(unsigned char *, size_t),
                                hadm_error *err, int *read_failures)
{
    unsigned char *b = malloc(n);
    memcpy(b, orig, n);
    if (damage)
        damage(b, n);
    pth_file *f = NULL;
    memset(err, 0, sizeof *err);
    hadm_status s = pth_open_buffer(b, n, "ckpt.pth", &f, err);
    *read_failures = 0;
    const pth_obj *ema = f ? pth_dict_get(pth_root(f), "ema_state") : NULL;
    for (size_t i = 0; ema && ema->kind == PTH_DICT && i < ema->u.dict.n; i++) {
        const pth_obj *t = ema->u.dict.vals[i];
        if (t->kind != PTH_TENSOR || t->u.tensor.storage->dtype == PTH_I64)
            continue;
        float *v = malloc((size_t)(t->u.tensor.numel + 1) * sizeof *v);
        hadm_error e2;
        if (pth_tensor_read_f32(f, &t->u.tensor, v, &e2) != HADM_OK) {
            if (!*read_failures)
                *err = e2;
            ++*read_failures;
        }
        free(v);
    }
    pth_close(f);
    free(b);
    return s;
}

static size_t first_cd(const unsigned char *b, size_t n) { return find_sig(b, n, 0x02014b50, 0); }
static void cd_offset_huge(unsigned char *b, size_t n) { wr64(b + find_sig(b, n, 0x06064b50, 0) + 48, 1ull << 40); }
static void locator_bad(unsigned char *b, size_t n) { wr64(b + find_sig(b, n, 0x07064b50, 0) + 8, n - 10); }
static void count_huge(unsigned char *b, size_t n) { wr64(b + find_sig(b, n, 0x06064b50, 0) + 32, 1ull << 30); }
static void pkl_offset_bad(unsigned char *b, size_t n) { wr32(b + first_cd(b, n) + 42, 1); }
static void pkl_compressed(unsigned char *b, size_t n) { b[first_cd(b, n) + 10] = 8; }
static void name_len_huge(unsigned char *b, size_t n) { b[first_cd(b, n) + 29] = 0xFF; }
static void pkl_byte_flipped(unsigned char *b, size_t n) { (void)n; b[100] ^= 0x20; }
/* Offset in the fixture of the first byte of ema_state["half"]'s storage. */
static size_t half_storage_at;
static void storage_byte_flipped(unsigned char *b, size_t n) { (void)n; b[half_storage_at] ^= 1; }

static size_t locate_half_storage(const unsigned char *orig, size_t n)
{
    pth_file *f = NULL;
    hadm_error err;
    size_t at = 0;
    if (pth_open_buffer(orig, n, "ckpt.pth", &f, &err) == HADM_OK) {
        const pth_obj *t = pth_dict_get(pth_dict_get(pth_root(f), "ema_state"), "half");
        const uint8_t *data = NULL;
        if (t && t->kind == PTH_TENSOR && pth_storage_bytes(f, t->u.tensor.storage, &data, &err) == HADM_OK)
            at = (size_t)(data - orig);
    }
    pth_close(f);
    CHECK(at > 0, "cannot find ema_state['half'] in the fixture");
    return at;
}

static void test_zip_damage(void)
{
    size_t n = 0;
    unsigned char *orig = fixture(&n);
    if (!orig)
        return;
    struct { const char *what; void (*damage)(unsigned char *, size_t); const char *needle; } cases[] = {
        {"directory offset out of the file", cd_offset_huge, "lies outside"},
        {"ZIP64 locator pointing at junk", locator_bad, "bad ZIP64"},
        {"entry count of a billion", count_huge, "implausible"},
        {"data.pkl local header offset wrong", pkl_offset_bad, "no local header"},
        {"data.pkl compressed", pkl_compressed, "compressed"},
        {"entry name overruns the directory", name_len_huge, "overruns"},
        {"data.pkl corrupted", pkl_byte_flipped, "CRC"},
    };
    hadm_error err;
    int rf;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        hadm_status s = open_damaged(orig, n, cases[i].damage, &err, &rf);
        CHECK(s == HADM_ERR_FORMAT && strstr(err.msg, cases[i].needle) && !strncmp(err.msg, "ckpt.pth: ", 10),
              "%s: status %d, message '%s'", cases[i].what, s, err.msg);
    }
    CHECK(open_damaged(orig, n, NULL, &err, &rf) ==
          HADM_OK && rf == 0, "baseline: the undamaged fixture reads (%d failures: %s)", rf, err.msg);
    half_storage_at = locate_half_storage(orig, n);
    CHECK(open_damaged(orig, n, storage_byte_flipped, &err, &rf) == HADM_OK && rf == 1 && strstr(err.msg, "CRC"),
          "a corrupt storage fails only its own tensor (%d failures: %s)", rf, err.msg);
    /* every truncation fails cleanly */
    int accepted = 0;
    for (size_t len = 0; len < n; len += 13) {
        pth_file *f = NULL;
        if (pth_open_buffer(orig, len, "cut.pth", &f, &err) == HADM_OK)
            accepted++;
        pth_close(f);
    }
    CHECK(!accepted, "%d truncated archives were accepted", accepted);
    pth_file *f = NULL;
    CHECK(pth_open_buffer("\x80\x02\x8a\x0alegacy", 10, "old.pth", &f, &err) && strstr(err.msg, "legacy torch.save"),
          "legacy format named: %s", err.msg);
    CHECK(pth_open_buffer("hello", 5, "x", &f, &err) && strstr(err.msg, "not a zip"), "not a zip: %s", err.msg);
    free(orig);
}

/* ---- random mutations ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void mutate(unsigned char *b, size_t n)
{
    int k = 1 + (int)(next_rand() % 4);
    for (int i = 0; i < k; i++) {
        size_t at = (size_t)(next_rand() % n);
        switch (next_rand() % 3) {
        case 0: b[at] ^= (unsigned char)(1u << (next_rand() % 8)); break;
        case 1: b[at] = (unsigned char)next_rand(); break;
        default: b[at] = (unsigned char)"()tqhXKJ\x85\x86\x87Rsua.}]"[next_rand() % 19]; break;
        }
    }
}

static void test_fuzz(void)
{
    size_t n = 0;
    unsigned char *orig = fixture(&n);
    if (!orig)
        return;
    pth_entry *entries = NULL;
    size_t ne = 0;
    hadm_error err;
    const uint8_t *pkl = NULL;
    CHECK(pth_zip_index(orig, n, &entries, &ne, &err) == HADM_OK, "index: %s", err.msg);
    const pth_entry *e = pth_zip_find(entries, ne, "archive/data.pkl");
    CHECK(e && pth_zip_data(orig, n, e, &pkl, &err) == HADM_OK, "data.pkl");
    int opened_ok = 0, rounds = 3000;
    for (int r = 0; e && pkl && r < rounds; r++) {
        size_t len = (size_t)e->size;
        unsigned char *p = malloc(len);
        memcpy(p, pkl, len);
        mutate(p, len);
        if (r % 10 == 0)
            len = (size_t)(next_rand() % len);   /* and some truncations */
        opened_ok += open_pickle(p, len, &err, NULL) == HADM_OK;
        free(p);
    }
    printf("pickle fuzz: %d of %d mutated pickles still parsed\n", opened_ok, rounds);
    int accepted = 0;
    for (int r = 0; r < 1500; r++) {   /* the zip structure too, reading every tensor */
        int rf;
        accepted += open_damaged(orig, n, mutate, &err, &rf) == HADM_OK;
    }
    printf("archive fuzz: %d of 1500 mutated archives opened\n", accepted);
    for (size_t i = 0; i < ne; i++)
        free(entries[i].name);
    free(entries);
    free(orig);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : "";   /* e.g. "fuzz" to run one part by hand */
    if (!*only || strstr("tensor", only))
        test_tensor_pickles();
    if (!*only || strstr("pickle", only))
        test_bad_pickles();
    if (!*only || strstr("zip", only))
        test_zip_damage();
    if (!*only || strstr("fuzz", only))
        test_fuzz();
    return test_finish();
}
