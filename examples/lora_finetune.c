/* lora_finetune: a small but real LoRA fine-tuning run in plain C.
 *
 *   1. Task A: inputs x ~ N(0, I) labelled by a random "teacher" MLP.  A
 *      student MLP (32 -> 128 -> 128 -> 10, tanh, softmax cross-entropy) is
 *      pretrained on it with libmgpo's plain AdamW (rho = 0), then frozen.
 *   2. Task B: a related task, the teacher with perturbed weights, a small
 *      training set (256 examples) with 20 % of its labels replaced at random,
 *      and a clean held-out set.  The frozen student is adapted with a LoRA
 *      adapter W + (alpha/r) * B * A on every linear layer, using AdamW or
 *      MGPO from libmgpo.
 *
 * Everything is hand-written in the style of llm.c: one float buffer per kind
 * of thing (frozen weights, adapters, their gradients, activations) with
 * named views into it, an explicit forward and backward pass, no allocation
 * in the training loop.  The whole program is deterministic for a seed.
 *
 * One training step, with the three libmgpo calls:
 *
 *     mgpo_set_lr(st, schedule(step));
 *     mgpo_perturb(st);              nudge the adapters along their momentum
 *     forward(); backward();         gradient at the nudged point
 *     mgpo_restore(st);              clean adapters back, bit for bit
 *     mgpo_step(st);                 AdamW update of the clean adapters
 *
 * Evaluation runs after mgpo_step, so it always sees clean weights.
 *
 * Usage: lora_finetune [--demo] [--rank R] [--alpha A] [--lr LR] [--steps N]
 *        [--seed S] [--optimizer adamw|mgpo] [--rho RHO]
 *        [--sign lookahead|ascent] [--scope global|tensor]
 *        [--lora-mode tensors|adapter|base] [--schedule cosine|constant]
 *        [--eval-every K] [--pretrain-steps N] [--csv FILE] [--check] [--quiet]
 *
 * --demo trains AdamW and MGPO side by side on the same data from the same
 * starting point.  Its defaults (rank 128, lr 0.006, rho 0.5, adapters as
 * tensors, evaluation every 5 steps, a line every 20) are a setting of the
 * sweep in docs/results.md where MGPO visibly smooths the training loss, so
 * the demo prints the same numbers with or without LoRA-pair support; any
 * flag overrides them (LoRA pairs need a larger rho, see docs/results.md).
 * --check makes the exit status 1 unless the final training loss is below
 * the initial one (ctest uses it).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgpo.h"
#include "example_math.h"

/* ---- Sizes ---------------------------------------------------------------- */

enum {
    D_IN = 32, HID = 128, N_CLASS = 10, N_LAYER = 3, /* the student */
    T_HID = 64,                                     /* the teachers */
    N_TRAIN = 512, N_EVAL = 1024, BATCH = 32,       /* task B */
    PRE_STEPS = 600, PRE_BATCH = 64,                /* task A pretraining */
    MAX_ROWS = N_EVAL                               /* largest forward batch */
};
static const int LAYER_IN[N_LAYER] = {D_IN, HID, HID};
static const int LAYER_OUT[N_LAYER] = {HID, HID, N_CLASS};
static const double PRE_LR = 3e-3, TEACHER_SHIFT = 0.6, LABEL_NOISE = 0.2;

/* ---- Parameters: one buffer, named views ---------------------------------- */

typedef struct {
    float *w[N_LAYER]; /* n_out x n_in, row-major */
    float *b[N_LAYER]; /* n_out */
} Base;

typedef struct {
    float *a[N_LAYER]; /* A: rank x n_in */
    float *b[N_LAYER]; /* B: n_out x rank */
} Lora;

/* Lays the views over mem (or, with mem NULL, only counts); returns floats. */
static size_t base_layout(float *mem, Base *v)
{
    size_t off = 0;
    for (int l = 0; l < N_LAYER; l++) {
        if (mem) v->w[l] = mem + off;
        off += (size_t)LAYER_OUT[l] * LAYER_IN[l];
        if (mem) v->b[l] = mem + off;
        off += (size_t)LAYER_OUT[l];
    }
    return off;
}
static size_t lora_layout(float *mem, int rank, Lora *v)
{
    size_t off = 0;
    for (int l = 0; l < N_LAYER; l++) {
        if (mem) v->a[l] = mem + off;
        off += (size_t)rank * LAYER_IN[l];
        if (mem) v->b[l] = mem + off;
        off += (size_t)LAYER_OUT[l] * rank;
    }
    return off;
}

