/* gpt_lora: a small GPT-2-style language model in plain C, pretrained on one
 * corpus, then frozen and fine-tuned on another with LoRA adapters on every
 * linear layer, by plain AdamW or MGPO from libmgpo.
 *
 *   model   byte tokens (vocabulary 256) -> token + position embeddings ->
 *           L pre-layer-norm blocks [x += attn(ln1(x)); x += mlp(ln2(x))]
 *           -> final layer norm -> logits through the tied embedding.
 *           attn: causal multi-head self-attention with separate q, k, v and
 *           output projections; mlp: C -> 4C, GELU (tanh form), 4C -> C.
 *   data    pretraining: the licence texts of Debian's base-files package;
 *           fine-tuning: C headers of libc6-dev, the last 10 % held out
 *           (README.md lists the files).
 *   LoRA    y = x W^T + b + s * (x A^T) B^T on q, k, v, attention output,
 *           MLP in and MLP out of every block, s = alpha / rank; W, b and
 *           everything else frozen.  Each adapter is one libmgpo LoRA pair
 *           (adapter or base mode) or two plain tensors.
 *
 * Forward and backward are written out by hand.  All weights live in one
 * float buffer with named views into it (likewise the adapters, their
 * gradients and the activations); nothing is allocated in the training loop.
 * Loops over rows, heads and output features are OpenMP-parallel; each
 * output is summed by one thread in a fixed order, so results do not depend
 * on the thread count.
 *
 * One fine-tuning step, with the three libmgpo calls:
 *
 *     mgpo_set_lr(st, schedule(step));
 *     mgpo_perturb(st);             nudge the adapters (or W) along the momentum
 *     forward(); backward();        gradient at the nudged point
 *     mgpo_restore(st);             clean weights back, bit for bit
 *     mgpo_step(st);                AdamW update of the clean adapters
 *
 * Evaluation runs after mgpo_step, so it always sees clean weights.
 * Usage: see usage() below or README.md.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h> /* getpid, execv */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mgpo.h"
#ifdef GPT_LORA_BLAS
#include <cblas.h>
#endif
#include "../example_math.h"

/* A loop goes parallel only when it holds at least PARALLEL_MIN_WORK
 * multiply-adds (about 0.1 ms on one core): each parallel region ends in a
 * barrier, and a barrier per small loop is where two threads lost to one
 * (docs/results.md, "Two threads").  The same threshold for every thread
 * count, and each output is still summed by one thread in a fixed order. */
#define PARALLEL_MIN_WORK (1.0 * (1 << 19))
#ifdef _OPENMP
#define GPT_PRAGMA(x) _Pragma(#x)
#define PARALLEL_FOR(work) GPT_PRAGMA(omp parallel for schedule(static) if((double)(work) >= PARALLEL_MIN_WORK))
#define PARALLEL_FOR2(work) \
    GPT_PRAGMA(omp parallel for collapse(2) schedule(static) if((double)(work) >= PARALLEL_MIN_WORK))
#else
#define PARALLEL_FOR(work)
#define PARALLEL_FOR2(work)
#endif

enum { VOCAB = 256, MAX_LAYERS = 8, MAX_SEQ = 256, N_LINEAR = 6 };

/* The six linear layers of a block, in the order they run. */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_FC, LIN_PROJ };
static const char *const LINEAR_NAMES[N_LINEAR] = {"q", "k", "v", "o", "fc", "proj"};

typedef struct {
    int layers, dim, heads, seq; /* L, C, NH, T */
} Dims;

static int lin_in(const Dims *d, int j) { return j == LIN_PROJ ? 4 * d->dim : d->dim; }
static int lin_out(const Dims *d, int j) { return j == LIN_FC ? 4 * d->dim : d->dim; }

/* ---- Parameters: one buffer, named views ---------------------------------- */

/* The base model.  w[j] and b[j] hold linear j of every layer, layer after
 * layer: w[j] + l * out * in is layer l's out x in matrix (row-major). */
typedef struct {
    float *wte, *wpe;          /* VOCAB x C, T x C */
    float *ln1w, *ln1b, *ln2w, *ln2b; /* L x C each */
    float *w[N_LINEAR], *b[N_LINEAR];
    float *lnfw, *lnfb;        /* C each */
} Params;

/* Lays the views over mem (or, with mem NULL, only counts); returns floats. */
static size_t params_layout(const Dims *d, float *mem, Params *p)
{
    size_t off = 0, L = (size_t)d->layers, C = (size_t)d->dim;
#define TAKE(field, n) do { if (mem) p->field = mem + off; off += (n); } while (0)
    TAKE(wte, VOCAB * C);
    TAKE(wpe, (size_t)d->seq * C);
    TAKE(ln1w, L * C);
    TAKE(ln1b, L * C);
    TAKE(ln2w, L * C);
    TAKE(ln2b, L * C);
    for (int j = 0; j < N_LINEAR; j++) {
        TAKE(w[j], L * lin_out(d, j) * lin_in(d, j));
        TAKE(b[j], L * lin_out(d, j));
    }
    TAKE(lnfw, C);
    TAKE(lnfb, C);
#undef TAKE
    return off;
}

static float *layer_w(const Dims *d, const Params *p, int l, int j)
{
    return p->w[j] + (size_t)l * lin_out(d, j) * lin_in(d, j);
}
static float *layer_b(const Dims *d, const Params *p, int l, int j)
{
    return p->b[j] + (size_t)l * lin_out(d, j);
}

/* GPT-2's initialisation: N(0, 0.02), the residual projections scaled by
 * 1/sqrt(2L), biases 0, layer-norm gains 1. */
static void params_init(const Dims *d, Params *p, uint64_t seed)
{
    Rng r = rng_stream(seed, 1);
    size_t L = (size_t)d->layers, C = (size_t)d->dim;
    fill_normal(&r, p->wte, VOCAB * C, 0.02f);
    fill_normal(&r, p->wpe, (size_t)d->seq * C, 0.01f);
    for (size_t i = 0; i < L * C; i++) p->ln1w[i] = p->ln2w[i] = 1.0f, p->ln1b[i] = p->ln2b[i] = 0.0f;
    for (size_t i = 0; i < C; i++) p->lnfw[i] = 1.0f, p->lnfb[i] = 0.0f;
    for (int j = 0; j < N_LINEAR; j++) {
        float std = j == LIN_O || j == LIN_PROJ ? 0.02f / sqrtf(2.0f * (float)L) : 0.02f;
        fill_normal(&r, p->w[j], L * lin_out(d, j) * lin_in(d, j), std);
        memset(p->b[j], 0, L * lin_out(d, j) * sizeof(float));
    }
}

/* The adapters: a[l][j] is rank x in, b[l][j] is out x rank. */
typedef struct {
    int rank;
    float scale;               /* alpha / rank */
    float *a[MAX_LAYERS][N_LINEAR], *b[MAX_LAYERS][N_LINEAR];
} Lora;

static size_t lora_layout(const Dims *d, int rank, float *mem, Lora *v)
{
    size_t off = 0;
    for (int l = 0; l < d->layers; l++)
        for (int j = 0; j < N_LINEAR; j++) {
            if (mem) v->a[l][j] = mem + off;
            off += (size_t)rank * lin_in(d, j);
            if (mem) v->b[l][j] = mem + off;
            off += (size_t)lin_out(d, j) * rank;
        }
    if (v) v->rank = rank;
    return off;
}

/* ---- Activations: one buffer, named views --------------------------------- */

typedef struct {
    int batch, rank;
    float *res;                /* (L+1) x N x C: the residual stream entering each block, then lnf */
    float *ln1, *ln1_mean, *ln1_rstd, *ln2, *ln2_mean, *ln2_rstd; /* L x N x C, L x N */
    float *qkv[3];             /* L x N x C each */
    float *att;                /* L x B x NH x T x T softmax probabilities */
    float *atty;               /* L x N x C, attention output before projection */
    float *res_mid;            /* L x N x C, residual after attention */
    float *fch, *fch_gelu;     /* L x N x 4C */
    float *u;                  /* L x 6 x N x rank: x A^T of every adapter */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *probs;              /* N x VOCAB */
    /* backward scratch */
    float *dres, *dln, *dqkv[3], *datty, *dfch, *dfch_gelu, *du, *dprobs;
    float *mem;
} Acts;

