/* Shared test helpers; see test_util.h. */
#include "test_util.h"
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const size_t tu_odd_sizes[TU_ODD_COUNT] = {1, 7, 1000, 4097};

/* ---- PRNG ----------------------------------------------------------------- */

uint64_t tu_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float tu_rand_float(uint64_t *state, float lo, float hi)
{
    double u = (double)(tu_rand_next(state) >> 11) * 0x1.0p-53;
    return (float)(lo + (hi - lo) * u);
}

void tu_fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = tu_rand_float(&seed, lo, hi);
}

void tu_fill_wide(float *x, size_t n, uint64_t seed, int min_exp, int max_exp)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = tu_rand_next(&seed);
        switch (r % 64) {
        case 0: x[i] = 0.0f; continue;
        case 1: x[i] = -0.0f; continue;
        case 2: x[i] = ((r >> 8) & 1 ? -1.0f : 1.0f) * 1e-40f; continue; /* subnormal */
        default: break;
        }
        int e = min_exp + (int)((r >> 16) % (uint64_t)(max_exp - min_exp + 1));
        float mant = 1.0f + (float)((r >> 40) & 0xFFFFFF) * 0x1.0p-24f;
        x[i] = ((r >> 8) & 1 ? -1.0f : 1.0f) * ldexpf(mant, e);
    }
}

/* ---- Model ---------------------------------------------------------------- */