/* Activations and their gradients for up to MAX_ROWS examples. */
typedef struct {
    float *h[N_LAYER]; /* layer outputs (tanh applied, except logits) */
    float *u[N_LAYER]; /* A * input, the LoRA bottleneck: rows x rank */
    float *d[2];       /* gradient w.r.t. a hidden layer (ping-pong) */
    float *du;         /* gradient w.r.t. u of one row */
    float *dlogits;
    float *mem;
} Acts;

static int acts_alloc(Acts *a, int rank)
{
    size_t hsz = (size_t)MAX_ROWS * HID, total = 0;
    total += 2 * hsz + (size_t)MAX_ROWS * N_CLASS;   /* h */
    total += (size_t)N_LAYER * BATCH * (rank + 1);    /* u */
    total += 2 * (size_t)PRE_BATCH * HID + (rank + 1); /* d, du */
    total += (size_t)PRE_BATCH * N_CLASS;              /* dlogits */
    float *p = a->mem = calloc(total, sizeof(float));
    if (!p) return -1;
    a->h[0] = p, p += hsz;
    a->h[1] = p, p += hsz;
    a->h[2] = p, p += (size_t)MAX_ROWS * N_CLASS;
    for (int l = 0; l < N_LAYER; l++) a->u[l] = p, p += (size_t)BATCH * (rank + 1);
    a->d[0] = p, p += (size_t)PRE_BATCH * HID;
    a->d[1] = p, p += (size_t)PRE_BATCH * HID;
    a->du = p, p += rank + 1;
    a->dlogits = p;
    return 0;
}

/* ---- Forward and backward ------------------------------------------------- */

/* Runs n rows of x through the network; lora NULL means base weights only.
 * Returns the logits (n x N_CLASS), which live in a->h[N_LAYER - 1]. */
static const float *forward(const Base *p, const Lora *lora, int rank, float scale,
                            const float *x, int n, Acts *a)
{
    const float *in = x;
    for (int l = 0; l < N_LAYER; l++) {
        int ni = LAYER_IN[l], no = LAYER_OUT[l];
        for (int i = 0; i < n; i++) {
            const float *xi = in + (size_t)i * ni;
            float *oi = a->h[l] + (size_t)i * no;
            for (int o = 0; o < no; o++) oi[o] = p->b[l][o] + dot(xi, p->w[l] + (size_t)o * ni, ni);
            if (lora) { /* out += s * B (A x) */
                float *ui = a->u[l] + (size_t)i * rank;
                for (int j = 0; j < rank; j++) ui[j] = dot(xi, lora->a[l] + (size_t)j * ni, ni);
                for (int o = 0; o < no; o++) oi[o] += scale * dot(ui, lora->b[l] + (size_t)o * rank, rank);
            }
            if (l < N_LAYER - 1)
                for (int o = 0; o < no; o++) oi[o] = tanhf(oi[o]);
        }
        in = a->h[l];
    }
    return a->h[N_LAYER - 1];
}

/* Mean softmax cross-entropy over n rows.  Writes d loss / d logits when
 * dlogits is not NULL and counts correct argmax predictions into *correct. */
static double cross_entropy(const float *logits, const int *y, int n, float *dlogits, int *correct)
{
    double loss = 0.0;
    *correct = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * N_CLASS;
        int best = 0;
        for (int c = 1; c < N_CLASS; c++) if (z[c] > z[best]) best = c;
        double sum = 0.0;
        for (int c = 0; c < N_CLASS; c++) sum += exp((double)z[c] - z[best]);
        loss += log(sum) - ((double)z[y[i]] - z[best]);
        *correct += best == y[i];
        if (dlogits)
            for (int c = 0; c < N_CLASS; c++)
                dlogits[(size_t)i * N_CLASS + c] =
                    (float)((exp((double)z[c] - z[best]) / sum - (c == y[i])) / n);
    }
    return loss / n;
}

/* Back-propagates a->dlogits through the network of the last forward call.
 * Accumulates into gbase (full fine-tuning; NULL when the base is frozen)
 * and into glora (LoRA adapters; NULL when there are none). */
