/* The machine side of hadm doctor: CPU features, threads, memory (cgroup
 * limits included), NVIDIA GPUs through the driver's own library loaded at run
 * time, environment variables that hurt, and the filesystems files live on. */
#include <cpuid.h>
#include <dlfcn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cli/doctor.h"
#include "ops/ops.h"

#define GB (1024.0 * 1024 * 1024)

/* ---- CPU ---- */

static void cpu_brand(char *out, size_t n)
{
    unsigned r[12] = {0}, a, b, c, d;
    snprintf(out, n, "unknown CPU");
    if (__get_cpuid_max(0x80000000, NULL) < 0x80000004)
        return;
    for (unsigned i = 0; i < 3; i++) {
        __cpuid(0x80000002 + i, a, b, c, d);
        r[i * 4] = a, r[i * 4 + 1] = b, r[i * 4 + 2] = c, r[i * 4 + 3] = d;
    }
    char brand[49];
    memcpy(brand, r, 48);
    brand[48] = 0;
    const char *s = brand;
    while (*s == ' ')
        s++;
    snprintf(out, n, "%s", s);
}

/* Effective CPUs: affinity mask, then a cgroup v2 quota if any. */
static int usable_cpus(int *quota_cpus)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    *quota_cpus = 0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    char q[32] = "";
    long long quota = 0, period = 0;
    if (f && fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") && period > 0) {
        quota = atoll(q);
        *quota_cpus = (int)((quota + period - 1) / period);
    }
    if (f)
        fclose(f);
    return n;
}

void doctor_check_cpu(doctor_report *r)
{
    char brand[64], feats[160] = "";
    cpu_brand(brand, sizeof brand);
    unsigned a = 0, b = 0, c = 0, d = 0, a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __cpuid_count(7, 0, a, b, c, d);
    __cpuid_count(7, 1, a1, b1, c1, d1);
    (void)b1, (void)c1, (void)d1;
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    int vnni = avx512 && (c >> 11 & 1), bf16 = avx512 && (a1 >> 5 & 1), amx = d >> 24 & 1;
    snprintf(feats, sizeof feats, "%s%s%s%s%s", avx2 ? "AVX2+FMA" : "no AVX2", avx512 ? ", AVX-512" : "",
             bf16 ? ", AVX512-BF16" : "", vnni ? ", AVX512-VNNI" : "", amx ? ", AMX" : "");
    if (!avx2)
        doctor_add(r, "cpu", CHECK_FAIL, "run on an x86-64-v3 CPU (Haswell or newer): the kernels need AVX2",
                   "%s: %s", brand, feats);
    else if (!avx512)
        doctor_add(r, "cpu", CHECK_WARN, "an AVX-512 CPU runs the matmuls about twice as fast",
                   "%s: %s (f32 runs on AVX2; bf16/int8 models gain little here)", brand, feats);
    else
        doctor_add(r, "cpu", CHECK_OK, NULL, "%s: %s%s%s", brand, feats,
                   vnni ? "; int8 runs on VNNI" : "",
                   !bf16 ? "" : ops_bf16_native() ? "; bf16 computes in bf16"
                                                  : "; bf16 computes in f32 (this CPU's bf16 dot product is not "
                                                    "faster than its f32 FMA), weights stay bf16");

    int quota = 0, n = usable_cpus(&quota);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (quota && quota < n)
        doctor_add(r, "threads", CHECK_WARN, "use --threads to match the quota, or raise the container's CPU limit",
                   "%d CPUs usable, but the cgroup CPU quota allows about %d", n, quota);
    else if (n < online)
        doctor_add(r, "threads", CHECK_WARN, "widen the CPU affinity (taskset / container cpuset) if this is not meant",
                   "%d of %ld online CPUs usable (affinity mask)", n, online);
    else
        doctor_add(r, "threads", CHECK_OK, NULL, "%d CPUs usable; inference uses all of them by default", n);
}

/* ---- memory ---- */

static uint64_t meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    uint64_t v = 0;
    size_t k = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':') {
            v = strtoull(line + k + 1, NULL, 10) * 1024;
            break;
        }
    if (f)
        fclose(f);
    return v;
}

static uint64_t cgroup_memory_limit(void)
{
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (!f)
        f = fopen("/sys/fs/cgroup/memory/memory.limit_in_bytes", "r");
    char v[32] = "";
    uint64_t lim = 0;
    if (f && fscanf(f, "%31s", v) == 1 && strcmp(v, "max"))
        lim = strtoull(v, NULL, 10);
    if (f)
        fclose(f);
    return lim > (UINT64_C(1) << 60) ? 0 : lim;   /* v1 reports "unlimited" as a huge number */
}

