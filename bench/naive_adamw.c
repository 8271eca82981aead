/* The baseline: a plain scalar AdamW loop in the style of llm.c's CPU
 * gpt2_update (train_gpt2.c), compiled with -O2 and nothing else (see
 * bench/CMakeLists.txt), one pass moving 7 floats per parameter.
 *
 * llm.c computes the bias corrections with powf inside the loop, and GCC -O2
 * does not hoist those calls (powf may set errno), so that verbatim loop is
 * dominated by two powf calls per element.  The benchmark therefore also runs
 * the same loop with the corrections hoisted, the stronger baseline that the
 * targets are measured against.  With OpenMP the loops are split over
 * `threads` threads (static schedule), as a user would parallelise them. */
#include "naive_adamw.h"

#include <math.h>

void naive_adamw_llmc(float *params, const float *grads, float *m_memory, float *v_memory,
                      size_t n, float learning_rate, float beta1, float beta2, float eps,
                      float weight_decay, int t, int threads)
{
    long count = (long)n;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long i = 0; i < count; i++) {
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

void naive_adamw_hoisted(float *params, const float *grads, float *m_memory,
                         float *v_memory, size_t n, float learning_rate, float beta1,
                         float beta2, float eps, float weight_decay, int t, int threads)
{
    long count = (long)n;
    const float c1 = 1.0f - powf(beta1, t), c2 = 1.0f - powf(beta2, t);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long i = 0; i < count; i++) {
        float param = params[i];
        float grad = grads[i];
        float m = beta1 * m_memory[i] + (1.0f - beta1) * grad;
        float v = beta2 * v_memory[i] + (1.0f - beta2) * grad * grad;
        float m_hat = m / c1;
        float v_hat = v / c2;
        m_memory[i] = m;
        v_memory[i] = v;
        params[i] -= learning_rate * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * param);
    }
}