static void backward(const Base *p, Base *gbase, const Lora *lora, Lora *glora, int rank,
                     float scale, const float *x, int n, Acts *a)
{
    const float *dout = a->dlogits;
    for (int l = N_LAYER - 1; l >= 0; l--) {
        int ni = LAYER_IN[l], no = LAYER_OUT[l];
        const float *in = l > 0 ? a->h[l - 1] : x;
        float *din = l > 0 ? a->d[l % 2] : NULL; /* the input's gradient, if needed */
        if (din) memset(din, 0, (size_t)n * ni * sizeof(float));
        for (int i = 0; i < n; i++) {
            const float *di = dout + (size_t)i * no, *xi = in + (size_t)i * ni;
            float *dxi = din ? din + (size_t)i * ni : NULL;
            for (int o = 0; o < no; o++) {
                if (gbase) {
                    axpy(gbase->w[l] + (size_t)o * ni, di[o], xi, ni);
                    gbase->b[l][o] += di[o];
                }
                if (dxi) axpy(dxi, di[o], p->w[l] + (size_t)o * ni, ni);
            }
            if (lora) { /* out = ... + s * B u, u = A x */
                const float *ui = a->u[l] + (size_t)i * rank;
                memset(a->du, 0, (size_t)rank * sizeof(float));
                for (int o = 0; o < no; o++) {
                    float g = scale * di[o];
                    axpy(glora->b[l] + (size_t)o * rank, g, ui, rank);     /* dB += s dout u^T */
                    axpy(a->du, g, lora->b[l] + (size_t)o * rank, rank);    /* du = s B^T dout */
                }
                for (int j = 0; j < rank; j++) {
                    axpy(glora->a[l] + (size_t)j * ni, a->du[j], xi, ni); /* dA += du x^T */
                    if (dxi) axpy(dxi, a->du[j], lora->a[l] + (size_t)j * ni, ni);
                }
            }
            if (dxi) /* through the tanh that produced this layer's input */
                for (int k = 0; k < ni; k++) dxi[k] *= 1.0f - xi[k] * xi[k];
        }
        dout = din;
    }
}

/* W_eff = W + s * B * A for every layer, into merged (same layout as base). */
static void merge_lora(const Base *base, const Lora *lora, int rank, float scale, Base *merged)
{
    for (int l = 0; l < N_LAYER; l++) {
        int ni = LAYER_IN[l], no = LAYER_OUT[l];
        memcpy(merged->w[l], base->w[l], (size_t)no * ni * sizeof(float));
        memcpy(merged->b[l], base->b[l], (size_t)no * sizeof(float));
        for (int o = 0; o < no; o++)
            for (int j = 0; j < rank; j++)
                axpy(merged->w[l] + (size_t)o * ni, scale * lora->b[l][(size_t)o * rank + j],
                     lora->a[l] + (size_t)j * ni, ni);
    }
}

/* ---- Tasks: teachers and data sets -------------------------------------- */

typedef struct {
    float w1[T_HID * D_IN], b1[T_HID], w2[N_CLASS * T_HID];
} Teacher;

static int teacher_label(const Teacher *t, const float *x)
{
    float h[T_HID];
    for (int j = 0; j < T_HID; j++) h[j] = tanhf(t->b1[j] + dot(x, t->w1 + j * D_IN, D_IN));
    int best = 0;
    float zbest = -INFINITY;
    for (int c = 0; c < N_CLASS; c++) {
        float z = dot(h, t->w2 + c * T_HID, T_HID);
        if (z > zbest) zbest = z, best = c;
    }
    return best;
}

typedef struct {
    int n;
    float *x; /* n x D_IN */
    int *y;
} Dataset;

static int dataset_make(Dataset *d, int n, const Teacher *t, double noise, Rng *r)
{
    d->n = n;
    d->x = malloc((size_t)n * D_IN * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int));
    if (!d->x || !d->y) return -1;
    for (int i = 0; i < n; i++) {
        fill_normal(r, d->x + (size_t)i * D_IN, D_IN, 1.0f);
        d->y[i] = teacher_label(t, d->x + (size_t)i * D_IN);
        if (rng_uniform(r) < noise) d->y[i] = (int)(rng_next(r) % N_CLASS);
    }
    return 0;
}

static void dataset_free(Dataset *d)
{
    free(d->x);
    free(d->y);
}

/* ---- Options -------------------------------------------------------------- */

typedef enum { MODE_TENSORS, MODE_ADAPTER, MODE_BASE } LoraMode;
static const char *const MODE_NAMES[] = {"tensors", "adapter", "base"};

typedef struct {
    int rank, steps, pretrain_steps, eval_every, print_every, demo, check, quiet, mgpo, cosine;
    double alpha, lr, rho;
    uint64_t seed;
    mgpo_sign sign;
    mgpo_scope scope;
    LoraMode mode;
    const char *csv;
    const char *commit;        /* the source commit the driver passes, recorded in the CSV */
} Options;

static void usage(void)
{
    fprintf(stderr,
            "usage: lora_finetune [--demo] [--rank R] [--alpha A] [--lr LR] [--steps N]\n"
            "       [--seed S] [--optimizer adamw|mgpo] [--rho RHO] [--sign lookahead|ascent]\n"
            "       [--scope global|tensor] [--lora-mode tensors|adapter|base]\n"
            "       [--schedule cosine|constant] [--eval-every K] [--pretrain-steps N]\n"
            "       [--csv FILE] [--commit ID] [--check] [--quiet]\n");
}

