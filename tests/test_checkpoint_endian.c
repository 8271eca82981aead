/* Checkpoint byte order (format version 2, issue 16; version 3, issue 12):
 * the bytes mgpo_save writes for a tiny state equal a sequence built here
 * field by field in little-endian order, on any host; version-1 files (the
 * writer's byte order, committed in tests/data) load on the byte order that
 * wrote them and are refused with MGPO_ERR_CHECKPOINT_ENDIAN on the other;
 * version-2 files (little-endian, committed too) load on any host, mean
 * round-to-nearest and a loss scale of 1, and only into float32 states. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"
#include "crc32c.h"
#include "test_util.h"

/* ---- An independent little-endian encoder ------------------------------------ */

typedef struct bytes {
    unsigned char b[1024];
    size_t n;
} bytes;

static void le(bytes *o, uint64_t x, int width)
{
    ck_assert_uint_le(o->n + (size_t)width, sizeof o->b);
    for (int i = 0; i < width; i++) o->b[o->n++] = (unsigned char)(x >> (8 * i));
}
static void u32(bytes *o, uint32_t x) { le(o, x, 4); }
static void u64(bytes *o, uint64_t x) { le(o, x, 8); }
static void f64(bytes *o, double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    le(o, u, 8);
}
static void f32(bytes *o, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    le(o, u, 4);
}

/* SGD, low-memory restore, global scope, one tensor of two floats with its
 * own lr and decay scales; two steps, then perturbed. */
START_TEST(test_save_writes_little_endian_fields)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = MGPO_OPTIMIZER_SGD;
    c.restore_mode = MGPO_RESTORE_LOW_MEMORY;
    c.lr = 0.1;
    c.weight_decay = 0.01;
    c.rho = 0.5;
    c.max_grad_norm = 100.0;
    c.seed = 0x0123456789abcdefu; /* unused by the momentum direction, but saved */
    mgpo_state *st;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    float params[2] = {0.75f, -1.5f}, grads[2] = {0.25f, 0.125f};
    mgpo_tensor_options o = mgpo_tensor_options_default();
    o.lr_scale = 0.5;
    o.weight_decay_scale = 2.0;
    ck_assert_int_eq(mgpo_add_tensor(st, params, grads, 2, &o, NULL), MGPO_OK);
    /* The loss scale is saved (a power of two: the run is the same). */
    ck_assert_int_eq(mgpo_set_grad_scale(st, 0.5), MGPO_OK);
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        grads[0] = 0.5f * params[0];
        grads[1] = -0.25f * params[1];
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);

    mgpo_config k;
    mgpo_stats s;
    mgpo_unit_stats u;
    ck_assert_int_eq(mgpo_get_config(st, &k), MGPO_OK);
    ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_stats(st, 0, &u), MGPO_OK);
    ck_assert_uint_eq(s.step, 2);
    ck_assert_int_eq(s.perturbed, 1);
    const mgpo_slot *sl = &st->slots[0];
    const float *m = mgpo_internal_moment(st, 0, 0);
    ck_assert(sl->applied != 0.0f && m[0] != 0.0f);

    bytes want = {{0}, MGPO_CKPT_HEADER_SIZE};
    /* State record. */
    u32(&want, 1); /* SGD */
    u32(&want, (uint32_t)-1); /* lookahead */
    u32(&want, 0);            /* global */
    u32(&want, 1);            /* low memory */
    u32(&want, 0);            /* nesterov */
    u32(&want, 0);            /* scale flags: APN on */
    const double hyper[12] = {k.lr,       k.beta1,       k.beta2, k.eps,     k.weight_decay,
                              k.momentum, k.dampening,   k.rho,   k.norm_ema, k.scale_max,
                              k.norm_eps, k.max_grad_norm};
    for (int i = 0; i < 12; i++) f64(&want, hyper[i]);
    u64(&want, 2); /* step */
    u64(&want, 0); /* skipped */
    u32(&want, 1); /* perturbed */
    u32(&want, 0); /* direction: momentum */
    u64(&want, 2); /* statistics: step, skipped as mgpo_get_stats reports */
    u64(&want, 0);
    const double sd[6] = {s.lr, s.grad_norm, s.grad_norm_ema, s.momentum_norm,
                          s.perturbation_norm, s.perturbation_scale};
    for (int i = 0; i < 6; i++) f64(&want, sd[i]);
    u32(&want, 1); /* stats perturbed */
    u32(&want, (uint32_t)s.clipped);
    u64(&want, 1);
    u64(&want, 1);
    u64(&want, 1);
    u64(&want, k.seed);
    u32(&want, 0);   /* rounding: nearest */
    u32(&want, 0);   /* reserved */
    f64(&want, 0.5); /* the loss scale */
    ck_assert_uint_eq(want.n, MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE);
    /* Unit. */
    u32(&want, 1);
    u32(&want, 0);
    f64(&want, u.grad_norm_ema);
    f64(&want, u.grad_norm);
    f64(&want, u.momentum_norm);
    f64(&want, u.scale);
    f64(&want, u.coefficient);
    /* Item: a tensor. */
    u32(&want, 0);
    u32(&want, 1);
    u64(&want, 1);
    u64(&want, 0);
    for (int i = 0; i < 3; i++) u64(&want, 0);
    f64(&want, 0.0);
    u32(&want, 0);
    f32(&want, 0.0f);
    u32(&want, 0); /* W's type: none, float32 */
    u32(&want, 0);
    /* Slot. */
    u64(&want, 2);
    u64(&want, 0);
    f64(&want, 0.5);
    f64(&want, 2.0);
    u32(&want, 1);
    u32(&want, 0); /* no v (SGD), no backup (low memory) */
    f32(&want, sl->applied);
    u32(&want, 0); /* parameter type float32 */
    f64(&want, sl->momentum_sq);
    /* Arrays: m. */
    f32(&want, m[0]);
    f32(&want, m[1]);
    /* Header, over the payload just built. */
    size_t total = want.n;
    uint32_t payload_crc = mgpo_crc32c(0, want.b + MGPO_CKPT_HEADER_SIZE,
                                       total - MGPO_CKPT_HEADER_SIZE);
    bytes head = {{0}, 0};
    memcpy(head.b, "MGPOCKPT", 8);
    head.n = 8;
    static const unsigned char mark_and_version[8] = {4, 3, 2, 1, 3, 0, 0, 0};
    memcpy(head.b + 8, mark_and_version, 8);
    head.n = 16;
    u32(&head, 48);
    u32(&head, 0);
    u64(&head, total);
    u32(&head, payload_crc);
    u64(&head, 0);
    u32(&head, mgpo_crc32c(0, head.b, 44));
    memcpy(want.b, head.b, MGPO_CKPT_HEADER_SIZE);

    size_t size = 0;
    unsigned char *got = fx_save(st, &size);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(size, total);
    for (size_t i = 0; i < size; i++)
        ck_assert_msg(got[i] == want.b[i], "byte %zu: 0x%02x, want 0x%02x", i, got[i],
                      want.b[i]);
    /* And it loads back (the reader agrees with the writer). */
    ck_assert_int_eq(mgpo_load(st, got, size), MGPO_OK);
    ck_assert(fx_state_is(st, got, size));
    free(got);
    mgpo_destroy(st);
}
END_TEST

