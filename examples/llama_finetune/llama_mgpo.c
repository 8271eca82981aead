/* libmgpo in external mode inside llama.cpp's own training loop
 * (llama_opt_init, llama_opt_epoch: ggml-opt's AdamW underneath).
 *
 * The example builds a small llama-architecture model itself (no download):
 * GGUF metadata in memory (general.architecture = llama, the llama.* sizes,
 * tokenizer.ggml.model = no_vocab for 256 byte tokens) and
 * llama_model_init_from_user with a callback that fills the tensors.  It
 * pretrains it on one text (the GPL-3 of Debian's base-files), saves it with
 * llama_model_save_to_file, and fine-tunes the saved model on another (the
 * fortunes of fortunes-min) with a param_filter that trains only the last
 * block's feed-forward weights and the output matrix.
 *
 * The hook is the context's cb_eval (llama_context_params), chained with
 * any callback the caller had (hook_chain below).  llama.cpp builds a new
 * graph for every step, so the hook finds its node by position: one
 * discovery evaluation (a one-window llama_opt_epoch, changes nothing but
 * ggml's step counter; see examples/ggml_opt/ggml_mgpo.c) records the
 * position of the node before the first GGML_OP_OPT_STEP_ADAMW, each
 * trained tensor, its gradient accumulator, grad_m and grad_v; from then on
 * the hook asks for that one node and, when it has been computed, runs
 * mgpo_set_grad and mgpo_step; returning false there (non-finite gradient)
 * stops the graph before any AdamW node.  llama_opt_epoch's callback_train
 * runs after each evaluation and does the next mgpo_perturb.
 *
 *     llama_mgpo [--pretrain FILE] [--finetune FILE] [--test] [--time] [--threads N]
 *
 * Workarounds that llama.cpp 0.7.0 (Debian) needs, each explained where it
 * is done: one full-context llama_decode after llama_opt_init (that is what
 * installs cb_eval on the scheduler the training uses); identity values for
 * the optional tensors llama_model_init_from_user creates; n_ubatch = n_ctx.
 * See docs/integration.md, "ggml and llama.cpp". */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include <ggml.h>
#include <ggml-backend.h>
#include <ggml-opt.h>
#include <gguf.h>
#include <llama.h>
#include <mgpo.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_CTX 256 /* llama.cpp rounds n_ctx up to a multiple of 256 */
#define N_EMBD 64
#define N_FF 128
#define N_LAYER 2
#define N_HEAD 4
#define N_VOCAB 256
#define MAX_PARAMS 64

static int n_threads = 1;

static void die(const char *what)
{
    fprintf(stderr, "llama_mgpo: %s\n", what);
    exit(1);
}

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "llama_mgpo: %s: %s\n", what, mgpo_strerror(s));
        exit(1);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- Text and datasets ----------------------------------------------------- */

typedef struct text {
    unsigned char *bytes;
    size_t n;
} text;

static int read_text(const char *path, text *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t cap = 1 << 16, n = 0, got;
    unsigned char *b = malloc(cap);
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

/* Windows first..first+count-1 of the text (held out: from its last 10%),
 * leaving out window `skip` (-1: none): tokens are bytes, the labels the
 * next bytes. */
static ggml_opt_dataset_t windows(const text *tx, int held_out, int64_t first, int64_t count, int64_t skip)
{
    int64_t n = count - (skip >= first && skip < first + count);
    ggml_opt_dataset_t ds = ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, N_CTX, N_CTX, n, 1);
    int32_t *data = ggml_get_data(ggml_opt_dataset_data(ds));
    int32_t *labels = ggml_get_data(ggml_opt_dataset_labels(ds));
    size_t split = tx->n / 10 * 9;
    int64_t j = 0;
    for (int64_t w = first; w < first + count; w++) {
        if (w == skip) continue;
        size_t s = held_out ? split + ((size_t)w * 2741u) % (tx->n - split - N_CTX - 1)
                            : ((size_t)w * 7919u) % (split - N_CTX - 1);
        for (int i = 0; i < N_CTX; i++) {
            data[j * N_CTX + i] = tx->bytes[s + i];
            labels[j * N_CTX + i] = tx->bytes[s + i + 1];
        }
        j++;
    }
    return ds;
}