/* Parses argv into *o; returns 0, or -1 after printing what was wrong. */
static int parse_options(int argc, char **argv, Options *o)
{
    *o = (Options){.commit = "unknown", .rank = 64, .steps = 300, .pretrain_steps = PRE_STEPS, .eval_every = 10, .mgpo = 1, .cosine = 1,
                   .alpha = -1.0, .lr = 3e-3, .rho = 0.05, .seed = 1,
                   .sign = MGPO_SIGN_LOOKAHEAD, .scope = MGPO_SCOPE_GLOBAL, .mode = MODE_ADAPTER};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--demo")) { /* demo defaults; later flags override */
            o->rank = 128, o->lr = 0.006, o->rho = 0.5, o->eval_every = 5, o->print_every = 20;
            o->mode = MODE_TENSORS;
            o->demo = 1;
        }
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        int ok = 1, takes_value = 1;
        if (!strcmp(f, "--demo")) o->demo = 1, takes_value = 0;
        else if (!strcmp(f, "--check")) o->check = 1, takes_value = 0;
        else if (!strcmp(f, "--quiet")) o->quiet = 1, takes_value = 0;
        else if (!v) ok = 0;
        else if (!strcmp(f, "--rank")) o->rank = (int)strtol(v, &end, 10), ok = o->rank > 0 && o->rank <= 1024;
        else if (!strcmp(f, "--steps")) o->steps = (int)strtol(v, &end, 10), ok = o->steps > 0;
        else if (!strcmp(f, "--pretrain-steps")) o->pretrain_steps = (int)strtol(v, &end, 10), ok = o->pretrain_steps > 0;
        else if (!strcmp(f, "--eval-every")) o->eval_every = (int)strtol(v, &end, 10), ok = o->eval_every > 0;
        else if (!strcmp(f, "--seed")) o->seed = strtoull(v, &end, 10);
        else if (!strcmp(f, "--alpha")) o->alpha = strtod(v, &end), ok = o->alpha > 0.0;
        else if (!strcmp(f, "--lr")) o->lr = strtod(v, &end), ok = o->lr > 0.0;
        else if (!strcmp(f, "--rho")) o->rho = strtod(v, &end), ok = o->rho >= 0.0;
        else if (!strcmp(f, "--csv")) o->csv = v;
        else if (!strcmp(f, "--commit")) o->commit = v, ok = *v && !strpbrk(v, ", \n");
        else if (!strcmp(f, "--optimizer")) ok = !strcmp(v, "mgpo") || !strcmp(v, "adamw"), o->mgpo = !strcmp(v, "mgpo");
        else if (!strcmp(f, "--schedule")) ok = !strcmp(v, "cosine") || !strcmp(v, "constant"), o->cosine = !strcmp(v, "cosine");
        else if (!strcmp(f, "--sign")) {
            ok = !strcmp(v, "lookahead") || !strcmp(v, "ascent");
            o->sign = !strcmp(v, "ascent") ? MGPO_SIGN_ASCENT : MGPO_SIGN_LOOKAHEAD;
        } else if (!strcmp(f, "--scope")) {
            ok = !strcmp(v, "global") || !strcmp(v, "tensor");
            o->scope = !strcmp(v, "tensor") ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
        } else if (!strcmp(f, "--lora-mode")) {
            ok = 0;
            for (int m = MODE_TENSORS; m <= MODE_BASE; m++)
                if (!strcmp(v, MODE_NAMES[m])) o->mode = (LoraMode)m, ok = 1;
        } else {
            fprintf(stderr, "unknown option %s\n", f);
            usage();
            return -1;
        }
        if (!ok || (end && *end)) {
            fprintf(stderr, "bad or missing value for %s\n", f);
            usage();
            return -1;
        }
        i += takes_value;
    }
    if (o->alpha < 0.0) o->alpha = 2.0 * o->rank; /* a common choice: scaling 2 */
    if (o->print_every == 0 || o->print_every % o->eval_every != 0) o->print_every = o->eval_every;
    return 0;
}

/* ---- One fine-tuning run: adapters, their optimizer, their history ------- */

