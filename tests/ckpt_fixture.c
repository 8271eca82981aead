#include "ckpt_fixture.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "checkpoint_format.h"
#include "crc32c.h"

mgpo_config fx_config(mgpo_optimizer opt, mgpo_scope scope, mgpo_restore_mode mode)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = opt;
    c.scope = scope;
    c.restore_mode = mode;
    c.lr = 1e-2;
    c.weight_decay = 0.01;
    c.rho = 0.05;
    return c;
}

/* A deterministic value in [-1, 1) from two integers (splitmix64). */
static float noise(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
}

mgpo_tensor_options fx_options(size_t k)
{
    mgpo_tensor_options o = mgpo_tensor_options_default();
    if (k == 3) {
        o.perturb = 0;
        o.lr_scale = 0.5;
        o.weight_decay_scale = 0.0;
    }
    return o;
}

float fx_param(const fx *f, size_t k, size_t i)
{
    const uint16_t *h = (const uint16_t *)(const void *)f->params[k];
    switch (f->type[k]) {
    case MGPO_DTYPE_BFLOAT16: return mgpo_bf16_to_f32(h[i]);
    case MGPO_DTYPE_FLOAT16: return mgpo_f16_to_f32(h[i]);
    default: return f->params[k][i];
    }
}

mgpo_status fx_init_typed(fx *f, const mgpo_config *cfg, size_t big,
                          const mgpo_dtype types[FX_TENSORS])
{
    memset(f, 0, sizeof *f);
    f->loss_scale = 1.0f;
    const size_t counts[FX_TENSORS] = {big ? big : 5000, 37, 1, 300};
    mgpo_status s = mgpo_create(&f->st, cfg, NULL);
    for (size_t k = 0; k < FX_TENSORS && s == MGPO_OK; k++) {
        f->count[k] = counts[k];
        f->type[k] = types[k];
        f->params[k] = calloc(counts[k], sizeof(float));
        f->grads[k] = calloc(counts[k], sizeof(float));
        if (!f->params[k] || !f->grads[k]) return MGPO_ERR_OUT_OF_MEMORY;
        uint16_t *h = (uint16_t *)(void *)f->params[k];
        for (size_t i = 0; i < counts[k]; i++) {
            float x = noise(k, i);
            if (types[k] == MGPO_DTYPE_BFLOAT16) h[i] = mgpo_f32_to_bf16(x);
            else if (types[k] == MGPO_DTYPE_FLOAT16) h[i] = mgpo_f32_to_f16(x);
            else f->params[k][i] = x;
        }
        mgpo_tensor_options o = fx_options(k);
        s = mgpo_add_tensor_typed(f->st, f->params[k], types[k], f->grads[k], MGPO_DTYPE_FLOAT32,
                                  counts[k], &o, NULL);
    }
    return s;
}

mgpo_status fx_init(fx *f, const mgpo_config *cfg, size_t big)
{
    static const mgpo_dtype float32[FX_TENSORS] = {MGPO_DTYPE_FLOAT32};
    return fx_init_typed(f, cfg, big, float32);
}

void fx_free(fx *f)
{
    mgpo_destroy(f->st);
    for (size_t k = 0; k < FX_TENSORS; k++) {
        free(f->params[k]);
        free(f->grads[k]);
    }
    memset(f, 0, sizeof *f);
}

double fx_lr(uint64_t t) { return t < 2 ? 5e-3 * (double)(t + 1) : 1e-2 / (double)(t - 1); }

void fx_grads(fx *f, uint64_t t)
{
    for (size_t k = 0; k < FX_TENSORS; k++)
        for (size_t i = 0; i < f->count[k]; i++)
            f->grads[k][i] =
                f->loss_scale * (0.5f * fx_param(f, k, i) + 0.1f * noise(t + 100, k * 7919 + i));
}

mgpo_status fx_iterate(fx *f, uint64_t t)
{
    mgpo_status s = mgpo_set_lr(f->st, fx_lr(t));
    if (s == MGPO_OK) s = mgpo_perturb(f->st);
    if (s != MGPO_OK) return s;
    fx_grads(f, t);
    return mgpo_step(f->st);
}

mgpo_config fx_layout_config(int layout)
{
    switch (layout) {
    case 0: return fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    case 1: {
        mgpo_config c = fx_config(MGPO_OPTIMIZER_SGD, MGPO_SCOPE_TENSOR, MGPO_RESTORE_LOW_MEMORY);
        c.nesterov = 1;
        return c;
    }
    case 2: return fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    default: {
        mgpo_config c = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
        c.rounding = MGPO_ROUNDING_STOCHASTIC;
        c.seed = 0x5EED;
        /* Large enough that the perturbation moves bf16 values. */
        c.rho = 0.5;
        return c;
    }
    }
}

