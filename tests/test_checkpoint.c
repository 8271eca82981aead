/* Checkpoints: resume equivalence, the validation error codes, atomic files. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"
#include "crc32c.h"
#include "test_util.h"

/* ---- Helpers --------------------------------------------------------------- */

typedef struct params_copy {
    float *data[FX_TENSORS];
} params_copy;

static void copy_params(const fx *f, params_copy *c)
{
    for (size_t k = 0; k < FX_TENSORS; k++) {
        c->data[k] = malloc(f->count[k] * sizeof(float));
        ck_assert_ptr_nonnull(c->data[k]);
        memcpy(c->data[k], f->params[k], f->count[k] * sizeof(float));
    }
}

static void put_params(fx *f, const params_copy *c)
{
    for (size_t k = 0; k < FX_TENSORS; k++)
        memcpy(f->params[k], c->data[k], f->count[k] * sizeof(float));
}

static int params_equal(const fx *f, const params_copy *c)
{
    for (size_t k = 0; k < FX_TENSORS; k++)
        if (memcmp(f->params[k], c->data[k], f->count[k] * sizeof(float)) != 0) return 0;
    return 1;
}

static void free_params(params_copy *c)
{
    for (size_t k = 0; k < FX_TENSORS; k++) free(c->data[k]);
}

static void init(fx *f, const mgpo_config *cfg)
{
    ck_assert_int_eq(fx_init(f, cfg, 0), MGPO_OK);
}

static void run(fx *f, uint64_t from, uint64_t to)
{
    for (uint64_t t = from; t < to; t++) ck_assert_int_eq(fx_iterate(f, t), MGPO_OK);
}

static void assert_same_run(const fx *a, const fx *b)
{
    for (size_t k = 0; k < FX_TENSORS; k++)
        ck_assert_mem_eq(a->params[k], b->params[k], a->count[k] * sizeof(float));
    size_t n = 0;
    unsigned char *ca = fx_save(a->st, &n);
    ck_assert_ptr_nonnull(ca);
    ck_assert(fx_state_is(b->st, ca, n));
    free(ca);
    mgpo_stats sa, sb;
    ck_assert_int_eq(mgpo_get_stats(a->st, &sa), MGPO_OK);
    ck_assert_int_eq(mgpo_get_stats(b->st, &sb), MGPO_OK);
    ck_assert_mem_eq(&sa, &sb, sizeof sa);
}

/* ---- Resume equivalence ------------------------------------------------------
 * Run K iterations; at iteration j save either while perturbed (after
 * perturb and the backward pass, before step) or clean (after step), with the
 * caller's parameters as they are at that moment.  A fresh state with the
 * same registrations loads it, the caller puts the saved parameters back, and
 * both continue to K: parameters and saved states must be bit-identical. */

enum { K = 8, J = 3 };

