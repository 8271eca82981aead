/* Same bits everywhere: a fixed small model trained for 100 steps gives the
 * same final parameters and the same checkpoint bytes on every platform
 * (x86-64 with AVX2 or portable kernels, aarch64, armhf, s390x) and for 1, 2
 * and 3 threads.  Each configuration's FNV-1a 64 digests are compared with
 * tests/golden/digests.txt, produced by this program:
 *
 *   cmake --build build --target test_digest && ./build/tests/test_digest --write tests/golden/digests.txt
 *
 * The model: three tensors (one spanning four reduction blocks, so threads
 * split it) with a quadratic loss, and two LoRA pairs, one per mode, with the
 * loss 0.5 * ||W + s*B*A - T||^2.  Every configuration clips (and the test
 * checks that it did) and follows the warm-up + cosine schedule.  The mixed
 * configurations add a bf16 tensor with fp16 gradients and an fp16 tensor
 * with bf16 gradients under a loss scale of 1024, with nearest or
 * stochastic rounding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_format.h"
#include "test_util.h"

#define STEPS 100
#define CONFIGS 12 /* optimizer x scope x restore mode, then 4 mixed precision */
#define MIXED_FIRST 8 /* configurations from here add bf16/fp16 tensors */
#define PAIRS 2   /* adapter mode, base mode */
#define RANK 2
#define N_IN 24
#define N_OUT 16
#define LORA_SCALING 2.0

static const size_t sizes[] = {4 * MGPO_BLOCK_FLOATS - 3, 7, 1};
#define TENSORS (sizeof sizes / sizeof sizes[0])

static const char *config_name(int i)
{
    static const char *names[CONFIGS] = {
        "adamw-global-exact",  "sgd-global-exact",  "adamw-tensor-exact",  "sgd-tensor-exact",
        "adamw-global-lowmem", "sgd-global-lowmem", "adamw-tensor-lowmem", "sgd-tensor-lowmem",
        "mixed-adamw-global-nearest", "mixed-sgd-global-stochastic",
        "mixed-adamw-tensor-stochastic", "mixed-sgd-tensor-nearest"};
    return names[i];
}

static mgpo_config config_of(int i, int threads)
{
    mgpo_config c = mgpo_config_default();
    if (i >= MIXED_FIRST) {
        /* Exact restore; stochastic rounding for the two middle ones. */
        int k = i - MIXED_FIRST;
        c.rounding = k == 1 || k == 2 ? MGPO_ROUNDING_STOCHASTIC : MGPO_ROUNDING_NEAREST;
        c.seed = 2026;
        i = k & 3;
    }
    c.rho = 0.05;
    if (i & 1) {
        c.optimizer = MGPO_OPTIMIZER_SGD;
        c.momentum = 0.9;
        c.nesterov = 1;
        c.weight_decay = 1e-3;
    } else {
        c.weight_decay = 0.01;
    }
    c.scope = (i & 2) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    c.restore_mode = (i & 4) ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT;
    c.max_grad_norm = 110.0; /* the gradient norm falls from 140 below it: some steps clip */
    c.num_threads = threads;
    return c;
}

typedef struct lora_buffers {
    float a[RANK * N_IN], b[N_OUT * RANK], w[N_OUT * N_IN], target[N_OUT * N_IN];
    float ga[RANK * N_IN], gb[N_OUT * RANK];
} lora_buffers;

/* The mixed configurations' typed tensors: bf16 params with fp16 grads,
 * fp16 params with bf16 grads; g = (p - target) * 1024 at the typed params,
 * rounded to the gradient type. */
#define TYPED 2
static const size_t typed_sizes[TYPED] = {2 * MGPO_BLOCK_FLOATS + 3, 101};
static const mgpo_dtype typed_param[TYPED] = {MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16};
static const mgpo_dtype typed_grad[TYPED] = {MGPO_DTYPE_FLOAT16, MGPO_DTYPE_BFLOAT16};
#define LOSS_SCALE 1024.0f

typedef struct typed_buffers {
    uint16_t p[2 * MGPO_BLOCK_FLOATS + 3], g[2 * MGPO_BLOCK_FLOATS + 3];
    float target[2 * MGPO_BLOCK_FLOATS + 3];
} typed_buffers;

