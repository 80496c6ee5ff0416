/* `hadm convert` end to end on every golden case: the case's model is put into
 * a checkpoint in the real layout (ema_state = the golden tensors, model =
 * the same names with other values, trainer + optimizer, iteration; half the
 * storages on "cuda:0") by tools/make_pth_fixture.py's torch.save emulation
 * (test_convert checks it is byte-identical to torch), converted by the hadm
 * binary, and then:
 *  - every golden tensor is in the output bit for bit, plus the EMA buffers;
 *  - the converted model's detections equal the golden model's exactly, and
 *    the golden expected detections within the spec's tolerances;
 *  - the raw `model` weights are taken when there is no ema_state, with a
 *    DataParallel "module." prefix stripped;
 *  - a checkpoint past 4 GiB (ZIP64 records, a never-read 4 GiB storage in
 *    front) converts to the same bytes without reading the skipped storage;
 *  - a case whose geometry is not a released one is refused, not truncated. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "engine/config.h"
#include "golden.h"
#include "hadm.h"
#include "io/safetensors.h"
#include "testutil.h"

static const char *source_path(const char *rel, char *buf, size_t n)
{
    const char *root = getenv("HADM_SOURCE_DIR");
    if (root && *root)
        snprintf(buf, n, "%s/%s", root, rel);
    else   /* run by hand: the source tree this file is in */
        snprintf(buf, n, "%.*s/../%s", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, rel);
    return buf;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Builds a checkpoint from model.safetensors with the given tool flags. */
static int make_checkpoint(const char *model, const char *out, const char *flags)
{
    char tool[1024], cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 '%s' from-safetensors '%s' '%s' --backend emulate %s",
             source_path("tools/make_pth_fixture.py", tool, sizeof tool), model, out, flags);
    int rc = run(cmd);
    CHECK(rc == 0, "fixture tool failed (%d): %s", rc, cmd);
    return rc == 0;
}

/* Runs `hadm convert`; its stderr goes to log. Returns the exit code. */
static int convert(const char *in, const char *out, const char *log)
{
    const char *bin = getenv("HADM_BIN");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' '%s' > '%s.out' 2> '%s'", bin ? bin : "hadm", in, out, log, log);
    return run(cmd);
}

static int file_contains(const char *path, const char *needle)
{
    char *text = (char *)test_read_file(path, NULL);
    int found = text && strstr(text, needle);
    free(text);
    return found;
}

/* The golden case has the geometry `hadm convert` knows (the tiny test config). */
static int is_tiny_geometry(const st_file *golden)
{
    hadm_config g, t;
    hadm_error err = {0};
    const char *variant = st_meta(golden, "hadm.variant");
    if (config_parse(&g, st_meta(golden, "hadm.config"), variant, st_meta(golden, "hadm.classes"), &err))
        return 0;
    int same = 0;
    if (!config_default(&t, variant && !strcmp(variant, "HADM-G") ? 'g' : 'l', 1, &err)) {
        same = g.img_size == t.img_size && g.depth == t.depth && g.embed_dim == t.embed_dim &&
               g.window_size == t.window_size && !memcmp(g.is_global, t.is_global, sizeof g.is_global) &&
               g.num_classes == t.num_classes;
        config_free(&t);
    }
    config_free(&g);
    return same;
}