typedef struct {
    const char *name;
    int rank;
    float scale;
    float *mem;          /* base copy | merged | adapters | adapter gradients */
    Base base, merged;   /* own copy of the frozen weights (base mode perturbs it) */
    Lora lora, grad;
    Acts acts;
    mgpo_state *st;
    mgpo_schedule sched;
    double first_train_loss, min_train_loss, max_rebound;
    double train_loss, eval_loss, eval_acc, batch_loss, lr;
    /* Cost of training (the "cost" line): wall time of the training steps
     * and of the libmgpo calls in them; bytes the state holds now, at most. */
    double step_seconds, lib_seconds;
    int steps_timed;
    size_t lib_bytes, lib_peak_bytes;
} Run;

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An allocator that counts what the state holds (mgpo_allocator). */
static void *counting_alloc(void *ctx, size_t size)
{
    Run *r = ctx;
    void *p = malloc(size);
    if (p) {
        r->lib_bytes += size;
        if (r->lib_bytes > r->lib_peak_bytes) r->lib_peak_bytes = r->lib_bytes;
    }
    return p;
}

static void counting_free(void *ctx, void *ptr, size_t size)
{
    Run *r = ctx;
    if (ptr) r->lib_bytes -= size;
    free(ptr);
}

static int fail(const char *what, mgpo_status s)
{
    fprintf(stderr, "lora_finetune: %s: %s\n", what, mgpo_strerror(s));
    return -1;
}

/* Registers the adapters of every layer in the requested mode. */
static mgpo_status register_adapters(Run *r, LoraMode mode)
{
    for (int l = 0; l < N_LAYER; l++) {
        size_t ni = (size_t)LAYER_IN[l], no = (size_t)LAYER_OUT[l], rk = (size_t)r->rank;
        mgpo_status s;
        if (mode == MODE_TENSORS) {
            s = mgpo_add_tensor(r->st, r->lora.a[l], r->grad.a[l], rk * ni, NULL, NULL);
            if (s == MGPO_OK) s = mgpo_add_tensor(r->st, r->lora.b[l], r->grad.b[l], no * rk, NULL, NULL);
        } else {
            mgpo_lora_pair pair = {r->lora.a[l], r->grad.a[l], r->lora.b[l], r->grad.b[l],
                                   mode == MODE_BASE ? r->base.w[l] : NULL, rk, ni, no,
                                   r->scale, mode == MODE_BASE ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER};
            s = mgpo_add_lora_pair(r->st, &pair, NULL, NULL);
        }
        if (s != MGPO_OK) return s;
    }
    return MGPO_OK;
}

/* Sets up a run from the pretrained weights.
 * Returns 0, or -1 on error. */
static int run_init(Run *r, const char *name, const Options *o, int mgpo, const Base *pretrained,
                    LoraMode *mode)
{
    memset(r, 0, sizeof *r);
    r->name = name;
    r->rank = o->rank;
    r->scale = (float)(o->alpha / o->rank);
    size_t nb = base_layout(NULL, NULL), nl = lora_layout(NULL, o->rank, NULL);
    r->mem = calloc(2 * nb + 2 * nl, sizeof(float));
    if (!r->mem || acts_alloc(&r->acts, o->rank) != 0) return fail("allocation", MGPO_ERR_OUT_OF_MEMORY);
    base_layout(r->mem, &r->base);
    base_layout(r->mem + nb, &r->merged);
    lora_layout(r->mem + 2 * nb, o->rank, &r->lora);
    lora_layout(r->mem + 2 * nb + nl, o->rank, &r->grad);
    memcpy(r->mem, pretrained->w[0], nb * sizeof(float)); /* views are contiguous */

    /* Standard LoRA initialisation: A random, B zero, so W_eff = W at start.
     * Every run with the same seed starts from the same A. */
    Rng rng = rng_stream(o->seed, 6);
    for (int l = 0; l < N_LAYER; l++)
        fill_normal(&rng, r->lora.a[l], (size_t)o->rank * LAYER_IN[l], 1.0f / sqrtf((float)LAYER_IN[l]));

    mgpo_config cfg = mgpo_config_default();
    cfg.lr = o->lr;
    cfg.rho = mgpo ? o->rho : 0.0; /* rho 0: the same code path is plain AdamW */
    cfg.sign = o->sign;
    cfg.scope = o->scope;
    const mgpo_allocator counting = {counting_alloc, counting_free, r};
    mgpo_status s = mgpo_create(&r->st, &cfg, &counting);
    if (s != MGPO_OK) return fail("mgpo_create", s);
    s = register_adapters(r, *mode);
    if (s != MGPO_OK) return fail("registering the adapters", s);
    r->sched = o->cosine ? mgpo_schedule_paper(o->lr, (uint64_t)o->steps)
                         : (mgpo_schedule){MGPO_SCHEDULE_CONSTANT, o->lr, 0.0, 0, (uint64_t)o->steps};
    return 0;
}

static void run_free(Run *r)
{
    mgpo_destroy(r->st);
    free(r->acts.mem);
    free(r->mem);
}

