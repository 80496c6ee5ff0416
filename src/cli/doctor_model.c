/* The model-file side of hadm doctor: is each file there, whole, the right
 * variant and dtype; its SHA-256 (compare with `sha256sum` of a known-good
 * copy) and how fast the storage under it reads, measured cold. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/doctor.h"
#include "cli/modelcache.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/weights.h"
#include "io/pth.h"
#include "io/safetensors.h"

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} sha256;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) ((x) >> (n) | (x) << (32 - (n)))

static void sha256_block(sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ROR(v[4], 6) ^ ROR(v[4], 11) ^ ROR(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + w[i];
        uint32_t t2 = (ROR(v[0], 2) ^ ROR(v[0], 13) ^ ROR(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha256_init(sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->fill = 0;
}

static void sha256_update(sha256 *s, const uint8_t *p, size_t n)
{
    s->len += n;
    while (n) {
        if (!s->fill && n >= 64) {
            sha256_block(s, p);
            p += 64, n -= 64;
            continue;
        }
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, k);
        s->fill += k, p += k, n -= k;
        if (s->fill == 64) {
            sha256_block(s, s->buf);
            s->fill = 0;
        }
    }
}

static void sha256_hex(sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t k = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++)
        pad[k + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, k + 8);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* Reads the whole file once, cold when the kernel lets us drop its cached
 * pages: SHA-256 and the read rate (time in read() only, hashing excluded). */
static int hash_and_time(const char *path, char hex[65], double *mb_s, int *cold)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    *cold = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    size_t cap = 8u << 20;
    uint8_t *buf = malloc(cap);
    sha256 s;
    sha256_init(&s);
    double io = 0;
    uint64_t total = 0;
    ssize_t n = 0;
    while (buf) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        n = read(fd, buf, cap);
        clock_gettime(CLOCK_MONOTONIC, &b);
        io += (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        if (n <= 0)
            break;
        total += (uint64_t)n;
        sha256_update(&s, buf, (size_t)n);
    }
    free(buf);
    close(fd);
    if (n < 0 || !buf)
        return -1;
    sha256_hex(&s, hex);
    *mb_s = io > 0 ? (double)total / 1e6 / io : 0;
    return 0;
}

/* ---- validity ---- */

typedef struct {
    const st_file *f;
    int64_t params;
    int dtypes;               /* bit per st_dtype seen */
    char problem[300];
} tensor_audit;

static hadm_status audit_visit(void *user, const char *name, int ndim, const int64_t *shape, const float **slot, ops_src_type *type,
                               hadm_error *err)
{
    (void)type;
    (void)slot, (void)err;
    tensor_audit *a = user;
    const st_tensor *t = st_find(a->f, name);
    int same = t && t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same && !a->problem[0])
        snprintf(a->problem, sizeof a->problem, "tensor %s %s", name, t ? "has the wrong shape" : "is missing");
    if (t) {
        a->params += t->numel;
        a->dtypes |= 1 << t->dtype;
    }
    return HADM_OK;
}

static void dtype_list(int mask, char *out, size_t n)
{
    out[0] = 0;
    for (int d = ST_F32; d <= ST_BOOL; d++)
        if (mask >> d & 1)
            snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? "+" : "", st_dtype_name((st_dtype)d));
}

static int check_safetensors(doctor_report *r, const char *label, const char *path, char *summary, size_t n)
{
    st_file *f = NULL;
    hadm_error err = {0};
    const char *fix = "re-download the model or convert the checkpoint again (hadm convert IN.pth OUT)";
    if (st_open(path, &f, &err) != HADM_OK) {
        doctor_add(r, label, CHECK_FAIL, fix, "%s", err.msg);
        return 0;
    }
    hadm_config cfg;
    const char *fmt = st_meta(f, "format");
    if (!fmt || strcmp(fmt, "hadm/1") ||
        config_parse(&cfg, st_meta(f, "hadm.config"), st_meta(f, "hadm.variant"), st_meta(f, "hadm.classes"), &err)) {
        doctor_add(r, label, CHECK_FAIL, fix, "%s: %s", path, fmt && !strcmp(fmt, "hadm/1") ? err.msg : "not a hadm/1 model file");
        st_close(f);
        return 0;
    }
    tensor_audit a = {.f = f};
    hadm_weights *scratch = malloc(sizeof *scratch);
    if (scratch)
        weights_enumerate(&cfg, scratch, audit_visit, &a, &err);
    free(scratch);
    char dtypes[64];
    dtype_list(a.dtypes, dtypes, sizeof dtypes);
    int ok = !a.problem[0];
    if (!ok)
        doctor_add(r, label, CHECK_FAIL, fix, "%s: %s", path, a.problem);
    else
        snprintf(summary, n, "%s, %s, %.1fM parameters, %d px", cfg.variant, dtypes, (double)a.params / 1e6, cfg.img_size);
    config_free(&cfg);
    st_close(f);
    return ok;
}