/* Every golden tensor in `out`; flip = expect the sign bit flipped (the `model` copy). */
static void check_tensors(const char *name, const st_file *golden, const st_file *out, int flip)
{
    int bad = 0;
    for (int i = 0; i < st_count(golden); i++) {
        const st_tensor *g = st_at(golden, i), *o = st_find(out, g->name);
        if (!o || o->dtype != ST_F32 || o->ndim != g->ndim || o->nbytes != g->nbytes ||
            memcmp(o->shape, g->shape, sizeof(int64_t) * (size_t)g->ndim)) {
            CHECK(0, "%s: tensor %s missing or of another shape", name, g->name);
            bad++;
            continue;
        }
        const uint32_t *a = g->data, *b = o->data;
        for (int64_t k = 0; k < g->numel; k++)
            if ((a[k] ^ (flip ? 0x80000000u : 0)) != b[k]) {
                CHECK(0, "%s: %s[%lld] differs", name, g->name, (long long)k);
                bad++;
                break;
            }
        if (bad > 5)
            break;
    }
    CHECK(!bad, "%s: all %d golden tensors bit-exact", name, st_count(golden));
    CHECK(!strcmp(st_meta(out, "hadm.variant"), st_meta(golden, "hadm.variant")), "%s: variant", name);
    CHECK(!strcmp(st_meta(out, "format"), "hadm/1"), "%s: format", name);
    if (!flip) {   /* the EMA's copy of the non-persistent buffers comes along */
        const st_tensor *pm = st_find(out, "pixel_mean");
        CHECK(pm && pm->numel == 3 && ((const float *)pm->data)[0] == 123.675f, "%s: EMA pixel_mean kept", name);
        CHECK(st_count(out) == st_count(golden) + 2, "%s: %d tensors, expected golden + pixel_mean/std", name,
              st_count(out));
    }
}

static hadm_result *detect(const char *model, const char *image)
{
    hadm_model *m = NULL;
    hadm_image img = {0};
    hadm_result *r = NULL;
    hadm_error err = {0};
    hadm_detect_options opt = {0};
    CHECK(hadm_model_open(model, NULL, &m, &err) == HADM_OK, "open %s: %s", model, err.msg);
    CHECK(hadm_image_load(image, NULL, &img, &err) == HADM_OK, "%s: %s", image, err.msg);
    if (m && img.rgb)
        CHECK(hadm_detect(m, &img, &opt, &r, &err) == HADM_OK, "detect: %s", err.msg);
    hadm_image_free(&img);
    hadm_model_close(m);
    return r;
}

static void check_detections(golden_case *gc, const char *converted)
{
    char golden_model[1400];
    snprintf(golden_model, sizeof golden_model, "%.1000s/model.safetensors", gc->dir);
    hadm_result *a = detect(converted, gc->image), *b = detect(golden_model, gc->image);
    CHECK(a && b && a->count == b->count, "%s: detection count", gc->name);
    if (a && b && a->count == b->count)
        for (int i = 0; i < a->count; i++) {
            const hadm_detection *x = &a->dets[i], *y = &b->dets[i];
            CHECK(x->class_id == y->class_id && x->score == y->score && x->x1 == y->x1 && x->y1 == y->y1 &&
                      x->x2 == y->x2 && x->y2 == y->y2,
                  "%s: detection %d differs from the golden model's", gc->name, i);
        }
    int64_t n = 0;
    double *scores = golden_tensor(gc, "det.scores", &n, NULL);
    CHECK(scores && a && a->count == n, "%s: %lld expected detections, got %d", gc->name, (long long)n,
          a ? a->count : -1);
    for (int64_t i = 0; scores && a && i < n && i < a->count; i++)
        CHECK(fabs(a->dets[i].score - scores[i]) < 1e-4, "%s: score %lld: %g vs %g", gc->name, (long long)i,
              a->dets[i].score, scores[i]);
    free(scores);
    hadm_result_free(a);
    hadm_result_free(b);
}

static st_file *open_output(const char *path)
{
    st_file *f = NULL;
    hadm_error err = {0};
    CHECK(st_open(path, &f, &err) == HADM_OK, "%s: %s", path, err.msg);
    return f;
}

