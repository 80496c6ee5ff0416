/* hadm convert IN.pth OUT.safetensors
 *
 * The weights the authors' demo runs are ckpt["ema_state"] (FORMAT.md 1.3):
 * take those when present, else ckpt["model"]; keep every tensor the model
 * needs (the list in engine/weights.c, shapes checked against the real config)
 * plus the buffers the EMA may have drifted (pixel mean/std, anchors, RoPE
 * tables), and leave the rest (raw weights, optimizer, scheduler) unread. */
#include "cli/convert.h"

#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/modelcache.h"
#include "engine/config.h"
#include "engine/weights.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "util/err.h"

typedef struct {
    const char *name;          /* without a leading "module." */
    const pth_tensor *t;
    int used;
} named_tensor;

typedef struct {
    pth_file *pth;
    named_tensor *tensors;
    size_t n;
    size_t non_tensors;        /* values in the source dict that are no tensors */
    st_writer *w;
    float **owned;             /* converted copies, freed after saving */
    size_t n_owned;
    int64_t params;
    int took, extras;
} conversion;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const named_tensor *)a)->name, ((const named_tensor *)b)->name);
}

static named_tensor *find(conversion *c, const char *name)
{
    named_tensor key = {.name = name};
    return c->n ? bsearch(&key, c->tensors, c->n, sizeof key, cmp_named) : NULL;
}

/* The state dict to convert: ema_state (maybe wrapped in {"state": ...}), else model. */
static const pth_obj *pick_source(const pth_obj *root, const char **label)
{
    const pth_obj *ema = pth_dict_get(root, "ema_state");
    if (pth_dict_get(ema, "state") && pth_dict_get(ema, "state")->kind == PTH_DICT)
        ema = pth_dict_get(ema, "state");
    if (ema && ema->kind == PTH_DICT && ema->u.dict.n) {
        *label = "ema_state";
        return ema;
    }
    const pth_obj *model = pth_dict_get(root, "model");
    if (model && model->kind == PTH_DICT && model->u.dict.n) {
        *label = "model";
        return model;
    }
    if (pth_dict_get(root, "backbone.net.patch_embed.proj.weight")) {
        *label = "the top-level state dict";
        return root;
    }
    return NULL;
}

static hadm_status index_source(conversion *c, const pth_obj *src, hadm_error *err)
{
    c->tensors = calloc(src->u.dict.n + 1, sizeof *c->tensors);
    if (!c->tensors)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < src->u.dict.n; i++) {
        const pth_obj *k = src->u.dict.keys[i], *v = src->u.dict.vals[i];
        if (k->kind != PTH_STR || v->kind != PTH_TENSOR) {
            c->non_tensors++;
            continue;
        }
        const char *name = k->u.str.s;
        if (!strncmp(name, "module.", 7))
            name += 7;
        c->tensors[c->n++] = (named_tensor){name, &v->u.tensor, 0};
    }
    qsort(c->tensors, c->n, sizeof *c->tensors, cmp_named);
    for (size_t i = 1; i < c->n; i++)
        if (!strcmp(c->tensors[i].name, c->tensors[i - 1].name))
            return hadm_fail(err, HADM_ERR_FORMAT, "two tensors named '%s'", c->tensors[i].name);
    return HADM_OK;
}

