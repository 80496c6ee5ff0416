/* Stand-ins for engine/cuda when the build has no CUDA backend. */
#include "engine/cuda_hooks.h"

#include "util/err.h"

#ifndef HADM_CUDA
int cuda_backend_built(void) { return 0; }

hadm_status cuda_model_attach(struct hadm_model *m, const hadm_open_options *opt, hadm_error *err)
{
    (void)m, (void)opt;
    return hadm_fail(err, HADM_ERR_UNSUPPORTED, "this build has no CUDA backend; rebuild with -DHADM_CUDA=ON");
}

void cuda_model_detach(struct hadm_model *m) { (void)m; }

int cuda_gpu_status_list(cuda_gpu_status *out, int max)
{
    (void)out, (void)max;
    return -1;
}

void cuda_detect_jobs(struct hadm_model *m, cuda_job *jobs, int n, const hadm_detect_options *opt)
{
    (void)m, (void)opt;
    for (int i = 0; i < n; i++)
        jobs[i].st = hadm_fail(&jobs[i].err, HADM_ERR_UNSUPPORTED,
                               "this build has no CUDA backend; rebuild with -DHADM_CUDA=ON");
}
#endif
