/* deepspeed_shim.h without DeepSpeed: every step fails and the reason is
 * the one CMake found (MGPO_DS_MISSING). */
#include "deepspeed_shim.h"

const char *ds_missing_reason(void) { return MGPO_DS_MISSING; }
const char *ds_flags(void) { return ""; }
void *ds_adam_create(float lr, float beta1, float beta2, float eps, float weight_decay)
{
    (void)lr, (void)beta1, (void)beta2, (void)eps, (void)weight_decay;
    return 0;
}
void ds_adam_destroy(void *opt) { (void)opt; }
int ds_adam_step_f32(void *opt, size_t step, float *params, float *grads, float *m, float *v,
                     size_t n, int threads)
{
    (void)opt, (void)step, (void)params, (void)grads, (void)m, (void)v, (void)n, (void)threads;
    return 0;
}
int ds_adam_step_bf16(void *opt, size_t step, uint16_t *params, uint16_t *grads, float *m,
                      float *v, size_t n, int threads)
{
    (void)opt, (void)step, (void)params, (void)grads, (void)m, (void)v, (void)n, (void)threads;
    return 0;
}