/* HADM-L vs HADM-G from the classifier rows (K+1), real vs test geometry from the ViT width. */
static hadm_status detect_config(conversion *c, hadm_config *cfg, int *tiny, hadm_error *err)
{
    named_tensor *cls = find(c, "roi_heads.box_predictor.0.cls_score.weight");
    named_tensor *pe = find(c, "backbone.net.patch_embed.proj.weight");
    if (!cls || !pe || cls->t->ndim != 2 || pe->t->ndim != 4)
        return hadm_fail(err, HADM_ERR_FORMAT, "no HADM classifier / patch embedding among the %zu tensors: "
                         "not a HADM checkpoint", c->n);
    int64_t rows = cls->t->shape[0], width = pe->t->shape[0];
    char variant = rows == 7 ? 'l' : rows == 13 ? 'g' : 0;
    if (!variant)
        return hadm_fail(err, HADM_ERR_FORMAT, "cls_score has %lld rows: neither HADM-L (6 classes + "
                         "background) nor HADM-G (12 + background)", (long long)rows);
    for (*tiny = 0; *tiny < 2; ++*tiny) {
        hadm_status s = config_default(cfg, variant, *tiny, err);
        if (s)
            return s;
        if (cfg->embed_dim == width)
            return HADM_OK;
        config_free(cfg);
    }
    return hadm_fail(err, HADM_ERR_FORMAT, "ViT width %lld is neither the real HADM models' (1024) nor the "
                     "test geometry's (64)", (long long)width);
}

/* Adds one tensor to the output: straight from the mapping when it is
 * contiguous float32, else converted into a buffer of our own. */
static hadm_status emit(conversion *c, named_tensor *nt, hadm_error *err)
{
    const pth_tensor *t = nt->t;
    const float *data;
    hadm_status s = pth_tensor_view_f32(c->pth, t, &data, err);
    if (!s && !data) {
        float *buf = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *buf);
        float **list = realloc(c->owned, (c->n_owned + 1) * sizeof *list);
        if (list)
            c->owned = list;
        if (!buf || !list) {
            free(buf);
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory converting '%s'", nt->name);
        }
        c->owned[c->n_owned++] = buf;
        s = pth_tensor_read_f32(c->pth, t, buf, err);
        data = buf;
    }
    if (!s)
        s = st_writer_add(c->w, nt->name, ST_F32, t->ndim, t->shape, data, err);
    if (s)
        hadm_error_prefix(err, "tensor '%s'", nt->name);
    nt->used = 1;
    return s;
}

static hadm_status take_required(void *user, const char *name, int ndim, const int64_t *shape,
                                 const float **slot, ops_src_type *type, hadm_error *err)
{
    (void)type;
    (void)slot;
    conversion *c = user;
    named_tensor *nt = find(c, name);
    if (!nt)
        return hadm_fail(err, HADM_ERR_FORMAT, "the checkpoint has no tensor '%s'", name);
    int same = nt->t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = nt->t->shape[i] == shape[i];
    if (!same) {
        char got[96] = "", want[96] = "";
        for (int i = 0; i < nt->t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)nt->t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has shape [%s], the model needs [%s]", name, got, want);
    }
    c->params += nt->t->numel;
    c->took++;
    return emit(c, nt, err);
}

/* Buffers worth keeping because the EMA copies are what the demo ran with. */
static int is_extra(const char *name)
{
    return !strcmp(name, "pixel_mean") || !strcmp(name, "pixel_std") ||
           !strncmp(name, "proposal_generator.anchor_generator.cell_anchors.", 49) ||
           (!strncmp(name, "backbone.net.", 13) && strstr(name, "rope") &&
            (strstr(name, ".freqs_cos") || strstr(name, ".freqs_sin")));
}

/* A tensor of the network that the config has no place for means the
 * checkpoint has another geometry: converting would silently drop it. */
static int is_network_tensor(const char *name)
{
    return !strncmp(name, "backbone.", 9) || !strncmp(name, "proposal_generator.", 19) ||
           !strncmp(name, "roi_heads.", 10);
}

static hadm_status take_extras(conversion *c, const hadm_config *cfg, hadm_error *err)
{
    for (size_t i = 0; i < c->n; i++) {
        named_tensor *nt = &c->tensors[i];
        if (nt->used)
            continue;
        if (!is_extra(nt->name) && is_network_tensor(nt->name))
            return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has no place in %s (%d blocks, %d px): "
                             "a different geometry than the released models", nt->name, cfg->variant,
                             cfg->depth, cfg->img_size);
        if (!is_extra(nt->name))
            continue;
        int pixel = !strncmp(nt->name, "pixel_", 6);
        if (pixel && nt->t->numel != 3)
            continue;   /* not the per-channel vector the loader expects: leave it */
        hadm_status s = emit(c, nt, err);
        if (s)
            return s;
        c->extras++;
    }
    return HADM_OK;
}

