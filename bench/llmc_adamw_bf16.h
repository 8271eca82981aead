/* llm.c's mixed-precision AdamW update as a C loop (bench/llmc_adamw_bf16.c). */
#ifndef MGPO_BENCH_LLMC_ADAMW_BF16_H
#define MGPO_BENCH_LLMC_ADAMW_BF16_H

#include <stddef.h>
#include <stdint.h>

/* One step over n parameters: a global gradient-norm pass (for clipping at
 * grad_clip), then llm.c's adamw_update<bf16, bf16> with float32 master
 * weights and its stochastic rounding of the bf16 parameters. */
void llmc_adamw_bf16(uint16_t *params, float *master, const uint16_t *grads, float *m_memory,
                     float *v_memory, size_t n, float learning_rate, float beta1, float beta2,
                     float eps, float weight_decay, float grad_clip, int t, unsigned seed,
                     int threads);

#endif
