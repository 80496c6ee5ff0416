/* `hadm convert` and the .pth reader on checkpoints in the real layout:
 *  - tests/data/ckpt-small.pth, written by torch.save (tools/make_pth_fixture.py
 *    with Debian's python3-torch): every tensor bit-exact against the values
 *    the tool put there (the same formula is below), dtypes, locations
 *    ("cuda:0"), strided and shared storages, the trainer's state;
 *  - the tool's standard-library emulation reproduces that file byte for byte,
 *    so the checkpoints it builds from the golden models at test time (too big
 *    to commit) are what torch.save writes;
 *    (test_convert_golden.c converts those). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hadm.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "testutil.h"

static float formula(int seed, int64_t j) { return (float)((((seed * 131 + j * 31) % 255) - 127) / 8.0); }

typedef struct {
    const char *name;
    int seed, ndim;
    int64_t shape[4];
    pth_dtype dtype;
    const char *location;
} spec;

/* make_pth_fixture.py: small_checkpoint() */
static const spec EMA[] = {
    {"backbone.w", 11, 2, {4, 3}, PTH_F32, "cuda:0"},  {"backbone.b", 12, 1, {4}, PTH_F32, "cuda:0"},
    {"head.w", 13, 4, {2, 2, 3, 3}, PTH_F32, "cuda:0"}, {"half", 14, 1, {5}, PTH_F16, "cpu"},
    {"bf16", 15, 2, {2, 3}, PTH_BF16, "cpu"},          {"double", 16, 2, {3, 2}, PTH_F64, "cpu"},
    {"scalar", 18, 0, {0}, PTH_F32, "cpu"},            {"empty", 19, 2, {0, 3}, PTH_F32, "cpu"},
};
static const spec MODEL[] = {
    {"backbone.w", 1, 2, {4, 3}, PTH_F32, "cpu"}, {"backbone.b", 2, 1, {4}, PTH_F32, "cpu"},
    {"head.w", 3, 4, {2, 2, 3, 3}, PTH_F32, "cpu"},
};

static char *source_path(const char *rel)
{
    const char *root = getenv("HADM_SOURCE_DIR");
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    if (root && *root)
        snprintf(p, sizeof buf[0], "%s/%s", root, rel);
    else   /* run by hand: the source tree this file is in */
        snprintf(p, sizeof buf[0], "%.*s/../%s", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, rel);
    return p;
}

static const pth_tensor *tensor_in(const pth_obj *dict, const char *name)
{
    const pth_obj *o = pth_dict_get(dict, name);
    return o && o->kind == PTH_TENSOR ? &o->u.tensor : NULL;
}

/* Reads a tensor as float32 and compares with expected(i) bit for bit. */
static void check_values(pth_file *f, const char *what, const pth_tensor *t, float (*expect)(const void *, int64_t),
                         const void *ctx)
{
    float *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *v);
    hadm_error err = {0};
    CHECK(pth_tensor_read_f32(f, t, v, &err) == HADM_OK, "%s: %s", what, err.msg);
    int64_t bad = -1;
    for (int64_t i = 0; i < t->numel && bad < 0; i++) {
        float e = expect(ctx, i);
        if (memcmp(&v[i], &e, sizeof e) != 0)
            bad = i;
    }
    CHECK(bad < 0, "%s: element %lld is %g, expected %g", what, (long long)bad, bad >= 0 ? v[bad] : 0,
          bad >= 0 ? expect(ctx, bad) : 0);
    free(v);
}

static float by_spec(const void *ctx, int64_t i) { return formula(((const spec *)ctx)->seed, i); }
static float shared_a(const void *ctx, int64_t i) { (void)ctx; return formula(20, i); }
static float shared_b(const void *ctx, int64_t i)
{
    (void)ctx;   /* shape [3,4], stride [1,3], offset 10 */
    return formula(20, 10 + i / 4 + 3 * (i % 4));
}
static float pixel(const void *ctx, int64_t i) { (void)ctx; return (float[]){123.5f, 116.25f, 103.5f}[i]; }

static void check_spec(pth_file *f, const pth_obj *dict, const spec *s, const char *group)
{
    char what[128];
    snprintf(what, sizeof what, "%s.%s", group, s->name);
    const pth_tensor *t = tensor_in(dict, s->name);
    CHECK(t != NULL, "%s missing", what);
    if (!t)
        return;
    int same = t->ndim == s->ndim;
    for (int i = 0; same && i < s->ndim; i++)
        same = t->shape[i] == s->shape[i];
    CHECK(same, "%s: shape differs (ndim %d)", what, t->ndim);
    CHECK(t->storage->dtype == s->dtype, "%s: dtype %s", what, pth_dtype_name(t->storage->dtype));
    CHECK(!strcmp(t->storage->location, s->location), "%s: location '%s', expected '%s'", what,
          t->storage->location, s->location);
    if (same)
        check_values(f, what, t, by_spec, s);
}

