/* libmgpo in external mode inside ggml-opt's own training step.
 *
 * A next-byte model (3 bytes of context, one-hot, a ReLU layer of 64, 256
 * logits) is trained on real text (default: the fortunes of Debian's
 * fortunes-min) with ggml-opt's AdamW on the CPU backend.  ggml-opt runs
 * forward, backward and its AdamW step in one graph evaluation; the hook is
 * the scheduler's eval callback (ggml_backend_sched_set_eval_callback),
 * which asks for exactly one node: the last one before the first
 * GGML_OP_OPT_STEP_ADAMW.  When that node has been computed all gradients
 * exist and no weight has been stepped, so the callback runs mgpo_step
 * there (restore, NaN check, EMA) and ggml then steps the clean weights.
 * One iteration:
 *
 *     mgpo_perturb(st);                 // theta += c * grad_m
 *     set the batch; ggml_opt_alloc(opt, true); ggml_opt_eval(opt, NULL);
 *         callback at the hook node:    mgpo_set_grad, mgpo_step
 *             MGPO_OK:                   return true  -> AdamW nodes run
 *             NONFINITE_GRADIENT:        return false -> the scheduler stops:
 *                                        no AdamW node runs (weights, grad_m,
 *                                        grad_v unchanged)
 *
 * ggml-opt's AdamW bias correction uses its private eval counter, which
 * also counts a skipped evaluation and restarts at 1 in a new context; the
 * callback therefore writes the bias corrections of the true step count
 * (computed as ggml-opt computes them) into the AdamW parameter tensor
 * (src[4] of the step nodes) whenever that counter is off.
 *
 * Finding the hook node: one "discovery" evaluation at setup asks for no
 * node, so the scheduler shows the callback every node before computing
 * anything; the callback records the node before the first AdamW node, the
 * gradient, grad_m, grad_v of every step node, and copies weights and
 * moments before the step runs; they are put back afterwards, so the
 * discovery changes nothing but ggml's counter.  The pointers stay valid as
 * long as the optimization context keeps the same allocated graph (only
 * training evaluations here; the held-out loss is computed on the host).
 *
 *     ggml_mgpo [--text FILE] [--steps N] [--rho R] [--test]
 *
 * --test runs the checks the CI runs (exit 0 only if all pass; 77 if the
 * text file is missing).  See docs/integration.md, "ggml and llama.cpp". */
#include <ggml.h>
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-opt.h>
#include <mgpo.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTX 3
#define VOCAB 256
#define HIDDEN 64
#define BATCH 64
#define NPARAM 4
#define N_IN (CTX * VOCAB)

static void die(const char *what)
{
    fprintf(stderr, "ggml_mgpo: %s\n", what);
    exit(1);
}

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "ggml_mgpo: %s: %s\n", what, mgpo_strerror(s));
        exit(1);
    }
}

/* ---- The text ------------------------------------------------------------ */

typedef struct text {
    unsigned char *bytes;
    size_t n;
} text;

static int read_text(const char *path, text *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) b = realloc(b, cap *= 2);
    }
    fclose(f);
    if (!b || n < 20000) { free(b); return 0; }
    out->bytes = b;
    out->n = n;
    return 1;
}

/* Window i (CTX bytes and the next one): training windows come from the
 * first 90% of the text, held-out ones from the rest. */
static size_t window_start(const text *tx, int held_out, size_t i)
{
    size_t split = tx->n / 10 * 9;
    if (held_out) return split + (i * 7919u) % (tx->n - split - CTX - 1);
    return (i * 104729u) % (split - CTX - 1);
}

/* ---- The trainer ----------------------------------------------------------- */

typedef struct trainer {
    ggml_backend_t backend;
    ggml_backend_sched_t sched;
    struct ggml_context *ctx_static, *ctx_compute;
    ggml_backend_buffer_t buf;
    struct ggml_tensor *x, *logits, *param[NPARAM];
    ggml_opt_context_t opt;
    struct ggml_opt_optimizer_params pars;
    const text *tx;

    /* The hook (NULL st: no hook at all, plain ggml-opt). */
    mgpo_state *st;
    bool discovering;
    struct ggml_tensor *prev, *hook_node;
    int opt_nodes_seen;
    float *grad[NPARAM], *m[NPARAM], *v[NPARAM], *adamw_pars;
    float *stash[NPARAM][3];
    int64_t steps_done;   /* AdamW steps that ran */
    int64_t ggml_iter;    /* ggml-opt's private counter: 1 + evaluations */
    int64_t batch;        /* index of the batch being evaluated */
    int64_t nan_batch;    /* batch whose gradient gets a NaN (-1: none) */
    bool skipped, hook_ran;
    float *clean[NPARAM]; /* weights before mgpo_perturb (checked mode) */
    long restores_checked, restores_exact, skips;
} trainer;

