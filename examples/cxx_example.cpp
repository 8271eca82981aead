// cxx_example: libmgpo from C++ through a small RAII wrapper.
//
// The same training as quickstart.c (logistic regression with MGPO), written
// the way a C++ code base would hold the state: a move-only owner whose
// destructor calls mgpo_destroy, and an exception for every failed call.
// Exits 0 only if the final loss is below the initial loss.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mgpo.h"

namespace {

// Thrown for any status other than MGPO_OK; keeps the code for callers that
// want to react to a specific one (e.g. MGPO_ERR_NONFINITE_GRADIENT).
class MgpoError : public std::runtime_error {
public:
    MgpoError(const std::string &what, mgpo_status status)
        : std::runtime_error(what + ": " + mgpo_strerror(status)), status_(status) {}
    mgpo_status status() const { return status_; }

private:
    mgpo_status status_;
};

void check(mgpo_status status, const char *what)
{
    if (status != MGPO_OK) throw MgpoError(what, status);
}

// Owns one mgpo_state.  The registered buffers stay owned by the caller and
// must outlive the Optimizer (the library keeps pointers to them).
class Optimizer {
public:
    explicit Optimizer(const mgpo_config &config)
    {
        mgpo_state *raw = nullptr;
        check(mgpo_create(&raw, &config, nullptr), "mgpo_create");
        state_.reset(raw);
    }

    // Registers params/grads (same length) and returns the tensor index.
    std::size_t add(std::vector<float> &params, const std::vector<float> &grads,
                    const mgpo_tensor_options *options = nullptr)
    {
        if (params.size() != grads.size()) throw std::invalid_argument("params/grads size mismatch");
        std::size_t index = 0;
        check(mgpo_add_tensor(state_.get(), params.data(), grads.data(), params.size(), options,
                              &index),
              "mgpo_add_tensor");
        return index;
    }

    void perturb() { check(mgpo_perturb(state_.get()), "mgpo_perturb"); }
    void restore() { check(mgpo_restore(state_.get()), "mgpo_restore"); }
    void step() { check(mgpo_step(state_.get()), "mgpo_step"); }
    void set_lr(double lr) { check(mgpo_set_lr(state_.get(), lr), "mgpo_set_lr"); }

    mgpo_stats stats() const
    {
        mgpo_stats s;
        check(mgpo_get_stats(state_.get(), &s), "mgpo_get_stats");
        return s;
    }

private:
    struct Deleter {
        void operator()(mgpo_state *s) const { mgpo_destroy(s); }
    };
    std::unique_ptr<mgpo_state, Deleter> state_;
};

const int kN = 256, kD = 8, kSteps = 200;

// Mean binary cross-entropy of sigmoid(w.x + b); fills grad (weights, then b).
float loss_and_grad(const std::vector<float> &x, const std::vector<float> &y,
                    const std::vector<float> &params, std::vector<float> &grad)
{
    double loss = 0.0;
    std::fill(grad.begin(), grad.end(), 0.0f);
    for (int i = 0; i < kN; i++) {
        float z = params[kD];
        for (int j = 0; j < kD; j++) z += params[j] * x[i * kD + j];
        float p = 1.0f / (1.0f + std::exp(-z));
        loss -= y[i] > 0.5f ? std::log(p + 1e-7) : std::log(1.0 - p + 1e-7);
        float dz = (p - y[i]) / kN;
        for (int j = 0; j < kD; j++) grad[j] += dz * x[i * kD + j];
        grad[kD] += dz;
    }
    return static_cast<float>(loss / kN);
}

} // namespace

int main()
{
    // Synthetic data: labels from a hidden linear rule, 10 % of them flipped.
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::vector<float> truth(kD), x(kN * kD), y(kN);
    for (float &t : truth) t = uni(gen);
    for (int i = 0; i < kN; i++) {
        float z = 0.0f;
        for (int j = 0; j < kD; j++) z += truth[j] * (x[i * kD + j] = uni(gen));
        y[i] = ((z > 0.0f) != (gen() % 10 == 0)) ? 1.0f : 0.0f;
    }

    try {
        std::vector<float> params(kD + 1, 0.0f), grad(kD + 1, 0.0f);
        mgpo_config cfg = mgpo_config_default();
        cfg.lr = 0.05;
        Optimizer opt(cfg);
        opt.add(params, grad);

        float first = 0.0f;
        for (int step = 0; step < kSteps; step++) {
            opt.perturb();
            float loss = loss_and_grad(x, y, params, grad);
            opt.restore();
            opt.step();
            if (step == 0) first = loss;
            if (step % 40 == 0) std::printf("step %3d  loss %.4f\n", step, loss);
        }
        float last = loss_and_grad(x, y, params, grad);
        mgpo_stats s = opt.stats();
        std::printf("final clean loss %.4f (initial %.4f) after %llu steps, grad-norm EMA %.4g\n",
                    last, first, static_cast<unsigned long long>(s.step), s.grad_norm_ema);

        // Errors surface as exceptions with the library's status code.
        try {
            opt.set_lr(-1.0);
            std::fprintf(stderr, "a negative learning rate was accepted\n");
            return 1;
        } catch (const MgpoError &e) {
            if (e.status() != MGPO_ERR_BAD_LR) throw;
            std::printf("rejected as expected: %s\n", e.what());
        }
        return last < first ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cxx_example: %s\n", e.what());
        return 1;
    }
}