static void check_trainer(const pth_obj *root)
{
    const pth_obj *tr = pth_dict_get(root, "trainer"), *it = pth_dict_get(root, "iteration");
    CHECK(it && it->kind == PTH_INT && it->u.i == 249999, "iteration");
    const pth_obj *opt = pth_dict_get(tr, "optimizer"), *state = pth_dict_get(opt, "state");
    CHECK(state && state->kind == PTH_DICT && state->u.dict.n == 2, "optimizer state with 2 int keys");
    if (state && state->kind == PTH_DICT && state->u.dict.n == 2)
        CHECK(state->u.dict.keys[1]->kind == PTH_INT && state->u.dict.keys[1]->u.i == 1, "optimizer key 1");
    const pth_obj *groups = pth_dict_get(opt, "param_groups");
    CHECK(groups && groups->kind == PTH_LIST && groups->u.seq.n == 1, "param_groups");
    if (groups && groups->kind == PTH_LIST && groups->u.seq.n == 1) {
        const pth_obj *lr = pth_dict_get(groups->u.seq.items[0], "lr");
        CHECK(lr && lr->kind == PTH_FLOAT && lr->u.f == 0.0001, "lr");
    }
    const pth_obj *big = pth_dict_get(tr, "big");
    CHECK(big && big->kind == PTH_LIST && big->u.seq.n == 6, "big ints list");
    if (big && big->kind == PTH_LIST && big->u.seq.n == 6) {
        pth_obj *const *b = big->u.seq.items;
        CHECK(b[0]->u.i == (INT64_C(1) << 40) && b[1]->u.i == INT64_MIN && b[2]->u.i == 255 && b[3]->u.i == 65535 &&
              b[4]->u.i == -1 && b[5]->big, "int values: %lld %lld %lld %lld %lld big=%d", (long long)b[0]->u.i,
              (long long)b[1]->u.i, (long long)b[2]->u.i, (long long)b[3]->u.i, (long long)b[4]->u.i, b[5]->big);
    }
    const pth_obj *many = pth_dict_get(tr, "many"), *k1099 = pth_dict_get(many, "k1099");
    CHECK(many && many->u.dict.n == 1100 && k1099 && k1099->u.i == 1099, "1100-entry dict (two SETITEMS batches)");
    const pth_obj *note = pth_dict_get(tr, "note");
    CHECK(note && note->kind == PTH_OBJECT && !strcmp(note->u.global.name, "NoteForHumans"), "opaque object");
    const pth_obj *flags = pth_dict_get(tr, "flags");
    CHECK(flags && flags->kind == PTH_TUPLE && flags->u.seq.n == 5 && flags->u.seq.items[0]->kind == PTH_BOOL_V &&
          flags->u.seq.items[0]->u.i == 1 && flags->u.seq.items[2]->kind == PTH_NONE &&
          flags->u.seq.items[3]->u.f == 1.5, "flags tuple");
}

static void test_small_fixture(const char *path)
{
    pth_file *f = NULL;
    hadm_error err = {0};
    CHECK(pth_open(path, &f, &err) == HADM_OK, "open %s: %s", path, err.msg);
    if (!f)
        return;
    CHECK(!strcmp(pth_archive_name(f), "archive"), "archive name %s", pth_archive_name(f));
    CHECK(pth_bytes_read(f) == 0, "opening reads no tensor data");
    const pth_obj *root = pth_root(f), *ema = pth_dict_get(root, "ema_state"), *model = pth_dict_get(root, "model");
    CHECK(ema && ema->kind == PTH_DICT && ema->u.dict.n == 12, "ema_state dict of 12");
    CHECK(model && model->kind == PTH_DICT && model->u.dict.n == 3, "model OrderedDict of 3");
    for (size_t i = 0; i < sizeof EMA / sizeof *EMA; i++)
        check_spec(f, ema, &EMA[i], "ema_state");
    uint64_t ema_bytes = pth_bytes_read(f);
    for (size_t i = 0; i < sizeof MODEL / sizeof *MODEL; i++)
        check_spec(f, model, &MODEL[i], "model");
    CHECK(pth_bytes_read(f) == ema_bytes + (12 + 4 + 36) * 4, "bytes read counts exactly the storages read");

    const pth_tensor *a = tensor_in(ema, "shared.a"), *b = tensor_in(ema, "shared.b");
    CHECK(a && b && a->storage->numel == 40 && !strcmp(a->storage->key, b->storage->key), "shared storage");
    if (a && b) {
        CHECK(b->offset == 10 && b->stride[0] == 1 && b->stride[1] == 3, "transposed view");
        check_values(f, "shared.a", a, shared_a, NULL);
        check_values(f, "shared.b", b, shared_b, NULL);
        const float *direct = NULL;
        CHECK(pth_tensor_view_f32(f, a, &direct, &err) == HADM_OK && direct, "contiguous f32 view");
        CHECK(pth_tensor_view_f32(f, b, &direct, &err) == HADM_OK && !direct, "strided view is not direct");
    }
    const pth_tensor *pm = tensor_in(ema, "pixel_mean"), *lg = tensor_in(ema, "long");
    if (pm)
        check_values(f, "pixel_mean", pm, pixel, NULL);
    CHECK(pm && pm->ndim == 3 && pm->shape[0] == 3, "pixel_mean (3,1,1)");
    float tmp[4];
    CHECK(lg && pth_tensor_read_f32(f, lg, tmp, &err) == HADM_ERR_FORMAT && strstr(err.msg, "not floating"),
          "int64 tensor refused: %s", err.msg);
    check_trainer(root);
    pth_close(f);
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    unsigned char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int make_fixture(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 '%s' %s", source_path("tools/make_pth_fixture.py"), args);
    int rc = run(cmd);
    CHECK(rc == 0, "fixture tool failed (%d): %s", rc, cmd);
    return rc == 0;
}

static void test_emulation(const char *committed)
{
    char out[1024], args[2048];
    snprintf(out, sizeof out, "%s/small-emulated.pth", test_tmpdir());
    snprintf(args, sizeof args, "small '%s' --backend emulate", out);
    if (make_fixture(args))
        CHECK(same_file(out, committed), "the emulated checkpoint differs from torch.save's %s", committed);
    /* the same content with ZIP64 fields in every central-directory entry */
    snprintf(args, sizeof args, "small '%s' --backend emulate --zip64", out);
    if (make_fixture(args))
        test_small_fixture(out);
}

int main(void)
{
    const char *fixture = source_path("tests/data/ckpt-small.pth");
    test_small_fixture(fixture);
    test_emulation(fixture);
    return test_finish();
}