static size_t nel(const struct ggml_tensor *t) { return (size_t)ggml_nelements(t); }

static struct ggml_opt_optimizer_params get_pars(void *ud) { return *(struct ggml_opt_optimizer_params *)ud; }

static void init_weights(trainer *tr)
{
    uint32_t s = 12345u;
    for (int p = 0; p < NPARAM; p++) {
        float *w = tr->param[p]->data;
        float scale = p == 0 ? 0.05f : p == 2 ? 0.12f : 0.0f;
        for (size_t i = 0; i < nel(tr->param[p]); i++) {
            s = s * 1664525u + 1013904223u;
            w[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
        }
    }
}

static bool hook(struct ggml_tensor *t, bool ask, void *ud);

static void trainer_init(trainer *tr, const text *tx, double rho, int threads)
{
    memset(tr, 0, sizeof *tr);
    tr->tx = tx;
    tr->nan_batch = -1;
    tr->backend = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, NULL);
    if (!tr->backend) die("no CPU backend (ggml_backend_init_by_type)");
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(tr->backend));
    ggml_backend_set_n_threads_t set_threads =
        (ggml_backend_set_n_threads_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    if (set_threads) set_threads(tr->backend, threads);
    tr->sched = ggml_backend_sched_new(&tr->backend, NULL, 1, GGML_DEFAULT_GRAPH_SIZE, false, false);

    struct ggml_init_params ps = {NPARAM * 2 * ggml_tensor_overhead(), NULL, true};
    tr->ctx_static = ggml_init(ps);
    tr->x = ggml_new_tensor_2d(tr->ctx_static, GGML_TYPE_F32, N_IN, BATCH);
    struct ggml_tensor *w1 = ggml_new_tensor_2d(tr->ctx_static, GGML_TYPE_F32, N_IN, HIDDEN);
    struct ggml_tensor *b1 = ggml_new_tensor_1d(tr->ctx_static, GGML_TYPE_F32, HIDDEN);
    struct ggml_tensor *w2 = ggml_new_tensor_2d(tr->ctx_static, GGML_TYPE_F32, HIDDEN, VOCAB);
    struct ggml_tensor *b2 = ggml_new_tensor_1d(tr->ctx_static, GGML_TYPE_F32, VOCAB);
    struct ggml_tensor *ps_[NPARAM] = {w1, b1, w2, b2};
    for (int p = 0; p < NPARAM; p++) {
        tr->param[p] = ps_[p];
        ggml_set_param(ps_[p]);
    }
    ggml_set_input(tr->x);
    tr->buf = ggml_backend_alloc_ctx_tensors(tr->ctx_static, tr->backend);
    if (!ggml_backend_buffer_is_host(tr->buf)) die("the CPU backend's buffer is not host memory");
    init_weights(tr);

    struct ggml_init_params pc = {4096 * ggml_tensor_overhead() + 3 * ggml_graph_overhead(), NULL, true};
    tr->ctx_compute = ggml_init(pc);
    struct ggml_tensor *h = ggml_relu(tr->ctx_compute, ggml_add(tr->ctx_compute, ggml_mul_mat(tr->ctx_compute, w1, tr->x), b1));
    tr->logits = ggml_add(tr->ctx_compute, ggml_mul_mat(tr->ctx_compute, w2, h), b2);

    tr->pars = ggml_opt_get_default_optimizer_params(NULL);
    tr->pars.adamw.alpha = 2e-3f;
    tr->pars.adamw.wd = 0.0f;
    struct ggml_opt_params op = ggml_opt_default_params(tr->sched, GGML_OPT_LOSS_TYPE_CROSS_ENTROPY);
    op.ctx_compute = tr->ctx_compute;
    op.inputs = tr->x;
    op.outputs = tr->logits;
    op.build_type = GGML_OPT_BUILD_TYPE_OPT;
    op.get_opt_pars = get_pars;
    op.get_opt_pars_ud = &tr->pars;
    op.optimizer = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
    tr->opt = ggml_opt_init(op);
    tr->ggml_iter = 1;

    if (rho < 0) return; /* plain ggml-opt: no hook */
    mgpo_config cfg = mgpo_config_default();
    cfg.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    cfg.scope = MGPO_SCOPE_TENSOR;
    cfg.rho = rho;
    check(mgpo_create(&tr->st, &cfg, NULL), "mgpo_create");
    for (int p = 0; p < NPARAM; p++)
        check(mgpo_add_tensor(tr->st, tr->param[p]->data, NULL, nel(tr->param[p]), NULL, NULL), "mgpo_add_tensor");
    ggml_backend_sched_set_eval_callback(tr->sched, hook, tr);
}

