/* The loops libmgpo replaces in an llm.c-style trainer, written here (not
 * copied) with the update formula of llm.c's CPU gpt2_update (karpathy/llm.c
 * train_gpt2.c, commit f1e2ace), and compiled with the flags llm.c's Makefile
 * gives train_gpt2 at that commit (bench/CMakeLists.txt): -Ofast
 * -march=native -fopenmp -DOMP.  -Ofast allows the compiler to hoist the
 * powf calls, vectorise, contract into FMAs and replace the division and
 * square root by reciprocal estimates refined by a Newton step; that is the
 * loop a user would really compare libmgpo with.
 *
 * llm.c does not parallelise gpt2_update (no OpenMP pragma on it), so
 * llmc_adamw is serial even in an OpenMP build; the _omp variants add the
 * obvious `omp parallel for` to give a 2-thread baseline. */
#include "llmc_loops.h"

#include <math.h>

void llmc_adamw(float *params, const float *grads, float *m_memory, float *v_memory, size_t n,
                float learning_rate, float beta1, float beta2, float eps, float weight_decay,
                int t)
{
    for (size_t i = 0; i < n; i++) {
        float param = params[i];
        float grad = grads[i];
        float m = beta1 * m_memory[i] + (1.0f - beta1) * grad;
        float v = beta2 * v_memory[i] + (1.0f - beta2) * grad * grad;
        float m_hat = m / (1.0f - powf(beta1, t));
        float v_hat = v / (1.0f - powf(beta2, t));
        m_memory[i] = m;
        v_memory[i] = v;
        params[i] -= learning_rate * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * param);
    }
}

void llmc_adamw_omp(float *params, const float *grads, float *m_memory, float *v_memory,
                    size_t n, float learning_rate, float beta1, float beta2, float eps,
                    float weight_decay, int t, int threads)
{
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        float param = params[i];
        float grad = grads[i];
        float m = beta1 * m_memory[i] + (1.0f - beta1) * grad;
        float v = beta2 * v_memory[i] + (1.0f - beta2) * grad * grad;
        float m_hat = m / (1.0f - powf(beta1, t));
        float v_hat = v / (1.0f - powf(beta2, t));
        m_memory[i] = m;
        v_memory[i] = v;
        params[i] -= learning_rate * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * param);
    }
}

void llmc_sgd(float *params, const float *grads, float *momentum_memory, size_t n,
              float learning_rate, float momentum, float weight_decay)
{
    for (size_t i = 0; i < n; i++) {
        float d = grads[i] + weight_decay * params[i];
        float b = momentum * momentum_memory[i] + d;
        momentum_memory[i] = b;
        params[i] -= learning_rate * b;
    }
}

void llmc_sgd_omp(float *params, const float *grads, float *momentum_memory, size_t n,
                  float learning_rate, float momentum, float weight_decay, int threads)
{
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        float d = grads[i] + weight_decay * params[i];
        float b = momentum * momentum_memory[i] + d;
        momentum_memory[i] = b;
        params[i] -= learning_rate * b;
    }
}
