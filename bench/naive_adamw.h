/* The llm.c-style baseline AdamW loops (bench/naive_adamw.c, built at -O2). */
#ifndef MGPO_BENCH_NAIVE_ADAMW_H
#define MGPO_BENCH_NAIVE_ADAMW_H

#include <stddef.h>

/* llm.c's loop as written: bias corrections (powf) inside the loop. */
void naive_adamw_llmc(float *params, const float *grads, float *m_memory, float *v_memory,
                      size_t n, float learning_rate, float beta1, float beta2, float eps,
                      float weight_decay, int t, int threads);

/* The same loop with the two powf calls hoisted out of it. */
void naive_adamw_hoisted(float *params, const float *grads, float *m_memory,
                         float *v_memory, size_t n, float learning_rate, float beta1,
                         float beta2, float eps, float weight_decay, int t, int threads);

#endif