#define FX_LOSS_SCALE 1024.0f

mgpo_status fx_init_layout(fx *f, int layout)
{
    static const mgpo_dtype mixed[FX_TENSORS] = {MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16,
                                                 MGPO_DTYPE_FLOAT32, MGPO_DTYPE_FLOAT32};
    static const mgpo_dtype float32[FX_TENSORS] = {MGPO_DTYPE_FLOAT32};
    mgpo_config cfg = fx_layout_config(layout);
    mgpo_status s = fx_init_typed(f, &cfg, 64, layout == 3 ? mixed : float32);
    if (layout == 3) f->loss_scale = FX_LOSS_SCALE;
    return s;
}

mgpo_status fx_prepare(fx *f, int layout)
{
    mgpo_status s = fx_init_layout(f, layout);
    if (s == MGPO_OK && layout == 3) s = mgpo_set_grad_scale(f->st, FX_LOSS_SCALE);
    for (uint64_t t = 0; t < 3 && s == MGPO_OK; t++) s = fx_iterate(f, t);
    if (s == MGPO_OK && layout != 2) s = mgpo_perturb(f->st);
    return s;
}

unsigned char *fx_save(const mgpo_state *st, size_t *size)
{
    size_t n = 0, written = 0;
    if (mgpo_checkpoint_size(st, &n) != MGPO_OK) return NULL;
    unsigned char *buf = malloc(n);
    if (buf && mgpo_save(st, buf, n, &written) != MGPO_OK) {
        free(buf);
        return NULL;
    }
    *size = written;
    return buf;
}

void fx_store_le(unsigned char *at, const void *value, size_t n)
{
    uint64_t x = 0;
    if (n == 4) {
        uint32_t v;
        memcpy(&v, value, 4);
        x = v;
    } else if (n == 8) {
        memcpy(&x, value, 8);
    } else {
        memcpy(at, value, n);
        return;
    }
    for (size_t i = 0; i < n; i++) at[i] = (unsigned char)(x >> (8 * i));
}

void fx_reseal(unsigned char *buf, size_t size)
{
    uint32_t crc = mgpo_crc32c(0, buf + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE);
    fx_store_le(buf + MGPO_CKPT_OFF_PAYLOAD_CRC, &crc, sizeof crc);
    crc = mgpo_crc32c(0, buf, MGPO_CKPT_OFF_HEADER_CRC);
    fx_store_le(buf + MGPO_CKPT_OFF_HEADER_CRC, &crc, sizeof crc);
}

static uint64_t load_le64(const unsigned char *at)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)at[i] << (8 * i);
    return x;
}

unsigned char *fx_downgrade_v2(const unsigned char *v3, size_t size, size_t *v2_size)
{
    const size_t state = MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE;
    if (size < state) return NULL;
    const unsigned char *p = v3 + MGPO_CKPT_HEADER_SIZE;
    size_t items = (size_t)load_le64(p + 216), units = (size_t)load_le64(p + 232);
    size_t units_end = state + units * MGPO_CKPT_UNIT_SIZE;
    if (size < units_end + items * MGPO_CKPT_ITEM_SIZE) return NULL;
    size_t n = size - (MGPO_CKPT_STATE_SIZE - MGPO_CKPT_STATE_SIZE_V2) -
               items * (MGPO_CKPT_ITEM_SIZE - MGPO_CKPT_ITEM_SIZE_V2);
    unsigned char *out = malloc(n), *to = out;
    if (!out) return NULL;
    memcpy(to, v3, MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE_V2);
    to += MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE_V2;
    memcpy(to, v3 + state, units * MGPO_CKPT_UNIT_SIZE);
    to += units * MGPO_CKPT_UNIT_SIZE;
    for (size_t i = 0; i < items; i++, to += MGPO_CKPT_ITEM_SIZE_V2)
        memcpy(to, v3 + units_end + i * MGPO_CKPT_ITEM_SIZE, MGPO_CKPT_ITEM_SIZE_V2);
    size_t rest = units_end + items * MGPO_CKPT_ITEM_SIZE;
    memcpy(to, v3 + rest, size - rest);
    uint32_t two = MGPO_CKPT_VERSION_FLOAT32;
    uint64_t total = n;
    fx_store_le(out + MGPO_CKPT_OFF_VERSION, &two, sizeof two);
    fx_store_le(out + MGPO_CKPT_OFF_TOTAL_SIZE, &total, sizeof total);
    fx_reseal(out, n);
    *v2_size = n;
    return out;
}