static float typed_value(uint16_t h, mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT16 ? mgpo_f16_to_f32(h) : mgpo_bf16_to_f32(h);
}

static uint16_t typed_round(float x, mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT16 ? mgpo_f32_to_f16(x) : mgpo_f32_to_bf16(x);
}

static void typed_grad_of(typed_buffers *b, size_t k)
{
    for (size_t i = 0; i < typed_sizes[k]; i++)
        b->g[i] = typed_round((typed_value(b->p[i], typed_param[k]) - b->target[i]) * LOSS_SCALE,
                              typed_grad[k]);
}

typedef struct digest {
    uint64_t params, checkpoint;
} digest;

/* FNV-1a 64 over bytes. */
static uint64_t fnv_bytes(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211u;
    return h;
}

/* Over the bits of floats, least significant byte first on every host. */
static uint64_t fnv_floats(uint64_t h, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = mgpo_float_bits(x[i]);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                              (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        h = fnv_bytes(h, b, 4);
    }
    return h;
}

/* E = W + s*B*A - T, then gA = s * B^T E and gB = s * E A^T, in float. */
static void lora_grad(lora_buffers *l)
{
    static float e[N_OUT * N_IN];
    for (size_t o = 0; o < N_OUT; o++)
        for (size_t j = 0; j < N_IN; j++) {
            float ba = 0.0f;
            for (size_t r = 0; r < RANK; r++) ba += l->b[o * RANK + r] * l->a[r * N_IN + j];
            e[o * N_IN + j] = l->w[o * N_IN + j] + (float)LORA_SCALING * ba - l->target[o * N_IN + j];
        }
    for (size_t r = 0; r < RANK; r++)
        for (size_t j = 0; j < N_IN; j++) {
            float s = 0.0f;
            for (size_t o = 0; o < N_OUT; o++) s += l->b[o * RANK + r] * e[o * N_IN + j];
            l->ga[r * N_IN + j] = (float)LORA_SCALING * s;
        }
    for (size_t o = 0; o < N_OUT; o++)
        for (size_t r = 0; r < RANK; r++) {
            float s = 0.0f;
            for (size_t j = 0; j < N_IN; j++) s += e[o * N_IN + j] * l->a[r * N_IN + j];
            l->gb[o * RANK + r] = (float)LORA_SCALING * s;
        }
}

/* Trains configuration `i` on `threads` threads with kernel table `k`;
 * returns the digests of the clean parameters after the
 * last step and of a checkpoint saved after one more perturb. */
