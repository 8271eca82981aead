/* DeepSpeed's CPU Adam kernel (Adam_Optimizer::Step_AVX<8> of
 * csrc/includes/cpu_adam.h) behind a C interface, for bench_deepspeed.
 * deepspeed_shim.cpp compiles it from a DeepSpeed checkout given at
 * configure time (-DMGPO_DEEPSPEED_DIR=...) with DeepSpeed's own flags;
 * without one, deepspeed_stub.c says why it is missing. */
#ifndef MGPO_BENCH_DEEPSPEED_SHIM_H
#define MGPO_BENCH_DEEPSPEED_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* NULL when the kernel was built, else the reason it was not. */
const char *ds_missing_reason(void);
/* The flags the kernel was compiled with (a string from the build). */
const char *ds_flags(void);

/* An Adam_Optimizer in AdamW mode, as DeepSpeedCPUAdam creates it. */
void *ds_adam_create(float lr, float beta1, float beta2, float eps, float weight_decay);
void ds_adam_destroy(void *opt);

/* One step as ds_adam_step does it (IncrementStep, update_state with bias
 * correction, then Step_AVX<8>) on `threads` OpenMP threads.  n must be a
 * multiple of 128 (the kernel's rounded size; Step_8 would finish a
 * remainder with Step_4): returns 0 when it is not, or when not built. */
int ds_adam_step_f32(void *opt, size_t step, float *params, float *grads, float *m, float *v,
                     size_t n, int threads);
/* The same with bfloat16 parameters and gradients, float32 states
 * (DeepSpeed's AVX-512 bf16 path). */
int ds_adam_step_bf16(void *opt, size_t step, uint16_t *params, uint16_t *grads, float *m,
                      float *v, size_t n, int threads);

#ifdef __cplusplus
}
#endif

#endif