int fx_state_is(const mgpo_state *st, const unsigned char *bytes, size_t size)
{
    size_t n = 0;
    unsigned char *now = fx_save(st, &n);
    int same = now && n == size && memcmp(now, bytes, size) == 0;
    free(now);
    return same;
}

/* ---- Random corruption (the fuzz-style tests) ---------------------------- */

static uint64_t rnd(uint64_t *rng_state)
{
    /* xorshift64*: a fixed, portable sequence for a given seed. */
    *rng_state ^= *rng_state >> 12;
    *rng_state ^= *rng_state << 25;
    *rng_state ^= *rng_state >> 27;
    return *rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t below(uint64_t *rng, size_t n) { return n ? (size_t)(rnd(rng) % n) : 0; }

/* Values that tend to break parsers: zero, one, two, all-ones, sign bits,
 * NaN and infinity patterns. */
static const uint64_t interesting[] = {0, 1, 2, 0xFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull,
                                       0x80000000ull, 0x7FF8000000000000ull,
                                       0x7FF0000000000000ull, 0x7FC00000ull,
                                       0x7F800000ull, 0xBFF0000000000000ull,
                                       0x3FF0000000000000ull, 1ull << 40};

size_t fx_mutate(unsigned char *buf, size_t size, uint64_t *rng)
{
    size_t kind = below(rng, 5), n = size;
    switch (kind) {
    case 0: /* flip 1-4 bits or bytes, checksums left stale */
    case 2: /* the same, checksums recomputed */
        for (size_t k = 1 + below(rng, 4); k > 0; k--)
            buf[below(rng, n)] ^= (unsigned char)(1 + below(rng, 255));
        break;
    case 1: /* truncate, header left as it was */
        n = below(rng, size);
        break;
    case 3: /* truncate, header made consistent (total size, checksums) */
        n = MGPO_CKPT_HEADER_SIZE + below(rng, size - MGPO_CKPT_HEADER_SIZE);
        {
            uint64_t total = n;
            fx_store_le(buf + MGPO_CKPT_OFF_TOTAL_SIZE, &total, sizeof total);
        }
        break;
    default: { /* an aligned field set to an interesting value */
        size_t width = below(rng, 2) ? 8 : 4, at = below(rng, size / width) * width;
        uint64_t v = interesting[below(rng, sizeof interesting / sizeof interesting[0])];
        uint32_t low = (uint32_t)v;
        fx_store_le(buf + at, width == 8 ? (const void *)&v : (const void *)&low, width);
        break;
    }
    }
    if (kind >= 2 && n >= MGPO_CKPT_HEADER_SIZE) fx_reseal(buf, n);
    return n;
}

int fx_params_same(void *ctx)
{
    const fx_params_check *c = ctx;
    for (size_t k = 0; k < FX_TENSORS; k++)
        if (memcmp(c->copy[k], c->f->params[k], c->f->count[k] * sizeof(float)) != 0) return 0;
    return 1;
}

int fx_corrupt_rounds(mgpo_state *st, const unsigned char *valid, size_t size, int rounds,
                      uint64_t seed, unsigned seen[FX_CODES], int (*check)(void *), void *ctx)
{
    uint64_t rng = seed ? seed : 1;
    unsigned char *buf = malloc(size);
    int failed = buf ? -1 : 0;
    for (int round = 0; round < rounds && failed < 0; round++) {
        memcpy(buf, valid, size);
        size_t n = fx_mutate(buf, size, &rng);
        mgpo_status s = mgpo_load(st, buf, n);
        bool ok = s == MGPO_OK ||
                  (s >= MGPO_ERR_CHECKPOINT_MAGIC && s <= MGPO_ERR_CHECKPOINT_TRUNCATED);
        if (ok) seen[s]++;
        /* Accepted: exactly those bytes; then back to the valid state. */
        if (ok && s == MGPO_OK)
            ok = fx_state_is(st, buf, n) && mgpo_load(st, valid, size) == MGPO_OK;
        ok = ok && fx_state_is(st, valid, size) && (!check || check(ctx));
        if (!ok) failed = round;
    }
    free(buf);
    return failed;
}