static float *alloc_floats(size_t n)
{
    float *p = calloc(n, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

void tu_model_init(tu_model *m, const size_t *sizes, size_t count, uint64_t seed)
{
    ck_assert_uint_le(count, TU_MAX_TENSORS);
    memset(m, 0, sizeof *m);
    m->count = count;
    m->grad_scale = 1.0f;
    for (size_t i = 0; i < count; i++) {
        size_t n = sizes[i];
        m->sizes[i] = n;
        m->params[i] = alloc_floats(n);
        m->grads[i] = alloc_floats(n);
        m->target[i] = alloc_floats(n);
        m->curv[i] = alloc_floats(n);
        m->ref_m[i] = alloc_floats(n);
        m->ref_v[i] = alloc_floats(n);
        tu_fill(m->params[i], n, seed * 131 + i * 4 + 0, -1.0f, 1.0f);
        tu_fill(m->target[i], n, seed * 131 + i * 4 + 1, -1.0f, 1.0f);
        tu_fill(m->curv[i], n, seed * 131 + i * 4 + 2, 0.5f, 2.0f);
    }
}

void tu_model_register(tu_model *m, const mgpo_config *cfg,
                       const mgpo_tensor_options *opts)
{
    ck_assert_int_eq(mgpo_create(&m->st, cfg, NULL), MGPO_OK);
    for (size_t i = 0; i < m->count; i++) {
        size_t index = 99;
        ck_assert_int_eq(mgpo_add_tensor(m->st, m->params[i], m->grads[i], m->sizes[i],
                                         opts ? &opts[i] : NULL, &index),
                         MGPO_OK);
        ck_assert_uint_eq(index, i);
    }
}

void tu_model_free(tu_model *m)
{
    mgpo_destroy(m->st);
    for (size_t i = 0; i < m->count; i++) {
        free(m->params[i]);
        free(m->grads[i]);
        free(m->target[i]);
        free(m->curv[i]);
        free(m->ref_m[i]);
        free(m->ref_v[i]);
    }
    memset(m, 0, sizeof *m);
}

void tu_model_grad(tu_model *m)
{
    for (size_t i = 0; i < m->count; i++)
        for (size_t k = 0; k < m->sizes[i]; k++)
            m->grads[i][k] =
                m->grad_scale * (m->curv[i][k] * (m->params[i][k] - m->target[i][k]));
}

void tu_model_grad_accumulate(tu_model *m, float target_shift)
{
    for (size_t i = 0; i < m->count; i++)
        for (size_t k = 0; k < m->sizes[i]; k++)
            m->grads[i][k] += m->grad_scale * (m->curv[i][k] * (m->params[i][k] -
                                                                (m->target[i][k] + target_shift)));
}

void tu_model_iterate(tu_model *m)
{
    ck_assert_int_eq(mgpo_perturb(m->st), MGPO_OK);
    tu_model_grad(m);
    ck_assert_int_eq(mgpo_step(m->st), MGPO_OK);
}

/* ---- Combinations --------------------------------------------------------- */

mgpo_config tu_combo_config(int i)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = (i & 1) ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    c.scope = (i & 2) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    c.sign = (i & 4) ? MGPO_SIGN_ASCENT : MGPO_SIGN_LOOKAHEAD;
    c.lr = (i & 1) ? 0.05 : 1e-2;
    return c;
}

const char *tu_combo_name(int i)
{
    static const char *const names[TU_COMBOS] = {
        "adamw/global/lookahead", "sgd/global/lookahead", "adamw/tensor/lookahead",
        "sgd/tensor/lookahead",   "adamw/global/ascent",  "sgd/global/ascent",
        "adamw/tensor/ascent",    "sgd/tensor/ascent"};
    return names[i & 7];
}

/* ---- Snapshots ------------------------------------------------------------ */

static float *dup_floats(const float *x, size_t n)
{
    if (!x) return NULL;
    float *p = alloc_floats(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

void tu_snapshot_take(tu_snapshot *s, const tu_model *m)
{
    memset(s, 0, sizeof *s);
    s->count = m->count;
    for (size_t i = 0; i < m->count; i++) {
        s->sizes[i] = m->sizes[i];
        s->params[i] = dup_floats(m->params[i], m->sizes[i]);
        s->grads[i] = dup_floats(m->grads[i], m->sizes[i]);
    }
    if (!m->st) return;
    ck_assert_int_eq(mgpo_get_stats(m->st, &s->stats), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_count(m->st, &s->unit_count), MGPO_OK);
    ck_assert_int_eq(mgpo_get_tensor_count(m->st, &s->tensor_count), MGPO_OK);
    ck_assert_int_eq(mgpo_is_perturbed(m->st, &s->perturbed), MGPO_OK);
    ck_assert_uint_le(s->unit_count, TU_MAX_TENSORS);
    for (size_t u = 0; u < s->unit_count; u++)
        ck_assert_int_eq(mgpo_get_unit_stats(m->st, u, &s->units[u]), MGPO_OK);
    for (size_t i = 0; i < s->tensor_count && i < m->count; i++) {
        s->m[i] = dup_floats(mgpo_internal_moment(m->st, i, 0), m->sizes[i]);
        s->v[i] = dup_floats(mgpo_internal_moment(m->st, i, 1), m->sizes[i]);
    }
}

void tu_snapshot_free(tu_snapshot *s)
{
    for (size_t i = 0; i < s->count; i++) {
        free(s->params[i]);
        free(s->grads[i]);
        free(s->m[i]);
        free(s->v[i]);
    }
    memset(s, 0, sizeof *s);
}

static void assert_floats_same(const char *what, size_t tensor, const float *a,
                               const float *b, size_t n)
{
    ck_assert_msg((a == NULL) == (b == NULL), "%s[%zu]: one side missing", what, tensor);
    if (!a || memcmp(a, b, n * sizeof(float)) == 0) return;
    /* (Check's assertions are costly per call: only locate the difference.) */
    size_t k = 0;
    while (memcmp(&a[k], &b[k], sizeof(float)) == 0) k++;
    ck_abort_msg("%s[%zu][%zu] differs: %.9g vs %.9g", what, tensor, k, (double)a[k],
                 (double)b[k]);
}

#define SAME_BITS(a, b, name)                                                        \
    ck_assert_msg(memcmp(&(a), &(b), sizeof(a)) == 0, "%s differs: %.17g vs %.17g", \
                  name, (double)(a), (double)(b))

void tu_assert_same(const tu_snapshot *a, const tu_snapshot *b, unsigned ignore)
{
    ck_assert_uint_eq(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        ck_assert_uint_eq(a->sizes[i], b->sizes[i]);
        assert_floats_same("params", i, a->params[i], b->params[i], a->sizes[i]);
        if (!(ignore & TU_IGNORE_GRADS))
            assert_floats_same("grads", i, a->grads[i], b->grads[i], a->sizes[i]);
        assert_floats_same("m", i, a->m[i], b->m[i], a->sizes[i]);
        assert_floats_same("v", i, a->v[i], b->v[i], a->sizes[i]);
    }
    ck_assert_uint_eq(a->tensor_count, b->tensor_count);
    ck_assert_uint_eq(a->unit_count, b->unit_count);
    ck_assert_int_eq(a->perturbed, b->perturbed);
    const mgpo_stats *x = &a->stats, *y = &b->stats;
    ck_assert_uint_eq(x->step, y->step);
    if (!(ignore & TU_IGNORE_SKIPPED)) ck_assert_uint_eq(x->skipped_steps, y->skipped_steps);
    SAME_BITS(x->lr, y->lr, "stats.lr");
    SAME_BITS(x->grad_norm, y->grad_norm, "stats.grad_norm");
    SAME_BITS(x->grad_norm_ema, y->grad_norm_ema, "stats.grad_norm_ema");
    ck_assert_int_eq(x->perturbed, y->perturbed);
    ck_assert_int_eq(x->clipped, y->clipped);
    if (!(ignore & TU_IGNORE_PERTURB_REPORT)) {
        SAME_BITS(x->momentum_norm, y->momentum_norm, "stats.momentum_norm");
        SAME_BITS(x->perturbation_norm, y->perturbation_norm, "stats.perturbation_norm");
        SAME_BITS(x->perturbation_scale, y->perturbation_scale, "stats.perturbation_scale");
    }
    for (size_t u = 0; u < a->unit_count; u++) {
        const mgpo_unit_stats *p = &a->units[u], *q = &b->units[u];
        SAME_BITS(p->grad_norm, q->grad_norm, "unit.grad_norm");
        SAME_BITS(p->grad_norm_ema, q->grad_norm_ema, "unit.grad_norm_ema");
        if (!(ignore & TU_IGNORE_PERTURB_REPORT)) {
            SAME_BITS(p->momentum_norm, q->momentum_norm, "unit.momentum_norm");
            SAME_BITS(p->scale, q->scale, "unit.scale");
            SAME_BITS(p->coefficient, q->coefficient, "unit.coefficient");
        }
    }
}

void tu_assert_params_same(const tu_model *m, const tu_snapshot *s)
{
    ck_assert_uint_eq(m->count, s->count);
    for (size_t i = 0; i < m->count; i++)
        assert_floats_same("params", i, m->params[i], s->params[i], m->sizes[i]);
}

/* ---- References ----------------------------------------------------------- */

/* Every Python-float hyper-parameter meets a float32 tensor as a float32
 * scalar; every tensor operation rounds to float32 before the next one. */
void tu_ref_adamw(float *p, const float *g, float *m, float *v, size_t n, uint64_t t,
                  double lr, double beta1, double beta2, double eps, double wd,
                  float gscale)
{
    /* beta^t as the library computes it (lib/repro_math.c: the same bits
     * everywhere, within a few ulp of pow; the golden tests hold it to torch). */
    const double bias_correction1 = 1.0 - mgpo_pow_u64(beta1, t);
    const double bias_correction2 = 1.0 - mgpo_pow_u64(beta2, t);
    const float step_size = (float)(-(lr / bias_correction1));
    /* libmgpo multiplies by this reciprocal where torch divides by sqrt(bc2). */
    const float inv_bias_correction2_sqrt = (float)(1.0 / sqrt(bias_correction2));
    const float decay = (float)(1.0 - lr * wd);
    const float b1 = (float)beta1, a1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2, a2 = (float)(1.0 - beta2), e = (float)eps;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;                   /* clip: grads.mul_(coef) */
        p[i] = p[i] * decay;                        /* param.mul_(1 - lr*wd) */
        /* torch's order, each multiply-add fused (libmgpo's kernels.c). */
        m[i] = fmaf(m[i], b1, a1 * gi);             /* exp_avg.mul_(b1).add_(g, 1-b1) */
        v[i] = fmaf(v[i], b2, (a2 * gi) * gi);      /* exp_avg_sq.mul_(b2).addcmul_(g, g) */
        float denom = fmaf(sqrtf(v[i]), inv_bias_correction2_sqrt, e); /* sqrt()/bc2 + eps */
        p[i] = p[i] + (step_size * m[i]) / denom;  /* addcdiv_(m, denom, -step_size) */
    }
}

void tu_ref_sgd(float *p, const float *g, float *b, size_t n, uint64_t t, double lr,
                double momentum, double dampening, int nesterov, double wd, float gscale)
{
    const float w = (float)wd, mu = (float)momentum, a = (float)(1.0 - dampening);
    const float neg_lr = (float)(-lr);
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * gscale;
        if (wd != 0.0) d = fmaf(w, p[i], d);        /* d_p.add(param, alpha=wd) */
        if (momentum != 0.0) {
            if (t == 1) {
                b[i] = d;                           /* buf = clone(d_p) */
            } else {
                b[i] = fmaf(b[i], mu, a * d);       /* buf.mul_(mu).add_(d_p, 1-damp) */
            }
            d = nesterov ? fmaf(mu, b[i], d) : b[i];
        } else {
            b[i] = d;
        }
        p[i] = fmaf(neg_lr, d, p[i]);               /* param.add_(d_p, alpha=-lr) */
    }
}

void tu_model_ref_step(tu_model *m, const mgpo_config *cfg, uint64_t t, double lr,
                       const mgpo_tensor_options *opts, float gscale)
{
    for (size_t i = 0; i < m->count; i++) {
        mgpo_tensor_options o = opts ? opts[i] : mgpo_tensor_options_default();
        double lr_i = lr * o.lr_scale, wd_i = cfg->weight_decay * o.weight_decay_scale;
        if (cfg->optimizer == MGPO_OPTIMIZER_ADAMW)
            tu_ref_adamw(m->params[i], m->grads[i], m->ref_m[i], m->ref_v[i], m->sizes[i],
                         t, lr_i, cfg->beta1, cfg->beta2, cfg->eps, wd_i, gscale);
        else
            tu_ref_sgd(m->params[i], m->grads[i], m->ref_m[i], m->sizes[i], t, lr_i,
                       cfg->momentum, cfg->dampening, cfg->nesterov, wd_i, gscale);
    }
}

void tu_assert_matches_ref(const tu_model *m, const tu_model *ref)
{
    ck_assert_uint_eq(m->count, ref->count);
    mgpo_config cfg;
    ck_assert_int_eq(mgpo_get_config(m->st, &cfg), MGPO_OK);
    for (size_t i = 0; i < m->count; i++) {
        assert_floats_same("params", i, m->params[i], ref->params[i], m->sizes[i]);
        assert_floats_same("m", i, mgpo_internal_moment(m->st, i, 0), ref->ref_m[i],
                           m->sizes[i]);
        if (cfg.optimizer == MGPO_OPTIMIZER_ADAMW)
            assert_floats_same("v", i, mgpo_internal_moment(m->st, i, 1), ref->ref_v[i],
                               m->sizes[i]);
    }
}

float tu_clip_factor(const tu_model *m, double max_norm)
{
    double sq = 0.0;
    for (size_t i = 0; i < m->count; i++) sq += tu_sum_sq(m->grads[i], m->sizes[i]);
    double coef = max_norm / (sqrt(sq) + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

double tu_sum_sq(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

int tu_close(double a, double b, double rel)
{
    if (a == b) return 1;
    double scale = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= rel * scale;
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* ---- Reference scope units ------------------------------------------------ */

size_t tu_unit_of(const mgpo_config *cfg, size_t tensor)
{
    return cfg->scope == MGPO_SCOPE_TENSOR ? tensor : 0;
}

void tu_ref_units_init(tu_ref_units *r, const mgpo_config *cfg, size_t tensors,
                       const mgpo_tensor_options *opts)
{
    memset(r, 0, sizeof *r);
    r->count = cfg->scope == MGPO_SCOPE_TENSOR ? tensors : 1;
    for (size_t i = 0; i < tensors; i++) r->perturb[i] = opts ? opts[i].perturb != 0 : 1;
}

void tu_ref_units_step(tu_ref_units *r, const mgpo_config *cfg, const tu_model *m)
{
    double sq[TU_MAX_TENSORS] = {0};
    for (size_t i = 0; i < m->count; i++)
        if (r->perturb[i]) sq[tu_unit_of(cfg, i)] += tu_sum_sq(m->grads[i], m->sizes[i]);
    for (size_t u = 0; u < r->count; u++) {
        double gamma = sqrt(sq[u]);
        r->gbar[u] = r->set[u] ? cfg->norm_ema * r->gbar[u] + (1.0 - cfg->norm_ema) * gamma
                               : gamma;
        r->set[u] = 1;
    }
}

size_t tu_check_perturbation(const tu_model *m, const mgpo_config *cfg,
                             const tu_ref_units *r, const tu_snapshot *clean)
{
    double nsq[TU_MAX_TENSORS] = {0};
    for (size_t i = 0; i < m->count; i++)
        if (r->perturb[i])
            nsq[tu_unit_of(cfg, i)] +=
                tu_sum_sq(mgpo_internal_moment(m->st, i, 0), m->sizes[i]);

    double c[TU_MAX_TENSORS] = {0}, total_sq = 0.0, applied_sq = 0.0, max_scale = 0.0;
    size_t applied = 0;
    for (size_t u = 0; u < r->count; u++) {
        double n = sqrt(nsq[u]);
        double s = 1.0 / (r->gbar[u] + cfg->norm_eps);
        if (s > cfg->scale_max) s = cfg->scale_max;
        mgpo_unit_stats us;
        ck_assert_int_eq(mgpo_get_unit_stats(m->st, u, &us), MGPO_OK);
        ck_assert_msg(tu_close(us.momentum_norm, n, 1e-12), "unit %zu norm %.17g vs %.17g",
                      u, us.momentum_norm, n);
        if (n <= cfg->norm_eps) {
            ck_assert(us.coefficient == 0.0);
            continue;
        }
        c[u] = (double)cfg->sign * cfg->rho * s / (n + cfg->norm_eps);
        ck_assert_msg(tu_close(us.scale, s, 1e-12), "unit %zu scale %.17g vs %.17g", u,
                      us.scale, s);
        ck_assert_msg(tu_close(us.coefficient, c[u], 1e-12), "unit %zu c %.17g vs %.17g", u,
                      us.coefficient, c[u]);
        applied++;
        total_sq += n * n;
        applied_sq += c[u] * n * c[u] * n;
        if (s > max_scale) max_scale = s;
    }

    for (size_t i = 0; i < m->count; i++) {
        if (!r->perturb[i] || c[tu_unit_of(cfg, i)] == 0.0) {
            assert_floats_same("untouched params", i, m->params[i], clean->params[i],
                               m->sizes[i]);
            continue;
        }
        const float *mom = mgpo_internal_moment(m->st, i, 0);
        double cu = c[tu_unit_of(cfg, i)];
        for (size_t k = 0; k < m->sizes[i]; k++) {
            double p0 = clean->params[i][k], step = cu * mom[k];
            double err = fabs((double)m->params[i][k] - (p0 + step));
            if (err > 2.0 * FLT_EPSILON * (fabs(p0) + fabs(step)))
                ck_abort_msg("tensor %zu [%zu]: %.9g vs %.9g + %.9g", i, k,
                             (double)m->params[i][k], p0, step);
        }
    }

    if (applied > 0) {
        mgpo_stats st;
        ck_assert_int_eq(mgpo_get_stats(m->st, &st), MGPO_OK);
        ck_assert(tu_close(st.momentum_norm, sqrt(total_sq), 1e-12));
        ck_assert(tu_close(st.perturbation_norm, sqrt(applied_sq), 1e-12));
        ck_assert(tu_close(st.perturbation_scale, max_scale, 1e-12));
    }
    return applied;
}