static void trainer_free(trainer *tr)
{
    for (int p = 0; p < NPARAM; p++) {
        free(tr->clean[p]);
        for (int k = 0; k < 3; k++) free(tr->stash[p][k]);
    }
    mgpo_destroy(tr->st);
    ggml_opt_free(tr->opt);
    ggml_backend_buffer_free(tr->buf);
    ggml_free(tr->ctx_compute);
    ggml_free(tr->ctx_static);
    ggml_backend_sched_free(tr->sched);
    ggml_backend_free(tr->backend);
}

static void set_batch(trainer *tr, int64_t b)
{
    static float xin[N_IN * BATCH], lab[VOCAB * BATCH];
    memset(xin, 0, sizeof xin);
    memset(lab, 0, sizeof lab);
    for (int i = 0; i < BATCH; i++) {
        size_t s = window_start(tr->tx, 0, (size_t)b * BATCH + (size_t)i);
        for (int c = 0; c < CTX; c++) xin[i * N_IN + c * VOCAB + tr->tx->bytes[s + c]] = 1.0f;
        lab[i * VOCAB + tr->tx->bytes[s + CTX]] = 1.0f;
    }
    ggml_backend_tensor_set(ggml_opt_inputs(tr->opt), xin, 0, sizeof xin);
    ggml_backend_tensor_set(ggml_opt_labels(tr->opt), lab, 0, sizeof lab);
}

static int param_index(const trainer *tr, const struct ggml_tensor *t)
{
    for (int p = 0; p < NPARAM; p++)
        if (t->data == tr->param[p]->data) return p;
    die("an AdamW node steps a tensor that is not a parameter");
    return -1;
}

/* Runs when the hook node has been computed: every gradient exists and no
 * AdamW node has run.  Returns the value for the scheduler: false stops
 * this graph split, i.e. cancels ggml's AdamW step. */
static bool at_gradients(trainer *tr)
{
    tr->hook_ran = true;
    if (tr->batch == tr->nan_batch) tr->grad[1][3] = NAN;
    for (int p = 0; p < NPARAM; p++) check(mgpo_set_grad(tr->st, (size_t)p, tr->grad[p]), "mgpo_set_grad");
    mgpo_status s = mgpo_step(tr->st);
    if (tr->clean[0]) {
        int exact = 1;
        for (int p = 0; p < NPARAM; p++)
            exact &= memcmp(tr->clean[p], tr->param[p]->data, nel(tr->param[p]) * sizeof(float)) == 0;
        tr->restores_checked++;
        tr->restores_exact += exact;
    }
    if (s == MGPO_ERR_NONFINITE_GRADIENT) {
        tr->skipped = true;
        tr->skips++;
        return false; /* no AdamW node runs */
    }
    check(s, "mgpo_step");
    /* ggml-opt's bias correction counts evaluations, not steps. */
    const float t = (float)(tr->steps_done + 1);
    if (tr->steps_done + 1 != tr->ggml_iter) {
        tr->adamw_pars[5] = 1.0f / (1.0f - powf(tr->pars.adamw.beta1, t));
        tr->adamw_pars[6] = 1.0f / (1.0f - powf(tr->pars.adamw.beta2, t));
    }
    return true;
}