/* ---- Version 1 -------------------------------------------------------------------- */

static int host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static unsigned char *read_data(const char *name, size_t *size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", MGPO_TEST_DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    unsigned char *buf = malloc(1 << 16);
    *size = fread(buf, 1, 1 << 16, f);
    fclose(f);
    ck_assert_uint_gt(*size, MGPO_CKPT_HEADER_SIZE);
    return buf;
}

/* Little-endian field readers over a checkpoint's bytes. */
static uint64_t rd_le(const unsigned char *at, int width)
{
    uint64_t x = 0;
    for (int i = 0; i < width; i++) x |= (uint64_t)at[i] << (8 * i);
    return x;
}

static double rd_f64(const unsigned char *at)
{
    uint64_t u = rd_le(at, 8);
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The version-3 bytes a state loaded from the (little-endian) version-1
 * or version-2 file `old` must save, derived from the file alone (*size
 * grows to the version-3 size): the same records and arrays, version 3, the
 * state record grown to its version-3 size (a zero seed for version 1, then
 * rounding 0 = nearest, a zero reserved word and a loss scale of 1.0), 8
 * zero bytes (W's type: float32, and a reserved word) appended to each item
 * record, the statistics counters (payload offsets 144, 152, 208) equal to
 * the state's counters (120, 128, 136) instead of the zeros a version-1
 * writer left, resealed.  A version-1 slot's cached momentum_sq is
 * recomputed by the loader from m (an older library's sums may round
 * differently), so those 8 bytes are taken from `actual` after checking
 * that they agree with the recorded value to 1e-12 (relative). */
static unsigned char *expected_v3(const unsigned char *old, size_t *size,
                                  const unsigned char *actual)
{
    const int v1 = old[MGPO_CKPT_OFF_VERSION] == 1;
    const size_t old_state = v1 ? MGPO_CKPT_STATE_SIZE_V1 : MGPO_CKPT_STATE_SIZE_V2;
    const unsigned char *op = old + MGPO_CKPT_HEADER_SIZE;
    uint64_t units = rd_le(op + 232, 8), items = rd_le(op + 216, 8), slots = rd_le(op + 224, 8);
    const size_t item_grow = MGPO_CKPT_ITEM_SIZE - MGPO_CKPT_ITEM_SIZE_V2;
    size_t n = *size + (MGPO_CKPT_STATE_SIZE - old_state) + items * item_grow;
    unsigned char *e = calloc(1, n), *payload = e + MGPO_CKPT_HEADER_SIZE;
    memcpy(e, old, MGPO_CKPT_HEADER_SIZE + old_state);
    uint32_t three = 3;
    uint64_t total = n;
    double one = 1.0;
    fx_store_le(e + MGPO_CKPT_OFF_VERSION, &three, 4);
    fx_store_le(e + MGPO_CKPT_OFF_TOTAL_SIZE, &total, 8);
    fx_store_le(payload + MGPO_CKPT_STATE_OFF_GRAD_SCALE, &one, 8);
    memcpy(payload + 144, payload + 120, 16);
    memcpy(payload + 208, payload + 136, 4);
    /* Units, then items grown one by one, then slots and arrays as they are. */
    const unsigned char *from = op + old_state;
    unsigned char *to = payload + MGPO_CKPT_STATE_SIZE;
    memcpy(to, from, units * MGPO_CKPT_UNIT_SIZE);
    from += units * MGPO_CKPT_UNIT_SIZE;
    to += units * MGPO_CKPT_UNIT_SIZE;
    for (uint64_t i = 0; i < items; i++) {
        memcpy(to, from, MGPO_CKPT_ITEM_SIZE_V2);
        from += MGPO_CKPT_ITEM_SIZE_V2;
        to += MGPO_CKPT_ITEM_SIZE;
    }
    memcpy(to, from, *size - (size_t)(from - old));
    size_t first = (size_t)(to - e);
    for (uint64_t i = 0; v1 && i < slots; i++) {
        size_t at = first + i * MGPO_CKPT_SLOT_SIZE + MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ;
        double recorded = rd_f64(from + i * MGPO_CKPT_SLOT_SIZE + MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ),
               now = rd_f64(actual + at);
        ck_assert_msg(fabs(now - recorded) <= 1e-12 * recorded, "slot %u momentum_sq %.17g vs %.17g",
                      (unsigned)i, now, recorded);
        memcpy(e + at, actual + at, 8);
    }
    fx_reseal(e, n);
    *size = n;
    return e;
}

/* A state registered as fixture layout `layout` (64 floats in tensor 0),
 * but with tensor `typed` (or none, -1) of bf16 parameters. */
static void layout_state(fx *f, int layout, int typed)
{
    mgpo_dtype types[FX_TENSORS] = {MGPO_DTYPE_FLOAT32};
    if (typed >= 0) types[typed] = MGPO_DTYPE_BFLOAT16;
    mgpo_config cfg = fx_layout_config(layout);
    ck_assert_int_eq(fx_init_typed(f, &cfg, 64, types), MGPO_OK);
}

/* The committed little-endian version-1 (`version` 1) or version-2 file of
 * fixture layout L loads into a fresh state registered the same way (step
 * 0, with stochastic rounding configured and a loss scale of 1024 set, which
 * the old file overrides) and makes it the state that wrote it: it saves (as
 * version 3) the same records and arrays (expected_v3), statistics counters
 * included, round-to-nearest and a loss scale of 1.  Into a state whose
 * tensor k has bf16 parameters (a master array, which no old file has) it
 * is refused with CHECKPOINT_LAYOUT.  A version-1 file on a big-endian host
 * is the other byte order: refused. */
static void old_version_loads(int version, int layout)
{
    static const char *files[2][2] = {{"ckpt-v1-le-layout0.bin", "ckpt-v1-le-layout1.bin"},
                                      {"ckpt-v2-layout0.bin", "ckpt-v2-layout1.bin"}};
    size_t size = 0;
    unsigned char *old = read_data(files[version - 1][layout], &size);
    ck_assert_int_eq(old[MGPO_CKPT_OFF_VERSION], version);
    const int loads = version == 2 || host_is_little_endian();

    fx written, fresh;
    ck_assert_int_eq(fx_prepare(&written, layout), MGPO_OK);
    mgpo_config cfg = fx_layout_config(layout);
    cfg.rounding = MGPO_ROUNDING_STOCHASTIC;
    ck_assert_int_eq(fx_init(&fresh, &cfg, 64), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad_scale(fresh.st, 1024.0), MGPO_OK);
    size_t n3 = 0, n0 = 0;
    unsigned char *v3 = fx_save(written.st, &n3), *empty = fx_save(fresh.st, &n0);
    /* Same layout; version 3's records are longer. */
    const size_t old_state = version == 1 ? MGPO_CKPT_STATE_SIZE_V1 : MGPO_CKPT_STATE_SIZE_V2;
    ck_assert_uint_eq(n3, size + MGPO_CKPT_STATE_SIZE - old_state +
                              FX_TENSORS * (MGPO_CKPT_ITEM_SIZE - MGPO_CKPT_ITEM_SIZE_V2));
    ck_assert(v3[MGPO_CKPT_OFF_VERSION] == 3 && memcmp(old, v3, size) != 0);

    if (loads) {
        ck_assert_int_eq(mgpo_load(fresh.st, old, size), MGPO_OK);
        size_t n = 0, want_n = size;
        unsigned char *actual = fx_save(fresh.st, &n);
        ck_assert_uint_eq(n, n3);
        unsigned char *want = expected_v3(old, &want_n, actual);
        ck_assert_uint_eq(want_n, n);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(actual[i] == want[i], "byte %zu: 0x%02x, want 0x%02x", i, actual[i],
                          want[i]);
        free(actual);
        free(want);
        mgpo_stats s;
        mgpo_config got;
        ck_assert_int_eq(mgpo_get_stats(fresh.st, &s), MGPO_OK);
        ck_assert_int_eq(mgpo_get_config(fresh.st, &got), MGPO_OK);
        ck_assert_uint_eq(s.step, 3);
        ck_assert_int_eq(s.perturbed, 1);
        ck_assert_int_eq(got.rounding, MGPO_ROUNDING_NEAREST);
        ck_assert_int_eq(mgpo_load(fresh.st, empty, n0), MGPO_OK);
        /* Old files load only into float32 states. */
        for (int typed = 0; typed < FX_TENSORS; typed++) {
            fx mixed;
            layout_state(&mixed, layout, typed);
            size_t nm = 0;
            unsigned char *before = fx_save(mixed.st, &nm);
            ck_assert_int_eq(mgpo_load(mixed.st, old, size), MGPO_ERR_CHECKPOINT_LAYOUT);
            ck_assert(fx_state_is(mixed.st, before, nm));
            free(before);
            fx_free(&mixed);
        }
        /* The control: typed = -1 registers the fixture's layout. */
        fx plain;
        layout_state(&plain, layout, -1);
        ck_assert_int_eq(mgpo_load(plain.st, old, size), MGPO_OK);
        fx_free(&plain);
        if (version == 1) {
            /* A version-1 writer wrote zeros into the statistics counters. */
            uint64_t three = 3;
            fx_store_le(old + MGPO_CKPT_HEADER_SIZE + 144, &three, 8);
            fx_reseal(old, size);
            ck_assert_int_eq(mgpo_load(fresh.st, old, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        } else {
            /* A version-2 slot record's parameter type is a reserved 0. */
            size_t slot0 = MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE_V2 +
                           FX_TENSORS * MGPO_CKPT_ITEM_SIZE_V2 +
                           (layout == 0 ? 1 : FX_TENSORS) * MGPO_CKPT_UNIT_SIZE;
            uint32_t bf16 = MGPO_DTYPE_BFLOAT16;
            fx_store_le(old + slot0 + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &bf16, 4);
            fx_reseal(old, size);
            ck_assert_int_eq(mgpo_load(fresh.st, old, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        }
        /* The same file as a big-endian writer would have marked it. */
        unsigned char big[8] = {1, 2, 3, 4, 0, 0, 0, (unsigned char)version};
        memcpy(old + MGPO_CKPT_OFF_ENDIAN, big, 8);
        fx_reseal(old, size);
        ck_assert_int_eq(mgpo_load(fresh.st, old, size), MGPO_ERR_CHECKPOINT_ENDIAN);
    } else {
        ck_assert_int_eq(mgpo_load(fresh.st, old, size), MGPO_ERR_CHECKPOINT_ENDIAN);
    }
    ck_assert(fx_state_is(fresh.st, empty, n0));
    free(old);
    free(v3);
    free(empty);
    fx_free(&written);
    fx_free(&fresh);
}

START_TEST(test_version1_loads_on_its_byte_order)
{
    old_version_loads(1, _i);
}
END_TEST

/* Version-2 files were little-endian: they load on every host. */
START_TEST(test_version2_loads)
{
    old_version_loads(2, _i);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_endian");
    TCase *tc = tcase_create("endian");
    tcase_add_test(tc, test_save_writes_little_endian_fields);
    tcase_add_loop_test(tc, test_version1_loads_on_its_byte_order, 0, 2);
    tcase_add_loop_test(tc, test_version2_loads, 0, 2);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
