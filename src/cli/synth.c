/* hadm synth --variant l|g [--size tiny|full] [--seed N] OUT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/synth.h"

static void synth_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm synth --variant l|g [--size tiny|full] [--seed N] OUT.safetensors\n\n"
            "Writes a model with seeded random weights in the real file format, for demos\n"
            "and benchmarks. Its detections mean nothing. full = the real HADM geometry\n"
            "(358M parameters, 1.43 GB); tiny = the 256-px test geometry (default).\n");
}

int cmd_synth(int argc, char **argv)
{
    char variant = 0;
    int full = 0;
    unsigned long long seed = 1;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--variant") && v) {
            variant = (!strcmp(v, "l") || !strcmp(v, "local")) ? 'l' : (!strcmp(v, "g") || !strcmp(v, "global")) ? 'g' : '?';
            i++;
        } else if (!strcmp(a, "--size") && v) {
            if (strcmp(v, "tiny") && strcmp(v, "full")) {
                cli_error("--size must be tiny or full");
                return 2;
            }
            full = !strcmp(v, "full");
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 10);
            if (errno || *end || !*v) {
                cli_error("--seed must be a non-negative integer");
                return 2;
            }
            i++;
        } else if (a[0] == '-' ) {
            cli_error("unknown or incomplete option '%s' (see hadm synth --help)", a);
            return 2;
        } else if (!out) {
            out = a;
        } else {
            cli_error("only one output file");
            return 2;
        }
    }
    if (variant != 'l' && variant != 'g') {
        cli_error("--variant l|g is required");
        return 2;
    }
    if (!out) {
        cli_error("missing output file");
        return 2;
    }
    hadm_config cfg;
    synth_model m;
    hadm_error err = {0};
    if (config_default(&cfg, variant, !full, &err) || synth_build(&cfg, seed, &m, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    hadm_status s = st_writer_save(m.writer, out, &err);
    synth_free(&m);
    config_free(&cfg);
    if (s) {
        cli_error("%s", err.msg);
        return 1;
    }
    fprintf(stderr, "hadm: wrote %s (%s %s, seed %llu)\n", out, variant == 'l' ? "HADM-L" : "HADM-G",
            full ? "full" : "tiny", seed);
    return 0;
}