static size_t acts_layout(const Dims *d, int batch, int rank, float *mem, Acts *a)
{
    size_t off = 0, L = (size_t)d->layers, C = (size_t)d->dim, N = (size_t)batch * d->seq;
    size_t T = (size_t)d->seq, NH = (size_t)d->heads;
#define TAKE(field, n) do { if (mem) a->field = mem + off; off += (n); } while (0)
    TAKE(res, (L + 1) * N * C);
    TAKE(ln1, L * N * C);
    TAKE(ln1_mean, L * N);
    TAKE(ln1_rstd, L * N);
    TAKE(ln2, L * N * C);
    TAKE(ln2_mean, L * N);
    TAKE(ln2_rstd, L * N);
    for (int k = 0; k < 3; k++) TAKE(qkv[k], L * N * C);
    TAKE(att, L * batch * NH * T * T);
    TAKE(atty, L * N * C);
    TAKE(res_mid, L * N * C);
    TAKE(fch, L * N * 4 * C);
    TAKE(fch_gelu, L * N * 4 * C);
    TAKE(u, L * N_LINEAR * N * (size_t)rank);
    TAKE(lnf, N * C);
    TAKE(lnf_mean, N);
    TAKE(lnf_rstd, N);
    TAKE(probs, N * VOCAB);
    TAKE(dres, N * C);
    TAKE(dln, N * C);
    for (int k = 0; k < 3; k++) TAKE(dqkv[k], N * C);
    TAKE(datty, N * C);
    TAKE(dfch, N * 4 * C);
    TAKE(dfch_gelu, N * 4 * C);
    TAKE(du, N * (size_t)(rank > 0 ? rank : 1));
    TAKE(dprobs, N * VOCAB);
#undef TAKE
    if (a) a->batch = batch, a->rank = rank, a->mem = mem;
    return off;
}

static int acts_alloc(const Dims *d, int batch, int rank, Acts *a)
{
    float *mem = calloc(acts_layout(d, batch, rank, NULL, NULL), sizeof(float));
    if (!mem) return -1;
    acts_layout(d, batch, rank, mem, a);
    return 0;
}

/* ---- Layers: forward --------------------------------------------------- */

/* One linear layer of one block, with its (optional) adapter. */
typedef struct {
    const float *w, *b, *a, *lb; /* W out x in, b out; LoRA A rank x in, B out x rank */
    int in, out, rank;
    float scale;
} Linear;

/* y = x W^T + b (+ s * u B^T with u = x A^T saved for the backward pass). */
#ifdef GPT_LORA_BLAS
/* The same products as the loops below, through OpenBLAS's sgemm (row-major
 * throughout; the summation order, hence the last bits, differ). */
static void linear_forward(float *y, float *u, const float *x, const Linear *f, int n)
{
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * f->out;
        if (f->b) memcpy(yi, f->b, (size_t)f->out * sizeof(float));
        else memset(yi, 0, (size_t)f->out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, f->out, f->in, 1.0f, x, f->in, f->w, f->in, 1.0f, y,
                f->out);
    if (f->a) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, f->rank, f->in, 1.0f, x, f->in, f->a, f->in, 0.0f,
                    u, f->rank);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, f->out, f->rank, f->scale, u, f->rank, f->lb,
                    f->rank, 1.0f, y, f->out);
    }
}
#else
static void linear_forward(float *y, float *u, const float *x, const Linear *f, int n)
{
    PARALLEL_FOR((double)n * f->in * (f->out + f->rank) + (double)n * f->rank * f->out)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * f->in;
        float *yi = y + (size_t)i * f->out;
        for (int o = 0; o < f->out; o++) yi[o] = (f->b ? f->b[o] : 0.0f) + dot(xi, f->w + (size_t)o * f->in, f->in);
        if (f->a) {
            float *ui = u + (size_t)i * f->rank;
            for (int k = 0; k < f->rank; k++) ui[k] = dot(xi, f->a + (size_t)k * f->in, f->in);
            for (int o = 0; o < f->out; o++) yi[o] += f->scale * dot(ui, f->lb + (size_t)o * f->rank, f->rank);
        }
    }
}
#endif

static void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, int n, int c)
{
    PARALLEL_FOR(8.0 * n * c)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * c;
        float m = 0.0f, v = 0.0f;
        for (int k = 0; k < c; k++) m += xi[k];
        m /= (float)c;
        for (int k = 0; k < c; k++) v += (xi[k] - m) * (xi[k] - m);
        float s = 1.0f / sqrtf(v / (float)c + 1e-5f);
        for (int k = 0; k < c; k++) out[(size_t)i * c + k] = (xi[k] - m) * s * w[k] + b[k];
        mean[i] = m, rstd[i] = s;
    }
}

static const float GELU_K = 0.7978845608028654f; /* sqrt(2/pi) */

static void gelu_forward(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
    }
}

/* Causal attention of one layer: q, k, v are N x C ([b][t][h * hs]); att
 * gets the probabilities (B x NH x T x T, zero above the diagonal). */
static void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                              int batch, const Dims *d)
{
    int T = d->seq, C = d->dim, NH = d->heads, hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    PARALLEL_FOR2((double)batch * NH * T * T * hs)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * C + h * hs;
                float *row = att + (((size_t)b * NH + h) * T + t) * T, maxv = -INFINITY, sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    row[t2] = scale * dot(qt, k + ((size_t)b * T + t2) * C + h * hs, hs);
                    if (row[t2] > maxv) maxv = row[t2];
                }
                for (int t2 = 0; t2 <= t; t2++) sum += row[t2] = expf(row[t2] - maxv);
                for (int t2 = 0; t2 < T; t2++) row[t2] = t2 <= t ? row[t2] / sum : 0.0f;
                float *ot = out + ((size_t)b * T + t) * C + h * hs;
                memset(ot, 0, (size_t)hs * sizeof(float));
                for (int t2 = 0; t2 <= t; t2++) axpy(ot, row[t2], v + ((size_t)b * T + t2) * C + h * hs, hs);
            }
}

/* ---- The model ------------------------------------------------------------ */

typedef struct {
    Dims d;
    Params p;                  /* the weights forward reads (base mode: perturbed in place) */
    const Lora *lora;          /* NULL: no adapters */
} Model;

static Linear block_linear(const Model *m, int l, int j)
{
    const Dims *d = &m->d;
    Linear f = {layer_w(d, &m->p, l, j), layer_b(d, &m->p, l, j), NULL, NULL, lin_in(d, j), lin_out(d, j), 0, 0.0f};
    if (m->lora) {
        f.a = m->lora->a[l][j], f.lb = m->lora->b[l][j];
        f.rank = m->lora->rank, f.scale = m->lora->scale;
    }
    return f;
}

static float *acts_u(const Acts *a, const Dims *d, int l, int j)
{
    size_t n = (size_t)a->batch * d->seq;
    return a->u + ((size_t)l * N_LINEAR + j) * n * a->rank;
}

/* Forward pass over batch x seq tokens; leaves the next-token probabilities
 * in a->probs and returns the mean cross-entropy against `targets` (in
 * double, so finite differences of it are accurate). */
