/* Model files: the config tables, synth round trip, and every way a file can
 * be malformed (each must give one clear error, never a crash). */
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/synth.h"
#include "engine/weights.h"
#include "testutil.h"

#include <cjson/cJSON.h>

static void test_param_counts(void)
{
    hadm_config c;
    hadm_error err = {0};
    /* spec MODEL.md 7.4 */
    CHECK(config_default(&c, 'l', 0, &err) == HADM_OK, "%s", err.msg);
    CHECK(weights_param_count(&c) == 358033904LL, "HADM-L params %lld", (long long)weights_param_count(&c));
    config_free(&c);
    CHECK(config_default(&c, 'g', 0, &err) == HADM_OK, "%s", err.msg);
    CHECK(weights_param_count(&c) == 358052354LL, "HADM-G params %lld", (long long)weights_param_count(&c));
    /* the JSON written for a config parses back to the same values */
    char *json = config_to_json(&c);
    hadm_config back;
    const char *classes = "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\"]";
    CHECK(json && config_parse(&back, json, "HADM-G", classes, &err) == HADM_OK, "%s", err.msg);
    CHECK(back.embed_dim == 1024 && back.depth == 24 && back.is_global[23] && !back.is_global[22] &&
              back.mlp_hidden == 2730 && back.use_sigmoid && back.num_classes == 12 &&
              back.cascade_weights[2][3] == 15.0f && back.rpn_nms_thresh == 0.7f && back.ln_eps == 1e-6f,
          "config round trip");
    CHECK(weights_param_count(&back) == 358052354LL, "round-trip params");
    config_free(&back);
    /* inconsistent configs are refused with the key named */
    CHECK(config_parse(&back, "{}", "HADM-L", "[]", &err) == HADM_ERR_FORMAT && strstr(err.msg, "missing key"),
          "empty config: %s", err.msg);
    CHECK(config_parse(&back, json, "HADM-X", classes, &err) == HADM_ERR_FORMAT, "bad variant accepted");
    CHECK(config_parse(&back, json, "HADM-G", "[\"one\"]", &err) == HADM_ERR_FORMAT, "short class list accepted");
    free(json);
    config_free(&c);
}

static char *write_synth(char variant, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    hadm_config c;
    synth_model m;
    hadm_error err = {0};
    CHECK(config_default(&c, variant, 1, &err) == HADM_OK && synth_build(&c, 7, &m, &err) == HADM_OK, "%s", err.msg);
    CHECK(st_writer_save(m.writer, path, &err) == HADM_OK, "%s", err.msg);
    synth_free(&m);
    config_free(&c);
    return path;
}

static void test_synth_roundtrip(void)
{
    const char *path = write_synth('g', "g.safetensors");
    hadm_model *m = NULL;
    hadm_error err = {0};
    CHECK(hadm_model_open(path, NULL, &m, &err) == HADM_OK, "%s", err.msg);
    if (m) {
        CHECK(!strcmp(hadm_model_variant(m), "HADM-G"), "variant");
        CHECK(hadm_model_num_classes(m) == 12, "classes");
        CHECK(!strcmp(hadm_model_class_name(m, 11), "human with extra torso"), "class name");
        CHECK(hadm_model_class_name(m, 12) == NULL, "class 12 should not exist");
        CHECK(hadm_model_input_size(m) == 256, "input size");
        hadm_model_close(m);
    }
    CHECK(hadm_model_open_demo('l', 3, NULL, &m, &err) == HADM_OK, "demo: %s", err.msg);
    if (m)
        CHECK(!strcmp(hadm_model_variant(m), "HADM-L"), "demo variant");
    hadm_model_close(m);
}

/* Writes bytes to a temp file and expects hadm_model_open to refuse it with
 * an error that contains `needle`. */
static void expect_refused(const void *bytes, size_t len, const char *needle, const char *what)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, len, f);
    fclose(f);
    hadm_model *m = NULL;
    hadm_error err = {0};
    hadm_status s = hadm_model_open(path, NULL, &m, &err);
    CHECK(s != HADM_OK && m == NULL, "%s: accepted", what);
    CHECK(strstr(err.msg, needle) != NULL && strstr(err.msg, path) != NULL, "%s: error '%s' lacks '%s' or the path",
          what, err.msg, needle);
    hadm_model_close(m);
}

static size_t make_file(unsigned char *buf, const char *header, size_t data_len)
{
    size_t h = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, 0, data_len);
    return 8 + h + data_len;
}