/* ---- The model ---------------------------------------------------------------- */

/* Fills every tensor llama_model_init_from_user creates.  It also creates
 * the optional ones of the llama architecture (biases, rope_freqs, ...):
 * they get identity values (0 for a bias, 1 for a scale) so the model is a
 * plain llama, and the param filters keep them out of training. */
static void fill_tensor(struct ggml_tensor *t, void *ud)
{
    (void)ud;
    if (t->type != GGML_TYPE_F32) die("init_from_user made a tensor that is not float32");
    float *w = malloc(ggml_nbytes(t));
    size_t n = (size_t)ggml_nelements(t);
    uint32_t s = 2166136261u;
    for (const char *c = t->name; *c; c++) s = (s ^ (unsigned char)*c) * 16777619u;
    const bool is_weight = strstr(t->name, ".weight") && !strstr(t->name, "norm") && !strstr(t->name, "rope_freqs");
    const float one = strstr(t->name, "norm") || strstr(t->name, "rope_freqs") || strstr(t->name, "scale") ? 1.0f : 0.0f;
    const float scale = 1.0f / sqrtf((float)t->ne[0]);
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = is_weight ? scale * ((float)(s >> 8) / 8388608.0f - 1.0f) : one;
    }
    ggml_backend_tensor_set(t, w, 0, ggml_nbytes(t));
    free(w);
}

static bool no_progress(float progress, void *ud)
{
    (void)progress; (void)ud;
    return true; /* keep loading, print no dots */
}

static struct llama_model *new_model(void)
{
    struct gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_str(g, "general.name", "libmgpo byte llama");
    gguf_set_val_u32(g, "llama.context_length", N_CTX);
    gguf_set_val_u32(g, "llama.embedding_length", N_EMBD);
    gguf_set_val_u32(g, "llama.feed_forward_length", N_FF);
    gguf_set_val_u32(g, "llama.block_count", N_LAYER);
    gguf_set_val_u32(g, "llama.attention.head_count", N_HEAD);
    gguf_set_val_u32(g, "llama.attention.head_count_kv", N_HEAD);
    gguf_set_val_u32(g, "llama.rope.dimension_count", N_EMBD / N_HEAD);
    gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_set_val_u32(g, "llama.vocab_size", N_VOCAB);
    gguf_set_val_str(g, "tokenizer.ggml.model", "no_vocab");
    struct llama_model_params mp = llama_model_default_params();
    mp.progress_callback = no_progress;
    struct llama_model *m = llama_model_init_from_user(g, fill_tensor, NULL, mp);
    gguf_free(g);
    if (!m) die("llama_model_init_from_user failed");
    return m;
}

/* What trains: pretraining every attention and feed-forward matrix and the
 * output matrix; fine-tuning only the last block's feed-forward and the
 * output matrix.  (llama_opt_init never trains token_embd or rope_freqs,
 * whatever the filter; llama_opt_param_filter_all also trains the optional
 * biases and scales.) */