static int check_checkpoint(doctor_report *r, const char *label, const char *path, char *summary, size_t n,
                            uint64_t *weight_bytes)
{
    pth_file *f = NULL;
    hadm_error err = {0};
    if (pth_open(path, &f, &err) != HADM_OK) {
        doctor_add(r, label, CHECK_FAIL, "re-download the checkpoint (the archive is damaged or not a checkpoint)",
                   "%s", err.msg);
        return 0;
    }
    const pth_obj *root = pth_root(f), *ema = pth_dict_get(root, "ema_state"), *model = pth_dict_get(root, "model");
    const pth_obj *src = ema && ema->kind == PTH_DICT && ema->u.dict.n ? ema : model;
    const pth_obj *cls = pth_dict_get(src, "roi_heads.box_predictor.0.cls_score.weight");
    if (!cls)
        cls = pth_dict_get(src, "module.roi_heads.box_predictor.0.cls_score.weight");
    int64_t rows = cls && cls->kind == PTH_TENSOR ? cls->u.tensor.shape[0] : 0;
    for (size_t i = 0; src && src->kind == PTH_DICT && i < src->u.dict.n; i++)
        if (src->u.dict.vals[i]->kind == PTH_TENSOR)
            *weight_bytes += (uint64_t)src->u.dict.vals[i]->u.tensor.numel * 4;
    char cached[4096], msg[300];
    int have = modelcache_path(path, cached, sizeof cached, msg, sizeof msg) == 0 && access(cached, R_OK) == 0;
    snprintf(summary, n, "original checkpoint (%s), %s weights; %s", rows == 7 ? "HADM-L" : rows == 13 ? "HADM-G" : "variant unknown",
             src == ema ? "EMA" : "raw", have ? "converted copy in the cache" : "converted on first use");
    pth_close(f);
    if (!rows) {
        doctor_add(r, label, CHECK_FAIL, "use the original HADM-L/HADM-G checkpoint", "%s: no HADM classifier in %s",
                   path, src == ema ? "ema_state" : "model");
        return 0;
    }
    return 1;
}

uint64_t doctor_check_model(doctor_report *r, const char *label, const char *path, int measure_speed)
{
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        doctor_add(r, label, CHECK_WARN, "put hadm-l.safetensors / hadm-g.safetensors (or the original .pth) in "
                   "./models or $HADM_MODELS, or pass --local/--global",
                   "%s: %s", path ? path : "no model file", path ? strerror(errno) : "not found");
        return 0;
    }
    char summary[300] = "";
    int pth = modelcache_is_checkpoint(path);
    uint64_t weights = pth ? 0 : (uint64_t)st.st_size;   /* what the loaded model holds in memory */
    int ok = pth ? check_checkpoint(r, label, path, summary, sizeof summary, &weights)
                 : check_safetensors(r, label, path, summary, sizeof summary);
    if (!ok)
        return 0;
    char hex[65] = "", speed[96] = "";
    double mb_s = 0;
    int cold = 0;
    if (measure_speed && hash_and_time(path, hex, &mb_s, &cold) == 0)
        snprintf(speed, sizeof speed, ", read %s at %.0f MB/s", cold ? "cold" : "(maybe cached)", mb_s);
    char size[32];
    if (st.st_size >= 1e9)
        snprintf(size, sizeof size, "%.2f GB", (double)st.st_size / 1e9);
    else
        snprintf(size, sizeof size, "%.1f MB", (double)st.st_size / 1e6);
    /* small files read too fast to judge the storage */
    check_status status = measure_speed && st.st_size > (64 << 20) && mb_s > 0 && mb_s < 150 ? CHECK_WARN : CHECK_OK;
    doctor_add(r, label, status, status ? "move the models to a local SSD: loading reads the whole file" : NULL,
               "%s: %s, %s%s%s%s%s", path, summary, size, hex[0] ? ", sha256 " : "", hex, speed,
               status ? " (slow storage)" : "");
    return weights;
}
