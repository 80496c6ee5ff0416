/* A model file changed under its mapping: truncated (SIGBUS without the
 * guard), rewritten in place, or replaced by a rename (harmless). */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/mapguard.h"
#include "io/safetensors.h"
#include "testutil.h"

static char model_src[1024];

static int copy_model(const char *to)
{
    size_t n = 0;
    unsigned char *d = test_read_file(model_src, &n);
    FILE *f = d ? fopen(to, "wb") : NULL;
    int ok = f && fwrite(d, 1, n, f) == n;
    if (f && fclose(f))
        ok = 0;
    free(d);
    return ok ? 0 : -1;
}

/* Reads every tensor byte (faults in every page of the data section). */
static double checksum(const st_file *f)
{
    double sum = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k += 64)
            sum += p[k];
    }
    return sum;
}

static void truncated(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/trunc.safetensors", dir);
    CHECK(copy_model(path) == 0, "copy %s", path);
    st_file *f = NULL;
    hadm_error err = {0};
    CHECK(st_open(path, &f, &err) == HADM_OK, "open: %s", err.msg);
    if (!f)
        return;
    double before = checksum(f);
    CHECK(st_check_intact(f, &err) == HADM_OK, "untouched file is intact: %s", err.msg);
    CHECK(truncate(path, 4096) == 0, "truncate");
    double after = checksum(f); /* SIGBUS here without the guard */
    printf("truncated to 4096 bytes while mapped: checksum %.0f -> %.0f, process alive\n", before, after);
    CHECK(after == 0, "a faulted mapping reads as zeros (checksum %.0f)", after);
    CHECK(st_check_intact(f, &err) == HADM_ERR_IO, "truncation is reported");
    CHECK(strstr(err.msg, "truncated") && strstr(err.msg, "trunc.safetensors"), "message: %s", err.msg);
    printf("reported: %s\n", err.msg);
    st_close(f);
}

static void rewritten_and_renamed(const char *dir)
{
    char path[1100], fresh[1100];
    snprintf(path, sizeof path, "%s/inplace.safetensors", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.safetensors", dir);
    CHECK(copy_model(path) == 0, "copy");
    st_file *f = NULL;
    hadm_error err = {0};
    CHECK(st_open(path, &f, &err) == HADM_OK, "open: %s", err.msg);
    if (!f)
        return;
    double before = checksum(f);
    CHECK(copy_model(fresh) == 0 && rename(fresh, path) == 0, "rename a new file over it");
    CHECK(st_check_intact(f, &err) == HADM_OK, "a rename over the file is harmless: %s", err.msg);
    CHECK(checksum(f) == before, "the mapping still holds the original");
    st_close(f);

    CHECK(st_open(path, &f, &err) == HADM_OK, "reopen: %s", err.msg);
    if (!f)
        return;
    usleep(20000); /* a visible change of modification time */
    CHECK(copy_model(path) == 0, "same bytes copied over it in place (as cp does)");
    CHECK(st_check_intact(f, &err) == HADM_ERR_IO, "the in-place write is reported");
    CHECK(strstr(err.msg, "modified in place") != NULL, "message: %s", err.msg);
    st_close(f);
}

/* Faults outside guarded mappings still end the process. */
static void unguarded_still_crashes(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/plain.bin", dir);
    CHECK(copy_model(path) == 0, "copy");
    st_file *f = NULL; /* installs the guard's handler in this process */
    hadm_error err = {0};
    CHECK(st_open(model_src, &f, &err) == HADM_OK, "open: %s", err.msg);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_RDONLY);
        volatile const unsigned char *p = mmap(NULL, 65536, PROT_READ, MAP_PRIVATE, fd, 0);
        if (fd < 0 || p == MAP_FAILED || truncate(path, 0))
            _exit(3);
        _exit(p[32768] == 0 ? 0 : 1); /* must not return */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("unguarded mapping past EOF: child %s %d\n", WIFSIGNALED(status) ? "killed by signal" : "exited",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    CHECK(!(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3)),
          "the unguarded access did not return normally");
    st_close(f);
}

int main(void)
{
    snprintf(model_src, sizeof model_src, "%s/tiny-local/model.safetensors", test_golden_dir());
    const char *dir = test_tmpdir();
    truncated(dir);
    rewritten_and_renamed(dir);
    unguarded_still_crashes(dir);
    return test_finish();
}
