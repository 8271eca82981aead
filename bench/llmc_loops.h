/* The optimizer loops a libmgpo user replaces, as llm.c builds them
 * (bench/llmc_loops.c, compiled with llm.c's own flags: bench/CMakeLists.txt). */
#ifndef MGPO_BENCH_LLMC_LOOPS_H
#define MGPO_BENCH_LLMC_LOOPS_H

#include <stddef.h>

/* The update formula of llm.c's gpt2_update (train_gpt2.c at commit f1e2ace):
 * one serial pass, bias corrections by powf inside the loop. */
void llmc_adamw(float *params, const float *grads, float *m_memory, float *v_memory, size_t n,
                float learning_rate, float beta1, float beta2, float eps, float weight_decay,
                int t);

/* The same loop under `omp parallel for` with `threads` threads: what a user
 * who parallelised llm.c's update would run (llm.c itself does not). */
void llmc_adamw_omp(float *params, const float *grads, float *m_memory, float *v_memory,
                    size_t n, float learning_rate, float beta1, float beta2, float eps,
                    float weight_decay, int t, int threads);

/* torch.optim.SGD with momentum (dampening 0, no Nesterov) written in the
 * same style; momentum_memory starts at zero, which makes the first step's
 * buffer the gradient, as torch's. */
void llmc_sgd(float *params, const float *grads, float *momentum_memory, size_t n,
              float learning_rate, float momentum, float weight_decay);
void llmc_sgd_omp(float *params, const float *grads, float *momentum_memory, size_t n,
                  float learning_rate, float momentum, float weight_decay, int threads);

#endif