static void test_bad_files(void)
{
    unsigned char buf[4096];
    expect_refused("", 0, "empty", "empty file");
    expect_refused("abc", 3, "too short", "3-byte file");
    unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    expect_refused(huge, sizeof huge, "header length", "header length beyond the file");
    expect_refused(buf, make_file(buf, "{not json", 0), "JSON", "bad JSON");
    expect_refused(buf, make_file(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
                   "outside", "offsets past the end");
    expect_refused(buf, make_file(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16),
                   "needs", "size not matching the shape");
    expect_refused(buf, make_file(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16),
                   "overlap", "overlapping tensors");
    expect_refused(buf, make_file(buf, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                   "dtype", "unknown dtype");
    expect_refused(buf, make_file(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                   "dimension", "negative dimension");
    expect_refused(buf, make_file(buf, "{\"__metadata__\":{\"format\":\"other\"}}", 0), "format", "wrong format");
    expect_refused(buf, make_file(buf, "{}", 0), "format", "no metadata");
}

/* Rebuilds a file with its header JSON edited by `edit`, padded with spaces
 * to a multiple of 8 as writers do (pad = 0) or deliberately misaligned. */
static unsigned char *with_header_pad(const unsigned char *bytes, size_t len, void (*edit)(cJSON *),
                                      size_t *out_len, int misalign)
{
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = (h << 8) | bytes[i];
    cJSON *root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)h);
    edit(root);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jn = strlen(json), hn = ((jn + 7) & ~(size_t)7) + (misalign ? 1 : 0);
    size_t data = len - 8 - (size_t)h;
    unsigned char *out = malloc(8 + hn + data);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memset(out + 8, ' ', hn);
    memcpy(out + 8, json, jn);
    memcpy(out + 8 + hn, bytes + 8 + h, data);
    free(json);
    *out_len = 8 + hn + data;
    return out;
}

static unsigned char *with_header(const unsigned char *bytes, size_t len, void (*edit)(cJSON *),
                                  size_t *out_len)
{
    return with_header_pad(bytes, len, edit, out_len, 0);
}

static void no_edit(cJSON *root) { (void)root; }

static void reshape_proj_bias(cJSON *root)
{
    cJSON *t = cJSON_GetObjectItem(root, "backbone.net.blocks.0.attn.proj.bias");
    cJSON_ReplaceItemInObject(t, "shape", cJSON_Parse("[8,8]"));
}

static void drop_fc1(cJSON *root) { cJSON_DeleteItemFromObject(root, "roi_heads.box_head.1.fc1.weight"); }

static void retype_fc1(cJSON *root)
{
    cJSON *t = cJSON_GetObjectItem(root, "roi_heads.box_head.1.fc1.bias");
    cJSON_ReplaceItemInObject(t, "dtype", cJSON_CreateString("I32"));
}

static void reshape_rope(cJSON *root)
{
    cJSON *t = cJSON_GetObjectItem(root, "backbone.net.rope_win.freqs_cos");
    cJSON_ReplaceItemInObject(t, "shape", cJSON_Parse("[8,32]"));
}

/* Stored RoPE tables (golden models carry them) must have the exact shape. */
static void test_rope_table_shape(void)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/tiny-local/model.safetensors", test_golden_dir());
    size_t len = 0, n = 0;
    unsigned char *bytes = test_read_file(path, &len);
    CHECK(bytes != NULL, "cannot read %s", path);
    if (!bytes)
        return;
    unsigned char *b = with_header(bytes, len, reshape_rope, &n);
    expect_refused(b, n, "rope_win.freqs_cos' has shape [8,32]", "RoPE table with the wrong shape");
    free(b);
    free(bytes);
}

/* A valid synth file with one tensor edited must name that tensor. */
static void test_wrong_tensors(void)
{
    const char *path = write_synth('l', "l.safetensors");
    size_t len = 0, n = 0;
    unsigned char *bytes = test_read_file(path, &len);
    CHECK(bytes != NULL, "read synth file");
    if (!bytes)
        return;
    unsigned char *b = with_header(bytes, len, reshape_proj_bias, &n);
    expect_refused(b, n, "blocks.0.attn.proj.bias", "wrong shape");
    free(b);
    b = with_header(bytes, len, drop_fc1, &n);
    expect_refused(b, n, "box_head.1.fc1.weight' is missing", "missing tensor");
    free(b);
    b = with_header(bytes, len, retype_fc1, &n);
    expect_refused(b, n, "dtype I32", "wrong dtype");
    free(b);
    expect_refused(bytes, len / 2, "outside", "truncated file");
    b = with_header_pad(bytes, len, no_edit, &n, 1);
    expect_refused(b, n, "not 4-byte aligned", "header length leaving the data misaligned");
    free(b);
    free(bytes);
}

int main(void)
{
    test_param_counts();
    test_synth_roundtrip();
    test_bad_files();
    test_wrong_tensors();
    test_rope_table_shape();
    return test_finish();
}
