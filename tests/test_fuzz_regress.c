/* Replays every committed fuzz input through the fuzz targets' own entry
 * points (fuzz/fuzz_*.c, compiled here without libFuzzer): the seeds of
 * fuzz/corpus/<target>/ and the past findings of fuzz/regress/<target>/,
 * each a crash, leak, UB or broken invariant that was fixed. A target aborts
 * on a broken invariant, and this build's sanitizers catch the rest, so a
 * finding that comes back fails this test. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "testutil.h"

static const struct {
    const char *name;
    fuzz_fn fn;
} TARGETS[] = {
    {"image", fuzz_image},   {"exif", fuzz_exif}, {"base64", fuzz_base64},   {"safetensors", fuzz_safetensors},
    {"pth", fuzz_pth},       {"request", fuzz_request}, {"kserve", fuzz_kserve},
};
enum { N_TARGETS = sizeof TARGETS / sizeof *TARGETS };

static int target_index(const char *name)
{
    for (int i = 0; i < N_TARGETS; i++)
        if (!strcmp(TARGETS[i].name, name))
            return i;
    return -1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of dir through fn, in name order; returns how many. */
static int replay_dir(const char *dir, fuzz_fn fn)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char *names[4096];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 4096;)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len = 0;
        unsigned char *text = test_read_file(path, &len);
        CHECK(text != NULL, "cannot read %s", path);
        /* An exact-size copy, so that reading one byte past the input is caught. */
        uint8_t *exact = text ? malloc(len ? len : 1) : NULL;
        if (exact) {
            memcpy(exact, text, len);
            printf("  %s\n", path);
            fflush(stdout);
            fn(exact, len);
        }
        free(exact);
        free(text);
        free(names[i]);
    }
    return n;
}

/* Every folder under fuzz/corpus and fuzz/regress must name a target. */
static void check_folders(const char *root)
{
    DIR *d = opendir(root);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            CHECK(target_index(e->d_name) >= 0, "%s/%s names no fuzz target", root, e->d_name);
    closedir(d);
}

int main(void)
{
    const char *src = getenv("HADM_SOURCE_DIR");
    if (!src)
        src = ".";
    char corpus[1024], regress[1024];
    snprintf(corpus, sizeof corpus, "%s/fuzz/corpus", src);
    snprintf(regress, sizeof regress, "%s/fuzz/regress", src);
    check_folders(corpus);
    check_folders(regress);
    for (int i = 0; i < N_TARGETS; i++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/%s", corpus, TARGETS[i].name);
        int seeds = replay_dir(dir, TARGETS[i].fn);
        CHECK(seeds > 0, "no seed inputs in %s", dir);
        snprintf(dir, sizeof dir, "%s/%s", regress, TARGETS[i].name);
        int found = replay_dir(dir, TARGETS[i].fn);
        printf("%-12s %3d seeds, %3d past findings replayed\n", TARGETS[i].name, seeds, found);
    }
    return test_finish();
}