void doctor_check_memory(doctor_report *r, uint64_t need)
{
    uint64_t total = meminfo("MemTotal"), avail = meminfo("MemAvailable"), lim = cgroup_memory_limit();
    uint64_t cap = lim && lim < total ? lim : total;
    /* weights + activations of one 1024-px image per model */
    uint64_t want = need ? need + (uint64_t)(1.5 * GB) : 0;
    char limit[64] = "";
    if (lim)
        snprintf(limit, sizeof limit, ", container limit %.1f GB", lim / GB);
    if (want && cap < want)
        doctor_add(r, "memory", CHECK_FAIL, "give the machine or container more memory, or load one model (--mode)",
                   "%.1f GB RAM%s, the models need about %.1f GB", total / GB, limit, want / GB);
    else if (want && avail < want)
        doctor_add(r, "memory", CHECK_WARN, "stop other memory users or expect swapping on load",
                   "%.1f GB available of %.1f GB%s; the models need about %.1f GB", avail / GB, total / GB, limit,
                   want / GB);
    else {
        char needs[64] = "";
        if (want)
            snprintf(needs, sizeof needs, "; the models need about %.1f GB", want / GB);
        doctor_add(r, "memory", CHECK_OK, NULL, "%.1f GB available of %.1f GB%s%s", avail / GB, total / GB, limit, needs);
    }
}

/* ---- NVIDIA GPU via NVML, loaded only if present ---- */

typedef struct { unsigned long long total, free, used; } nvml_memory;

void doctor_check_gpu(doctor_report *r)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        doctor_add(r, "gpu", CHECK_OK, NULL, "no NVIDIA driver (libnvidia-ml.so.1 not found): CPU inference");
        return;
    }
    int (*init)(void) = (int (*)(void))dlsym(lib, "nvmlInit_v2");
    int (*shutdown)(void) = (int (*)(void))dlsym(lib, "nvmlShutdown");
    int (*version)(char *, unsigned) = (int (*)(char *, unsigned))dlsym(lib, "nvmlSystemGetDriverVersion");
    int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(lib, "nvmlDeviceGetCount_v2");
    int (*handle)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    int (*name)(void *, char *, unsigned) = (int (*)(void *, char *, unsigned))dlsym(lib, "nvmlDeviceGetName");
    int (*mem)(void *, nvml_memory *) = (int (*)(void *, nvml_memory *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
    if (!init || !shutdown || !version || !count || !handle || !name || !mem) {
        doctor_add(r, "gpu", CHECK_WARN, "reinstall the NVIDIA driver", "libnvidia-ml.so.1 lacks the NVML functions");
        dlclose(lib);
        return;
    }
    int rc = init();
    if (rc != 0) {
        doctor_add(r, "gpu", CHECK_WARN, "check the driver with nvidia-smi (module loaded? device nodes in the container?)",
                   "NVIDIA driver library found but NVML failed to start (error %d)", rc);
        dlclose(lib);
        return;
    }
    char drv[96] = "?", desc[400] = "";
    unsigned n = 0;
    version(drv, sizeof drv);
    count(&n);
    for (unsigned i = 0; i < n && i < 8; i++) {
        void *dev = NULL;
        char nm[96] = "?";
        nvml_memory m = {0};
        if (handle(i, &dev) == 0) {
            name(dev, nm, sizeof nm);
            mem(dev, &m);
        }
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%u: %s, %.1f of %.1f GB free", i ? "; " : "", i,
                 nm, m.free / GB, m.total / GB);
    }
    shutdown();
    dlclose(lib);
    if (!n)
        doctor_add(r, "gpu", CHECK_OK, NULL, "NVIDIA driver %s, no GPU visible (CUDA_VISIBLE_DEVICES?)", drv);
    else
        doctor_add(r, "gpu", CHECK_OK, NULL, "NVIDIA driver %s, %u GPU%s: %s", drv, n, n > 1 ? "s" : "", desc);
}

/* ---- environment ---- */