static double forward(const Model *m, const uint8_t *tokens, const uint8_t *targets, Acts *a)
{
    const Dims *d = &m->d;
    int T = d->seq, C = d->dim, n = a->batch * T;
    size_t NC = (size_t)n * C;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            a->res[(size_t)i * C + c] = m->p.wte[(size_t)tokens[i] * C + c] + m->p.wpe[(size_t)(i % T) * C + c];
    for (int l = 0; l < d->layers; l++) {
        float *x = a->res + l * NC, *ln1 = a->ln1 + l * NC, *ln2 = a->ln2 + l * NC;
        float *mid = a->res_mid + l * NC, *atty = a->atty + l * NC;
        float *fch = a->fch + 4 * l * NC, *fchg = a->fch_gelu + 4 * l * NC, *next = a->res + (l + 1) * NC;
        layernorm_forward(ln1, a->ln1_mean + (size_t)l * n, a->ln1_rstd + (size_t)l * n, x,
                          m->p.ln1w + (size_t)l * C, m->p.ln1b + (size_t)l * C, n, C);
        for (int j = LIN_Q; j <= LIN_V; j++) {
            Linear f = block_linear(m, l, j);
            linear_forward(a->qkv[j] + l * NC, acts_u(a, d, l, j), ln1, &f, n);
        }
        attention_forward(atty, a->att + (size_t)l * a->batch * d->heads * T * T, a->qkv[0] + l * NC,
                          a->qkv[1] + l * NC, a->qkv[2] + l * NC, a->batch, d);
        Linear fo = block_linear(m, l, LIN_O);
        linear_forward(mid, acts_u(a, d, l, LIN_O), atty, &fo, n);
        for (size_t i = 0; i < NC; i++) mid[i] += x[i];
        layernorm_forward(ln2, a->ln2_mean + (size_t)l * n, a->ln2_rstd + (size_t)l * n, mid,
                          m->p.ln2w + (size_t)l * C, m->p.ln2b + (size_t)l * C, n, C);
        Linear ff = block_linear(m, l, LIN_FC), fp = block_linear(m, l, LIN_PROJ);
        linear_forward(fch, acts_u(a, d, l, LIN_FC), ln2, &ff, n);
        gelu_forward(fchg, fch, 4 * NC);
        linear_forward(next, acts_u(a, d, l, LIN_PROJ), fchg, &fp, n);
        for (size_t i = 0; i < NC; i++) next[i] += mid[i];
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->res + d->layers * NC, m->p.lnfw, m->p.lnfb, n, C);
    Linear head = {m->p.wte, NULL, NULL, NULL, C, VOCAB, 0, 0.0f}; /* tied to the token embedding */
    linear_forward(a->probs, NULL, a->lnf, &head, n);
    double loss = 0.0;
    for (int i = 0; i < n; i++) {
        float *row = a->probs + (size_t)i * VOCAB, maxv = row[0], sum = 0.0f;
        for (int v = 1; v < VOCAB; v++) maxv = row[v] > maxv ? row[v] : maxv;
        for (int v = 0; v < VOCAB; v++) sum += row[v] = expf(row[v] - maxv);
        for (int v = 0; v < VOCAB; v++) row[v] /= sum;
        loss -= log((double)row[targets[i]]);
    }
    return loss / n;
}

/* ---- Layers: backward ----------------------------------------------------- */

/* Gradient buffers of a linear layer: dw/db (base, may be NULL) and da/dlb
 * (adapter, may be NULL).  Every gradient is accumulated (+=). */
typedef struct {
    float *dw, *db, *da, *dlb;
} LinearGrad;

/* Backward of linear_forward: dx += dy W (+ du A, du = s * dy B) and the
 * parameter gradients asked for.  du is n x rank scratch. */
#ifndef GPT_LORA_BLAS
static void linear_backward(float *dx, const LinearGrad *g, float *du, const float *dy, const float *x,
                            const float *u, const Linear *f, int n)
{
    int in = f->in, out = f->out, r = f->rank;
    PARALLEL_FOR((double)n * in * out + 2.0 * n * r * (in + out))
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * out;
        float *dxi = dx + (size_t)i * in;
        for (int o = 0; o < out; o++) axpy(dxi, dyi[o], f->w + (size_t)o * in, in);
        if (f->a) {
            float *dui = du + (size_t)i * r;
            for (int k = 0; k < r; k++) dui[k] = 0.0f;
            for (int o = 0; o < out; o++) axpy(dui, f->scale * dyi[o], f->lb + (size_t)o * r, r);
            for (int k = 0; k < r; k++) axpy(dxi, dui[k], f->a + (size_t)k * in, in);
        }
    }
    if (g->dw) {
        PARALLEL_FOR((double)n * in * out)
        for (int o = 0; o < out; o++) {
            float *dwo = g->dw + (size_t)o * in, bsum = 0.0f;
            for (int i = 0; i < n; i++) {
                float gy = dy[(size_t)i * out + o];
                axpy(dwo, gy, x + (size_t)i * in, in);
                bsum += gy;
            }
            if (g->db) g->db[o] += bsum;
        }
    }
    if (f->a && g->da) {
        PARALLEL_FOR((double)n * r * out)
        for (int o = 0; o < out; o++)
            for (int i = 0; i < n; i++)
                axpy(g->dlb + (size_t)o * r, f->scale * dy[(size_t)i * out + o], u + (size_t)i * r, r);
        PARALLEL_FOR((double)n * r * in)
        for (int k = 0; k < r; k++)
            for (int i = 0; i < n; i++) axpy(g->da + (size_t)k * in, du[(size_t)i * r + k], x + (size_t)i * in, in);
    }
}
#else
/* linear_backward with the same products through sgemm. */
static void linear_backward(float *dx, const LinearGrad *g, float *du, const float *dy, const float *x,
                            const float *u, const Linear *f, int n)
{
    int in = f->in, out = f->out, r = f->rank;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, f->w, in, 1.0f, dx, in);
    if (f->a) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, r, out, f->scale, dy, out, f->lb, r, 0.0f, du, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, r, 1.0f, du, r, f->a, in, 1.0f, dx, in);
    }
    if (g->dw) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f, g->dw, in);
        if (g->db)
            for (int i = 0; i < n; i++) axpy(g->db, 1.0f, dy + (size_t)i * out, out);
    }
    if (f->a && g->da) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, n, f->scale, dy, out, u, r, 1.0f, g->dlb, r);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, n, 1.0f, du, r, x, in, 1.0f, g->da, in);
    }
}
#endif

/* dx += layer-norm backward; dw, db (may be NULL) += their gradients. */
static void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                               const float *w, const float *mean, const float *rstd, int n, int c)
{
    PARALLEL_FOR(8.0 * n * c)
    for (int i = 0; i < n; i++) {
        const float *di = dout + (size_t)i * c, *xi = x + (size_t)i * c;
        float mdn = 0.0f, mdnx = 0.0f;
        for (int k = 0; k < c; k++) {
            float xhat = (xi[k] - mean[i]) * rstd[i], dn = di[k] * w[k];
            mdn += dn, mdnx += dn * xhat;
        }
        mdn /= (float)c, mdnx /= (float)c;
        for (int k = 0; k < c; k++) {
            float xhat = (xi[k] - mean[i]) * rstd[i];
            dx[(size_t)i * c + k] += rstd[i] * (di[k] * w[k] - mdn - xhat * mdnx);
        }
    }
    if (!dw) return;
    PARALLEL_FOR(4.0 * n * c)
    for (int k = 0; k < c; k++)
        for (int i = 0; i < n; i++) {
            float g = dout[(size_t)i * c + k];
            dw[k] += g * (x[(size_t)i * c + k] - mean[i]) * rstd[i];
            db[k] += g;
        }
}

static void gelu_backward(float *dx, const float *x, const float *dy, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i], inner = GELU_K * (v + 0.044715f * v * v * v), th = tanhf(inner);
        float sech2 = 1.0f - th * th;
        dx[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * v * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * v * v));
    }
}

/* dq, dk, dv (= , not +=) from dout through the saved probabilities. */
static void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att,
                               const float *q, const float *k, const float *v, int batch, const Dims *d)
{
    int T = d->seq, C = d->dim, NH = d->heads, hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t NC = (size_t)batch * T * C;
    memset(dq, 0, NC * sizeof(float));
    memset(dk, 0, NC * sizeof(float));
    memset(dv, 0, NC * sizeof(float));
    PARALLEL_FOR2(2.0 * batch * NH * T * T * hs)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < NH; h++) {
            float datt[MAX_SEQ];
            for (int t = 0; t < T; t++) {
                const float *row = att + (((size_t)b * NH + h) * T + t) * T;
                const float *dot_ = dout + ((size_t)b * T + t) * C + h * hs;
                const float *qt = q + ((size_t)b * T + t) * C + h * hs;
                float *dqt = dq + ((size_t)b * T + t) * C + h * hs, sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    size_t o2 = ((size_t)b * T + t2) * C + h * hs;
                    datt[t2] = dot(dot_, v + o2, hs);
                    axpy(dv + o2, row[t2], dot_, hs);
                    sum += row[t2] * datt[t2];
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    size_t o2 = ((size_t)b * T + t2) * C + h * hs;
                    float ds = row[t2] * (datt[t2] - sum) * scale;
                    axpy(dqt, ds, k + o2, hs);
                    axpy(dk + o2, ds, qt, hs);
                }
            }
        }
}

/* Backward pass after forward() on the same batch.  Accumulates into the
 * base gradients `gp` (NULL: frozen base) and the adapter gradients `gl`
 * (NULL: no adapters). */
