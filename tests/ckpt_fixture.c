#include "ckpt_fixture.h"

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

mgpo_status fx_init(fx *f, const mgpo_config *cfg, size_t big)
{
    memset(f, 0, sizeof *f);
    const size_t counts[FX_TENSORS] = {big ? big : 5000, 37, 1, 300};
    mgpo_status s = mgpo_create(&f->st, cfg, NULL);
    for (size_t k = 0; k < FX_TENSORS && s == MGPO_OK; k++) {
        f->count[k] = counts[k];
        f->params[k] = malloc(counts[k] * sizeof(float));
        f->grads[k] = calloc(counts[k], sizeof(float));
        if (!f->params[k] || !f->grads[k]) return MGPO_ERR_OUT_OF_MEMORY;
        for (size_t i = 0; i < counts[k]; i++) f->params[k][i] = noise(k, i);
        mgpo_tensor_options o = mgpo_tensor_options_default();
        if (k == 3) {
            o.perturb = 0;
            o.lr_scale = 0.5;
            o.weight_decay_scale = 0.0;
        }
        s = mgpo_add_tensor(f->st, f->params[k], f->grads[k], counts[k], &o, NULL);
    }
    return s;
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
            f->grads[k][i] = 0.5f * f->params[k][i] + 0.1f * noise(t + 100, k * 7919 + i);
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
    default: return fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    }
}

mgpo_status fx_prepare(fx *f, int layout)
{
    mgpo_config cfg = fx_layout_config(layout);
    mgpo_status s = fx_init(f, &cfg, 64);
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

void fx_reseal(unsigned char *buf, size_t size)
{
    uint32_t crc = mgpo_crc32c(0, buf + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE);
    memcpy(buf + MGPO_CKPT_OFF_PAYLOAD_CRC, &crc, sizeof crc);
    crc = mgpo_crc32c(0, buf, MGPO_CKPT_OFF_HEADER_CRC);
    memcpy(buf + MGPO_CKPT_OFF_HEADER_CRC, &crc, sizeof crc);
}

int fx_state_is(const mgpo_state *st, const unsigned char *bytes, size_t size)
{
    size_t n = 0;
    unsigned char *now = fx_save(st, &n);
    int same = now && n == size && memcmp(now, bytes, size) == 0;
    free(now);
    return same;
}