static void resume_config(const mgpo_config *config, int perturbed_save)
{
    const mgpo_config cfg = *config;
    const mgpo_restore_mode mode = cfg.restore_mode;
    fx a, b;
    init(&a, &cfg);
    run(&a, 0, J);
    unsigned char *ck = NULL;
    size_t size = 0;
    params_copy saved, clean;
    copy_params(&a, &clean);
    ck_assert_int_eq(mgpo_set_lr(a.st, fx_lr(J)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    fx_grads(&a, J);
    if (perturbed_save) {
        int p = 0;
        ck_assert_int_eq(mgpo_is_perturbed(a.st, &p), MGPO_OK);
        ck_assert_int_eq(p, 1);
        ck = fx_save(a.st, &size);
        copy_params(&a, &saved);
    }
    ck_assert_int_eq(mgpo_step(a.st), MGPO_OK);
    if (!perturbed_save) {
        ck = fx_save(a.st, &size);
        copy_params(&a, &saved);
    }
    ck_assert_ptr_nonnull(ck);
    run(&a, J + 1, K);

    init(&b, &cfg);
    run(&b, 0, 1); /* the loaded state must not depend on what b held */
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    put_params(&b, &saved);
    int p = -1;
    ck_assert_int_eq(mgpo_is_perturbed(b.st, &p), MGPO_OK);
    ck_assert_int_eq(p, perturbed_save);
    if (perturbed_save) {
        /* The backward pass of iteration J ran at the perturbed point. */
        fx_grads(&b, J);
        ck_assert_int_eq(mgpo_step(b.st), MGPO_OK);
    }
    run(&b, J + 1, K);
    assert_same_run(&a, &b);

    if (perturbed_save && mode == MGPO_RESTORE_EXACT) {
        /* Restoring right after a load gives the clean parameters exactly. */
        fx c;
        init(&c, &cfg);
        ck_assert_int_eq(mgpo_load(c.st, ck, size), MGPO_OK);
        put_params(&c, &saved);
        ck_assert(!params_equal(&c, &clean));
        ck_assert_int_eq(mgpo_restore(c.st), MGPO_OK);
        ck_assert(params_equal(&c, &clean));
        fx_free(&c);
    }
    free(ck);
    free_params(&saved);
    free_params(&clean);
    fx_free(&a);
    fx_free(&b);
}

static void resume_case(mgpo_optimizer opt, mgpo_scope scope, mgpo_restore_mode mode,
                        int perturbed_save)
{
    mgpo_config cfg = fx_config(opt, scope, mode);
    if (opt == MGPO_OPTIMIZER_SGD && scope == MGPO_SCOPE_TENSOR) cfg.nesterov = 1;
    resume_config(&cfg, perturbed_save);
}

/* The ablations resume too: a random direction is regenerated from the
 * stored seed and step, in both restore modes, saved perturbed or clean;
 * _i also switches APN off and the scope. */
START_TEST(test_resume_ablations)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, (_i & 4) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL,
                                (_i & 1) ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT);
    cfg.direction = MGPO_DIRECTION_RANDOM;
    cfg.seed = 0xFEEDFACE12345678ull;
    cfg.normalize = (_i & 4) ? 0 : 1;
    resume_config(&cfg, (_i & 2) != 0);
}
END_TEST

/* _i runs over the 16 combinations of optimizer, scope, restore mode and
 * whether the save is taken while perturbed. */
START_TEST(test_resume_equivalence)
{
    mgpo_optimizer opt = (_i & 1) ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    mgpo_scope scope = (_i & 2) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    mgpo_restore_mode mode = (_i & 4) ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT;
    resume_case(opt, scope, mode, (_i & 8) != 0);
}
END_TEST

/* A checkpoint of a state that has never stepped resumes to the same run. */
START_TEST(test_resume_from_start)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx a, b;
    init(&a, &cfg);
    size_t size = 0;
    unsigned char *ck = fx_save(a.st, &size);
    ck_assert_ptr_nonnull(ck);
    params_copy saved;
    copy_params(&a, &saved);
    run(&a, 0, K);
    init(&b, &cfg);
    run(&b, 0, 2);
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    put_params(&b, &saved);
    run(&b, 0, K);
    assert_same_run(&a, &b);
    free(ck);
    free_params(&saved);
    fx_free(&a);
    fx_free(&b);
}
END_TEST

/* Loading brings back the hyper-parameters of the checkpoint (lr, rho,
 * betas), keeping only the loading state's thread count. */
START_TEST(test_load_restores_config)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx a, b;
    init(&a, &cfg);
    run(&a, 0, 2);
    ck_assert_int_eq(mgpo_set_rho(a.st, 0.125), MGPO_OK);
    size_t size = 0;
    unsigned char *ck = fx_save(a.st, &size);
    mgpo_config other = cfg;
    other.beta1 = 0.5;
    other.num_threads = 2;
    other.normalize = 0;
    other.seed = 42;
    init(&b, &other);
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    mgpo_config got;
    ck_assert_int_eq(mgpo_get_config(b.st, &got), MGPO_OK);
    ck_assert(got.rho == 0.125 && got.beta1 == 0.9 && got.lr == fx_lr(1));
    ck_assert(got.normalize == 1 && got.seed == cfg.seed);
    ck_assert_int_eq(got.num_threads, 2);
    free(ck);
    fx_free(&a);
    fx_free(&b);
}
END_TEST

/* ---- Size and buffer API ---------------------------------------------------- */