static bool hook(struct ggml_tensor *t, bool ask, void *ud)
{
    trainer *tr = ud;
    if (!tr->discovering) {
        if (ask) return t == tr->hook_node;
        return at_gradients(tr);
    }
    /* Discovery: ask for nothing, so every node passes here before any is
     * computed. */
    if (ask && t->op == GGML_OP_OPT_STEP_ADAMW) {
        if (tr->opt_nodes_seen == 0) tr->hook_node = tr->prev;
        int p = param_index(tr, t->src[0]);
        tr->grad[p] = t->src[1]->data;
        tr->m[p] = t->src[2]->data;
        tr->v[p] = t->src[3]->data;
        tr->adamw_pars = t->src[4]->data;
        if (++tr->opt_nodes_seen == NPARAM) {
            for (int q = 0; q < NPARAM; q++) {
                float *src[3] = {tr->param[q]->data, tr->m[q], tr->v[q]};
                for (int k = 0; k < 3; k++) {
                    tr->stash[q][k] = malloc(nel(tr->param[q]) * sizeof(float));
                    memcpy(tr->stash[q][k], src[k], nel(tr->param[q]) * sizeof(float));
                }
            }
        }
    }
    if (ask) tr->prev = t;
    return false;
}

/* The discovery evaluation (see the top of the file); changes nothing but
 * ggml's counter. */
static void discover(trainer *tr)
{
    tr->discovering = true;
    set_batch(tr, 0);
    ggml_opt_alloc(tr->opt, true);
    ggml_opt_eval(tr->opt, NULL);
    tr->ggml_iter++;
    tr->discovering = false;
    if (tr->opt_nodes_seen != NPARAM || !tr->hook_node) die("discovery: the AdamW nodes were not found");
    if (ggml_backend_sched_get_n_splits(tr->sched) != 1)
        die("the graph has more than one split: cancelling the step by the callback's return value "
            "would not stop the AdamW nodes of the other splits");
    for (int q = 0; q < NPARAM; q++) {
        float *dst[3] = {tr->param[q]->data, tr->m[q], tr->v[q]};
        for (int k = 0; k < 3; k++) memcpy(dst[k], tr->stash[q][k], nel(tr->param[q]) * sizeof(float));
        check(mgpo_set_momentum(tr->st, (size_t)q, tr->m[q]), "mgpo_set_momentum");
    }
}

static void train_step(trainer *tr, int64_t b)
{
    if (tr->st && !tr->hook_node) discover(tr);
    if (tr->clean[0])
        for (int p = 0; p < NPARAM; p++) memcpy(tr->clean[p], tr->param[p]->data, nel(tr->param[p]) * sizeof(float));
    if (tr->st) check(mgpo_perturb(tr->st), "mgpo_perturb");
    tr->batch = b;
    tr->skipped = tr->hook_ran = false;
    set_batch(tr, b);
    ggml_opt_alloc(tr->opt, true);
    ggml_opt_eval(tr->opt, NULL);
    tr->ggml_iter++;
    if (tr->st && !tr->hook_ran) die("the hook node was not reached");
    if (!tr->skipped) tr->steps_done++;
}

static void checked_mode(trainer *tr)
{
    for (int p = 0; p < NPARAM; p++) tr->clean[p] = malloc(nel(tr->param[p]) * sizeof(float));
}

/* Held-out cross-entropy, computed on the host from the weights. */
static double held_out_loss(const trainer *tr)
{
    const float *w1 = tr->param[0]->data, *b1 = tr->param[1]->data;
    const float *w2 = tr->param[2]->data, *b2 = tr->param[3]->data;
    double sum = 0;
    const int n = 2048;
    for (int i = 0; i < n; i++) {
        size_t s = window_start(tr->tx, 1, (size_t)i);
        float h[HIDDEN], z[VOCAB], mx = -INFINITY;
        for (int j = 0; j < HIDDEN; j++) {
            float a = b1[j];
            for (int c = 0; c < CTX; c++) a += w1[(size_t)j * N_IN + c * VOCAB + tr->tx->bytes[s + c]];
            h[j] = a > 0 ? a : 0;
        }
        for (int k = 0; k < VOCAB; k++) {
            float a = b2[k];
            for (int j = 0; j < HIDDEN; j++) a += w2[(size_t)k * HIDDEN + j] * h[j];
            z[k] = a;
            if (a > mx) mx = a;
        }
        double se = 0;
        for (int k = 0; k < VOCAB; k++) se += exp((double)(z[k] - mx));
        sum += log(se) + mx - z[tr->tx->bytes[s + CTX]];
    }
    return sum / n;
}