static bool filter_pretrain(const struct ggml_tensor *t, void *ud)
{
    (void)ud;
    static const char *keep[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                 "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
    if (!strcmp(t->name, "output.weight")) return true;
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (strstr(t->name, keep[i])) return true;
    return false;
}

static bool filter_finetune(const struct ggml_tensor *t, void *ud)
{
    (void)ud;
    char last[16];
    snprintf(last, sizeof last, "blk.%d.ffn_", N_LAYER - 1);
    return !strcmp(t->name, "output.weight") ||
           (!strncmp(t->name, last, strlen(last)) && strstr(t->name, ".weight") && !strstr(t->name, "norm"));
}

/* ---- The hook ----------------------------------------------------------------- */

typedef struct hook {
    /* The caller's own cb_eval, chained (NULL: none). */
    ggml_backend_sched_eval_callback user_cb;
    void *user_ud;
    bool user_asked, mine_asked;

    mgpo_state *st;       /* NULL: no MGPO (the hook only counts) */
    double rho;
    bool training;        /* a training evaluation is under way */
    bool discovering;
    int64_t ask_index, hook_index;
    enum ggml_op hook_op;
    int n;                /* trained tensors */
    float *w[MAX_PARAMS], *grad[MAX_PARAMS], *m[MAX_PARAMS], *v[MAX_PARAMS], *stash[MAX_PARAMS][3];
    size_t count[MAX_PARAMS];
    struct ggml_opt_optimizer_params pars;
    int64_t steps_done, ggml_iter, evals, nan_step;
    bool skipped, reset_grads;
    long asks_after_cancel;
    float *clean[MAX_PARAMS];
    bool checked;
    long restores_checked, restores_exact, skips;
    double t_train_ms;
    int64_t t_train_steps;
    double t_last;
} hook;

static struct ggml_opt_optimizer_params get_pars(void *ud) { return ((hook *)ud)->pars; }

/* When the hook node has been computed: all gradients exist, no AdamW node
 * has run.  false stops the graph (skips ggml's step). */
static bool at_gradients(hook *h)
{
    if (h->steps_done == h->nan_step) {
        h->grad[0][1] = NAN;
        h->nan_step = -1;
    }
    for (int i = 0; i < h->n; i++) check(mgpo_set_grad(h->st, (size_t)i, h->grad[i]), "mgpo_set_grad");
    mgpo_status s = mgpo_step(h->st);
    if (h->checked) {
        int exact = 1;
        for (int i = 0; i < h->n; i++) exact &= !memcmp(h->clean[i], h->w[i], h->count[i] * sizeof(float));
        h->restores_checked++;
        h->restores_exact += exact;
    }
    if (s == MGPO_ERR_NONFINITE_GRADIENT) {
        /* Returning false stops only the current scheduler split.  The
         * tested graph (one CPU backend) is one split, so no AdamW node
         * runs (the NaN test prints how many nodes were asked about after
         * this: 0); with several splits (other backends or buffer types)
         * the AdamW nodes of later splits would run.  So also keep the
         * values the step would change (no AdamW node has run yet) and put
         * them back after the evaluation (after_eval). */
        for (int i = 0; i < h->n; i++) {
            const float *src[3] = {h->w[i], h->m[i], h->v[i]};
            for (int k = 0; k < 3; k++) memcpy(h->stash[i][k], src[k], h->count[i] * sizeof(float));
        }
        h->skipped = true;
        h->skips++;
        return false;
    }
    check(s, "mgpo_step");
    return true;
}

static bool my_ask(hook *h, struct ggml_tensor *t)
{
    if (!h->st || !h->training) return false;
    if (h->skipped) h->asks_after_cancel++; /* a later split: see at_gradients */
    int64_t idx = h->ask_index++;
    if (h->discovering) {
        if (t->op == GGML_OP_OPT_STEP_ADAMW) {
            if (h->n == 0) h->hook_index = idx - 1;
            if (h->n == MAX_PARAMS) die("too many trained tensors");
            int i = h->n++;
            h->count[i] = (size_t)ggml_nelements(t->src[0]);
            float *src[3] = {t->src[0]->data, t->src[2]->data, t->src[3]->data};
            h->w[i] = src[0];
            h->grad[i] = t->src[1]->data;
            h->m[i] = src[1];
            h->v[i] = src[2];
            /* Nothing of this graph has run yet: keep the values the
             * discovery's AdamW step would change. */
            for (int k = 0; k < 3; k++) {
                h->stash[i][k] = malloc(h->count[i] * sizeof(float));
                memcpy(h->stash[i][k], src[k], h->count[i] * sizeof(float));
            }
        } else if (h->n == 0) {
            h->hook_op = t->op;
        }
        return false;
    }
    if (idx == h->hook_index) {
        if (t->op != h->hook_op) die("the graph changed: the hook node is not where discovery found it");
        return true;
    }
    /* The AdamW nodes, asked (not computed) after the hook node ran:
     * ggml-opt's bias correction counts evaluations (the discovery, skipped
     * steps, from 1 in a new context); give it the steps taken. */
    if (t->op == GGML_OP_OPT_STEP_ADAMW && h->steps_done + 1 != h->ggml_iter) {
        float *p = t->src[4]->data;
        const float n = (float)(h->steps_done + 1);
        p[5] = 1.0f / (1.0f - powf(h->pars.adamw.beta1, n));
        p[6] = 1.0f / (1.0f - powf(h->pars.adamw.beta2, n));
    }
    return false;
}

/* cb_eval: our hook chained with the caller's callback.  A node is
 * computed separately whenever either asks for it, so each should ask only
 * for the nodes it reads (asking for all makes the scheduler evaluate the
 * graph node by node). */
static bool hook_chain(struct ggml_tensor *t, bool ask, void *ud)
{
    hook *h = ud;
    if (ask) {
        h->mine_asked = my_ask(h, t);
        h->user_asked = h->user_cb && h->user_cb(t, true, h->user_ud);
        return h->mine_asked || h->user_asked;
    }
    bool go = true;
    if (h->user_asked) go = h->user_cb(t, false, h->user_ud);
    if (h->mine_asked) go = at_gradients(h) && go;
    return go;
}

static void copy_clean(hook *h)
{
    if (h->checked)
        for (int i = 0; i < h->n; i++) memcpy(h->clean[i], h->w[i], h->count[i] * sizeof(float));
}

/* ggml_opt_epoch_callback: runs after each evaluation. */
static hook *g_hook; /* the epoch callback has no user pointer */
static void after_eval(bool train, ggml_opt_context_t opt, ggml_opt_dataset_t ds, ggml_opt_result_t res,
                       int64_t ibatch, int64_t ibatch_max, int64_t t_start)
{
    (void)opt; (void)ds; (void)res; (void)t_start;
    hook *h = g_hook;
    if (!train) return;
    h->ggml_iter++;
    h->ask_index = 0;
    double t = now_ms();
    if (h->t_last > 0) { h->t_train_ms += t - h->t_last; h->t_train_steps++; }
    h->t_last = t;
    if (!h->st) return;
    if (h->discovering || h->skipped) {
        /* Put back what the discovery's (or a skipped step's) AdamW
         * nodes changed. */
        if (h->discovering && (h->n == 0 || h->hook_index < 0)) die("discovery found no AdamW node");
        for (int i = 0; i < h->n; i++) {
            float *dst[3] = {h->w[i], h->m[i], h->v[i]};
            for (int k = 0; k < 3; k++) memcpy(dst[k], h->stash[i][k], h->count[i] * sizeof(float));
        }
    }
    /* ggml-opt never zeroes these gradient accumulators between llama.cpp's
     * steps (see the top of the file): zero them after the discovery (a
     * new context starts from zero), and, with reset_grads, after every
     * step, so each step's gradient is its own. */
    if (h->discovering || h->reset_grads || h->skipped)
        for (int i = 0; i < h->n; i++) memset(h->grad[i], 0, h->count[i] * sizeof(float));
    if (h->discovering) {
        h->discovering = false;
        return;
    }
    if (!h->skipped) h->steps_done++;
    h->skipped = false;
    if (ibatch < ibatch_max) { /* the next evaluation is a training step */
        copy_clean(h);
        check(mgpo_perturb(h->st), "mgpo_perturb");
    } else {
        h->training = false; /* clean weights for whatever comes next */
    }
}

typedef struct session {
    struct llama_model *model;
    struct llama_context *ctx;
    hook h;
} session;

/* A context with the hook as cb_eval, llama_opt_init with `filter`,
 * discovery, and (rho >= 0) an external-mode state over what it found. */
static void session_open(session *s, struct llama_model *model, llama_opt_param_filter filter, double rho,
                         ggml_backend_sched_eval_callback user_cb, void *user_ud)
{
    memset(s, 0, sizeof *s);
    s->model = model;
    hook *h = &s->h;
    h->user_cb = user_cb;
    h->user_ud = user_ud;
    h->nan_step = -1;
    h->hook_index = -1;
    h->pars = ggml_opt_get_default_optimizer_params(NULL);
    h->pars.adamw.alpha = 1e-3f;
    h->pars.adamw.wd = 0.0f;
    h->rho = rho;
    h->ggml_iter = 1;
    g_hook = h;

    struct llama_context_params cp = llama_context_default_params();
    /* n_ubatch = n_ctx: with a smaller ubatch K and V get no gradients. */
    cp.n_ctx = cp.n_batch = cp.n_ubatch = N_CTX;
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.cb_eval = hook_chain;
    cp.cb_eval_user_data = h;
    s->ctx = llama_init_from_model(model, cp);
    if (!s->ctx) die("llama_init_from_model failed");

    struct llama_opt_params op = {0};
    op.n_ctx_train = 0;
    op.param_filter = filter;
    op.get_opt_pars = get_pars;
    op.get_opt_pars_ud = h;
    op.optimizer_type = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
    llama_opt_init(s->ctx, model, op);

    /* llama_opt_init gives training a scheduler on which only llama_decode
     * installs cb_eval: one full-context decode does it (a shorter one
     * asserts in build_attn). */
    llama_token toks[N_CTX];
    for (int i = 0; i < N_CTX; i++) toks[i] = 'a' + i % 26;
    bool was = h->training;
    h->training = false;
    if (llama_decode(s->ctx, llama_batch_get_one(toks, N_CTX)) != 0) die("llama_decode failed");
    h->training = was;

    if (rho < 0) return;
    mgpo_config cfg = mgpo_config_default();
    cfg.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    cfg.scope = MGPO_SCOPE_TENSOR;
    cfg.rho = rho;
    check(mgpo_create(&h->st, &cfg, NULL), "mgpo_create");
}

/* The discovery evaluation: a one-window training epoch whose effect on
 * weights and moments is undone. */
static void discover(session *s, ggml_opt_dataset_t one)
{
    hook *h = &s->h;
    h->discovering = true;
    h->training = true;
    h->ask_index = 0;
    llama_opt_epoch(s->ctx, one, NULL, NULL, 1, after_eval, NULL);
    h->training = false;
    for (int i = 0; i < h->n; i++) {
        check(mgpo_add_tensor(h->st, h->w[i], NULL, h->count[i], NULL, NULL), "mgpo_add_tensor");
        check(mgpo_set_momentum(h->st, (size_t)i, h->m[i]), "mgpo_set_momentum");
    }
}

static void session_close(session *s)
{
    hook *h = &s->h;
    for (int i = 0; i < h->n; i++) {
        free(h->clean[i]);
        for (int k = 0; k < 3; k++) free(h->stash[i][k]);
    }
    mgpo_destroy(h->st);
    llama_free(s->ctx);
}

/* One training epoch over ds (every window is a step). */
static void train(session *s, ggml_opt_dataset_t ds)
{
    hook *h = &s->h;
    h->training = true;
    h->ask_index = 0;
    h->t_last = now_ms();
    if (h->st) {
        copy_clean(h);
        check(mgpo_perturb(h->st), "mgpo_perturb");
    }
    ggml_opt_result_t r = ggml_opt_result_init();
    llama_opt_epoch(s->ctx, ds, r, NULL, ggml_opt_dataset_ndata(ds), after_eval, NULL);
    ggml_opt_result_free(r);
    h->training = false;
}

static double held_out(session *s, ggml_opt_dataset_t ds)
{
    ggml_opt_result_t r = ggml_opt_result_init();
    llama_opt_epoch(s->ctx, ds, NULL, r, 0, NULL, NULL);
    double loss, unc;
    ggml_opt_result_loss(r, &loss, &unc);
    ggml_opt_result_free(r);
    return loss;
}

/* FNV-1a of the trained tensors (and their moments). */
static uint64_t digest(const hook *h, int moments)
{
    uint64_t x = 1469598103934665603ull;
    for (int i = 0; i < h->n; i++) {
        const float *b[3] = {h->w[i], h->m[i], h->v[i]};
        for (int k = 0; k < (moments ? 3 : 1); k++) {
            const unsigned char *c = (const unsigned char *)b[k];
            for (size_t j = 0; j < h->count[i] * sizeof(float); j++) x = (x ^ c[j]) * 1099511628211ull;
        }
    }
    return x;
}

static uint64_t file_digest(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot read the saved model");
    uint64_t x = 1469598103934665603ull;
    int c;
    while ((c = getc(f)) != EOF) x = (x ^ (unsigned)c) * 1099511628211ull;
    fclose(f);
    return x;
}

/* A caller's own cb_eval, which the chain must keep working: it counts the
 * nodes it is shown and asks for every softmax (as a logger might). */
typedef struct counter { long asked, shown; } counter;
static bool count_softmax(struct ggml_tensor *t, bool ask, void *ud)
{
    counter *c = ud;
    if (ask) { c->asked++; return t->op == GGML_OP_SOFT_MAX; }
    c->shown++;
    return true;
}

/* A careless callback for the timing: asks for every node. */
static bool ask_all(struct ggml_tensor *t, bool ask, void *ud) { (void)t; (void)ask; (void)ud; return true; }

static void quiet_log(enum ggml_log_level level, const char *text_, void *ud)
{
    (void)ud;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text_, stderr);
}