static digest train(int i, int threads, const mgpo_kernels *k)
{
    tu_model m;
    tu_model_init(&m, sizes, TENSORS, 7);
    mgpo_config cfg = config_of(i, threads);
    tu_model_register(&m, &cfg, NULL);
    m.st->kernels = k;

    static lora_buffers pairs[PAIRS];
    for (size_t k = 0; k < PAIRS; k++) {
        lora_buffers *l = &pairs[k];
        tu_fill(l->a, RANK * N_IN, 100 + k, -0.5f, 0.5f);
        memset(l->b, 0, sizeof l->b); /* as LoRA starts: B = 0 */
        tu_fill(l->w, N_OUT * N_IN, 200 + k, -1.0f, 1.0f);
        tu_fill(l->target, N_OUT * N_IN, 300 + k, -1.0f, 1.0f);
        mgpo_lora_pair p = {l->a, l->ga, l->b, l->gb, k ? l->w : NULL, RANK, N_IN, N_OUT,
                            LORA_SCALING, k ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER};
        ck_assert_int_eq(mgpo_add_lora_pair(m.st, &p, NULL, NULL), MGPO_OK);
    }

    static typed_buffers typed[TYPED];
    if (i >= MIXED_FIRST) {
        for (size_t k = 0; k < TYPED; k++) {
            float x[2 * MGPO_BLOCK_FLOATS + 3];
            tu_fill(x, typed_sizes[k], 400 + k, -1.0f, 1.0f);
            tu_fill(typed[k].target, typed_sizes[k], 500 + k, -0.5f, 0.5f);
            for (size_t e = 0; e < typed_sizes[k]; e++)
                typed[k].p[e] = typed_round(x[e], typed_param[k]);
            ck_assert_int_eq(mgpo_add_tensor_typed(m.st, typed[k].p, typed_param[k], typed[k].g,
                                                   typed_grad[k], typed_sizes[k], NULL, NULL),
                             MGPO_OK);
        }
        ck_assert_int_eq(mgpo_set_grad_scale(m.st, LOSS_SCALE), MGPO_OK);
    }

    mgpo_schedule sched = mgpo_schedule_paper(cfg.optimizer == MGPO_OPTIMIZER_SGD ? 0.05 : 0.01,
                                              STEPS);
    sched.warmup_steps = 10;
    int clipped = 0;
    for (uint64_t t = 0; t < STEPS; t++) {
        double lr;
        ck_assert_int_eq(mgpo_schedule_lr(&sched, t, &lr), MGPO_OK);
        ck_assert_int_eq(mgpo_set_lr(m.st, lr), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(m.st), MGPO_OK);
        tu_model_grad(&m);
        for (size_t k = 0; k < PAIRS; k++) lora_grad(&pairs[k]);
        if (i >= MIXED_FIRST) {
            /* The loss scale is the state's: every gradient carries it. */
            for (size_t k = 0; k < TYPED; k++) typed_grad_of(&typed[k], k);
            for (size_t k = 0; k < TENSORS; k++)
                for (size_t e = 0; e < sizes[k]; e++) m.grads[k][e] *= LOSS_SCALE;
            for (size_t k = 0; k < PAIRS; k++) {
                for (size_t e = 0; e < RANK * N_IN; e++) pairs[k].ga[e] *= LOSS_SCALE;
                for (size_t e = 0; e < N_OUT * RANK; e++) pairs[k].gb[e] *= LOSS_SCALE;
            }
        }
        ck_assert_int_eq(mgpo_step(m.st), MGPO_OK);
        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(m.st, &s), MGPO_OK);
        clipped += s.clipped;
    }
    ck_assert_msg(clipped > 0 && clipped < STEPS, "%s: clipped %d of %d steps",
                  config_name(i), clipped, STEPS);

    digest d;
    d.params = 14695981039346656037u;
    for (size_t k = 0; k < TENSORS; k++) d.params = fnv_floats(d.params, m.params[k], sizes[k]);
    for (size_t k = 0; k < PAIRS; k++) {
        d.params = fnv_floats(d.params, pairs[k].a, RANK * N_IN);
        d.params = fnv_floats(d.params, pairs[k].b, N_OUT * RANK);
        d.params = fnv_floats(d.params, pairs[k].w, N_OUT * N_IN);
    }
    if (i >= MIXED_FIRST)
        for (size_t k = 0; k < TYPED; k++)
            for (size_t e = 0; e < typed_sizes[k]; e++) {
                unsigned char b[2] = {(unsigned char)typed[k].p[e], (unsigned char)(typed[k].p[e] >> 8)};
                d.params = fnv_bytes(d.params, b, 2);
            }
    /* Saved while perturbed: with the exact restore's data in exact mode. */
    ck_assert_int_eq(mgpo_perturb(m.st), MGPO_OK);
    size_t size = 0, written = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(m.st, &size), MGPO_OK);
    unsigned char *buf = malloc(size);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(mgpo_save(m.st, buf, size, &written), MGPO_OK);
    d.checkpoint = fnv_bytes(14695981039346656037u, buf, written);
    free(buf);
    tu_model_free(&m);
    return d;
}

/* All variants of configuration i: every kernel table this CPU runs (the
 * best first), 1-3 threads.  Returns 0 when every variant gave the first
 * one's digests. */