START_TEST(test_size_per_parameter)
{
    /* AdamW: m and v (8 bytes a parameter); while perturbed in exact mode
     * also the clean copy of every perturbed parameter (4 more).  SGD: 4 and
     * 8.  The rest is a fixed header plus a record per tensor. */
    for (int sgd = 0; sgd < 2; sgd++) {
        mgpo_config cfg = fx_config(sgd ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW,
                                    MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
        fx f;
        init(&f, &cfg);
        size_t all = 0, perturbed = 0, fixed = MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE +
                                              MGPO_CKPT_UNIT_SIZE +
                                              FX_TENSORS * (MGPO_CKPT_ITEM_SIZE + MGPO_CKPT_SLOT_SIZE);
        for (size_t k = 0; k < FX_TENSORS; k++) all += f.count[k];
        perturbed = all - f.count[3];
        run(&f, 0, 2);
        size_t n = 0;
        ck_assert_int_eq(mgpo_checkpoint_size(f.st, &n), MGPO_OK);
        ck_assert_uint_eq(n, fixed + (sgd ? 4 : 8) * all);
        ck_assert_int_eq(mgpo_perturb(f.st), MGPO_OK);
        ck_assert_int_eq(mgpo_checkpoint_size(f.st, &n), MGPO_OK);
        ck_assert_uint_eq(n, fixed + (sgd ? 4 : 8) * all + 4 * perturbed);
        fx_free(&f);
    }
}
END_TEST

START_TEST(test_buffer_too_small)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx f;
    init(&f, &cfg);
    run(&f, 0, 2);
    size_t n = 0, written = 12345;
    ck_assert_int_eq(mgpo_checkpoint_size(f.st, &n), MGPO_OK);
    unsigned char *buf = malloc(n);
    memset(buf, 0xAB, n);
    ck_assert_int_eq(mgpo_save(f.st, buf, n - 1, &written), MGPO_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(written, 12345);
    for (size_t i = 0; i < n; i++) ck_assert_uint_eq(buf[i], 0xAB);
    ck_assert_int_eq(mgpo_save(f.st, buf, n, &written), MGPO_OK);
    ck_assert_uint_eq(written, n);
    free(buf);
    fx_free(&f);
}
END_TEST

START_TEST(test_crc32c)
{
    ck_assert_uint_eq(mgpo_crc32c(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(mgpo_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    unsigned char data[1031];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 131u + 7u);
    /* Every alignment and length, and piecewise continuation. */
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= sizeof data; len += 97) {
            uint32_t whole = mgpo_crc32c_sw(0, data + off, len);
            ck_assert_uint_eq(mgpo_crc32c(0, data + off, len), whole);
            size_t half = len / 3;
            ck_assert_uint_eq(
                mgpo_crc32c(mgpo_crc32c(0, data + off, half), data + off + half, len - half),
                whole);
        }
}
END_TEST

/* ---- Validation: each failure has its code and changes nothing --------------- */

typedef struct bad_fixture {
    fx f;
    unsigned char *ck; /* a valid checkpoint of f (perturbed) */
    size_t size;
    unsigned char *before; /* f's state bytes before each attempt */
    size_t before_size;
    params_copy params;
} bad_fixture;

static void bad_setup(bad_fixture *b, mgpo_optimizer opt)
{
    mgpo_config cfg = fx_config(opt, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    init(&b->f, &cfg);
    run(&b->f, 0, 3);
    ck_assert_int_eq(mgpo_perturb(b->f.st), MGPO_OK);
    b->ck = fx_save(b->f.st, &b->size);
    /* Move the state on, so that a wrongly accepted load would show. */
    fx_grads(&b->f, 3);
    ck_assert_int_eq(mgpo_step(b->f.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(b->f.st), MGPO_OK);
    b->before = fx_save(b->f.st, &b->before_size);
    copy_params(&b->f, &b->params);
    ck_assert_ptr_nonnull(b->ck);
    ck_assert_ptr_nonnull(b->before);
}

static void bad_teardown(bad_fixture *b)
{
    free(b->ck);
    free(b->before);
    free_params(&b->params);
    fx_free(&b->f);
}

/* Loads `bytes` into st, expects `code`, and checks nothing changed. */
#define expect_refused(b, st, bytes, size, code) \
    expect_refused_at(b, st, bytes, size, code, __LINE__)
static void expect_refused_at(bad_fixture *b, mgpo_state *st, const unsigned char *bytes,
                              size_t size, mgpo_status code, int line)
{
    unsigned char *snap = NULL;
    size_t snap_size = 0;
    snap = fx_save(st, &snap_size);
    mgpo_status got = mgpo_load(st, bytes, size);
    ck_assert_msg(got == code, "line %d: got %d, want %d", line, (int)got, (int)code);
    ck_assert(fx_state_is(st, snap, snap_size));
    ck_assert(params_equal(&b->f, &b->params));
    free(snap);
}

/* A copy of the valid checkpoint with `n` bytes at `at` replaced. */
static unsigned char *edited(const bad_fixture *b, size_t at, const void *value, size_t n,
                             int reseal)
{
    unsigned char *c = malloc(b->size);
    memcpy(c, b->ck, b->size);
    fx_store_le(c + at, value, n);
    if (reseal) fx_reseal(c, b->size);
    return c;
}

#define expect_edit_refused(b, at, value, n, reseal, code) \
    expect_edit_refused_at(b, at, value, n, reseal, code, __LINE__)
static void expect_edit_refused_at(bad_fixture *b, size_t at, const void *value, size_t n,
                                   int reseal, mgpo_status code, int line)
{
    unsigned char *c = edited(b, at, value, n, reseal);
    expect_refused_at(b, b->f.st, c, b->size, code, line);
    free(c);
}

START_TEST(test_refuses_header_errors)
{
    bad_fixture b;
    bad_setup(&b, MGPO_OPTIMIZER_ADAMW);
    mgpo_state *st = b.f.st;
    /* The control: the unedited checkpoint loads (then the moved-on state
     * is put back for the refusals). */
    ck_assert_int_eq(mgpo_load(st, b.ck, b.size), MGPO_OK);
    ck_assert(fx_state_is(st, b.ck, b.size));
    ck_assert_int_eq(mgpo_load(st, b.before, b.before_size), MGPO_OK);

    expect_edit_refused(&b, 0, "X", 1, 0, MGPO_ERR_CHECKPOINT_MAGIC);
    expect_edit_refused(&b, 7, "x", 1, 1, MGPO_ERR_CHECKPOINT_MAGIC);
    expect_refused(&b, st, (const unsigned char *)"MGQ", 3, MGPO_ERR_CHECKPOINT_MAGIC);
    expect_refused(&b, st, (const unsigned char *)"MGP", 3, MGPO_ERR_CHECKPOINT_TRUNCATED);
    expect_refused(&b, st, b.ck, 0, MGPO_ERR_CHECKPOINT_TRUNCATED);
    expect_refused(&b, st, b.ck, MGPO_CKPT_HEADER_SIZE - 1, MGPO_ERR_CHECKPOINT_TRUNCATED);

    /* Version 3 is little-endian: big-endian marks (with the version in
     * that order, as such a writer would put it) are refused, as are marks
     * of no byte order. */
    uint32_t swapped = __builtin_bswap32(MGPO_CKPT_ENDIAN_MARK), other = 0x04010203u;
    uint32_t v2_big = __builtin_bswap32(MGPO_CKPT_VERSION);
    unsigned char *big = edited(&b, MGPO_CKPT_OFF_ENDIAN, &swapped, 4, 0);
    fx_store_le(big + MGPO_CKPT_OFF_VERSION, &v2_big, 4);
    fx_reseal(big, b.size);
    expect_refused(&b, st, big, b.size, MGPO_ERR_CHECKPOINT_ENDIAN);
    free(big);
    expect_edit_refused(&b, MGPO_CKPT_OFF_ENDIAN, &other, 4, 1, MGPO_ERR_CHECKPOINT_ENDIAN);
    /* The swapped mark alone makes the version read 0x03000000. */
    expect_edit_refused(&b, MGPO_CKPT_OFF_ENDIAN, &swapped, 4, 1, MGPO_ERR_CHECKPOINT_VERSION);
    uint32_t v4 = MGPO_CKPT_VERSION + 1, v0 = 0, big_header = 64;
    expect_edit_refused(&b, MGPO_CKPT_OFF_VERSION, &v4, 4, 1, MGPO_ERR_CHECKPOINT_VERSION);
    expect_edit_refused(&b, MGPO_CKPT_OFF_VERSION, &v0, 4, 0, MGPO_ERR_CHECKPOINT_VERSION);
    /* Flag 1 is the caller's record (mgpo_save_with_user); bit 1 is unknown. */
    uint32_t unknown_flag = 2;
    expect_edit_refused(&b, MGPO_CKPT_OFF_FLAGS, &unknown_flag, 4, 1, MGPO_ERR_CHECKPOINT_VERSION);
    expect_edit_refused(&b, MGPO_CKPT_OFF_HEADER_SIZE, &big_header, 4, 1,
                        MGPO_ERR_CHECKPOINT_VERSION);
    expect_edit_refused(&b, MGPO_CKPT_OFF_RESERVED + 5, "\1", 1, 1, MGPO_ERR_CHECKPOINT_VERSION);

    /* A flipped bit in the header or the payload fails its checksum. */
    unsigned char flip = b.ck[MGPO_CKPT_OFF_TOTAL_SIZE] ^ 0x10;
    expect_edit_refused(&b, MGPO_CKPT_OFF_TOTAL_SIZE, &flip, 1, 0, MGPO_ERR_CHECKPOINT_CHECKSUM);
    for (size_t at = MGPO_CKPT_HEADER_SIZE; at < b.size; at += b.size / 7) {
        flip = b.ck[at] ^ 0x01;
        expect_edit_refused(&b, at, &flip, 1, 0, MGPO_ERR_CHECKPOINT_CHECKSUM);
    }
    flip = b.ck[b.size - 1] ^ 0x80;
    expect_edit_refused(&b, b.size - 1, &flip, 1, 0, MGPO_ERR_CHECKPOINT_CHECKSUM);

    /* Missing or extra bytes. */
    expect_refused(&b, st, b.ck, b.size - 1, MGPO_ERR_CHECKPOINT_TRUNCATED);
    expect_refused(&b, st, b.ck, b.size / 2, MGPO_ERR_CHECKPOINT_TRUNCATED);
    unsigned char *longer = calloc(b.size + 1, 1);
    memcpy(longer, b.ck, b.size);
    expect_refused(&b, st, longer, b.size + 1, MGPO_ERR_CHECKPOINT_TRUNCATED);
    free(longer);
    /* A consistent header over a payload cut short: the parser notices. */
    unsigned char *cut = malloc(b.size);
    memcpy(cut, b.ck, b.size);
    uint64_t total = b.size - 4;
    fx_store_le(cut + MGPO_CKPT_OFF_TOTAL_SIZE, &total, sizeof total);
    fx_reseal(cut, b.size - 4);
    expect_refused(&b, st, cut, b.size - 4, MGPO_ERR_CHECKPOINT_TRUNCATED);
    free(cut);
    bad_teardown(&b);
}
END_TEST

/* Offsets inside the payload, from docs/checkpoint-format.md. */
#define P(off) (MGPO_CKPT_HEADER_SIZE + (off))
#define UNIT0 P(MGPO_CKPT_STATE_SIZE)
#define ITEM(i) (UNIT0 + FX_TENSORS * MGPO_CKPT_UNIT_SIZE + (i) * MGPO_CKPT_ITEM_SIZE)
#define SLOT(i) (ITEM(FX_TENSORS) + (i) * MGPO_CKPT_SLOT_SIZE)

START_TEST(test_refuses_bad_records)
{
    bad_fixture b;
    bad_setup(&b, MGPO_OPTIMIZER_ADAMW);
    double nan = __builtin_nan(""), neg = -1.0, inf = __builtin_inf(), d_one = 1.0, zero = 0.0;
    uint32_t two = 2, one = 1, zero32 = 0, sgd = MGPO_OPTIMIZER_SGD;
    int32_t zero_sign = 0;
    float f_one = 1.0f, f_nan = __builtin_nanf("");
    uint64_t u64_one = 1, u64_two = 2;
    const mgpo_status L = MGPO_ERR_CHECKPOINT_LAYOUT;
    /* Configuration: structure must match, values must validate. */
    expect_edit_refused(&b, P(0), &sgd, 4, 1, L);           /* optimizer */
    expect_edit_refused(&b, P(4), &zero_sign, 4, 1, L);     /* sign */
    expect_edit_refused(&b, P(8), &two, 4, 1, L);           /* scope */
    expect_edit_refused(&b, P(12), &one, 4, 1, L);          /* restore mode */
    expect_edit_refused(&b, P(16), &two, 4, 1, L);          /* nesterov */
    expect_edit_refused(&b, P(20), &two, 4, 1, L);          /* unknown scale flag */
    expect_edit_refused(&b, P(24), &neg, 8, 1, L);          /* lr */
    expect_edit_refused(&b, P(32), &d_one, 8, 1, L);        /* beta1 = 1 */
    expect_edit_refused(&b, P(104), &zero, 8, 1, L);        /* norm_eps = 0 */
    expect_edit_refused(&b, P(80), &nan, 8, 1, L);          /* rho */
    /* Counters and statistics. */
    expect_edit_refused(&b, P(136), &two, 4, 1, L);         /* perturbed flag */
    expect_edit_refused(&b, P(136), &zero32, 4, 1, L);      /* clean, with applied c */
    expect_edit_refused(&b, P(140), &one, 4, 1, L);         /* direction differs */
    expect_edit_refused(&b, P(140), &two, 4, 1, L);         /* unknown direction */
    expect_edit_refused(&b, P(144), &u64_two, 8, 1, L);     /* stats.step != step (3) */
    expect_edit_refused(&b, P(152), &u64_one, 8, 1, L);     /* stats.skipped != skipped (0) */
    expect_edit_refused(&b, P(208), &zero32, 4, 1, L);      /* stats.perturbed != flag */
    expect_edit_refused(&b, P(208), &two, 4, 1, L);         /* stats.perturbed */
    expect_edit_refused(&b, P(212), &two, 4, 1, L);         /* stats.clipped */
    expect_edit_refused(&b, P(216), &u64_one, 8, 1, L);     /* item count */
    expect_edit_refused(&b, P(232), &u64_one, 8, 1, L);     /* unit count */
    /* Units. */
    expect_edit_refused(&b, UNIT0, &two, 4, 1, L);          /* gbar_set */
    expect_edit_refused(&b, UNIT0 + 8, &nan, 8, 1, L);      /* gbar */
    expect_edit_refused(&b, UNIT0 + 8, &neg, 8, 1, L);
    expect_edit_refused(&b, UNIT0 + 16, &inf, 8, 1, L);     /* gamma */
    expect_edit_refused(&b, UNIT0 + 40, &nan, 8, 1, L);     /* coefficient */
    /* Items. */
    expect_edit_refused(&b, ITEM(1), &one, 4, 1, L);        /* kind: LoRA */
    expect_edit_refused(&b, ITEM(3) + 4, &one, 4, 1, L);    /* perturb */
    expect_edit_refused(&b, ITEM(0) + 8, &two, 4, 1, L);    /* slot count */
    expect_edit_refused(&b, ITEM(2) + 16, &u64_one, 8, 1, L); /* unit */
    expect_edit_refused(&b, ITEM(0) + 24, &u64_one, 8, 1, L); /* a rank on a tensor */
    expect_edit_refused(&b, ITEM(0) + 60, &f_one, 4, 1, L);   /* W coefficient on a tensor */
    /* Slots. */
    expect_edit_refused(&b, SLOT(1), &u64_one, 8, 1, L);    /* count */
    expect_edit_refused(&b, SLOT(1) + 8, &u64_two, 8, 1, L);/* owning item */
    expect_edit_refused(&b, SLOT(3) + 16, &neg, 8, 1, L);   /* lr scale */
    expect_edit_refused(&b, SLOT(3) + 24, &neg, 8, 1, L);   /* weight decay scale */
    expect_edit_refused(&b, SLOT(0) + 32, &two, 4, 1, L);   /* perturb */
    expect_edit_refused(&b, SLOT(0) + 36, &one, 4, 1, L);   /* arrays: backup missing */
    expect_edit_refused(&b, SLOT(3) + 40, &f_one, 4, 1, L); /* applied on an unperturbed slot */
    expect_edit_refused(&b, SLOT(0) + 40, &f_nan, 4, 1, L); /* applied NaN */
    expect_edit_refused(&b, SLOT(0) + 44, &one, 4, 1, L);   /* parameter type bf16 */
    bad_teardown(&b);
}
END_TEST

/* A checkpoint only loads into a state registered the same way. */
START_TEST(test_refuses_other_layouts)
{
    bad_fixture b;
    bad_setup(&b, MGPO_OPTIMIZER_ADAMW);
    const mgpo_status L = MGPO_ERR_CHECKPOINT_LAYOUT;
    mgpo_config same = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    mgpo_config variants[3] = {same, same, same};
    variants[0].optimizer = MGPO_OPTIMIZER_SGD;
    variants[1].scope = MGPO_SCOPE_GLOBAL;
    variants[2].restore_mode = MGPO_RESTORE_LOW_MEMORY;
    for (size_t i = 0; i < 3; i++) {
        fx o;
        init(&o, &variants[i]);
        expect_refused(&b, o.st, b.ck, b.size, L);
        fx_free(&o);
    }
    /* Same configuration, different registrations. */
    for (int variant = 0; variant < 5; variant++) {
        mgpo_state *o = NULL;
        ck_assert_int_eq(mgpo_create(&o, &same, NULL), MGPO_OK);
        size_t counts[FX_TENSORS] = {5000, 37, 1, 300};
        size_t tensors = variant == 0 ? FX_TENSORS - 1 : FX_TENSORS;
        if (variant == 1) counts[1] = 38;
        float *bufs[FX_TENSORS] = {NULL};
        for (size_t k = 0; k < tensors; k++) {
            mgpo_tensor_options opt = mgpo_tensor_options_default();
            if (k == 3) {
                opt.perturb = variant == 2 ? 1 : 0;
                opt.lr_scale = variant == 3 ? 0.25 : 0.5;
                opt.weight_decay_scale = variant == 4 ? 1.0 : 0.0;
            }
            bufs[k] = calloc(counts[k], sizeof(float));
            ck_assert_int_eq(mgpo_add_tensor(o, bufs[k], NULL, counts[k], &opt, NULL), MGPO_OK);
        }
        size_t n = 0;
        unsigned char *snap = fx_save(o, &n);
        ck_assert_int_eq(mgpo_load(o, b.ck, b.size), L);
        ck_assert(fx_state_is(o, snap, n));
        free(snap);
        mgpo_destroy(o);
        for (size_t k = 0; k < FX_TENSORS; k++) free(bufs[k]);
    }
    bad_teardown(&b);
}
END_TEST

/* ---- Files ------------------------------------------------------------------ */

static char *make_dir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/mgpo-ckpt-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

/* Number of stray temporary files in dir. */
static int temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".mgpo-", 6) == 0) n++;
    closedir(d);
    return n;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

START_TEST(test_file_round_trip)
{
    char *dir = make_dir(), path[4096];
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_SGD, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx a, b;
    init(&a, &cfg);
    init(&b, &cfg);
    run(&a, 0, 2);
    ck_assert_int_eq(mgpo_save_file(a.st, path), MGPO_OK);
    ck_assert_int_eq(chmod(path, 0640), 0);
    run(&a, 2, 4);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    ck_assert_int_eq(mgpo_save_file(a.st, path), MGPO_OK); /* replaces */
    struct stat info;
    ck_assert_int_eq(stat(path, &info), 0);
    ck_assert_int_eq(info.st_mode & 0777, 0640); /* the replaced file's mode */
    ck_assert_int_eq(mgpo_load_file(b.st, path), MGPO_OK);
    size_t n = 0;
    unsigned char *ck = fx_save(a.st, &n);
    ck_assert(fx_state_is(b.st, ck, n));
    ck_assert_int_eq(info.st_size, (off_t)n);
    ck_assert_int_eq(temp_files(dir), 0);

    /* I/O failures leave the state alone. */
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/no/such/dir/ckpt.bin", dir);
    ck_assert_int_eq(mgpo_save_file(a.st, missing), MGPO_ERR_IO);
    ck_assert_int_eq(mgpo_load_file(b.st, missing), MGPO_ERR_IO);
    ck_assert_int_eq(mgpo_load_file(b.st, dir), MGPO_ERR_IO); /* a directory */
    ck_assert_int_eq(mgpo_save_file(a.st, ""), MGPO_ERR_INVALID_ARGUMENT);
    FILE *empty = fopen(missing + 0, "w"); /* cannot exist: the dir is missing */
    ck_assert_ptr_null(empty);
    snprintf(missing, sizeof missing, "%s/empty.bin", dir);
    empty = fopen(missing, "w");
    ck_assert_ptr_nonnull(empty);
    fclose(empty);
    ck_assert_int_eq(mgpo_load_file(b.st, missing), MGPO_ERR_CHECKPOINT_TRUNCATED);
    ck_assert(fx_state_is(b.st, ck, n));
    free(ck);
    fx_free(&a);
    fx_free(&b);
    remove_dir(dir);
    free(dir);
}
END_TEST

/* A write that fails half-way (the file size limit, as a full disk would)
 * reports MGPO_ERR_IO, removes its temporary file and leaves the old
 * checkpoint in place. */
START_TEST(test_failed_write_keeps_old_file)
{
    char *dir = make_dir(), path[4096];
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx small, big;
    ck_assert_int_eq(fx_init(&small, &cfg, 0), MGPO_OK);
    ck_assert_int_eq(fx_init(&big, &cfg, 100000), MGPO_OK);
    run(&small, 0, 2);
    run(&big, 0, 1);
    ck_assert_int_eq(mgpo_save_file(small.st, path), MGPO_OK);
    size_t n = 0;
    unsigned char *old = fx_save(small.st, &n);
    ck_assert_uint_lt(n, 65536);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {65536, 65536};
        setrlimit(RLIMIT_FSIZE, &lim);
        int code = mgpo_save_file(big.st, path) == MGPO_ERR_IO ? 0 : 1;
        /* Free what the parent allocated, so that memcheck (which follows
         * the child) sees no leak and keeps the exit code. */
        free(old);
        free(dir);
        fx_free(&small);
        fx_free(&big);
        _exit(code);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_int_eq(temp_files(dir), 0);

    fx other;
    init(&other, &cfg);
    ck_assert_int_eq(mgpo_load_file(other.st, path), MGPO_OK);
    ck_assert(fx_state_is(other.st, old, n));
    free(old);
    fx_free(&other);
    fx_free(&small);
    fx_free(&big);
    remove_dir(dir);
    free(dir);
}
END_TEST

/* A process killed (SIGKILL) while it saves over and over: the file at the
 * path always loads and holds one complete checkpoint, the first or one the
 * child finished. */
START_TEST(test_killed_save_keeps_a_checkpoint)
{
    char *dir = make_dir(), path[4096];
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    fx f, g;
    ck_assert_int_eq(fx_init(&f, &cfg, 200000), MGPO_OK);
    ck_assert_int_eq(fx_init(&g, &cfg, 200000), MGPO_OK);
    run(&f, 0, 1);
    ck_assert_int_eq(mgpo_save_file(f.st, path), MGPO_OK);
    size_t n0 = 0, n1 = 0;
    unsigned char *first = fx_save(f.st, &n0);
    run(&f, 1, 2);
    ck_assert_int_eq(mgpo_perturb(f.st), MGPO_OK);
    unsigned char *second = fx_save(f.st, &n1);

    int mid_save = 0;
    unsigned seed = (unsigned)time(NULL);
    for (int trial = 0; trial < 6; trial++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            for (;;)
                if (mgpo_save_file(f.st, path) != MGPO_OK) _exit(1);
        /* Wait until a save has begun (its temporary exists), then kill
         * at once (even trials) or after a random 0-20 ms (odd trials). */
        struct timespec tick = {0, 100000L};
        for (int waited = 0; temp_files(dir) == 0 && waited < 100000; waited++)
            nanosleep(&tick, NULL);
        struct timespec pause = {0, (long)(rand_r(&seed) % 20) * 1000000L};
        if (trial % 2) nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status));
        mid_save += temp_files(dir) > 0;
        ck_assert_int_eq(mgpo_load_file(g.st, path), MGPO_OK);
        ck_assert(fx_state_is(g.st, first, n0) || fx_state_is(g.st, second, n1));
        /* Stray temporaries of killed saves are the caller's to delete. */
        remove_dir(dir);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        ck_assert_int_eq(mgpo_save_file(g.st, path), MGPO_OK);
    }
    /* At least one kill landed inside a save (its temporary was left). */
    ck_assert_int_gt(mid_save, 0);
    free(first);
    free(second);
    fx_free(&f);
    fx_free(&g);
    remove_dir(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("resume");
    tcase_add_loop_test(tc, test_resume_equivalence, 0, 16);
    tcase_add_loop_test(tc, test_resume_ablations, 0, 8);
    tcase_add_test(tc, test_resume_from_start);
    tcase_add_test(tc, test_load_restores_config);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("format");
    tcase_add_test(tc, test_size_per_parameter);
    tcase_add_test(tc, test_buffer_too_small);
    tcase_add_test(tc, test_crc32c);
    tcase_add_test(tc, test_refuses_header_errors);
    tcase_add_test(tc, test_refuses_bad_records);
    tcase_add_test(tc, test_refuses_other_layouts);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, test_file_round_trip);
    tcase_add_test(tc, test_failed_write_keeps_old_file);
    tcase_add_test(tc, test_killed_save_keeps_a_checkpoint);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