static void backward(const Model *m, const Params *gp, const Lora *gl, const uint8_t *tokens,
                     const uint8_t *targets, Acts *a)
{
    const Dims *d = &m->d;
    int T = d->seq, C = d->dim, n = a->batch * T;
    size_t NC = (size_t)n * C;
    /* Softmax + cross-entropy: dlogits = (p - onehot) / n. */
    for (int i = 0; i < n; i++) {
        float *dr = a->dprobs + (size_t)i * VOCAB;
        const float *pr = a->probs + (size_t)i * VOCAB;
        for (int v = 0; v < VOCAB; v++) dr[v] = (pr[v] - (v == targets[i] ? 1.0f : 0.0f)) / (float)n;
    }
    memset(a->dln, 0, NC * sizeof(float));
    Linear head = {m->p.wte, NULL, NULL, NULL, C, VOCAB, 0, 0.0f};
    LinearGrad ghead = {gp ? gp->wte : NULL, NULL, NULL, NULL};
    linear_backward(a->dln, &ghead, NULL, a->dprobs, a->lnf, NULL, &head, n);
    memset(a->dres, 0, NC * sizeof(float));
    layernorm_backward(a->dres, gp ? gp->lnfw : NULL, gp ? gp->lnfb : NULL, a->dln, a->res + d->layers * NC,
                       m->p.lnfw, a->lnf_mean, a->lnf_rstd, n, C);
    for (int l = d->layers - 1; l >= 0; l--) {
        float *x = a->res + l * NC, *mid = a->res_mid + l * NC;
        LinearGrad g[N_LINEAR];
        for (int j = 0; j < N_LINEAR; j++) {
            g[j] = (LinearGrad){gp ? layer_w(d, gp, l, j) : NULL, gp ? layer_b(d, gp, l, j) : NULL,
                                gl ? gl->a[l][j] : NULL, gl ? gl->b[l][j] : NULL};
        }
        /* MLP branch: dres is the gradient at this block's output (and at mid). */
        Linear ff = block_linear(m, l, LIN_FC), fp = block_linear(m, l, LIN_PROJ);
        memset(a->dfch_gelu, 0, 4 * NC * sizeof(float));
        linear_backward(a->dfch_gelu, &g[LIN_PROJ], a->du, a->dres, a->fch_gelu + 4 * l * NC,
                        acts_u(a, d, l, LIN_PROJ), &fp, n);
        gelu_backward(a->dfch, a->fch + 4 * l * NC, a->dfch_gelu, 4 * NC);
        memset(a->dln, 0, NC * sizeof(float));
        linear_backward(a->dln, &g[LIN_FC], a->du, a->dfch, a->ln2 + l * NC, acts_u(a, d, l, LIN_FC), &ff, n);
        layernorm_backward(a->dres, gp ? gp->ln2w + (size_t)l * C : NULL, gp ? gp->ln2b + (size_t)l * C : NULL,
                           a->dln, mid, m->p.ln2w + (size_t)l * C, a->ln2_mean + (size_t)l * n,
                           a->ln2_rstd + (size_t)l * n, n, C);
        /* Attention branch: dres is now the gradient at mid (and at x). */
        Linear fo = block_linear(m, l, LIN_O);
        memset(a->datty, 0, NC * sizeof(float));
        linear_backward(a->datty, &g[LIN_O], a->du, a->dres, a->atty + l * NC, acts_u(a, d, l, LIN_O), &fo, n);
        attention_backward(a->dqkv[0], a->dqkv[1], a->dqkv[2], a->datty,
                           a->att + (size_t)l * a->batch * d->heads * T * T, a->qkv[0] + l * NC,
                           a->qkv[1] + l * NC, a->qkv[2] + l * NC, a->batch, d);
        memset(a->dln, 0, NC * sizeof(float));
        for (int j = LIN_Q; j <= LIN_V; j++) {
            Linear f = block_linear(m, l, j);
            linear_backward(a->dln, &g[j], a->du, a->dqkv[j], a->ln1 + l * NC, acts_u(a, d, l, j), &f, n);
        }
        layernorm_backward(a->dres, gp ? gp->ln1w + (size_t)l * C : NULL, gp ? gp->ln1b + (size_t)l * C : NULL,
                           a->dln, x, m->p.ln1w + (size_t)l * C, a->ln1_mean + (size_t)l * n,
                           a->ln1_rstd + (size_t)l * n, n, C);
    }
    if (gp)
        for (int i = 0; i < n; i++) {
            axpy(gp->wte + (size_t)tokens[i] * C, 1.0f, a->dres + (size_t)i * C, C);
            axpy(gp->wpe + (size_t)(i % T) * C, 1.0f, a->dres + (size_t)i * C, C);
        }
}

/* ---- Data ----------------------------------------------------------------- */

/* The corpora: files Debian packages install, with the package to name when
 * one is missing (README.md). */
typedef struct {
    const char *package;
    const char *files[10];
} Corpus;

static const Corpus PRETRAIN_CORPUS = {
    "base-files",
    {"/usr/share/common-licenses/Apache-2.0", "/usr/share/common-licenses/GPL-2",
     "/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/LGPL-2.1",
     "/usr/share/common-licenses/MPL-2.0", "/usr/share/common-licenses/Artistic", NULL}};
static const Corpus FINETUNE_CORPUS = {
    "libc6-dev",
    {"/usr/include/stdio.h", "/usr/include/stdlib.h", "/usr/include/string.h", "/usr/include/unistd.h",
     "/usr/include/pthread.h", "/usr/include/math.h", "/usr/include/time.h", "/usr/include/signal.h", NULL}};

typedef struct {
    uint8_t *bytes;
    size_t size;
} Text;

/* Concatenates the corpus's files; returns 0, or -1 naming what is missing. */
static int corpus_load(const Corpus *c, Text *out)
{
    out->bytes = NULL, out->size = 0;
    for (int f = 0; c->files[f]; f++) {
        FILE *fp = fopen(c->files[f], "rb");
        if (!fp) {
            fprintf(stderr, "gpt_lora: cannot read %s (%s): it is installed by the Debian package %s "
                            "(apt-get install %s)\n", c->files[f], strerror(errno), c->package, c->package);
            free(out->bytes);
            return -1;
        }
        uint8_t buf[65536];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, fp)) > 0) {
            uint8_t *grown = realloc(out->bytes, out->size + got);
            if (!grown) {
                fclose(fp);
                free(out->bytes);
                fprintf(stderr, "gpt_lora: out of memory\n");
                return -1;
            }
            memcpy(grown + out->size, buf, got);
            out->bytes = grown, out->size += got;
        }
        fclose(fp);
    }
    return 0;
}

/* A contiguous part of a text from which windows of seq + 1 bytes are cut. */
typedef struct {
    const uint8_t *bytes;
    size_t size;
} Split;

/* Fills tokens/targets (batch x seq) with windows starting at random offsets. */
static void batch_random(const Split *s, int batch, int seq, Rng *r, uint8_t *tokens, uint8_t *targets)
{
    for (int b = 0; b < batch; b++) {
        size_t start = (size_t)(rng_next(r) % (uint64_t)(s->size - (size_t)seq - 1));
        memcpy(tokens + (size_t)b * seq, s->bytes + start, (size_t)seq);
        memcpy(targets + (size_t)b * seq, s->bytes + start + 1, (size_t)seq);
    }
}

/* Window w of `count` evenly spaced ones: a fixed evaluation set. */
static void batch_fixed(const Split *s, int batch, int seq, int first, int count, uint8_t *tokens,
                        uint8_t *targets)
{
    size_t span = s->size - (size_t)seq - 1;
    for (int b = 0; b < batch; b++) {
        size_t start = (size_t)((double)span * (first + b) / count);
        memcpy(tokens + (size_t)b * seq, s->bytes + start, (size_t)seq);
        memcpy(targets + (size_t)b * seq, s->bytes + start + 1, (size_t)seq);
    }
}

/* Mean loss over `windows` fixed windows (a multiple of the batch); *se (may
 * be NULL) gets its standard error from the spread of the per-batch means
 * (0 with a single batch): the noise of the held-out measure itself. */
