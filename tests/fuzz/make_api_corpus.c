/* Writes the seed corpus of fuzz_api into the directory given (the
 * committed one is tests/fuzz/corpus-api; regenerate with
 * `make_api_corpus tests/fuzz/corpus-api`).  Each seed is a short program in
 * fuzz_api's encoding (one opcode byte, then its arguments): ordinary
 * training loops in every configuration, LoRA pairs in both modes,
 * bf16/fp16 tensors under a loss scale with both roundings,
 * non-finite and extreme gradients, extreme configurations, refused
 * set_lr/set_rho, saves into buffers of odd sizes, edited loads, refused
 * allocations, destroy. */
#include <stdio.h>
#include <string.h>

/* Opcodes, as fuzz_api.c's switch. */
enum { CREATE = 0, ADD = 1, ADD_TYPED = 2, LORA = 3, SET_GRAD = 4, PERTURB = 5, RESTORE = 6, STEP = 7,
       SET = 8, FILL_GRAD = 9, FILL_PARAM = 10, SAVE = 11, LOAD = 12, GET = 13, REFUSE = 14,
       DESTROY = 15, SET_MOMENTUM = 16, FILL_MOMENTUM = 17, MIGRATE = 18 };

typedef struct prog {
    unsigned char b[512];
    size_t n;
} prog;

static void emit(prog *p, const unsigned char *bytes, size_t n)
{
    if (p->n + n > sizeof p->b) n = sizeof p->b - p->n;
    memcpy(p->b + p->n, bytes, n);
    p->n += n;
}
#define E(p, ...) emit(p, (const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__}))

/* create with flags f (bit 0 nlg, 1 SGD, 2 tensor scope, 3 low memory,
 * 4 ascent, 5 nesterov, 6 stochastic rounding), ablation flags g (bit 0
 * APN off, 1 random direction, 2 external mode), side byte e (side B: bits
 * 0-1 threads - 1, bit 2 the portable table; bits 3-7 the environments)
 * and no extreme fields. */
static void create_ext(prog *p, unsigned char f, unsigned char g, unsigned char e)
{
    E(p, CREATE, f, g, e, 0, 0);
}
static void create(prog *p, unsigned char f) { create_ext(p, f, 0, 0x05); }
/* A tensor at pool offset at, count, grads at g, default options. */
static void tensor(prog *p, unsigned char at, unsigned char count, unsigned char g)
{
    E(p, ADD, 1, at, (unsigned char)(count - 1), g, 0);
}
/* A bf16 (t bit 0 clear) or fp16 tensor with gradients of type t >> 1
 * (0 float32, 1 bf16, 2 fp16) at gpool offset g. */
static void typed_tensor(prog *p, unsigned char at, unsigned char count, unsigned char g,
                         unsigned char t)
{
    E(p, ADD_TYPED, 1, at, (unsigned char)(count - 1), t, g, 0);
}
/* mgpo_set_grad_scale(1024), as 8 raw bytes of the double. */
static void loss_scale_1024(prog *p) { E(p, SET, 2, 0xFF, 0x40, 0x90, 0, 0, 0, 0, 0, 0); }
/* A LoRA pair: rank, n_in, n_out (1-based args), mode (1 base), element
 * types t (A and B t % 3, gradients t / 3 % 3, W t / 9 % 3), offsets. */
static void lora_typed(prog *p, unsigned char base, unsigned char t, unsigned char a,
                       unsigned char b, unsigned char w)
{
    E(p, LORA, 1, 1, 3, 2, 0, base, t, a, b, w, 10, 60, 0);
}
static void lora(prog *p, unsigned char base, unsigned char a, unsigned char b, unsigned char w)
{
    lora_typed(p, base, 0, a, b, w);
}
/* Gradients: value table index k, ramp on. */
static void grads(prog *p, unsigned char k) { E(p, FILL_GRAD, 0, 127, k, 1); }
static void iterations(prog *p, int n)
{
    for (int i = 0; i < n; i++) E(p, PERTURB, GET, 0, RESTORE, PERTURB, STEP);
}