/* FNV-1a over the bits of the weights (and moments, when hooked). */
static uint64_t digest(const trainer *tr, int with_moments)
{
    uint64_t h = 1469598103934665603ull;
    for (int p = 0; p < NPARAM; p++) {
        const float *bufs[3] = {tr->param[p]->data, tr->m[p], tr->v[p]};
        for (int k = 0; k < (with_moments ? 3 : 1); k++) {
            const unsigned char *c = (const unsigned char *)bufs[k];
            for (size_t i = 0; i < nel(tr->param[p]) * sizeof(float); i++) h = (h ^ c[i]) * 1099511628211ull;
        }
    }
    return h;
}

/* A checkpoint of both sides: ggml-opt's (weights, grad_m, grad_v, the
 * AdamW step count) and libmgpo's (mgpo_save).  Taken between steps. */
typedef struct checkpoint {
    float *w[NPARAM], *m[NPARAM], *v[NPARAM];
    int64_t steps_done;
    void *mgpo;
    size_t mgpo_size;
} checkpoint;

static void save(const trainer *tr, checkpoint *ck)
{
    for (int p = 0; p < NPARAM; p++) {
        size_t n = nel(tr->param[p]) * sizeof(float);
        ck->w[p] = malloc(n); memcpy(ck->w[p], tr->param[p]->data, n);
        ck->m[p] = malloc(n); memcpy(ck->m[p], tr->m[p], n);
        ck->v[p] = malloc(n); memcpy(ck->v[p], tr->v[p], n);
    }
    ck->steps_done = tr->steps_done;
    check(mgpo_checkpoint_size(tr->st, &ck->mgpo_size), "mgpo_checkpoint_size");
    ck->mgpo = malloc(ck->mgpo_size);
    check(mgpo_save(tr->st, ck->mgpo, ck->mgpo_size, &ck->mgpo_size), "mgpo_save");
}

/* Into a fresh trainer: discover first (the moments' addresses), then put
 * ggml's side back, attach the momentum (done by discover), mgpo_load. */
static void load(trainer *tr, const checkpoint *ck)
{
    discover(tr);
    for (int p = 0; p < NPARAM; p++) {
        size_t n = nel(tr->param[p]) * sizeof(float);
        memcpy(tr->param[p]->data, ck->w[p], n);
        memcpy(tr->m[p], ck->m[p], n);
        memcpy(tr->v[p], ck->v[p], n);
    }
    tr->steps_done = ck->steps_done;
    check(mgpo_load(tr->st, ck->mgpo, ck->mgpo_size), "mgpo_load");
}

static void free_checkpoint(checkpoint *ck)
{
    for (int p = 0; p < NPARAM; p++) { free(ck->w[p]); free(ck->m[p]); free(ck->v[p]); }
    free(ck->mgpo);
}

