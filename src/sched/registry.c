#include "sched/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/log.h"
#include "sched/sync.h"
#include "util/err.h"
#include "util/timer.h"

struct model_ref {
    hadm_model *model;
    int refs; /* the registry's own hold counts as one while it is current */
};

typedef struct {
    int configured;
    char variant;
    char path[1024];
    char label[1024];
    model_build_fn build;
    void *build_user;
    model_state state;
    model_ref *cur;
    char error[512];
    double load_started, load_seconds, open_seconds, warmup_seconds;
    int64_t params;
    int num_classes, input_size;
    unsigned loads_ok, loads_failed, unloads;
    int cancel; /* unload asked while loading: discard the result */
    pthread_t loader;
    int loader_joinable;
} slot;

struct registry {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    registry_config cfg;
    slot s[REG_MODELS];
};

typedef struct {
    registry *r;
    int idx;
} loader_arg;

static const char *NAMES[REG_MODELS] = {"hadm-l", "hadm-g"};
static const char *VARIANTS[REG_MODELS] = {"HADM-L", "HADM-G"};

const char *registry_name(int idx) { return idx >= 0 && idx < REG_MODELS ? NAMES[idx] : "?"; }
const char *registry_variant(int idx) { return idx >= 0 && idx < REG_MODELS ? VARIANTS[idx] : "?"; }

int registry_index(const char *name)
{
    for (int i = 0; i < REG_MODELS; i++)
        if (name && (!strcmp(name, NAMES[i]) || !strcmp(name, VARIANTS[i])))
            return i;
    return -1;
}

const char *model_state_name(model_state s)
{
    switch (s) {
    case MODEL_UNCONFIGURED: return "not_configured";
    case MODEL_UNLOADED: return "unloaded";
    case MODEL_LOADING: return "loading";
    case MODEL_READY: return "ready";
    case MODEL_FAILED: return "failed";
    }
    return "?";
}

registry *registry_new(const registry_config *cfg)
{
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    cond_init_monotonic(&r->changed);
    if (cfg)
        r->cfg = *cfg;
    for (int i = 0; i < REG_MODELS; i++)
        r->s[i].variant = i == REG_L ? 'l' : 'g';
    return r;
}

static void ref_drop(model_ref *ref)
{
    if (ref) {
        hadm_model_close(ref->model);
        free(ref);
    }
}