static double evaluate(const Model *m, const Split *s, int windows, Acts *a, uint8_t *tok, uint8_t *tgt,
                       double *se)
{
    double sum = 0.0, sq = 0.0;
    int batches = windows / a->batch;
    for (int w = 0; w < windows; w += a->batch) {
        batch_fixed(s, a->batch, m->d.seq, w, windows, tok, tgt);
        double l = forward(m, tok, tgt, a);
        sum += l, sq += l * l;
    }
    double mean = sum / batches;
    if (se) *se = batches > 1 ? sqrt(fmax(0.0, (sq - sum * mean) / (batches - 1)) / batches) : 0.0;
    return mean;
}

/* ---- Options -------------------------------------------------------------- */

typedef enum { MODE_TENSORS, MODE_ADAPTER, MODE_BASE } LoraMode;
static const char *const PROFILE_NAMES[] = {"default", "nlu-paper", "nlg-paper"};
static const char *const MODE_NAMES[] = {"tensors", "adapter", "base"};

typedef struct {
    Dims d;
    int batch, rank, steps, pretrain_steps, eval_every, eval_windows, print_every;
    int test_windows;          /* > 0: after the last step, the loss on this many test windows */
    int mgpo, cosine, check, check_grad, quiet, normalize;
    int eval_test;             /* 1: held-out = the test split, 0: the validation split */
    int profile;               /* 0 default, 1 nlu-paper, 2 nlg-paper: the base mgpo_config */
    int rho_given, clip_given;
    double alpha, lr, rho, pretrain_lr, max_grad_norm;
    uint64_t seed, pretrain_seed;
    mgpo_direction direction;
    mgpo_sign sign;
    mgpo_scope scope;
    LoraMode mode;
    const char *csv, *model_cache;
    const char *commit;        /* the source commit the driver passes (git describe --dirty) */
} Options;

static void usage(void)
{
    fprintf(stderr,
            "usage: gpt_lora [--rank R] [--alpha A] [--lr LR] [--steps N] [--seed S]\n"
            "       [--optimizer adamw|mgpo] [--rho RHO] [--sign lookahead|ascent]\n"
            "       [--scope global|tensor] [--lora-mode tensors|adapter|base] [--clip MAX]\n"
            "       [--profile default|nlu-paper|nlg-paper] [--eval-split validation|test]\n"
            "       [--test-windows W]\n"
            "       [--apn on|off] [--direction momentum|random]\n"
            "       [--schedule cosine|constant] [--eval-every K] [--eval-windows W]\n"
            "       [--layers L] [--dim C] [--heads H] [--seq T] [--batch B]\n"
            "       [--pretrain-steps N] [--pretrain-lr LR] [--pretrain-seed S]\n"
            "       [--model-cache FILE] [--csv FILE] [--commit ID] [--check] [--check-grad] [--quiet]\n");
}

/* Parses argv into *o; returns 0, or -1 after printing what was wrong. */
static int parse_options(int argc, char **argv, Options *o)
{
    *o = (Options){.d = {2, 64, 4, 64}, .batch = 8, .rank = 16, .steps = 200, .pretrain_steps = 1500,
                   .eval_every = 10, .eval_windows = 32, .mgpo = 1, .cosine = 1, .alpha = -1.0, .lr = 2e-3,
                   .rho = 0.05, .pretrain_lr = 3e-3, .seed = 1, .pretrain_seed = 1, .normalize = 1,
                   .sign = MGPO_SIGN_LOOKAHEAD, .scope = MGPO_SCOPE_GLOBAL, .mode = MODE_ADAPTER,
                   .commit = GPT_LORA_DEFAULT_COMMIT};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        int ok = 1, takes_value = 1;
        if (!strcmp(f, "--check")) o->check = 1, takes_value = 0;
        else if (!strcmp(f, "--check-grad")) o->check_grad = 1, takes_value = 0;
        else if (!strcmp(f, "--quiet")) o->quiet = 1, takes_value = 0;
        else if (!v) ok = 0;
        else if (!strcmp(f, "--rank")) o->rank = (int)strtol(v, &end, 10), ok = o->rank > 0 && o->rank <= 1024;
        else if (!strcmp(f, "--steps")) o->steps = (int)strtol(v, &end, 10), ok = o->steps > 0;
        else if (!strcmp(f, "--pretrain-steps")) o->pretrain_steps = (int)strtol(v, &end, 10), ok = o->pretrain_steps > 0;
        else if (!strcmp(f, "--eval-every")) o->eval_every = (int)strtol(v, &end, 10), ok = o->eval_every > 0;
        else if (!strcmp(f, "--eval-windows")) o->eval_windows = (int)strtol(v, &end, 10), ok = o->eval_windows > 0;
        else if (!strcmp(f, "--test-windows")) o->test_windows = (int)strtol(v, &end, 10), ok = o->test_windows > 0;
        else if (!strcmp(f, "--layers")) o->d.layers = (int)strtol(v, &end, 10), ok = o->d.layers > 0 && o->d.layers <= MAX_LAYERS;
        else if (!strcmp(f, "--dim")) o->d.dim = (int)strtol(v, &end, 10), ok = o->d.dim > 0 && o->d.dim <= 4096;
        else if (!strcmp(f, "--heads")) o->d.heads = (int)strtol(v, &end, 10), ok = o->d.heads > 0;
        else if (!strcmp(f, "--seq")) o->d.seq = (int)strtol(v, &end, 10), ok = o->d.seq > 1 && o->d.seq <= MAX_SEQ;
        else if (!strcmp(f, "--batch")) o->batch = (int)strtol(v, &end, 10), ok = o->batch > 0 && o->batch <= 4096;
        else if (!strcmp(f, "--seed")) o->seed = strtoull(v, &end, 10);
        else if (!strcmp(f, "--pretrain-seed")) o->pretrain_seed = strtoull(v, &end, 10);
        else if (!strcmp(f, "--alpha")) o->alpha = strtod(v, &end), ok = o->alpha > 0.0;
        else if (!strcmp(f, "--lr")) o->lr = strtod(v, &end), ok = o->lr > 0.0;
        else if (!strcmp(f, "--pretrain-lr")) o->pretrain_lr = strtod(v, &end), ok = o->pretrain_lr > 0.0;
        else if (!strcmp(f, "--rho")) o->rho = strtod(v, &end), ok = o->rho >= 0.0, o->rho_given = 1;
        else if (!strcmp(f, "--clip")) o->max_grad_norm = strtod(v, &end), ok = o->max_grad_norm >= 0.0, o->clip_given = 1;
        else if (!strcmp(f, "--eval-split")) ok = !strcmp(v, "validation") || !strcmp(v, "test"), o->eval_test = !strcmp(v, "test");
        else if (!strcmp(f, "--profile")) {
            ok = 0;
            for (int k = 0; k < 3; k++)
                if (!strcmp(v, PROFILE_NAMES[k])) o->profile = k, ok = 1;
        }
        else if (!strcmp(f, "--csv")) o->csv = v;
        else if (!strcmp(f, "--model-cache")) o->model_cache = v;
        else if (!strcmp(f, "--commit")) o->commit = v, ok = *v && strlen(v) < 64 && !strpbrk(v, ", \n");
        else if (!strcmp(f, "--optimizer")) ok = !strcmp(v, "mgpo") || !strcmp(v, "adamw"), o->mgpo = !strcmp(v, "mgpo");
        else if (!strcmp(f, "--schedule")) ok = !strcmp(v, "cosine") || !strcmp(v, "constant"), o->cosine = !strcmp(v, "cosine");
        else if (!strcmp(f, "--apn")) ok = !strcmp(v, "on") || !strcmp(v, "off"), o->normalize = !strcmp(v, "on");
        else if (!strcmp(f, "--direction")) {
            ok = !strcmp(v, "momentum") || !strcmp(v, "random");
            o->direction = !strcmp(v, "random") ? MGPO_DIRECTION_RANDOM : MGPO_DIRECTION_MOMENTUM;
        } else if (!strcmp(f, "--sign")) {
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
    if (o->d.dim % o->d.heads != 0) {
        fprintf(stderr, "gpt_lora: --dim must be a multiple of --heads\n");
        return -1;
    }
    if (o->direction == MGPO_DIRECTION_RANDOM && o->mode != MODE_TENSORS) {
        fprintf(stderr, "gpt_lora: --direction random needs --lora-mode tensors (libmgpo defines no "
                        "random direction for a LoRA pair)\n");
        return -1;
    }
    if (o->alpha < 0.0) o->alpha = o->rank; /* r = alpha, as the paper's sweeps */
    o->eval_windows = (o->eval_windows + o->batch - 1) / o->batch * o->batch;
    o->test_windows = (o->test_windows + o->batch - 1) / o->batch * o->batch;
    return 0;
}

static int fail(const char *what, mgpo_status s)
{
    fprintf(stderr, "gpt_lora: %s: %s\n", what, mgpo_strerror(s));
    return -1;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Pretraining, cached -------------------------------------------------- */

/* The cache file: this header, then the weights in host byte order.  The
 * header holds everything that determines the pretrained weights: the model
 * size, the pretraining settings, a hash of the pretraining text, the
 * library version, the source commit and the kind of matrix products (their
 * summation order differs).  Any difference means pretraining again, so a
 * cache written by another library or commit is never reused. */
typedef struct {
    char magic[8];
    int32_t layers, dim, heads, seq, batch, steps;
    uint64_t seed;
    double lr;
    uint64_t floats;
    uint64_t data_hash;        /* FNV-1a of the pretraining text */
    char version[16];          /* mgpo_version_string() */
    char commit[64];           /* --commit */
    char products[8];          /* "blas" or "loops" */
} CacheHeader;

#ifdef GPT_LORA_BLAS
static const char PRODUCTS[] = "blas";
#else
static const char PRODUCTS[] = "loops";
#endif

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static CacheHeader cache_header(const Options *o, size_t floats, const Split *text)
{
    CacheHeader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, "GPTLORA2", 8);
    h.layers = o->d.layers, h.dim = o->d.dim, h.heads = o->d.heads, h.seq = o->d.seq;
    h.batch = o->batch, h.steps = o->pretrain_steps, h.seed = o->pretrain_seed, h.lr = o->pretrain_lr;
    h.floats = floats;
    h.data_hash = fnv1a(text->bytes, text->size);
    snprintf(h.version, sizeof h.version, "%s", mgpo_version_string());
    snprintf(h.commit, sizeof h.commit, "%s", o->commit);
    snprintf(h.products, sizeof h.products, "%s", PRODUCTS);
    return h;
}

static int cache_load(const char *path, const CacheHeader *want, float *mem)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    CacheHeader got;
    int ok = fread(&got, sizeof got, 1, f) == 1 && !memcmp(&got, want, sizeof got) &&
             fread(mem, sizeof(float), want->floats, f) == want->floats;
    fclose(f);
    return ok ? 0 : -1;
}