static hadm_status write_metadata(conversion *c, const hadm_config *cfg, const char *in_path,
                                  const char *source, const pth_obj *root, hadm_error *err)
{
    char classes[2048] = "[", note[512];
    for (int i = 0; i < cfg->num_classes; i++)
        snprintf(classes + strlen(classes), sizeof classes - strlen(classes), "%s\"%s\"", i ? ", " : "",
                 cfg->class_names[i]);
    snprintf(classes + strlen(classes), sizeof classes - strlen(classes), "]");
    const char *base = strrchr(in_path, '/') ? strrchr(in_path, '/') + 1 : in_path;
    const pth_obj *it = pth_dict_get(root, "iteration");
    char iter[48] = "";
    if (it && it->kind == PTH_INT && !it->big)
        snprintf(iter, sizeof iter, ", iteration %lld", (long long)it->u.i);
    snprintf(note, sizeof note, "hadm convert: %s from %.300s%s", source, base, iter);
    char *json = config_to_json(cfg);
    hadm_status s = json ? HADM_OK : hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (!s)
        s = st_writer_meta(c->w, "format", "hadm/1", err);
    if (!s)
        s = st_writer_meta(c->w, "hadm.variant", cfg->variant, err);
    if (!s)
        s = st_writer_meta(c->w, "hadm.classes", classes, err);
    if (!s)
        s = st_writer_meta(c->w, "hadm.config", json, err);
    if (!s)
        s = st_writer_meta(c->w, "hadm.note", note, err);
    free(json);
    return s;
}

static void print_report(FILE *out, conversion *c, const hadm_config *cfg, int tiny, const char *source,
                         const pth_obj *root, const pth_obj *src, const char *in, const char *outp)
{
    fprintf(out, "converted %s -> %s\n", in, outp);
    fprintf(out, "  model     %s (%s geometry), %d classes\n", cfg->variant, tiny ? "tiny test" : "full",
            cfg->num_classes);
    fprintf(out, "  took      %s: %d tensors, %.1fM parameters, + %d buffers (pixel mean/std, anchors, RoPE)\n",
            source, c->took, (double)c->params / 1e6, c->extras);
    size_t unused = 0;
    for (size_t i = 0; i < c->n; i++)
        unused += !c->tensors[i].used;
    if (unused || c->non_tensors) {
        fprintf(out, "  ignored   in %s: %zu unused tensors", source, unused);
        int shown = 0;
        for (size_t i = 0; i < c->n && shown < 3; i++)
            if (!c->tensors[i].used)
                fprintf(out, "%s%s", shown++ ? ", " : " (", c->tensors[i].name);
        fprintf(out, "%s, %zu other values\n", shown ? (unused > 3 ? ", ...)" : ")") : "", c->non_tensors);
    }
    fprintf(out, "  ignored   top-level entries:");
    int any = 0;
    for (size_t i = 0; root->kind == PTH_DICT && i < root->u.dict.n; i++) {
        const pth_obj *k = root->u.dict.keys[i], *v = root->u.dict.vals[i];
        if (v == src || k->kind != PTH_STR)
            continue;
        if (v->kind == PTH_INT && !v->big)
            fprintf(out, "%s %s=%lld", any++ ? "," : "", k->u.str.s, (long long)v->u.i);
        else if (v->kind == PTH_DICT)
            fprintf(out, "%s %s (%zu entries)", any++ ? "," : "", k->u.str.s, v->u.dict.n);
        else
            fprintf(out, "%s %s (%s)", any++ ? "," : "", k->u.str.s, pth_kind_name(v->kind));
    }
    fprintf(out, "%s\n", any ? "" : " none");
    fprintf(out, "  read      %.1f MB of the %.1f MB archive\n", (double)pth_bytes_read(c->pth) / 1e6,
            (double)pth_file_size(c->pth) / 1e6);
}

