/* The API-key compare (equal exactly, and in time that does not depend on
 * how much of a guess is right) and the JSON body bounds. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/jsonlimit.h"
#include "server/request.h"
#include "testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void key_answers(void)
{
    CHECK(ctx_key_equal("secret-one", "secret-one"), "equal keys");
    CHECK(!ctx_key_equal("secret-onf", "secret-one"), "last byte differs");
    CHECK(!ctx_key_equal("Secret-one", "secret-one"), "first byte differs");
    CHECK(!ctx_key_equal("secret-on", "secret-one"), "prefix of the key");
    CHECK(!ctx_key_equal("secret-one2", "secret-one"), "key plus a byte");
    CHECK(!ctx_key_equal("", "secret-one"), "empty guess");
    CHECK(!ctx_key_equal("secret-one", ""), "empty key matches only empty");
    CHECK(ctx_key_equal("", ""), "both empty");
}

/* Fastest of many runs: the least disturbed by other work on the machine. */
static double best_time(const char *guess, const char *key, int rounds, int reps)
{
    double best = 1e9;
    volatile int sink = 0;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++)
            sink += ctx_key_equal(guess, key);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    (void)sink;
    return best;
}

/* An early-exit compare answers a guess wrong in its first byte ~n times
 * faster than one wrong in its last byte; a constant-time one does not. */
static void key_timing(void)
{
    size_t n = 64 * 1024;
    char *key = malloc(n + 1), *first = malloc(n + 1), *last = malloc(n + 1);
    memset(key, 'k', n);
    key[n] = '\0';
    memcpy(first, key, n + 1);
    memcpy(last, key, n + 1);
    first[0] = 'x';
    last[n - 1] = 'x';
    double tf = best_time(first, key, 31, 20), tl = best_time(last, key, 31, 20);
    double ratio = tl > tf ? tl / tf : tf / tl;
    printf("key compare, 64 KiB key: wrong first byte %.1f us, wrong last byte %.1f us (ratio %.2f)\n",
           tf / 20 * 1e6, tl / 20 * 1e6, ratio);
    CHECK(ratio < 3.0, "time depends on where the guess goes wrong (ratio %.2f)", ratio);
    free(key);
    free(first);
    free(last);
}

static char *repeat(const char *head, const char *unit, size_t times, const char *tail)
{
    size_t hu = strlen(head), uu = strlen(unit), tu = strlen(tail);
    char *s = malloc(hu + uu * times + tu + 1), *p = s;
    memcpy(p, head, hu), p += hu;
    for (size_t i = 0; i < times; i++)
        memcpy(p, unit, uu), p += uu;
    memcpy(p, tail, tu + 1);
    return s;
}

static void json_bounds(void)
{
    char why[160] = "";
    const char *ok = "{\"image_base64\": \"[[[[{{{{,,,,\\\"\", \"mode\": \"local\"}";
    CHECK(json_check_limits(ok, strlen(ok), why, sizeof why) == 0, "brackets inside strings count (%s)", why);
    char *deep = repeat("", "[", JSON_MAX_DEPTH, "");
    CHECK(json_check_limits(deep, strlen(deep), why, sizeof why) == 0, "%d levels are allowed", JSON_MAX_DEPTH);
    free(deep);
    deep = repeat("{\"a\":", "[", JSON_MAX_DEPTH, "");
    CHECK(json_check_limits(deep, strlen(deep), why, sizeof why) == 400, "one level too deep");
    CHECK(strstr(why, "nested deeper") != NULL, "the reason says so: %s", why);
    free(deep);
    /* an array of k numbers is k + 1 values */
    char *many = repeat("[0", ",0", JSON_MAX_VALUES - 2, "]");
    CHECK(json_check_limits(many, strlen(many), why, sizeof why) == 0, "%zu values are allowed", JSON_MAX_VALUES);
    free(many);
    many = repeat("[0", ",0", JSON_MAX_VALUES - 1, "]");
    CHECK(json_check_limits(many, strlen(many), why, sizeof why) == 413, "one value too many");
    CHECK(strstr(why, "values") != NULL, "the reason says so: %s", why);
    free(many);
}

int main(void)
{
    key_answers();
    key_timing();
    json_bounds();
    return test_finish();
}