static void cache_save(const char *path, const CacheHeader *h, const float *mem)
{
    /* A name of this process's own: runs started together may all miss the
     * cache and save it at once; each renames a whole file into place. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(h, sizeof *h, 1, f) == 1 && fwrite(mem, sizeof(float), h->floats, f) == h->floats;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "gpt_lora: warning: could not write the model cache %s\n", path);
        remove(tmp);
    }
}

/* Trains every weight on the pretraining corpus with libmgpo's plain AdamW
 * (rho 0), or loads the result from the cache; returns 0 or -1. */
static int pretrain(const Options *o, Model *m, float *mem, size_t floats, const Split *text)
{
    CacheHeader h = cache_header(o, floats, text);
    if (o->model_cache && cache_load(o->model_cache, &h, mem) == 0) {
        if (!o->quiet) printf("pretrained model loaded from %s\n", o->model_cache);
        return 0;
    }
    if (o->model_cache && !o->quiet)
        printf("pretraining: no cache in %s for libmgpo %s, commit %s, %s products\n", o->model_cache,
               h.version, h.commit, h.products);
    params_init(&m->d, &m->p, o->pretrain_seed);
    float *gmem = calloc(floats, sizeof(float));
    uint8_t *tok = malloc((size_t)o->batch * o->d.seq), *tgt = malloc((size_t)o->batch * o->d.seq);
    Acts a = {0};
    mgpo_state *st = NULL;
    int rc = -1;
    if (!gmem || !tok || !tgt || acts_alloc(&m->d, o->batch, 0, &a) != 0) {
        fprintf(stderr, "gpt_lora: out of memory\n");
        goto done;
    }
    Params g;
    params_layout(&m->d, gmem, &g);
    mgpo_config cfg = mgpo_config_default();
    cfg.rho = 0.0;
    cfg.lr = o->pretrain_lr;
    cfg.max_grad_norm = 1.0;
    mgpo_status s = mgpo_create(&st, &cfg, NULL);
    if (s == MGPO_OK) s = mgpo_add_tensor(st, mem, gmem, floats, NULL, NULL);
    if (s != MGPO_OK) {
        fail("pretraining setup", s);
        goto done;
    }
    mgpo_schedule sched = mgpo_schedule_paper(o->pretrain_lr, (uint64_t)o->pretrain_steps);
    Rng r = rng_stream(o->pretrain_seed, 2);
    double t0 = now_seconds(), loss = 0.0;
    for (int step = 0; step < o->pretrain_steps; step++) {
        double lr;
        batch_random(text, o->batch, o->d.seq, &r, tok, tgt);
        memset(gmem, 0, floats * sizeof(float));
        loss = forward(m, tok, tgt, &a);
        backward(m, &g, NULL, tok, tgt, &a);
        if ((s = mgpo_schedule_lr(&sched, (uint64_t)step, &lr)) == MGPO_OK && (s = mgpo_set_lr(st, lr)) == MGPO_OK)
            s = mgpo_step(st);
        if (s != MGPO_OK) {
            fail("pretraining step", s);
            goto done;
        }
        if (!o->quiet && (step % 100 == 0 || step == o->pretrain_steps - 1))
            printf("pretrain step %5d/%d  loss %.4f  (%.1f s)\n", step + 1, o->pretrain_steps, loss, now_seconds() - t0);
    }
    if (o->model_cache) cache_save(o->model_cache, &h, mem);
    rc = 0;
done:
    mgpo_destroy(st);
    free(a.mem);
    free(gmem);
    free(tok);
    free(tgt);
    return rc;
}

/* ---- Gradient check ------------------------------------------------------- */

/* One named block of floats and its gradient, for the check. */
typedef struct {
    const char *name;
    float *x, *g;
    size_t n;
} Piece;

/* Central differences of the loss along a random +-1 direction over each
 * piece, against the analytic directional derivative g . d.  A tiny model
 * in which every weight, and every adapter (B non-zero), gets a gradient.
 * Returns 0 if every relative error is below the tolerance. */
static int check_gradients(const Options *o)
{
    Dims d = {2, 16, 2, 8};
    int batch = 2, rank = 3, n = batch * d.seq;
    size_t np = params_layout(&d, NULL, NULL), nl = lora_layout(&d, rank, NULL, NULL);
    float *mem = calloc(2 * (np + nl), sizeof(float));
    Acts a = {0};
    if (!mem || acts_alloc(&d, batch, rank, &a) != 0) {
        fprintf(stderr, "gpt_lora: out of memory\n");
        free(mem);
        return -1;
    }
    Model m = {d, {0}, NULL};
    Params g;
    Lora lora, gl;
    params_layout(&d, mem, &m.p);
    params_layout(&d, mem + np, &g);
    lora_layout(&d, rank, mem + 2 * np, &lora);
    lora_layout(&d, rank, mem + 2 * np + nl, &gl);
    lora.scale = 1.5f;
    m.lora = &lora;
    params_init(&d, &m.p, o->seed);
    Rng r = rng_stream(o->seed, 9);
    /* Larger weights than at initialisation, so that every path matters. */
    for (size_t i = 0; i < np; i++) m.p.wte[i] += 0.1f * rng_normal(&r);
    fill_normal(&r, lora.a[0][0], nl, 0.2f);
    uint8_t tok[2 * 8], tgt[2 * 8];
    for (int i = 0; i < n; i++) tok[i] = (uint8_t)(rng_next(&r) % VOCAB), tgt[i] = (uint8_t)(rng_next(&r) % VOCAB);

    forward(&m, tok, tgt, &a);
    backward(&m, &g, &gl, tok, tgt, &a);

    Piece pieces[64];
    int np_ = 0;
    pieces[np_++] = (Piece){"wte", m.p.wte, g.wte, (size_t)VOCAB * d.dim};
    pieces[np_++] = (Piece){"wpe", m.p.wpe, g.wpe, (size_t)d.seq * d.dim};
    pieces[np_++] = (Piece){"ln1w", m.p.ln1w, g.ln1w, (size_t)d.layers * d.dim};
    pieces[np_++] = (Piece){"ln1b", m.p.ln1b, g.ln1b, (size_t)d.layers * d.dim};
    pieces[np_++] = (Piece){"ln2w", m.p.ln2w, g.ln2w, (size_t)d.layers * d.dim};
    pieces[np_++] = (Piece){"ln2b", m.p.ln2b, g.ln2b, (size_t)d.layers * d.dim};
    pieces[np_++] = (Piece){"lnfw", m.p.lnfw, g.lnfw, (size_t)d.dim};
    pieces[np_++] = (Piece){"lnfb", m.p.lnfb, g.lnfb, (size_t)d.dim};
    static char names[4][N_LINEAR][16];
    for (int j = 0; j < N_LINEAR; j++) {
        size_t out = (size_t)lin_out(&d, j), in = (size_t)lin_in(&d, j);
        snprintf(names[0][j], 16, "w_%s", LINEAR_NAMES[j]);
        snprintf(names[1][j], 16, "b_%s", LINEAR_NAMES[j]);
        snprintf(names[2][j], 16, "lora_a_%s", LINEAR_NAMES[j]);
        snprintf(names[3][j], 16, "lora_b_%s", LINEAR_NAMES[j]);
        pieces[np_++] = (Piece){names[0][j], m.p.w[j], g.w[j], d.layers * out * in};
        pieces[np_++] = (Piece){names[1][j], m.p.b[j], g.b[j], d.layers * out};
        /* The adapters of linear j in layer 0 (layer 1's are checked through the
         * same code). */
        pieces[np_++] = (Piece){names[2][j], lora.a[0][j], gl.a[0][j], (size_t)rank * in};
        pieces[np_++] = (Piece){names[3][j], lora.b[0][j], gl.b[0][j], out * rank};
    }
    const float h = 3e-3f;
    const double tol = 1e-2;
    double worst = 0.0;
    int bad = 0;
    for (int k = 0; k < np_; k++) {
        Piece *p = &pieces[k];
        float *dir = malloc(p->n * sizeof(float)), *save = malloc(p->n * sizeof(float));
        if (!dir || !save) {
            free(dir), free(save);
            bad = 1;
            break;
        }
        memcpy(save, p->x, p->n * sizeof(float));
        double analytic = 0.0;
        for (size_t i = 0; i < p->n; i++) {
            dir[i] = (rng_next(&r) & 1) ? 1.0f : -1.0f;
            analytic += (double)p->g[i] * dir[i];
        }
        for (size_t i = 0; i < p->n; i++) p->x[i] = save[i] + h * dir[i];
        double plus = forward(&m, tok, tgt, &a);
        for (size_t i = 0; i < p->n; i++) p->x[i] = save[i] - h * dir[i];
        double minus = forward(&m, tok, tgt, &a);
        memcpy(p->x, save, p->n * sizeof(float));
        double numeric = (plus - minus) / (2.0 * h);
        /* Relative error, with an absolute floor of 3e-3 * tol = 3e-5: the
         * float noise of the central difference (about 1e-7 of the loss over
         * 2h).  b_k's true gradient is exactly 0 (softmax ignores a shift
         * shared by every key), so its numeric value is that noise alone:
         * 6.5e-6 natively, 1.5e-5 with OpenBLAS's kernels under valgrind. */
        double rel = fabs(numeric - analytic) / fmax(fabs(numeric), 3e-3);
        if (rel > worst) worst = rel;
        if (rel > tol) bad = 1;
        if (!o->quiet || rel > tol)
            printf("check-grad %-10s analytic %+.6e numeric %+.6e rel.err %.2e%s\n", p->name, analytic, numeric,
                   rel, rel > tol ? "  FAIL" : "");
        free(dir);
        free(save);
    }
    printf("check-grad: %d pieces, worst relative error %.2e (tolerance %.0e): %s\n", np_, worst, tol,
           bad ? "FAILED" : "ok");
    free(a.mem);
    free(mem);
    return bad ? -1 : 0;
}

/* ---- Fine-tuning ------------------------------------------------------------ */

/* Counts the optimizer's own memory (moments, restore room): the cost the
 * paper's Table 3 compares. */
typedef struct {
    size_t now, peak;
} CountingHeap;

static void *count_alloc(void *ctx, size_t size)
{
    CountingHeap *h = ctx;
    void *p = malloc(size);
    if (p && (h->now += size) > h->peak) h->peak = h->now;
    return p;
}
static void count_free(void *ctx, void *ptr, size_t size)
{
    ((CountingHeap *)ctx)->now -= size;
    free(ptr);
}

/* `perturb` 0 (plain AdamW) registers the adapters without perturbation, so
 * the state reserves no restore room: the baseline of the cost table. */
static mgpo_status register_adapters(mgpo_state *st, const Dims *d, const Params *base, Lora *l, Lora *g,
                                     LoraMode mode, int perturb)
{
    mgpo_tensor_options opts = mgpo_tensor_options_default();
    opts.perturb = perturb;
    for (int layer = 0; layer < d->layers; layer++)
        for (int j = 0; j < N_LINEAR; j++) {
            size_t in = (size_t)lin_in(d, j), out = (size_t)lin_out(d, j), rk = (size_t)l->rank;
            mgpo_status s;
            if (mode == MODE_TENSORS) {
                s = mgpo_add_tensor(st, l->a[layer][j], g->a[layer][j], rk * in, &opts, NULL);
                if (s == MGPO_OK) s = mgpo_add_tensor(st, l->b[layer][j], g->b[layer][j], out * rk, &opts, NULL);
            } else {
                mgpo_lora_pair pair = {l->a[layer][j], g->a[layer][j], l->b[layer][j], g->b[layer][j],
                                       mode == MODE_BASE ? layer_w(d, base, layer, j) : NULL, rk, in, out,
                                       l->scale, mode == MODE_BASE ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER};
                s = mgpo_add_lora_pair(st, &pair, &opts, NULL);
            }
            if (s != MGPO_OK) return s;
        }
    return MGPO_OK;
}

/* With more than one thread and no OMP_WAIT_POLICY, runs this program again
 * with OMP_WAIT_POLICY=PASSIVE (libgomp reads it once, before main, so it
 * cannot be set from here).  libgomp's default spins at every barrier; on a
 * loaded 2-core machine the spinning thread takes the core its partner needs
 * and two threads ran 4 to 10 times slower than one (docs/results.md, "Two
 * threads").  Returns only if it did not re-run (then nothing changes). */
static void prefer_passive_waits(char **argv)
{
#ifdef _OPENMP
    if (omp_get_max_threads() > 1 && !getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
        execv("/proc/self/exe", argv); /* Linux; elsewhere execv fails and the run goes on as it was */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv)
{
    prefer_passive_waits(argv);
    Options o;
    if (parse_options(argc, argv, &o) != 0) return 2;
    if (o.check_grad) return check_gradients(&o) == 0 ? 0 : 1;

    Text pre_text, ft_text;
    if (corpus_load(&PRETRAIN_CORPUS, &pre_text) != 0) return 1;
    if (corpus_load(&FINETUNE_CORPUS, &ft_text) != 0) {
        free(pre_text.bytes);
        return 1;
    }
    /* Training 80 %, validation the next 10 %, test the last 10 %: choices
     * (learning rate, rho) are made on validation, the claims on test. */
    size_t cut_val = ft_text.size / 10 * 8, cut_test = ft_text.size / 10 * 9;
    Split pre = {pre_text.bytes, pre_text.size}, train = {ft_text.bytes, cut_val};
    Split held = o.eval_test ? (Split){ft_text.bytes + cut_test, ft_text.size - cut_test}
                             : (Split){ft_text.bytes + cut_val, cut_test - cut_val};

    const Dims *d = &o.d;
    size_t np = params_layout(d, NULL, NULL), nl = lora_layout(d, o.rank, NULL, NULL);
    float *mem = calloc(np + 2 * nl, sizeof(float));
    size_t bt = (size_t)o.batch * d->seq;
    uint8_t *tok = malloc(bt), *tgt = malloc(bt);
    Acts a = {0};
    Lora lora, grad;
    Model m = {*d, {0}, NULL};
    mgpo_state *st = NULL;
    CountingHeap heap = {0, 0};
    FILE *csv = NULL;
    int rc = 1;
    if (!mem || !tok || !tgt || acts_alloc(d, o.batch, o.rank, &a) != 0) {
        fprintf(stderr, "gpt_lora: out of memory\n");
        goto done;
    }
    params_layout(d, mem, &m.p);
    lora_layout(d, o.rank, mem + np, &lora);
    lora_layout(d, o.rank, mem + np + nl, &grad);
    lora.scale = grad.scale = (float)(o.alpha / o.rank);
    if (!o.quiet)
        printf("gpt_lora: %d layers, dim %d, %d heads, context %d, batch %d: %zu weights\n"
               "pretraining corpus %zu bytes (%s), fine-tuning corpus %zu + %zu held-out bytes (%s)\n",
               d->layers, d->dim, d->heads, d->seq, o.batch, np, pre.size, PRETRAIN_CORPUS.package, train.size,
               held.size, FINETUNE_CORPUS.package);
    if (pretrain(&o, &m, mem, np, &pre) != 0) goto done;

    /* Standard LoRA initialisation: A random, B zero, so W_eff = W at start. */
    Rng rng = rng_stream(o.seed, 3);
    for (int l = 0; l < d->layers; l++)
        for (int j = 0; j < N_LINEAR; j++)
            fill_normal(&rng, lora.a[l][j], (size_t)o.rank * lin_in(d, j), 1.0f / sqrtf((float)lin_in(d, j)));
    m.lora = &lora;

    /* The profile sets betas, rho, norm_ema and clipping; --rho and --clip
     * override it, --lr always (it is tuned per run). */
    mgpo_config cfg = o.profile == 1 ? mgpo_config_nlu_paper() : o.profile == 2 ? mgpo_config_nlg_paper()
                                                                               : mgpo_config_default();
    if (!o.rho_given && o.profile != 0) o.rho = cfg.rho;
    if (!o.clip_given) o.max_grad_norm = cfg.max_grad_norm;
    cfg.lr = o.lr;
    cfg.rho = o.mgpo ? o.rho : 0.0; /* rho 0: the same code path is plain AdamW */
    cfg.sign = o.sign;
    cfg.scope = o.scope;
    cfg.max_grad_norm = o.max_grad_norm;
    cfg.normalize = o.normalize;
    cfg.direction = o.direction;
    cfg.seed = o.seed; /* the random direction's key: its own stream of this seed */
    mgpo_allocator counting = {count_alloc, count_free, &heap};
    mgpo_status s = mgpo_create(&st, &cfg, &counting);
    if (s == MGPO_OK) s = register_adapters(st, d, &m.p, &lora, &grad, o.mode, o.mgpo);
    if (s != MGPO_OK) {
        fail("optimizer setup", s);
        goto done;
    }
    mgpo_schedule sched = o.cosine ? mgpo_schedule_paper(o.lr, (uint64_t)o.steps)
                                   : (mgpo_schedule){MGPO_SCHEDULE_CONSTANT, o.lr, 0.0, 0, (uint64_t)o.steps};
    if (o.csv) {
        if (!(csv = fopen(o.csv, "w"))) {
            perror(o.csv);
            goto done;
        }
        fprintf(csv, "step,lr,batch_loss,train_loss,eval_loss,grad_norm,perturbation_norm,step_ms,"
                     "mgpo_version,commit,products\n");
    }
    if (!o.quiet)
        printf("fine-tuning: rank %d, alpha %g, lr %g (%s), %d steps, seed %llu, %s, rho %g%s%s, LoRA mode %s\n"
               "train = clean loss on %d fixed training windows, eval = %d held-out windows\n",
               o.rank, o.alpha, o.lr, o.cosine ? "warm-up + cosine" : "constant", o.steps,
               (unsigned long long)o.seed, o.mgpo ? "MGPO" : "AdamW", cfg.rho, o.normalize ? "" : ", APN off",
               o.direction == MGPO_DIRECTION_RANDOM ? ", random direction" : "", MODE_NAMES[o.mode],
               o.eval_windows, o.eval_windows);

    Rng batch_rng = rng_stream(o.seed, 4);
    double first_train = 0.0, min_train = INFINITY, max_rebound = 0.0, train_loss = 0.0, eval_loss = 0.0;
    double eval_se = 0.0, best_eval = INFINITY, step_seconds = 0.0, last_step = 0.0, batch_loss = 0.0, lr = o.lr;
    for (int step = 0; step <= o.steps; step++) {
        int evaluated = step % o.eval_every == 0 || step == o.steps;
        if (evaluated) {
            train_loss = evaluate(&m, &train, o.eval_windows, &a, tok, tgt, NULL);
            eval_loss = evaluate(&m, &held, o.eval_windows, &a, tok, tgt, &eval_se);
            if (step == 0) first_train = train_loss;
            if (train_loss < min_train) min_train = train_loss;
            if (train_loss - min_train > max_rebound) max_rebound = train_loss - min_train;
            if (eval_loss < best_eval) best_eval = eval_loss;
            if (!o.quiet)
                printf("step %4d/%d  lr %.3g  batch %.4f  train %.4f  eval %.4f  %.1f ms/step\n", step, o.steps,
                       lr, batch_loss, train_loss, eval_loss, step ? 1e3 * step_seconds / step : 0.0);
        }
        mgpo_stats stats;
        if (step > 0 && csv && mgpo_get_stats(st, &stats) == MGPO_OK) {
            fprintf(csv, "%d,%.6g,%.6f,", step, lr, batch_loss);
            if (evaluated) fprintf(csv, "%.6f,%.6f,", train_loss, eval_loss);
            else fprintf(csv, ",,");
            fprintf(csv, "%.6g,%.6g,%.4f,%s,%s,%s\n", stats.grad_norm, stats.perturbation_norm, 1e3 * last_step,
                    mgpo_version_string(), o.commit, PRODUCTS);
        } else if (step == 0 && csv) {
            fprintf(csv, "0,,,%.6f,%.6f,,,,%s,%s,%s\n", train_loss, eval_loss, mgpo_version_string(), o.commit,
                    PRODUCTS);
        }
        if (step == o.steps) break;

        batch_random(&train, o.batch, d->seq, &batch_rng, tok, tgt);
        double t0 = now_seconds();
        if ((s = mgpo_schedule_lr(&sched, (uint64_t)step, &lr)) == MGPO_OK && (s = mgpo_set_lr(st, lr)) == MGPO_OK)
            s = mgpo_perturb(st);
        if (s != MGPO_OK) {
            fail("mgpo_perturb", s);
            goto done;
        }
        memset(grad.a[0][0], 0, nl * sizeof(float));
        batch_loss = forward(&m, tok, tgt, &a);
        backward(&m, NULL, &grad, tok, tgt, &a);
        if ((s = mgpo_restore(st)) != MGPO_OK || (s = mgpo_step(st)) != MGPO_OK) {
            fail("mgpo_step", s);
            goto done;
        }
        last_step = now_seconds() - t0;
        step_seconds += last_step;
    }
    /* The test split, once, on the final clean weights: the claims are made
     * on it, every choice on the validation split during the run. */
    double test_loss = NAN, test_se = NAN;
    if (o.test_windows > 0) {
        Split test = {ft_text.bytes + cut_test, ft_text.size - cut_test};
        test_loss = evaluate(&m, &test, o.test_windows, &a, tok, tgt, &test_se);
    }
    printf("final test_loss %.4f test_se %.4f train_loss %.4f eval_loss %.4f eval_se %.4f best_eval_loss %.4f max_rebound %.4f initial_train_loss %.4f "
           "step_ms %.2f optimizer_bytes %zu mgpo_version %s commit %s products %s\n",
           test_loss, test_se, train_loss, eval_loss, eval_se, best_eval, max_rebound, first_train, 1e3 * step_seconds / o.steps, heap.peak,
           mgpo_version_string(), o.commit, PRODUCTS);
    rc = 0;
    if (!isfinite(train_loss) || (o.check && !(train_loss < first_train))) {
        fprintf(stderr, "gpt_lora: the training loss did not go down (%.4f -> %.4f)\n", first_train, train_loss);
        rc = 1;
    }
done:
    if (csv && fclose(csv) != 0) rc = 1;
    mgpo_destroy(st);
    free(a.mem);
    free(mem);
    free(tok);
    free(tgt);
    free(pre_text.bytes);
    free(ft_text.bytes);
    return rc;
}