void doctor_check_env(doctor_report *r)
{
    static const char *thread_vars[] = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                        "DNNL_NUM_THREADS", "HADM_THREADS"};
    char bad[400] = "", fix[300] = "";
    int warn = 0;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    for (size_t i = 0; i < sizeof thread_vars / sizeof *thread_vars; i++) {
        const char *v = getenv(thread_vars[i]);
        if (!v || !*v)
            continue;
        long t = atol(v);
        if (t == 1 && online > 1) {
            snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%s%s=1 (one thread of %ld)", warn++ ? "; " : "",
                     thread_vars[i], online);
            snprintf(fix, sizeof fix, "unset %s (often left over from a Python setup)", thread_vars[i]);
        } else if (t > online) {
            snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%s%s=%ld > %ld CPUs (oversubscribed)",
                     warn++ ? "; " : "", thread_vars[i], t, online);
            snprintf(fix, sizeof fix, "set %s to at most %ld or unset it", thread_vars[i], online);
        }
    }
    const char *isa = getenv("ONEDNN_MAX_CPU_ISA") ? getenv("ONEDNN_MAX_CPU_ISA") : getenv("DNNL_MAX_CPU_ISA");
    if (isa && *isa && strcasecmp(isa, "ALL")) {
        snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%soneDNN limited to ISA %s", warn++ ? "; " : "", isa);
        snprintf(fix, sizeof fix, "unset ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA to use every CPU feature");
    }
    const char *own = getenv("HADM_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME");
    if (own && *own && xdg && *xdg && strncmp(own, xdg, strlen(xdg)) != 0) {
        snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%sHADM_CACHE_DIR=%s outside XDG_CACHE_HOME=%s",
                 warn++ ? "; " : "", own, xdg);
        snprintf(fix, sizeof fix, "keep one cache: converted checkpoints go to HADM_CACHE_DIR");
    }
    if (warn)
        doctor_add(r, "environment", CHECK_WARN, fix, "%s", bad);
    else
        doctor_add(r, "environment", CHECK_OK, NULL, "no thread-count, ISA or cache variables working against hadm");
}

/* ---- filesystems ---- */

static const struct { long magic; const char *name; int kind; } FS[] = {
    {0x6969, "nfs", 2},          {0xFF534D42, "cifs", 2},     {0xFE534D42, "smb2", 2},
    {0x517B, "smb", 2},          {0x65735546, "fuse", 2},     {0x01021997, "9p", 2},
    {0x00C36400, "ceph", 2},     {0x0BD00BD0, "lustre", 2},   {0x47504653, "gpfs", 2},
    {0x5346414F, "afs", 2},      {0x6B414653, "kafs", 2},     {0x013111A8, "ibrix", 2},
    {0x01021994, "tmpfs", 1},    {0x858458f6, "ramfs", 1},    {0xEF53, "ext4", 0},
    {0x58465342, "xfs", 0},      {0x9123683E, "btrfs", 0},    {0x794C7630, "overlay", 0},
    {0x73717368, "squashfs", 0}, {0x2FC12FC1, "zfs", 0},      {0xF2F52010, "f2fs", 0},
};

const char *doctor_fs_type(const char *path, int *kind)
{
    struct statfs s;
    *kind = 0;
    if (statfs(path, &s) != 0)
        return NULL;
    for (size_t i = 0; i < sizeof FS / sizeof *FS; i++)
        if ((unsigned long)s.f_type == (unsigned long)FS[i].magic) {
            *kind = FS[i].kind;
            return FS[i].name;
        }
    return "local";
}

void doctor_check_filesystem(doctor_report *r, const char *name, const char *path, uint64_t need_free)
{
    int kind = 0;
    const char *type = doctor_fs_type(path, &kind);
    struct statvfs v;
    if (!type || statvfs(path, &v) != 0) {
        doctor_add(r, name, CHECK_WARN, "check the path", "%s: cannot stat the filesystem", path);
        return;
    }
    double free_gb = (double)v.f_bavail * (double)v.f_frsize / GB;
    if (kind == 2)
        doctor_add(r, name, CHECK_WARN, "copy the models to a local disk: every start reads them over the network",
                   "%s is on a network/FUSE filesystem (%s), %.1f GB free", path, type, free_gb);
    else if (kind == 1)
        doctor_add(r, name, CHECK_WARN, "keep models on a disk: tmpfs holds them in RAM twice and loses them on reboot",
                   "%s is on %s (in memory), %.1f GB free", path, type, free_gb);
    else if (need_free && (double)v.f_bavail * (double)v.f_frsize < (double)need_free)
        doctor_add(r, name, CHECK_WARN, "free disk space: converting a checkpoint writes a file this big",
                   "%s (%s): %.1f GB free, %.1f GB wanted", path, type, free_gb, need_free / GB);
    else
        doctor_add(r, name, CHECK_OK, NULL, "%s: %s, %.1f GB free", path, type, free_gb);
}
