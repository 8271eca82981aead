/* Checkpoint byte order (format version 2, issue 16): the bytes mgpo_save
 * writes for a tiny state equal a sequence built here field by field in
 * little-endian order, on any host; version-1 files (the writer's byte
 * order, committed in tests/data) load on the byte order that wrote them
 * and are refused with MGPO_ERR_CHECKPOINT_ENDIAN on the other. */
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
    /* Slot. */
    u64(&want, 2);
    u64(&want, 0);
    f64(&want, 0.5);
    f64(&want, 2.0);
    u32(&want, 1);
    u32(&want, 0); /* no v (SGD), no backup (low memory) */
    f32(&want, sl->applied);
    u32(&want, 0);
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
    static const unsigned char mark_and_version[8] = {4, 3, 2, 1, 2, 0, 0, 0};
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

/* Size of a version-1 state record: version 2 appends the u64 seed. */
#define V1_STATE_SIZE 240u

/* The version-2 bytes a state loaded from the (little-endian) version-1
 * file `v1` must save, derived from the file alone (*size grows to the
 * version-2 size): the same records and arrays, version 2, the statistics
 * counters (payload offsets 144, 152, 208) equal to the state's counters
 * (120, 128, 136) instead of the zeros a version-1 writer left, a zero seed
 * appended to the state record, resealed.  Every slot's cached momentum_sq
 * is recomputed by the loader from m (an older library's sums may round
 * differently), so those 8 bytes are taken from `actual` after checking
 * that they agree with the recorded value to 1e-12 (relative). */
static unsigned char *expected_v2(const unsigned char *v1, size_t *size,
                                  const unsigned char *actual)
{
    const size_t grow = MGPO_CKPT_STATE_SIZE - V1_STATE_SIZE, cut = MGPO_CKPT_HEADER_SIZE + V1_STATE_SIZE;
    size_t n = *size + grow;
    unsigned char *e = calloc(1, n);
    memcpy(e, v1, cut);
    memcpy(e + cut + grow, v1 + cut, *size - cut);
    uint32_t two = 2;
    uint64_t total = n;
    fx_store_le(e + MGPO_CKPT_OFF_VERSION, &two, 4);
    fx_store_le(e + MGPO_CKPT_OFF_TOTAL_SIZE, &total, 8);
    unsigned char *payload = e + MGPO_CKPT_HEADER_SIZE;
    memcpy(payload + 144, payload + 120, 16);
    memcpy(payload + 208, payload + 136, 4);
    uint64_t units = rd_le(payload + 232, 8), items = rd_le(payload + 216, 8);
    uint64_t slots = rd_le(payload + 224, 8);
    size_t first = MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE + units * MGPO_CKPT_UNIT_SIZE +
                   items * MGPO_CKPT_ITEM_SIZE;
    for (uint64_t i = 0; i < slots; i++) {
        size_t at = first + i * MGPO_CKPT_SLOT_SIZE + MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ;
        double recorded = rd_f64(v1 + at - grow), now = rd_f64(actual + at);
        ck_assert_msg(fabs(now - recorded) <= 1e-12 * recorded, "slot %u momentum_sq %.17g vs %.17g",
                      (unsigned)i, now, recorded);
        memcpy(e + at, actual + at, 8);
    }
    fx_reseal(e, n);
    *size = n;
    return e;
}

/* The committed little-endian version-1 checkpoint of fixture layout L
 * loads into a fresh state registered the same way (step 0) and makes it
 * the state that wrote it: it saves (as version 2) the same records and
 * arrays (expected_v2), statistics counters included.  On a big-endian host
 * it is the other byte order: refused. */
START_TEST(test_version1_loads_on_its_byte_order)
{
    static const char *files[2] = {"ckpt-v1-le-layout0.bin", "ckpt-v1-le-layout1.bin"};
    int layout = _i;
    size_t size = 0;
    unsigned char *v1 = read_data(files[layout], &size);
    ck_assert_int_eq(v1[MGPO_CKPT_OFF_VERSION], 1);

    fx written, fresh;
    ck_assert_int_eq(fx_prepare(&written, layout), MGPO_OK);
    mgpo_config cfg = fx_layout_config(layout);
    ck_assert_int_eq(fx_init(&fresh, &cfg, 64), MGPO_OK);
    size_t n2 = 0, n0 = 0;
    unsigned char *v2 = fx_save(written.st, &n2), *empty = fx_save(fresh.st, &n0);
    /* Same layout; version 2's state record has 8 more bytes (the seed). */
    ck_assert_uint_eq(n2, size + MGPO_CKPT_STATE_SIZE - V1_STATE_SIZE);
    ck_assert(v2[MGPO_CKPT_OFF_VERSION] == 2 && memcmp(v1, v2, size) != 0);

    if (host_is_little_endian()) {
        ck_assert_int_eq(mgpo_load(fresh.st, v1, size), MGPO_OK);
        size_t n = 0, want_n = size;
        unsigned char *actual = fx_save(fresh.st, &n);
        ck_assert_uint_eq(n, n2);
        unsigned char *want = expected_v2(v1, &want_n, actual);
        ck_assert_uint_eq(want_n, n);
        ck_assert(memcmp(actual, want, n) == 0);
        free(actual);
        free(want);
        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(fresh.st, &s), MGPO_OK);
        ck_assert_uint_eq(s.step, 3);
        ck_assert_int_eq(s.perturbed, 1);
        ck_assert_int_eq(mgpo_load(fresh.st, empty, n0), MGPO_OK);
        /* A version-1 writer wrote zeros into the statistics counters. */
        uint64_t three = 3;
        fx_store_le(v1 + MGPO_CKPT_HEADER_SIZE + 144, &three, 8);
        fx_reseal(v1, size);
        ck_assert_int_eq(mgpo_load(fresh.st, v1, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        /* The same file as a big-endian writer would have marked it. */
        static const unsigned char big[8] = {1, 2, 3, 4, 0, 0, 0, 1};
        memcpy(v1 + MGPO_CKPT_OFF_ENDIAN, big, 8);
        ck_assert_int_eq(mgpo_load(fresh.st, v1, size), MGPO_ERR_CHECKPOINT_ENDIAN);
    } else {
        ck_assert_int_eq(mgpo_load(fresh.st, v1, size), MGPO_ERR_CHECKPOINT_ENDIAN);
    }
    ck_assert(fx_state_is(fresh.st, empty, n0));
    free(v1);
    free(v2);
    free(empty);
    fx_free(&written);
    fx_free(&fresh);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_endian");
    TCase *tc = tcase_create("endian");
    tcase_add_test(tc, test_save_writes_little_endian_fields);
    tcase_add_loop_test(tc, test_version1_loads_on_its_byte_order, 0, 2);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