static void conversion_free(conversion *c)
{
    for (size_t i = 0; i < c->n_owned; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c->tensors);
    st_writer_free(c->w);
    pth_close(c->pth);
}

hadm_status convert_pth(const char *in_path, const char *out_path, FILE *report, hadm_error *err)
{
    conversion c = {0};
    hadm_config cfg;
    int tiny = 0, have_cfg = 0;
    const char *source = NULL;
    const pth_obj *src = NULL;
    hadm_status s = pth_open(in_path, &c.pth, err);
    if (!s && !(src = pick_source(pth_root(c.pth), &source)))
        s = hadm_fail(err, HADM_ERR_FORMAT, "no 'ema_state' or 'model' state dict in the checkpoint");
    if (!s)
        s = index_source(&c, src, err);
    if (!s && !(s = detect_config(&c, &cfg, &tiny, err)))
        have_cfg = 1;
    if (!s && !(c.w = st_writer_new()))
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (!s) {
        hadm_weights *scratch = malloc(sizeof *scratch);   /* only the table walk needs it */
        s = scratch ? weights_enumerate(&cfg, scratch, take_required, &c, err)
                    : hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        free(scratch);
    }
    if (!s)
        s = take_extras(&c, &cfg, err);
    if (!s)
        s = write_metadata(&c, &cfg, in_path, source, pth_root(c.pth), err);
    if (!s)
        s = st_writer_save(c.w, out_path, err);
    if (s && c.pth)
        hadm_error_prefix(err, "%s%s%s", in_path, source ? ": " : "", source ? source : "");
    if (!s && report)
        print_report(report, &c, &cfg, tiny, source, pth_root(c.pth), src, in_path, out_path);
    if (have_cfg)
        config_free(&cfg);
    conversion_free(&c);
    return s;
}

static void convert_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm convert [--quiet] IN.pth OUT.safetensors\n"
            "       hadm convert --to-cache IN.pth\n\n"
            "Converts an original HADM checkpoint (HADM-L_0249999.pth, HADM-G_0249999.pth)\n"
            "into the hadm model format. Takes the EMA weights when the checkpoint has\n"
            "them (as the authors' demo does), else the raw model weights; recognises\n"
            "HADM-L / HADM-G from the tensors and embeds the real configuration. The\n"
            "optimizer and other training state are skipped without being read. The\n"
            "output is written to a temporary file and renamed, so a failure leaves none.\n\n"
            "--to-cache converts into the cache that hadm detect / hadm serve use when given\n"
            "a .pth ($HADM_CACHE_DIR, else $XDG_CACHE_HOME/hadm, else ~/.cache/hadm), unless\n"
            "it is there already, and prints the cached file's path.\n");
}

int cmd_convert(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL};
    int n = 0, quiet = 0, to_cache = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            convert_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            quiet = 1;
        } else if (!strcmp(argv[i], "--to-cache")) {
            to_cache = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("unknown option '%s' (see hadm convert --help)", argv[i]);
            return 2;
        } else if (n < 2) {
            paths[n++] = argv[i];
        } else {
            cli_error("too many arguments (see hadm convert --help)");
            return 2;
        }
    }
    if (to_cache && n == 1) {
        char *cached = NULL, msg[1024];
        if (modelcache_resolve(paths[0], &cached, msg, sizeof msg) != 0) {
            cli_error("%s", msg);
            return 1;
        }
        printf("%s\n", cached);
        free(cached);
        return 0;
    }
    if (n != 2 || to_cache) {
        cli_error("usage: hadm convert IN.pth OUT.safetensors, or hadm convert --to-cache IN.pth");
        return 2;
    }
    hadm_error err = {0};
    if (convert_pth(paths[0], paths[1], quiet ? NULL : stdout, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    return 0;
}