static int failures;
static void expect(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

int main(int argc, char **argv)
{
    const char *path = "/usr/share/games/fortunes/fortunes";
    int steps = 300, test = 0, threads = 1;
    double rho = 0.05;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rho") && i + 1 < argc) rho = atof(argv[++i]);
        else if (!strcmp(argv[i], "--test")) test = 1;
        else { fprintf(stderr, "usage: ggml_mgpo [--text FILE] [--steps N] [--rho R] [--test]\n"); return 2; }
    }
    /* Debian builds the CPU backend as a module: go through the registry. */
    ggml_backend_load_all();
    text tx;
    if (!read_text(path, &tx)) {
        printf("ggml_mgpo skipped: cannot read at least 20000 bytes of text from %s "
               "(apt-get install fortunes-min, or --text FILE)\n", path);
        return 77;
    }
    printf("ggml %s (%s), libmgpo %s, text %s (%zu bytes)\n", ggml_version(), ggml_commit(),
           mgpo_version_string(), path, tx.n);

    trainer tr;
    if (!test) {
        trainer_init(&tr, &tx, rho, threads);
        printf("step 0: held-out loss %.4f\n", held_out_loss(&tr));
        for (int s = 0; s < steps; s++) {
            train_step(&tr, s);
            if ((s + 1) % 50 == 0) printf("step %d: held-out loss %.4f\n", s + 1, held_out_loss(&tr));
        }
        trainer_free(&tr);
        free(tx.bytes);
        return 0;
    }

    /* 1. rho = 0 through the hook: bit-identical to ggml-opt alone. */
    trainer_init(&tr, &tx, -1, threads);
    for (int s = 0; s < steps; s++) train_step(&tr, s);
    uint64_t plain = digest(&tr, 0);
    double plain_loss = held_out_loss(&tr);
    trainer_free(&tr);
    trainer_init(&tr, &tx, 0.0, threads);
    for (int s = 0; s < steps; s++) train_step(&tr, s);
    uint64_t zero = digest(&tr, 0);
    trainer_free(&tr);
    printf("plain AdamW %016llx, MGPO rho=0 %016llx\n", (unsigned long long)plain, (unsigned long long)zero);
    expect(plain == zero, "rho = 0 through the hook is bit-identical to plain ggml-opt AdamW");

    /* 2. MGPO trains; every restore is exact before ggml steps. */
    trainer_init(&tr, &tx, rho, threads);
    checked_mode(&tr);
    double before = held_out_loss(&tr);
    for (int s = 0; s < steps; s++) train_step(&tr, s);
    double after = held_out_loss(&tr);
    printf("MGPO rho=%g: held-out loss %.4f -> %.4f (plain AdamW %.4f); exact restores %ld of %ld\n",
           rho, before, after, plain_loss, tr.restores_exact, tr.restores_checked);
    expect(after < before - 0.5, "MGPO trains: the held-out loss falls by more than 0.5 nats");
    expect(digest(&tr, 0) != plain, "MGPO at rho > 0 is not plain AdamW");
    expect(tr.restores_checked == steps && tr.restores_exact == steps,
           "the weights ggml steps are the clean ones (exact restore at every step)");
    trainer_free(&tr);

    /* 3. A NaN gradient skips the whole step: the run with a NaN at batch k
     *    equals, bit for bit, the run that never saw batch k. */
    const int64_t k = steps / 2;
    trainer nan_run;
    trainer_init(&nan_run, &tx, rho, threads);
    nan_run.nan_batch = k;
    uint64_t before_nan = 0, after_nan = 0;
    for (int64_t b = 0; b < steps; b++) {
        if (b == k) before_nan = digest(&nan_run, 1);
        train_step(&nan_run, b);
        if (b == k) after_nan = digest(&nan_run, 1);
    }
    trainer skip_run;
    trainer_init(&skip_run, &tx, rho, threads);
    for (int64_t b = 0; b < steps; b++)
        if (b != k) train_step(&skip_run, b);
    expect(nan_run.skips == 1 && before_nan == after_nan,
           "a NaN gradient leaves weights, grad_m and grad_v unchanged (no AdamW node ran)");
    expect(digest(&nan_run, 1) == digest(&skip_run, 1),
           "the run with a NaN at batch k equals the run without batch k (weights, moments; "
           "ggml's bias correction follows the steps taken)");
    trainer_free(&skip_run);
    trainer_free(&nan_run);

    /* 4. Resume: k steps, checkpoint both sides, a fresh process-like
     *    trainer, the rest: bitwise the uninterrupted run. */
    trainer straight;
    trainer_init(&straight, &tx, rho, threads);
    for (int64_t b = 0; b < steps; b++) train_step(&straight, b);
    trainer first;
    trainer_init(&first, &tx, rho, threads);
    for (int64_t b = 0; b < k; b++) train_step(&first, b);
    checkpoint ck;
    save(&first, &ck);
    trainer_free(&first);
    trainer resumed;
    trainer_init(&resumed, &tx, rho, threads);
    load(&resumed, &ck);
    free_checkpoint(&ck);
    for (int64_t b = k; b < steps; b++) train_step(&resumed, b);
    expect(digest(&straight, 1) == digest(&resumed, 1),
           "a checkpoint of ggml-opt's state and libmgpo's resumes bitwise");
    trainer_free(&resumed);
    trainer_free(&straight);

    free(tx.bytes);
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
