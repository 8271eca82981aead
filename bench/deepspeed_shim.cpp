// DeepSpeed's CPU Adam kernel behind deepspeed_shim.h.  Built only from a
// checkout given by path (bench/CMakeLists.txt, MGPO_DEEPSPEED_DIR), with the
// flags DeepSpeed's op_builder gives cpu_adam (-O3 -std=c++17
// -march=native -fopenmp -D__AVX512__); torch/extension.h is the stand-in
// in bench/deepspeed/, which brings c10's Half and BFloat16 from libtorch-dev.
#include "cpu_adam.h"

#include <omp.h>

#include "deepspeed_shim.h"

namespace {
struct Shim {
    Adam_Optimizer opt;
    float lr, beta1, beta2, eps, weight_decay;
};
}  // namespace

extern "C" const char* ds_missing_reason(void) { return nullptr; }
extern "C" const char* ds_flags(void) { return MGPO_DS_FLAGS; }

extern "C" void* ds_adam_create(float lr, float beta1, float beta2, float eps, float weight_decay)
{
    // adamw_mode = true, as DeepSpeedCPUAdam's default.
    return new Shim{Adam_Optimizer(lr, beta1, beta2, eps, weight_decay, true), lr, beta1, beta2,
                    eps, weight_decay};
}

extern "C" void ds_adam_destroy(void* opt) { delete static_cast<Shim*>(opt); }

template <typename P>
static int step(void* handle, size_t t, P* params, P* grads, float* m, float* v, size_t n,
                int threads)
{
    Shim* s = static_cast<Shim*>(handle);
    if (n % (SIMD_WIDTH * 8) != 0) return 0;
    omp_set_num_threads(threads);
    // ds_adam_step's sequence (csrc/adam/cpu_adam_impl.cpp).
    s->opt.IncrementStep(t, s->beta1, s->beta2);
    s->opt.update_state(s->lr, s->eps, s->weight_decay, true);
    size_t rounded = 0;
    s->opt.Step_AVX<8>(&rounded, params, grads, m, v, n, true);
    return rounded == n;
}

extern "C" int ds_adam_step_f32(void* opt, size_t t, float* params, float* grads, float* m,
                                float* v, size_t n, int threads)
{
    return step(opt, t, params, grads, m, v, n, threads);
}

extern "C" int ds_adam_step_bf16(void* opt, size_t t, uint16_t* params, uint16_t* grads,
                                 float* m, float* v, size_t n, int threads)
{
    static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t), "bf16 layout");
    return step(opt, t, reinterpret_cast<c10::BFloat16*>(params),
                reinterpret_cast<c10::BFloat16*>(grads), m, v, n, threads);
}