static int write_seed(const char *dir, const char *name, const prog *p)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = fwrite(p->b, 1, p->n, f) != p->n;
    return fclose(f) != 0 || bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    int bad = 0;
    char name[64];
    /* Training loops in all 32 configurations, saved and edited-loaded. */
    for (unsigned char f = 0; f < 64; f += 2) {
        prog p = {{0}, 0};
        create(&p, f);
        tensor(&p, 0, 40, 0);
        tensor(&p, 64, 7, 100);
        grads(&p, 15);
        iterations(&p, 3);
        E(&p, PERTURB, SAVE, 3, 0, SAVE, 5, 1, LOAD, 100, 0, 1, 0x10, STEP, GET, 1);
        snprintf(name, sizeof name, "loop-%02x", f);
        bad |= write_seed(argv[1], name, &p);
    }
    /* LoRA pairs, adapter and base mode, global and per-tensor scope. */
    for (unsigned char f = 0; f < 8; f++) {
        prog p = {{0}, 0};
        create(&p, (unsigned char)((f & 1 ? 4 : 0) | (f & 4 ? 2 : 0)));
        lora(&p, f & 2 ? 1 : 0, 0, 20, 40);
        tensor(&p, 100, 9, 200);
        grads(&p, 2);
        iterations(&p, 4);
        E(&p, PERTURB, SAVE, 0, 1, LOAD, 7, 0, 1, 1);
        snprintf(name, sizeof name, "lora-%d", f);
        bad |= write_seed(argv[1], name, &p);
    }
    /* bf16 and fp16 tensors (master weights) beside a float32 one, under a
     * loss scale, rounded to nearest or stochastically, in both restore
     * modes and optimizers: saved, edited and loaded, perturbed and clean. */
    for (unsigned char f = 0; f < 8; f++) {
        prog p = {{0}, 0};
        create(&p, (unsigned char)((f & 1 ? 0x40 : 0) | (f & 2 ? 2 : 0) | (f & 4 ? 8 : 0)));
        typed_tensor(&p, 0, 40, 0, (unsigned char)(f & 1 ? 1 | 4 : 2));
        typed_tensor(&p, 40, 20, 100, (unsigned char)(f & 1 ? 0 : 1));
        tensor(&p, 64, 7, 200);
        loss_scale_1024(&p);
        grads(&p, 15);
        iterations(&p, 3);
        E(&p, PERTURB, SAVE, 3, 0, LOAD, 90, 1, 1, 0x10, STEP, SAVE, 0, 1, LOAD, 30, 0, 1, 0);
        iterations(&p, 1);
        snprintf(name, sizeof name, "typed-%d", f);
        bad |= write_seed(argv[1], name, &p);
    }
    /* LoRA pairs with bf16/fp16 A and B (master weights), gradients and W:
     * adapter and base mode, under a loss scale. */
    static const unsigned char pair_types[4] = {1 + 2 * 3 + 0 * 9, 2 + 0 * 3 + 1 * 9,
                                                0 + 1 * 3 + 1 * 9, 1 + 1 * 3 + 2 * 9};
    for (unsigned char f = 0; f < 8; f++) {
        prog p = {{0}, 0};
        create(&p, (unsigned char)((f & 1 ? 4 : 0) | (f & 4 ? 0x40 : 0)));
        lora_typed(&p, f & 2 ? 1 : 0, pair_types[f % 4], 0, 20, 40);
        tensor(&p, 100, 9, 200);
        loss_scale_1024(&p);
        grads(&p, 2);
        iterations(&p, 4);
        E(&p, PERTURB, SAVE, 0, 1, LOAD, 7, 0, 1, 0, STEP);
        snprintf(name, sizeof name, "typed-lora-%d", f);
        bad |= write_seed(argv[1], name, &p);
    }
    /* Non-finite, subnormal and huge gradients while perturbed. */
    static const unsigned char kinds[] = {12, 13, 14, 7, 8, 10, 11};
    for (size_t k = 0; k < sizeof kinds; k++) {
        prog p = {{0}, 0};
        create(&p, (unsigned char)(k & 1 ? 2 : 0));
        tensor(&p, 0, 64, 0);
        grads(&p, 15);
        iterations(&p, 2);
        E(&p, PERTURB, FILL_GRAD, 3, 5, kinds[k], 0, STEP, GET, 0, STEP, RESTORE);
        snprintf(name, sizeof name, "grad-%zu", k);
        bad |= write_seed(argv[1], name, &p);
    }
    /* Extreme configurations (each field in turn set to table entry t). */
    for (int field = 0; field < 12; field++) {
        prog p = {{0}, 0};
        unsigned char t = (unsigned char)(field * 2 + 12);
        unsigned lo = field < 8 ? 1u << field : 0, hi = field < 8 ? 0 : 1u << (field - 8);
        E(&p, CREATE, 0, 0, 0x05, (unsigned char)lo, (unsigned char)hi, t);
        tensor(&p, 10, 30, 10);
        grads(&p, 2);
        iterations(&p, 3);
        E(&p, SET, 0, 13, SET, 1, 14, PERTURB, STEP);
        snprintf(name, sizeof name, "config-%02d", field);
        bad |= write_seed(argv[1], name, &p);
    }
    /* The ablations (APN off with scale_max 0.5, the random direction) and
     * external mode (momenta attached late or never, the caller's optimizer
     * moving them while clean), on both sides with side B on 2-4 threads and
     * the portable table, migrated from A's checkpoint mid-run, in fuzzed
     * floating-point environments. */
    for (unsigned char k = 0; k < 16; k++) {
        prog p = {{0}, 0};
        unsigned char g = (unsigned char)((k & 3) | (k & 4 ? 4 : 0));
        unsigned char e = (unsigned char)(0x04 | (k & 3) | (k & 8 ? 0x08 | (k << 4) : 0));
        /* scale_max (field 9) = 0.5 (table entry 3). */
        E(&p, CREATE, (unsigned char)(k & 8 ? 4 : 0), g, e, 0, 2, 3);
        tensor(&p, 0, 40, 0);
        tensor(&p, 64, 7, 100);
        grads(&p, 15);
        if (g & 4) E(&p, SET_MOMENTUM, 0, 0, 10, FILL_MOMENTUM, 0, 100, 4, 1);
        iterations(&p, 2);
        E(&p, MIGRATE);
        if (g & 4) E(&p, SET_MOMENTUM, 1, 0, 200, FILL_MOMENTUM, 190, 30, 2, 1);
        iterations(&p, 2);
        E(&p, PERTURB, SAVE, 3, 0, MIGRATE, STEP, GET, 0);
        if (g & 4) E(&p, FILL_MOMENTUM, 0, 40, 12, 0); /* a NaN momentum */
        iterations(&p, 1);
        E(&p, MIGRATE, PERTURB, LOAD, 100, 0, 1, 0x10, STEP);
        snprintf(name, sizeof name, "diff-%02x", k);
        bad |= write_seed(argv[1], name, &p);
    }
    /* Overlapping and odd registrations, late gradients, refused
     * allocations, writes while clean, destroy and create again. */
    {
        prog p = {{0}, 0};
        create(&p, 0);
        E(&p, ADD, 0, 0, 20, 0, 0);    /* no gradient yet */
        E(&p, ADD, 1, 10, 20, 0, 0);   /* overlaps: refused */
        E(&p, REFUSE, 0, ADD, 1, 200, 5, 0, 0); /* out of memory */
        E(&p, ADD, 1, 200, 5, 0, 5, 14); /* perturb off, lr scale DBL_MAX */
        E(&p, STEP, SET_GRAD, 0, 1, 50, PERTURB, STEP, FILL_PARAM, 0, 60, 3, 1);
        E(&p, SET, 0, 15, SET, 1, 15, SET, 0, 200, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0); /* -1, NaN */
        iterations(&p, 2);
        E(&p, DESTROY, STEP);
        create(&p, 14);
        tensor(&p, 0, 1, 0);
        iterations(&p, 2);
        bad |= write_seed(argv[1], "odd-registrations", &p);
    }
    return bad;
}