void registry_free(registry *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < REG_MODELS; i++) {
        slot *s = &r->s[i];
        while (s->state == MODEL_LOADING)
            pthread_cond_wait(&r->changed, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < REG_MODELS; i++) {
        slot *s = &r->s[i];
        if (s->loader_joinable)
            pthread_join(s->loader, NULL);
        /* Running work has been drained by the scheduler before this point. */
        if (s->cur && --s->cur->refs == 0)
            ref_drop(s->cur);
    }
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void registry_configure(registry *r, int idx, const model_source *src)
{
    slot *s = &r->s[idx];
    pthread_mutex_lock(&r->lock);
    s->configured = 1;
    s->state = MODEL_UNLOADED;
    snprintf(s->path, sizeof s->path, "%s", src->path ? src->path : "");
    snprintf(s->label, sizeof s->label, "%s", src->label ? src->label : s->path);
    s->build = src->build;
    s->build_user = src->build_user;
    pthread_mutex_unlock(&r->lock);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* One detect on a grey image, so the first request does not pay for
 * first-touch page faults and primitive creation. */
static hadm_status warm_up(hadm_model *m, hadm_error *err)
{
    int side = 64;
    hadm_image img = {side, side, malloc((size_t)side * side * 3)};
    if (!img.rgb)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    memset(img.rgb, 128, (size_t)side * side * 3);
    hadm_result *res = NULL;
    hadm_status st = hadm_detect(m, &img, NULL, &res, err);
    hadm_result_free(res);
    free(img.rgb);
    return st;
}

static void log_load(registry *r, int idx, hadm_status st, const hadm_error *e)
{
    slot *s = &r->s[idx];
    char src[1100], msg[600];
    log_quote(src, sizeof src, s->label);
    if (st) {
        log_line("error", "model_load_failed", "\"model\":\"%s\",\"source\":%s,\"error\":%s",
                 registry_name(idx), src, log_quote(msg, sizeof msg, e->msg));
        return;
    }
    log_line("info", "model_loaded",
             "\"model\":\"%s\",\"source\":%s,\"open_validate_map_prepare_s\":%.4f,"
             "\"warmup_s\":%.4f,\"total_s\":%.4f,\"params\":%lld",
             registry_name(idx), src, s->open_seconds, s->warmup_seconds, s->load_seconds,
             (long long)s->params);
}

static void *loader_main(void *arg)
{
    loader_arg a = *(loader_arg *)arg;
    free(arg);
    registry *r = a.r;
    slot *s = &r->s[a.idx];
    pthread_mutex_lock(&r->lock);
    char path[1024], variant = s->variant;
    memcpy(path, s->path, sizeof path);
    model_build_fn build = s->build;
    void *user = s->build_user;
    pthread_mutex_unlock(&r->lock);

    double t0 = hadm_now();
    if (r->cfg.load_delay_ms > 0)
        sleep_ms(r->cfg.load_delay_ms);
    hadm_error e = {0};
    hadm_model *m = NULL;
    double t1 = hadm_now();
    hadm_status st = path[0] ? hadm_model_open(path, &r->cfg.open, &m, &e)
                             : build(user, variant, &r->cfg.open, &m, &e);
    double t2 = hadm_now();
    if (!st && r->cfg.warmup)
        st = warm_up(m, &e);
    double t3 = hadm_now();

    hadm_model *discard = NULL;
    pthread_mutex_lock(&r->lock);
    s->open_seconds = t2 - t1;
    s->warmup_seconds = r->cfg.warmup ? t3 - t2 : 0;
    s->load_seconds = t3 - t0;
    model_ref *ref = st ? NULL : calloc(1, sizeof *ref);
    if (!st && !ref)
        st = hadm_fail(&e, HADM_ERR_NOMEM, "out of memory");
    if (st) {
        discard = m;
        s->state = MODEL_FAILED;
        snprintf(s->error, sizeof s->error, "%s", e.msg);
        s->loads_failed++;
    } else if (s->cancel) {
        discard = m;
        free(ref);
        s->state = MODEL_UNLOADED;
        s->unloads++;
    } else {
        ref->model = m;
        ref->refs = 1;
        s->cur = ref;
        s->state = MODEL_READY;
        s->params = hadm_model_param_count(m);
        s->num_classes = hadm_model_num_classes(m);
        s->input_size = hadm_model_input_size(m);
        s->loads_ok++;
    }
    log_load(r, a.idx, st, &e);
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    hadm_model_close(discard);
    return NULL;
}

hadm_status registry_load(registry *r, int idx, int wait, hadm_error *err)
{
    slot *s = &r->s[idx];
    hadm_status st = HADM_OK;
    pthread_mutex_lock(&r->lock);
    if (!s->configured) {
        pthread_mutex_unlock(&r->lock);
        return hadm_fail(err, HADM_ERR_ARG, "%s is not configured (no model file)", VARIANTS[idx]);
    }
    if (s->state != MODEL_LOADING && s->state != MODEL_READY) {
        if (s->loader_joinable) /* finished: it set the state before exiting */
            pthread_join(s->loader, NULL);
        s->loader_joinable = 0;
        s->state = MODEL_LOADING;
        s->cancel = 0;
        s->error[0] = '\0';
        s->load_started = hadm_now();
        loader_arg *a = malloc(sizeof *a);
        if (a) {
            a->r = r;
            a->idx = idx;
        }
        if (!a || pthread_create(&s->loader, NULL, loader_main, a) != 0) {
            free(a);
            s->state = MODEL_FAILED;
            snprintf(s->error, sizeof s->error, "cannot start a loader thread");
        } else {
            s->loader_joinable = 1;
        }
    } else if (s->state == MODEL_LOADING) {
        s->cancel = 0; /* a load request overrides an earlier unload */
    }
    while (wait && s->state == MODEL_LOADING)
        pthread_cond_wait(&r->changed, &r->lock);
    if (wait && s->state != MODEL_READY)
        st = hadm_fail(err, HADM_ERR_IO, "%s", s->error[0] ? s->error : "model was unloaded");
    pthread_mutex_unlock(&r->lock);
    return st;
}

hadm_status registry_unload(registry *r, int idx, hadm_error *err)
{
    slot *s = &r->s[idx];
    model_ref *drop = NULL;
    pthread_mutex_lock(&r->lock);
    if (!s->configured) {
        pthread_mutex_unlock(&r->lock);
        return hadm_fail(err, HADM_ERR_ARG, "%s is not configured (no model file)", VARIANTS[idx]);
    }
    if (s->state == MODEL_LOADING) {
        s->cancel = 1;
    } else if (s->state == MODEL_READY) {
        if (--s->cur->refs == 0)
            drop = s->cur;
        s->cur = NULL;
        s->state = MODEL_UNLOADED;
        s->unloads++;
    } else {
        s->state = MODEL_UNLOADED;
        s->error[0] = '\0';
    }
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    ref_drop(drop);
    log_line("info", "model_unloaded", "\"model\":\"%s\"", NAMES[idx]);
    return HADM_OK;
}

model_state registry_state(registry *r, int idx)
{
    pthread_mutex_lock(&r->lock);
    model_state st = r->s[idx].state;
    pthread_mutex_unlock(&r->lock);
    return st;
}

void registry_info(registry *r, int idx, model_info *out)
{
    slot *s = &r->s[idx];
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->lock);
    out->state = s->state;
    snprintf(out->source, sizeof out->source, "%s", s->label);
    snprintf(out->error, sizeof out->error, "%s", s->error);
    out->load_seconds = s->load_seconds;
    out->open_seconds = s->open_seconds;
    out->warmup_seconds = s->warmup_seconds;
    out->loading_for = s->state == MODEL_LOADING ? hadm_now() - s->load_started : 0;
    out->params = s->state == MODEL_READY ? s->params : 0;
    out->num_classes = s->num_classes;
    out->input_size = s->input_size;
    out->loads_ok = s->loads_ok;
    out->loads_failed = s->loads_failed;
    out->unloads = s->unloads;
    out->refs = s->cur ? s->cur->refs - 1 : 0;
    pthread_mutex_unlock(&r->lock);
}

void registry_unavailable_reason(registry *r, int idx, char *buf, size_t cap)
{
    model_info mi;
    registry_info(r, idx, &mi);
    const char *v = VARIANTS[idx];
    switch (mi.state) {
    case MODEL_UNCONFIGURED:
        snprintf(buf, cap, "%s is not configured (no model file given)", v);
        break;
    case MODEL_UNLOADED:
        snprintf(buf, cap, "%s is not loaded (POST /api/control/load_%c)", v, idx == REG_L ? 'l' : 'g');
        break;
    case MODEL_FAILED:
        snprintf(buf, cap, "%s failed to load: %s", v, mi.error);
        break;
    case MODEL_LOADING:
        snprintf(buf, cap, "%s is loading", v);
        break;
    case MODEL_READY:
        snprintf(buf, cap, "%s is ready", v);
        break;
    }
}

model_ref *registry_acquire(registry *r, int idx)
{
    pthread_mutex_lock(&r->lock);
    model_ref *ref = r->s[idx].state == MODEL_READY ? r->s[idx].cur : NULL;
    if (ref)
        ref->refs++;
    pthread_mutex_unlock(&r->lock);
    return ref;
}

hadm_model *model_ref_get(model_ref *ref) { return ref ? ref->model : NULL; }

void registry_retain(registry *r, model_ref *ref)
{
    pthread_mutex_lock(&r->lock);
    ref->refs++;
    pthread_mutex_unlock(&r->lock);
}

void registry_release(registry *r, model_ref *ref)
{
    if (!ref)
        return;
    pthread_mutex_lock(&r->lock);
    int last = --ref->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (last)
        ref_drop(ref);
}

void registry_wait_loaded(registry *r, int idx, double until)
{
    pthread_mutex_lock(&r->lock);
    while (r->s[idx].state == MODEL_LOADING && hadm_now() < until)
        if (cond_wait_until(&r->changed, &r->lock, until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&r->lock);
}
