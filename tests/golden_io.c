/* See golden_io.h. */
#include "golden_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned char *golden_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)len);
        if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *size = len > 0 ? (size_t)len : 0;
    return buf;
}

const unsigned char *golden_take(golden_reader *r, size_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = 0;
        return NULL;
    }
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

uint16_t golden_u16(golden_reader *r)
{
    const unsigned char *b = golden_take(r, 2);
    return b ? (uint16_t)(b[0] | b[1] << 8) : 0;
}

uint32_t golden_u32(golden_reader *r)
{
    const unsigned char *b = golden_take(r, 4);
    if (!b) return 0;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

uint64_t golden_u64(golden_reader *r)
{
    uint64_t lo = golden_u32(r);
    return lo | (uint64_t)golden_u32(r) << 32;
}

double golden_f64(golden_reader *r)
{
    uint64_t bits = golden_u64(r);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* n elements of `size` bytes, or NULL with ok cleared. */
static void *array_or_fail(golden_reader *r, size_t n, size_t size)
{
    void *out = r->ok ? malloc(n * size + 1) : NULL;
    if (!out) r->ok = 0;
    return out;
}

/* The array read, or NULL (freed) when a read ran past the end. */
static void *array_read(golden_reader *r, void *out)
{
    if (out && !r->ok) {
        free(out);
        return NULL;
    }
    return out;
}

float *golden_f32_array(golden_reader *r, size_t n)
{
    float *out = array_or_fail(r, n, sizeof *out);
    for (size_t i = 0; out && i < n; i++) {
        uint32_t bits = golden_u32(r);
        memcpy(&out[i], &bits, sizeof bits);
    }
    return array_read(r, out);
}

uint16_t *golden_u16_array(golden_reader *r, size_t n)
{
    uint16_t *out = array_or_fail(r, n, sizeof *out);
    for (size_t i = 0; out && i < n; i++) out[i] = golden_u16(r);
    return array_read(r, out);
}

const char *golden_read_header(golden_reader *r, const char magic[8], uint32_t version,
                               golden_header *h)
{
    memset(h, 0, sizeof *h);
    const unsigned char *m = golden_take(r, 8);
    if (!m || memcmp(m, magic, 8) != 0) return "bad magic";
    if (golden_u32(r) != version) return "unsupported format version";
    uint32_t name_len = golden_u32(r);
    const unsigned char *name = golden_take(r, name_len);
    if (!name || name_len >= sizeof h->name) return "bad case name";
    memcpy(h->name, name, name_len);

    mgpo_config *cfg = &h->config;
    *cfg = mgpo_config_default();
    uint32_t optimizer = golden_u32(r), sign = golden_u32(r), scope = golden_u32(r);
    uint32_t nesterov = golden_u32(r);
    if (optimizer > 1 || (sign != 1u && sign != 0xffffffffu) || scope > 1 || nesterov > 1)
        return "bad enum in header";
    cfg->optimizer = optimizer == 0 ? MGPO_OPTIMIZER_ADAMW : MGPO_OPTIMIZER_SGD;
    cfg->sign = sign == 1u ? MGPO_SIGN_ASCENT : MGPO_SIGN_LOOKAHEAD;
    cfg->scope = scope == 0 ? MGPO_SCOPE_GLOBAL : MGPO_SCOPE_TENSOR;
    cfg->nesterov = (int)nesterov;
    h->tensor_count = golden_u32(r);
    h->step_count = golden_u32(r);
    h->unit_count = golden_u32(r);
    h->flags = golden_u32(r);
    h->seed = golden_u32(r);
    h->noise_halving = golden_u32(r);
    uint32_t normalize = golden_u32(r), direction = golden_u32(r);
    cfg->seed = golden_u64(r);
    if (normalize > 1 || direction > 1) return "bad ablation switch in header";
    cfg->normalize = (int)normalize;
    cfg->direction = direction ? MGPO_DIRECTION_RANDOM : MGPO_DIRECTION_MOMENTUM;
    cfg->beta1 = golden_f64(r);
    cfg->beta2 = golden_f64(r);
    cfg->eps = golden_f64(r);
    cfg->weight_decay = golden_f64(r);
    cfg->momentum = golden_f64(r);
    cfg->dampening = golden_f64(r);
    cfg->rho = golden_f64(r);
    cfg->norm_ema = golden_f64(r);
    cfg->scale_max = golden_f64(r);
    cfg->norm_eps = golden_f64(r);
    cfg->max_grad_norm = golden_f64(r);
    cfg->restore_mode = MGPO_RESTORE_EXACT;
    cfg->num_threads = 1;
    if (!r->ok || h->tensor_count == 0 || h->tensor_count > GOLDEN_MAX_TENSORS ||
        h->step_count == 0 || h->step_count > GOLDEN_MAX_STEPS ||
        h->unit_count != (cfg->scope == MGPO_SCOPE_GLOBAL ? 1 : h->tensor_count))
        return "bad header";
    return NULL;
}

golden_unit_step golden_read_unit_step(golden_reader *r)
{
    golden_unit_step us;
    us.momentum_norm = golden_f64(r);
    us.scale = golden_f64(r);
    us.coefficient = golden_f64(r);
    us.grad_norm = golden_f64(r);
    us.grad_norm_ema = golden_f64(r);
    us.clamped = golden_u32(r) != 0;
    (void)golden_u32(r);
    return us;
}

uint32_t golden_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

float golden_noise(uint32_t seed, size_t t, size_t k, unsigned shift, size_t i)
{
    uint32_t key = golden_mix32((uint32_t)k ^ golden_mix32((uint32_t)t ^ golden_mix32(seed)));
    uint32_t h = golden_mix32((uint32_t)i ^ key);
    /* ((h >> 8) * 2^-24 - 0.5) * 2^-shift: exact whatever the order. */
    return (float)(((double)(h >> 8) * 0x1p-24 - 0.5) * ldexp(1.0, -(int)shift));
}

uint64_t golden_fnv1a(uint64_t h, uint64_t value, int bytes)
{
    for (int b = 0; b < bytes; b++) {
        h ^= (value >> (8 * b)) & 0xffu;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static int failures_printed;

void golden_reset_failures(void) { failures_printed = 0; }

void golden_check(golden_errors *es, const char *name, double got, double want, double rtol,
                  double floor, const char *where, size_t a, size_t b)
{
    double err = fabs(got - want);
    double allowed = rtol * fabs(want) + floor;
    es->checked++;
    if (err > es->max_abs) es->max_abs = err;
    if (want != 0.0 && err / fabs(want) > es->max_rel) es->max_rel = err / fabs(want);
    double used = allowed > 0.0 ? err / allowed : (err > 0.0 ? INFINITY : 0.0);
    if (!(used <= es->max_used)) es->max_used = used;
    if (!(err <= allowed)) { /* also catches NaN */
        es->failed++;
        if (failures_printed++ < 20)
            fprintf(stderr, "golden %s: %s %s [%zu][%zu]: got %.9g want %.9g (|err| %.3g > %.3g)\n",
                    name, es->what, where, a, b, got, want, err, allowed);
    }
}

void golden_print(const char *name, const golden_errors *es)
{
    if (es->checked == 0) return;
    fprintf(stderr, "golden %-28s %-14s max_abs %.3g max_rel %.3g tol_used %.3f (%zu checked, %zu failed)\n",
            name, es->what, es->max_abs, es->max_rel, es->max_used, es->checked, es->failed);
}