/* Loss (and accuracy) of the merged clean weights on a whole data set. */
static double evaluate(Run *r, const Dataset *d, double *acc)
{
    int correct = 0;
    const float *logits = forward(&r->merged, NULL, 0, 0.0f, d->x, d->n, &r->acts);
    double loss = cross_entropy(logits, d->y, d->n, NULL, &correct);
    if (acc) *acc = (double)correct / d->n;
    return loss;
}

/* Clean metrics after `step` updates; tracks the largest loss rebound. */
static void run_evaluate(Run *r, const Dataset *train, const Dataset *eval, int step)
{
    merge_lora(&r->base, &r->lora, r->rank, r->scale, &r->merged);
    r->train_loss = evaluate(r, train, NULL);
    r->eval_loss = evaluate(r, eval, &r->eval_acc);
    if (step == 0) r->first_train_loss = r->min_train_loss = r->train_loss;
    if (r->train_loss < r->min_train_loss) r->min_train_loss = r->train_loss;
    if (r->train_loss - r->min_train_loss > r->max_rebound) r->max_rebound = r->train_loss - r->min_train_loss;
}

/* One optimizer step on the batch of example indices idx. */
static int run_step(Run *r, const Dataset *train, const int *idx, int step)
{
    float x[BATCH * D_IN];
    int y[BATCH], correct;
    for (int i = 0; i < BATCH; i++) {
        memcpy(x + (size_t)i * D_IN, train->x + (size_t)idx[i] * D_IN, D_IN * sizeof(float));
        y[i] = train->y[idx[i]];
    }
    double t0 = seconds_now();
    mgpo_status s = mgpo_schedule_lr(&r->sched, (uint64_t)step, &r->lr);
    if (s == MGPO_OK) s = mgpo_set_lr(r->st, r->lr);
    if (s == MGPO_OK) s = mgpo_perturb(r->st);
    if (s != MGPO_OK) return fail("mgpo_perturb", s);
    double t1 = seconds_now();

    memset(r->grad.a[0], 0, lora_layout(NULL, r->rank, NULL) * sizeof(float));
    const float *logits = forward(&r->base, &r->lora, r->rank, r->scale, x, BATCH, &r->acts);
    r->batch_loss = cross_entropy(logits, y, BATCH, r->acts.dlogits, &correct);
    backward(&r->base, NULL, &r->lora, &r->grad, r->rank, r->scale, x, BATCH, &r->acts);

    double t2 = seconds_now();
    if ((s = mgpo_restore(r->st)) != MGPO_OK) return fail("mgpo_restore", s);
    if ((s = mgpo_step(r->st)) != MGPO_OK) return fail("mgpo_step", s);
    double t3 = seconds_now();
    r->step_seconds += t3 - t0;
    r->lib_seconds += (t1 - t0) + (t3 - t2);
    r->steps_timed++;
    return 0;
}

/* ---- Pretraining on task A ------------------------------------------------ */

/* Trains all weights of the student on fresh task-A batches with libmgpo's
 * plain AdamW; returns 0 or -1. */
static int pretrain(Base *p, const Teacher *teacher, uint64_t seed, int steps, double *acc_a)
{
    size_t nb = base_layout(NULL, NULL);
    float *gmem = calloc(nb, sizeof(float));
    float x[PRE_BATCH * D_IN];
    int y[PRE_BATCH], correct = 0;
    Base g;
    Acts a;
    mgpo_state *st = NULL;
    mgpo_config cfg = mgpo_config_default();
    cfg.rho = 0.0;
    cfg.lr = PRE_LR;
    int rc = -1;
    if (!gmem || acts_alloc(&a, 0) != 0) {
        free(gmem);
        return fail("allocation", MGPO_ERR_OUT_OF_MEMORY);
    }
    base_layout(gmem, &g);
    mgpo_status s = mgpo_create(&st, &cfg, NULL);
    /* Biases get no weight decay (a no-op here as decay is 0, but the usual
     * parameter-group pattern). */
    mgpo_tensor_options bias_opts = mgpo_tensor_options_default();
    bias_opts.weight_decay_scale = 0.0;
    for (int l = 0; l < N_LAYER && s == MGPO_OK; l++) {
        s = mgpo_add_tensor(st, p->w[l], g.w[l], (size_t)LAYER_OUT[l] * LAYER_IN[l], NULL, NULL);
        if (s == MGPO_OK) s = mgpo_add_tensor(st, p->b[l], g.b[l], (size_t)LAYER_OUT[l], &bias_opts, NULL);
    }
    mgpo_schedule sched = mgpo_schedule_paper(PRE_LR, (uint64_t)steps);
    Rng rng = rng_stream(seed, 3);
    for (int step = 0; step < steps && s == MGPO_OK; step++) {
        for (int i = 0; i < PRE_BATCH; i++) {
            fill_normal(&rng, x + i * D_IN, D_IN, 1.0f);
            y[i] = teacher_label(teacher, x + i * D_IN);
        }
        double lr;
        if ((s = mgpo_schedule_lr(&sched, (uint64_t)step, &lr)) != MGPO_OK) break;
        if ((s = mgpo_set_lr(st, lr)) != MGPO_OK) break;
        memset(gmem, 0, nb * sizeof(float));
        const float *logits = forward(p, NULL, 0, 0.0f, x, PRE_BATCH, &a);
        cross_entropy(logits, y, PRE_BATCH, a.dlogits, &correct);
        backward(p, &g, NULL, NULL, 0, 0.0f, x, PRE_BATCH, &a);
        s = mgpo_step(st);
    }
    if (s != MGPO_OK) {
        fail("pretraining", s);
    } else { /* accuracy on fresh task-A data */
        int total = 0;
        for (int i = 0; i < PRE_BATCH; i++) {
            fill_normal(&rng, x + i * D_IN, D_IN, 1.0f);
            y[i] = teacher_label(teacher, x + i * D_IN);
        }
        cross_entropy(forward(p, NULL, 0, 0.0f, x, PRE_BATCH, &a), y, PRE_BATCH, NULL, &total);
        *acc_a = (double)total / PRE_BATCH;
        rc = 0;
    }
    mgpo_destroy(st);
    free(a.mem);
    free(gmem);
    return rc;
}