static int train_all(int i, digest *out)
{
    int differ = 0;
    const mgpo_kernels *tables[8];
    size_t count = mgpo_kernels_runnable(tables, 8);
    ck_assert_uint_le(count, 8);
    for (size_t t = 0; t < count; t++)
        for (int threads = 1; threads <= 3; threads++) {
            digest d = train(i, threads, tables[t]);
            if (t == 0 && threads == 1) {
                *out = d;
            } else if (d.params != out->params || d.checkpoint != out->checkpoint) {
                fprintf(stderr, "%s: %s kernels, %d threads: %016llx %016llx, expected %016llx %016llx\n",
                        config_name(i), tables[t]->name, threads,
                        (unsigned long long)d.params, (unsigned long long)d.checkpoint,
                        (unsigned long long)out->params, (unsigned long long)out->checkpoint);
                differ = 1;
            }
        }
    return differ;
}

static int host_big_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 0;
}

/* The committed digests of configuration `name`; 0 if absent. */
static int read_golden(const char *name, digest *d)
{
    FILE *f = fopen(MGPO_DIGEST_FILE, "r");
    if (!f) return 0;
    char line[256], key[64];
    unsigned long long p, c;
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        if (line[0] != '#' && sscanf(line, "%63s params %llx checkpoint %llx", key, &p, &c) == 3 &&
            strcmp(key, name) == 0) {
            d->params = p;
            d->checkpoint = c;
            found = 1;
        }
    fclose(f);
    return found;
}

START_TEST(same_digest_everywhere)
{
    digest got, want;
    ck_assert_msg(train_all(_i, &got) == 0,
                  "%s: kernels or thread counts disagree (see stderr)", config_name(_i));
    ck_assert_msg(read_golden(config_name(_i), &want), "%s: no digest in %s", config_name(_i),
                  MGPO_DIGEST_FILE);
    ck_assert_msg(got.params == want.params, "%s: parameters %016llx, committed %016llx",
                  config_name(_i), (unsigned long long)got.params,
                  (unsigned long long)want.params);
    if (MGPO_CKPT_VERSION < 2 && host_big_endian()) {
        /* Format 1 is written in the host's byte order: its bytes differ on a
         * big-endian host by design.  Format 2 (little-endian) is compared. */
        printf("%s: checkpoint digest not compared: format %u is native byte order\n",
               config_name(_i), (unsigned)MGPO_CKPT_VERSION);
        return;
    }
    ck_assert_msg(got.checkpoint == want.checkpoint, "%s: checkpoint %016llx, committed %016llx",
                  config_name(_i), (unsigned long long)got.checkpoint,
                  (unsigned long long)want.checkpoint);
}
END_TEST

/* --write FILE: the digests of this machine, refused unless every variant
 * agrees.  A Check test too, since the training asserts. */
static const char *write_path;

START_TEST(write_golden)
{
    digest d[CONFIGS];
    for (int i = 0; i < CONFIGS; i++)
        ck_assert_msg(train_all(i, &d[i]) == 0, "%s: variants disagree, not written",
                      config_name(i));
    FILE *f = fopen(write_path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", write_path);
    fprintf(f, "# FNV-1a 64 digests of tests/test_digest.c: final parameters, checkpoint bytes.\n"
               "# Must be identical on every platform, kernel set and thread count.\n"
               "# Regenerate (after a deliberate numerical or format change):\n"
               "#   cmake --build build --target test_digest && "
               "./build/tests/test_digest --write tests/golden/digests.txt\n"
               "# Produced by: libmgpo %s, checkpoint format %u, %s kernels and portable, "
               "1-3 threads, %s, %s\n",
            mgpo_version_string(), (unsigned)MGPO_CKPT_VERSION, mgpo_kernels_best()->name,
            host_big_endian() ? "big-endian" : "little-endian",
#if defined(__VERSION__)
            "compiler " __VERSION__
#else
            "unknown compiler"
#endif
    );
    for (int i = 0; i < CONFIGS; i++)
        fprintf(f, "%s params %016llx checkpoint %016llx\n", config_name(i),
                (unsigned long long)d[i].params, (unsigned long long)d[i].checkpoint);
    ck_assert_msg(fclose(f) == 0, "cannot write %s", write_path);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        write_path = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--write FILE]\n", argv[0]);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("digest");
    TCase *tc = tcase_create("digest");
    tcase_set_timeout(tc, 1200); /* under qemu on a busy machine */
    if (write_path)
        tcase_add_test(tc, write_golden);
    else
        tcase_add_loop_test(tc, same_digest_everywhere, 0, CONFIGS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
