/* llm.c's mixed-precision AdamW update (llmc/adamw.cuh, adamw_update with
 * Tp = Tg = __nv_bfloat16 and float32 master weights, at llm.c f1e2ace),
 * written as a C loop for the CPU: the loop a C trainer that keeps bf16
 * parameters the llm.c way would run.  Per element, as the CUDA kernel:
 * lerp-form moments (two fmas each), bias corrections by division, the
 * update from the master, and stochastic rounding to bf16 with llm.c's
 * SquirrelNoise5 hash of the CUDA thread and block indices (block size 512,
 * so thread = i % 512, block = i / 512).  Before it, as llm.c's
 * global_norm_squared kernel feeds its clipping, one pass summing the
 * squared gradients.  llm.c's CPU trainer (train_gpt2.c) is float32 only, so
 * this is a port, not llm.c's own code; bench/CMakeLists.txt builds it with
 * llm.c's CPU flags (-Ofast -march=native).  OpenMP splits both loops. */
#include "llmc_adamw_bf16.h"

#include <math.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* __float2bfloat16_rn for the finite values the update produces. */
static inline uint16_t float_to_bf16_rn(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static inline unsigned squirrel_noise5(unsigned position, unsigned seed)
{
    unsigned bits = position * 0xd2a80a3fu;
    bits += seed;
    bits ^= bits >> 9;
    bits += 0xa884f197u;
    bits ^= bits >> 11;
    bits *= 0x6C736F4Bu;
    bits ^= bits >> 13;
    bits += 0xB79F3ABBu;
    bits ^= bits >> 15;
    bits *= 0x1b56c4f5u;
    bits ^= bits >> 17;
    return bits;
}

static inline uint16_t stochastic_rounding(float in, unsigned x, unsigned y, unsigned seed)
{
    unsigned threshold = squirrel_noise5(x + 198491317u * y, seed) & 0xFFFFu;
    uint32_t bits;
    memcpy(&bits, &in, sizeof bits);
    bits = (bits & 0xFFFFu) > threshold ? (bits | 0xFFFFu) : (bits & ~0xFFFFu);
    float rounded;
    memcpy(&rounded, &bits, sizeof rounded);
    return float_to_bf16_rn(rounded);
}

static inline float lerp(float start, float end, float weight)
{
    return fmaf(weight, end, fmaf(-weight, start, start));
}

void llmc_adamw_bf16(uint16_t *params, float *master, const uint16_t *grads, float *m_memory,
                     float *v_memory, size_t n, float learning_rate, float beta1, float beta2,
                     float eps, float weight_decay, float grad_clip, int t, unsigned seed,
                     int threads)
{
    long count = (long)n;
    (void)threads;
    double norm_sq = 0.0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : norm_sq)
#endif
    for (long i = 0; i < count; i++) {
        float g = bf16_to_float(grads[i]);
        norm_sq += (double)(g * g);
    }
    float norm = (float)sqrt(norm_sq);
    float grad_scale = norm > grad_clip ? grad_clip / norm : 1.0f;
    float beta1_correction = 1.0f - powf(beta1, (float)t);
    float beta2_correction = 1.0f - powf(beta2, (float)t);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long i = 0; i < count; i++) {
        float grad = grad_scale * bf16_to_float(grads[i]);
        float m = lerp(grad, m_memory[i], beta1);
        m_memory[i] = m;
        float v = lerp(grad * grad, v_memory[i], beta2);
        v_memory[i] = v;
        m /= beta1_correction;
        v /= beta2_correction;
        float old_param = master[i];
        float param = old_param - (learning_rate * (m / (sqrtf(v) + eps) + weight_decay * old_param));
        params[i] = stochastic_rounding(param, (unsigned)(i % 512), (unsigned)(i / 512), seed);
        master[i] = param;
    }
}