/* ---- Main ----------------------------------------------------------------- */

static void write_csv_row(FILE *f, const Run *r, int step, int evaluated, const char *commit)
{
    if (!f) return;
    fprintf(f, "%s,%d,", r->name, step);
    if (step > 0) fprintf(f, "%.6g,%.6f,", r->lr, r->batch_loss);
    else fprintf(f, ",,");
    if (evaluated) fprintf(f, "%.6f,%.6f,%.4f,", r->train_loss, r->eval_loss, r->eval_acc);
    else fprintf(f, ",,,");
    fprintf(f, "%s,%s\n", mgpo_version_string(), commit);
}

int main(int argc, char **argv)
{
    Options o;
    if (parse_options(argc, argv, &o) != 0) return 2;

    /* The tasks.  Teacher B is teacher A with every weight shifted. */
    static Teacher ta, tb;
    Rng rng = rng_stream(o.seed, 1);
    fill_normal(&rng, ta.w1, T_HID * D_IN, 1.0f / sqrtf(D_IN));
    fill_normal(&rng, ta.b1, T_HID, 0.5f);
    fill_normal(&rng, ta.w2, N_CLASS * T_HID, 1.0f / sqrtf(T_HID));
    tb = ta;
    rng = rng_stream(o.seed, 2);
    for (int i = 0; i < T_HID * D_IN; i++) tb.w1[i] += (float)TEACHER_SHIFT / sqrtf(D_IN) * rng_normal(&rng);
    for (int i = 0; i < N_CLASS * T_HID; i++) tb.w2[i] += (float)TEACHER_SHIFT / sqrtf(T_HID) * rng_normal(&rng);

    Dataset train = {0}, eval = {0};
    size_t nb = base_layout(NULL, NULL);
    float *pre_mem = calloc(nb, sizeof(float));
    Run runs[2];
    int n_runs = 0, rc = 1;
    FILE *csv = NULL;
    rng = rng_stream(o.seed, 5);
    if (!pre_mem || dataset_make(&train, N_TRAIN, &tb, LABEL_NOISE, &rng) != 0 ||
        dataset_make(&eval, N_EVAL, &tb, 0.0, &rng) != 0) {
        fprintf(stderr, "lora_finetune: out of memory\n");
        goto done;
    }

    /* Pretrain the student on task A, then it is frozen. */
    Base pre;
    base_layout(pre_mem, &pre);
    rng = rng_stream(o.seed, 4);
    for (int l = 0; l < N_LAYER; l++)
        fill_normal(&rng, pre.w[l], (size_t)LAYER_OUT[l] * LAYER_IN[l], 1.0f / sqrtf((float)LAYER_IN[l]));
    double acc_a = 0.0;
    if (pretrain(&pre, &ta, o.seed, o.pretrain_steps, &acc_a) != 0) goto done;

    LoraMode mode = o.mode;
    n_runs = o.demo ? 2 : 1;
    for (int k = 0; k < n_runs; k++) {
        int mg = o.demo ? k : o.mgpo; /* the demo: run 0 AdamW, run 1 MGPO */
        int init = run_init(&runs[k], mg ? "mgpo" : "adamw", &o, mg, &pre, &mode);
        if (init != 0) {
            rc = 1;
            n_runs = k + 1; /* run_init leaves a run that run_free accepts */
            goto done;
        }
    }
    if (o.csv) {
        if (!(csv = fopen(o.csv, "w"))) {
            perror(o.csv);
            goto done;
        }
        fprintf(csv, "optimizer,step,lr,batch_loss,train_loss,eval_loss,eval_acc,mgpo_version,commit\n");
    }
    if (!o.quiet) {
        printf("lora_finetune: rank %d, alpha %g, lr %g (%s), %d steps, seed %llu, LoRA mode %s\n",
               o.rank, o.alpha, o.lr, o.cosine ? "warm-up + cosine" : "constant", o.steps,
               (unsigned long long)o.seed, MODE_NAMES[mode]);
        printf("MGPO: rho %g, sign %s, scope %s.  Student pretrained on task A: accuracy %.3f\n",
               o.rho, o.sign == MGPO_SIGN_ASCENT ? "ascent" : "lookahead",
               o.scope == MGPO_SCOPE_TENSOR ? "tensor" : "global", acc_a);
        printf("Task B: %d training examples (%.0f %% noisy labels), %d clean held-out.\n",
               N_TRAIN, 100 * LABEL_NOISE, N_EVAL);
        printf("train = clean loss on the whole training set, eval/acc = held-out set\n\n");
        for (int k = 0; k < n_runs; k++) printf("%s%-6s %-8s %-8s %-6s", k ? "   " : "step  ", runs[k].name, "train", "eval", "acc");
        printf("\n");
    }

    /* Batches: a fresh shuffle of the training set every epoch. */
    int order[N_TRAIN];
    for (int i = 0; i < N_TRAIN; i++) order[i] = i;
    Rng batch_rng = rng_stream(o.seed, 7);
    for (int step = 0; step <= o.steps; step++) {
        int evaluated = step % o.eval_every == 0 || step == o.steps;
        for (int k = 0; k < n_runs; k++) {
            if (evaluated) run_evaluate(&runs[k], &train, &eval, step);
            write_csv_row(csv, &runs[k], step, evaluated, o.commit);
        }
        if (evaluated && !o.quiet && (step % o.print_every == 0 || step == o.steps)) {
            printf("%4d  ", step);
            for (int k = 0; k < n_runs; k++)
                printf("%s%-6s %-8.4f %-8.4f %-6.3f", k ? "   " : "", "", runs[k].train_loss,
                       runs[k].eval_loss, runs[k].eval_acc);
            printf("\n");
            fflush(stdout);
        }
        if (step == o.steps) break;
        int first = (step * BATCH) % N_TRAIN;
        if (first == 0)
            for (int i = N_TRAIN - 1; i > 0; i--) {
                int j = (int)(rng_next(&batch_rng) % (uint64_t)(i + 1)), t = order[i];
                order[i] = order[j], order[j] = t;
            }
        for (int k = 0; k < n_runs; k++)
            if (run_step(&runs[k], &train, order + first, step) != 0) goto done;
    }

    rc = 0;
    for (int k = 0; k < n_runs; k++) {
        const Run *r = &runs[k];
        mgpo_stats st;
        if (mgpo_get_stats(r->st, &st) != MGPO_OK) memset(&st, 0, sizeof st);
        printf("final %-5s train_loss %.4f eval_loss %.4f eval_acc %.4f max_rebound %.4f "
               "(initial train_loss %.4f; grad-norm EMA %.3g, last perturbation norm %.3g)\n",
               r->name, r->train_loss, r->eval_loss, r->eval_acc, r->max_rebound,
               r->first_train_loss, st.grad_norm_ema, st.perturbation_norm);
        double n = r->steps_timed > 0 ? r->steps_timed : 1;
        printf("cost  %-5s %.3f ms per training step, %.3f ms of it in libmgpo (%.1f %%); "
               "libmgpo holds %zu bytes (%zu trainable floats)\n",
               r->name, 1e3 * r->step_seconds / n, 1e3 * r->lib_seconds / n,
               r->step_seconds > 0 ? 100.0 * r->lib_seconds / r->step_seconds : 0.0,
               r->lib_peak_bytes, lora_layout(NULL, r->rank, NULL));
        if (!isfinite(r->train_loss) || (o.check && !(r->train_loss < r->first_train_loss))) {
            fprintf(stderr, "lora_finetune: %s did not reduce the training loss\n", r->name);
            rc = 1;
        }
    }
done:
    if (csv && fclose(csv) != 0) rc = 1;
    for (int k = 0; k < n_runs; k++) run_free(&runs[k]);
    dataset_free(&train);
    dataset_free(&eval);
    free(pre_mem);
    return rc;
}