/* The variants on one case: raw weights, "module." prefix, past 4 GiB. */
static void test_variants(golden_case *gc, const char *model, const st_file *golden, const char *normal_out)
{
    const char *tmp = test_tmpdir();
    char pth[1200], out[1200], log[1200];
    const char *flags[] = {"--no-ema", "--no-ema --module-prefix"};
    for (int v = 0; v < 2; v++) {
        snprintf(pth, sizeof pth, "%.900s/raw%d.pth", tmp, v);
        snprintf(out, sizeof out, "%.900s/raw%d.safetensors", tmp, v);
        snprintf(log, sizeof log, "%.900s/raw%d.log", tmp, v);
        if (!make_checkpoint(model, pth, flags[v]))
            continue;
        CHECK(convert(pth, out, log) == 0, "%s %s: convert failed", gc->name, flags[v]);
        st_file *f = open_output(out);
        if (f)
            check_tensors(flags[v], golden, f, 1);
        st_close(f);
        remove(pth);
    }
    /* A 4 GiB sparse storage first, as the optimizer state lies in the real files. */
    char dir[1000];
    snprintf(dir, sizeof dir, "%.900s/big", tmp);
    mkdir(dir, 0700);
    const char *base = strrchr(normal_out, '/');
    snprintf(pth, sizeof pth, "%s/%.100s.pth", dir, gc->name);
    snprintf(out, sizeof out, "%s%.150s", dir, base);
    snprintf(log, sizeof log, "%s/big.log", dir);
    if (!make_checkpoint(model, pth, "--pad-gb 4"))
        return;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(convert(pth, out, log) == 0, "%s past 4 GiB: convert failed", gc->name);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    size_t na = 0, nb = 0;
    unsigned char *a = test_read_file(out, &na), *b = test_read_file(normal_out, &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na), "%s: the >4 GiB checkpoint converts to the same file", gc->name);
    char logout[1300];
    snprintf(logout, sizeof logout, "%s.out", log);
    char *report = (char *)test_read_file(logout, NULL), *line = report ? strstr(report, "  read ") : NULL;
    double read_mb = -1, archive_mb = -1;
    if (line)
        sscanf(line, "  read %lf MB of the %lf MB archive", &read_mb, &archive_mb);
    double ema_mb = 0;
    for (int i = 0; i < st_count(golden); i++)
        ema_mb += (double)st_at(golden, i)->nbytes / 1e6;
    CHECK(archive_mb > 4295 && read_mb >= ema_mb - 0.1 && read_mb < ema_mb + 0.2,
          "%s: convert read %.1f MB of %.1f MB, expected only the %.1f MB of EMA storages (see %s)", gc->name,
          read_mb, archive_mb, ema_mb, logout);
    free(report);
    printf("%s: converted a 4.3 GB checkpoint in %.2f s\n", gc->name, wall);
    free(a);
    free(b);
    remove(pth);
}

int main(void)
{
    golden_case cases[16];
    int n = golden_cases(cases, 16);
    CHECK(n > 0, "no golden cases under %s", test_golden_dir());
    int variants_done = 0;
    for (int i = 0; i < n; i++) {
        golden_case *gc = &cases[i];
        char model[1400], pth[1200], out[1200], log[1200];
        snprintf(model, sizeof model, "%.1000s/model.safetensors", gc->dir);
        snprintf(pth, sizeof pth, "%.900s/%.200s.pth", test_tmpdir(), gc->name);
        snprintf(out, sizeof out, "%.900s/%.200s.safetensors", test_tmpdir(), gc->name);
        snprintf(log, sizeof log, "%.900s/%.200s.log", test_tmpdir(), gc->name);
        st_file *golden = open_output(model);
        if (!golden || !make_checkpoint(model, pth, "")) {
            st_close(golden);
            continue;
        }
        int rc = convert(pth, out, log);
        if (!is_tiny_geometry(golden)) {
            CHECK(rc == 1 && file_contains(log, "different geometry"), "%s: a geometry hadm does not know must be "
                  "refused (rc %d, see %s)", gc->name, rc, log);
            printf("%s: not a released geometry: refused as expected\n", gc->name);
        } else {
            CHECK(rc == 0, "%s: convert failed (see %s)", gc->name, log);
            st_file *f = rc == 0 ? open_output(out) : NULL;
            if (f)
                check_tensors(gc->name, golden, f, 0);
            st_close(f);
            if (f)
                check_detections(gc, out);
            if (f && !variants_done++)
                test_variants(gc, model, golden, out);
            printf("%s: converted and checked\n", gc->name);
        }
        st_close(golden);
        remove(pth);
        golden_case_free(gc);
    }
    return test_finish();
}