static int failures;
static void expect(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

#define FT_STEPS 40
#define PRE_STEPS 80

int main(int argc, char **argv)
{
    const char *pre_path = "/usr/share/common-licenses/GPL-3";
    const char *ft_path = "/usr/share/games/fortunes/fortunes";
    const char *model_path = "llama_mgpo_pretrained.gguf";
    int test = 0, timing = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pretrain") && i + 1 < argc) pre_path = argv[++i];
        else if (!strcmp(argv[i], "--finetune") && i + 1 < argc) ft_path = argv[++i];
        else if (!strcmp(argv[i], "--test")) test = 1;
        else if (!strcmp(argv[i], "--time")) timing = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else { fprintf(stderr, "usage: llama_mgpo [--pretrain FILE] [--finetune FILE] [--test] [--time] [--threads N]\n"); return 2; }
    }
    text pre, ft;
    if (!read_text(pre_path, &pre) || !read_text(ft_path, &ft)) {
        printf("llama_mgpo skipped: cannot read the texts %s (base-files) and %s (fortunes-min)\n", pre_path, ft_path);
        return 77;
    }
    llama_log_set(quiet_log, NULL);
    ggml_log_set(quiet_log, NULL);
    llama_backend_init();
    ggml_backend_load_all();
    printf("ggml %s, libllama (llama.h of Debian's libllama-dev), libmgpo %s\n", ggml_version(), mgpo_version_string());

    /* Pretraining: plain llama.cpp AdamW (no MGPO), then saved. */
    struct llama_model *model = new_model();
    session s;
    session_open(&s, model, filter_pretrain, -1, NULL, NULL);
    ggml_opt_dataset_t pre_ds = windows(&pre, 0, 0, PRE_STEPS, -1), pre_val = windows(&pre, 1, 0, 16, -1);
    double p0 = held_out(&s, pre_val);
    train(&s, pre_ds);
    double p1 = held_out(&s, pre_val);
    printf("pretraining on %s: %d steps, held-out loss %.4f -> %.4f\n", pre_path, PRE_STEPS, p0, p1);
    session_close(&s);
    llama_model_save_to_file(model, model_path);
    llama_model_free(model);
    ggml_opt_dataset_free(pre_ds);
    ggml_opt_dataset_free(pre_val);
    expect(p1 < p0 - 0.5, "pretraining with llama_opt_epoch lowers the held-out loss");

    ggml_opt_dataset_t one = windows(&ft, 0, 1000, 1, -1);
    ggml_opt_dataset_t ft_ds = windows(&ft, 0, 0, FT_STEPS, -1), ft_val = windows(&ft, 1, 0, 16, -1);
    /* No mmap (LLAMA_LOAD_MODE_NONE): a mapped model's weights are read-only, and AdamW
     * writing them segfaults. */
    struct llama_model_params mp = llama_model_default_params();
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.progress_callback = no_progress;

    if (test) {
        /* Fine-tuning runs, each from the saved model. */
        uint64_t dig[4] = {0};
        double before = 0, after = 0;
        long restores_exact = 0, restores_checked = 0;
        counter cnt = {0, 0};
        const double rhos[4] = {-1, 0.0, 0.05, 0.05};
        for (int run = 0; run < 4; run++) {
            struct llama_model *m = llama_model_load_from_file(model_path, mp);
            if (!m) die("cannot load the pretrained model");
            /* run 3: the caller had a cb_eval of its own */
            session_open(&s, m, filter_finetune, rhos[run], run == 3 ? count_softmax : NULL, &cnt);
            /* runs 0 and 1 train as llama.cpp does (accumulated gradients);
             * the MGPO runs with each step's own gradient */
            s.h.reset_grads = run >= 2;
            if (s.h.st) discover(&s, one);
            if (run == 2) {
                size_t trained = 0;
                for (int i = 0; i < s.h.n; i++) trained += s.h.count[i];
                printf("model: %llu parameters; fine-tuning trains %d tensors, %zu parameters\n",
                       (unsigned long long)llama_model_n_params(m), s.h.n, trained);
                s.h.checked = true;
                for (int i = 0; i < s.h.n; i++) s.h.clean[i] = malloc(s.h.count[i] * sizeof(float));
                before = held_out(&s, ft_val);
            }
            train(&s, ft_ds);
            if (run == 2) {
                after = held_out(&s, ft_val);
                restores_exact = s.h.restores_exact;
                restores_checked = s.h.restores_checked;
            }
            session_close(&s);
            llama_model_save_to_file(m, "llama_mgpo_finetuned.gguf");
            dig[run] = file_digest("llama_mgpo_finetuned.gguf");
            llama_model_free(m);
        }
        printf("fine-tuning on %s, %d steps: saved-model digests: AdamW %016llx, MGPO rho=0 %016llx, "
               "rho=0.05 %016llx, rho=0.05 chained %016llx\n", ft_path, FT_STEPS, (unsigned long long)dig[0],
               (unsigned long long)dig[1], (unsigned long long)dig[2], (unsigned long long)dig[3]);
        printf("MGPO rho=0.05: held-out loss %.4f -> %.4f; exact restores %ld of %ld\n", before, after,
               restores_exact, restores_checked);
        expect(dig[0] == dig[1], "rho = 0 through cb_eval gives the model llama.cpp's AdamW alone gives (same file)");
        expect(dig[2] != dig[0], "MGPO at rho > 0 is not plain AdamW");
        expect(after < before - 0.3, "MGPO fine-tuning lowers the held-out loss on the new text");
        expect(restores_checked == FT_STEPS && restores_exact == FT_STEPS,
               "the weights llama.cpp's AdamW steps are the clean ones (exact restore at every step)");
        expect(dig[3] == dig[2] && cnt.shown > 0 && cnt.asked > 0,
               "a caller's own cb_eval keeps working when chained, and changes nothing");

        /* NaN at step k: the step is skipped whole; equals the run without that window. */
        const int64_t k = FT_STEPS / 2;
        uint64_t nan_dig = 0, skip_dig = 0, before_nan = 0, after_nan = 0;
        for (int run = 0; run < 2; run++) {
            struct llama_model *m = llama_model_load_from_file(model_path, mp);
            session_open(&s, m, filter_finetune, 0.05, NULL, NULL);
            s.h.reset_grads = true;
            discover(&s, one);
            if (run == 0) {
                ggml_opt_dataset_t a = windows(&ft, 0, 0, k, -1), b = windows(&ft, 0, k, 1, -1),
                                   c = windows(&ft, 0, k + 1, FT_STEPS - k - 1, -1);
                train(&s, a);
                before_nan = digest(&s.h, 1);
                s.h.nan_step = s.h.steps_done;
                train(&s, b);
                after_nan = digest(&s.h, 1);
                train(&s, c);
                ggml_opt_dataset_free(a); ggml_opt_dataset_free(b); ggml_opt_dataset_free(c);
                nan_dig = digest(&s.h, 1);
                printf("nodes asked about after the hook returned false: %ld\n", s.h.asks_after_cancel);
            expect(s.h.skips == 1 && before_nan == after_nan,
                       "a NaN gradient leaves the trained tensors, grad_m and grad_v unchanged (AdamW's writes undone)");
            } else {
                ggml_opt_dataset_t a = windows(&ft, 0, 0, k, -1), c = windows(&ft, 0, k + 1, FT_STEPS - k - 1, -1);
                train(&s, a);
                train(&s, c);
                ggml_opt_dataset_free(a); ggml_opt_dataset_free(c);
                skip_dig = digest(&s.h, 1);
            }
            session_close(&s);
            llama_model_free(m);
        }
        expect(nan_dig == skip_dig, "the run with a NaN at step k equals the run without window k");

        /* Resume: k steps, checkpoint (the model file, grad_m, grad_v, the step
         * count, mgpo_save), a new model and context, the rest. */
        uint64_t straight = 0, resumed = 0;
        {
            struct llama_model *m = llama_model_load_from_file(model_path, mp);
            session_open(&s, m, filter_finetune, 0.05, NULL, NULL);
            s.h.reset_grads = true;
            discover(&s, one);
            train(&s, ft_ds);
            straight = digest(&s.h, 1);
            session_close(&s);
            llama_model_free(m);
        }
        {
            struct llama_model *m = llama_model_load_from_file(model_path, mp);
            session_open(&s, m, filter_finetune, 0.05, NULL, NULL);
            s.h.reset_grads = true;
            discover(&s, one);
            ggml_opt_dataset_t a = windows(&ft, 0, 0, k, -1);
            train(&s, a);
            ggml_opt_dataset_free(a);
            int n = s.h.n;
            float *mv[MAX_PARAMS][2];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < 2; j++) {
                    mv[i][j] = malloc(s.h.count[i] * sizeof(float));
                    memcpy(mv[i][j], j ? s.h.v[i] : s.h.m[i], s.h.count[i] * sizeof(float));
                }
            int64_t steps = s.h.steps_done;
            size_t size;
            check(mgpo_checkpoint_size(s.h.st, &size), "mgpo_checkpoint_size");
            void *ck = malloc(size);
            check(mgpo_save(s.h.st, ck, size, &size), "mgpo_save");
            session_close(&s);
            llama_model_save_to_file(m, "llama_mgpo_resume.gguf");
            llama_model_free(m);

            m = llama_model_load_from_file("llama_mgpo_resume.gguf", mp);
            session_open(&s, m, filter_finetune, 0.05, NULL, NULL);
            s.h.reset_grads = true;
            discover(&s, one);
            if (s.h.n != n) die("resume: a different set of trained tensors");
            for (int i = 0; i < n; i++) {
                memcpy(s.h.m[i], mv[i][0], s.h.count[i] * sizeof(float));
                memcpy(s.h.v[i], mv[i][1], s.h.count[i] * sizeof(float));
                free(mv[i][0]); free(mv[i][1]);
            }
            s.h.steps_done = steps;
            check(mgpo_load(s.h.st, ck, size), "mgpo_load");
            free(ck);
            ggml_opt_dataset_t c = windows(&ft, 0, k, FT_STEPS - k, -1);
            train(&s, c);
            ggml_opt_dataset_free(c);
            resumed = digest(&s.h, 1);
            session_close(&s);
            llama_model_free(m);
        }
        expect(straight == resumed, "a checkpoint (saved model, grad_m, grad_v, step count, libmgpo) resumes bitwise");
    }
    if (timing) {
        /* ms per fine-tuning step: AdamW alone; the MGPO hook (one node
         * asked per step); a callback that asks for every node. */
        double ms[3];
        for (int run = 0; run < 3; run++) {
            struct llama_model *m = llama_model_load_from_file(model_path, mp);
            if (!m) die("cannot load the pretrained model");
            session_open(&s, m, filter_finetune, run == 1 ? 0.05 : -1, run == 2 ? ask_all : NULL, NULL);
            s.h.reset_grads = true;
            if (s.h.st) discover(&s, one);
            train(&s, ft_ds);
            ms[run] = s.h.t_train_ms / (double)s.h.t_train_steps;
            session_close(&s);
            llama_model_free(m);
        }
        printf("ms per fine-tuning step (%d steps, %d threads): AdamW alone %.2f, MGPO hook %.2f, "
               "a cb_eval asking for every node %.2f\n", FT_STEPS, n_threads, ms[0], ms[1], ms[2]);
    }
    ggml_opt_dataset_free(one);
    ggml_opt_dataset_free(ft_ds);
    ggml_opt_dataset_free(ft_val);
    remove(model_path);
    remove("llama_mgpo_finetuned.gguf");
    remove("llama_mgpo_resume.gguf");
    free(pre.bytes);
    free(ft.bytes);
    llama_backend_free();
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
