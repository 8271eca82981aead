/* mpi_data_parallel: MGPO data-parallel over MPI ranks, in two modes.
 *
 * A small MLP (8 -> 16 tanh -> 1, 161 parameters in one flat buffer) fits a
 * synthetic regression.  Each rank takes a contiguous chunk of the samples;
 * gradients are summed with MPI_Allreduce and divided by the sample count.
 *
 *   replicated  every rank holds all parameters and the full optimizer state,
 *               and takes the same steps on the same averaged gradient.  No
 *               all-reduce hook: every norm is already global.
 *   zero1       rank r owns a contiguous shard of the flat buffer and the
 *               optimizer state for it only (ZeRO stage 1).  It registers
 *               the pieces of its shard (one per tensor it overlaps, so per-
 *               tensor options still apply) and installs an all-reduce hook
 *               so that ||m|| and ||g|| are summed over all shards.
 *
 * Data flow of one zero1 iteration (docs/distributed.md):
 *   mgpo_perturb        each rank perturbs its shard (hook: 1 value)
 *   MPI_Allgatherv      every rank gets the whole perturbed theta
 *   forward/backward    local chunk; MPI_Allreduce of the gradient sums
 *   mgpo_step           restores and updates the shard (hook: 2 values)
 * The other ranks' shards are stale between step and the next gather, and
 * nothing reads them there; one gather per iteration suffices, plus one at
 * the end (or before evaluating) to assemble the clean parameters.
 *
 * With --check (the default) the program verifies itself and exits nonzero
 * on failure: every rank's parameters are bitwise identical, and rank 0
 * reruns the whole training in one process (full batch, accumulated as the
 * same P chunks, no hook) and compares.
 *
 * MPI's default error handler aborts the job on any failure, so the return
 * codes of MPI calls are not checked here; the hook still reports one.
 *
 *   mpirun -np 3 ./mpi_data_parallel --mode zero1 --steps 30
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpo.h"

enum { D = 8, H = 16, SAMPLES = 96 };
enum { W1 = 0, B1 = W1 + H * D, W2 = B1 + H, B2 = W2 + H, NPARAM = B2 + 1 };

/* The model's tensors inside the flat parameter buffer. */
typedef struct tensor_info {
    size_t offset, count;
    int is_bias; /* no weight decay, not perturbed */
} tensor_info;

static const tensor_info TENSORS[] = {
    {W1, H * D, 0}, {B1, H, 1}, {W2, H, 0}, {B2, 1, 1}};
enum { NTENSORS = sizeof TENSORS / sizeof TENSORS[0] };

typedef struct options {
    int zero1;
    int steps;
    int check;
    int use_hook;
    int expect_bitwise;
    mgpo_config config;
} options;

/* ---- data and model ------------------------------------------------------ */

/* A tiny deterministic generator, so every rank builds the same data. */
static double uniform(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void make_data(float *x, float *y, float *params)
{
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < SAMPLES; i++) {
        double z = 0.0;
        for (int j = 0; j < D; j++) {
            x[i * D + j] = (float)uniform(&s);
            z += (0.3 + 0.1 * j) * x[i * D + j];
        }
        y[i] = (float)(sin(2.0 * z) + 0.05 * uniform(&s));
    }
    for (int k = 0; k < NPARAM; k++) params[k] = (float)(0.3 * uniform(&s));
}

/* Sums (not means) of the squared-error loss 0.5 (f(x) - y)^2 and of its
 * gradient over samples [begin, end), in double, in sample order. */
static double loss_grad_sum(const float *x, const float *y, const float *p, size_t begin,
                            size_t end, double *grad)
{
    double loss = 0.0;
    if (grad) memset(grad, 0, NPARAM * sizeof *grad);
    for (size_t i = begin; i < end; i++) {
        const float *xi = x + i * D;
        double h[H], out = p[B2];
        for (int u = 0; u < H; u++) {
            double z = p[B1 + u];
            for (int j = 0; j < D; j++) z += (double)p[W1 + u * D + j] * xi[j];
            h[u] = tanh(z);
            out += (double)p[W2 + u] * h[u];
        }
        double dy = out - y[i];
        loss += 0.5 * dy * dy;
        if (!grad) continue;
        grad[B2] += dy;
        for (int u = 0; u < H; u++) {
            grad[W2 + u] += dy * h[u];
            double dz = dy * p[W2 + u] * (1.0 - h[u] * h[u]);
            grad[B1 + u] += dz;
            for (int j = 0; j < D; j++) grad[W1 + u * D + j] += dz * xi[j];
        }
    }
    return loss;
}

/* The contiguous share [*begin, *end) of `total` items that rank r of p gets. */
static void share(size_t total, int r, int p, size_t *begin, size_t *end)
{
    size_t base = total / (size_t)p, rem = total % (size_t)p, ur = (size_t)r;
    *begin = ur * base + (ur < rem ? ur : rem);
    *end = *begin + base + (ur < rem);
}

/* ---- the all-reduce hook ------------------------------------------------- */

typedef struct mpi_hook {
    MPI_Comm comm;
    size_t doubles; /* values reduced so far, for the traffic report */
} mpi_hook;

/* mgpo_allreduce_fn over MPI: in-place sum of doubles. */
static int mpi_sum(double *values, size_t count, void *ctx)
{
    mpi_hook *h = ctx;
    h->doubles += count;
    return MPI_Allreduce(MPI_IN_PLACE, values, (int)count, MPI_DOUBLE, MPI_SUM, h->comm) !=
           MPI_SUCCESS;
}

/* ---- training ------------------------------------------------------------ */

static void die(const char *what, mgpo_status s)
{
    fprintf(stderr, "mpi_data_parallel: %s: %s\n", what, mgpo_strerror(s));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void must(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) die(what, s);
}

/* Registers the part of [lo, hi) of the flat buffer that falls in each
 * tensor, with that tensor's options. */
static mgpo_state *make_state(const mgpo_config *config, float *params, float *grads,
                              size_t lo, size_t hi)
{
    mgpo_state *st = NULL;
    must(mgpo_create(&st, config, NULL), "mgpo_create");
    for (int t = 0; t < NTENSORS; t++) {
        size_t a = TENSORS[t].offset, b = a + TENSORS[t].count;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a >= b) continue;
        mgpo_tensor_options o = mgpo_tensor_options_default();
        if (TENSORS[t].is_bias) {
            o.weight_decay_scale = 0.0;
            o.perturb = 0;
        }
        must(mgpo_add_tensor(st, params + a, grads + a, b - a, &o, NULL), "mgpo_add_tensor");
    }
    return st;
}

static void set_lr(mgpo_state *st, const options *opt, int step)
{
    mgpo_schedule sched = mgpo_schedule_paper(opt->config.lr, (uint64_t)opt->steps);
    double lr;
    must(mgpo_schedule_lr(&sched, (uint64_t)step, &lr), "mgpo_schedule_lr");
    must(mgpo_set_lr(st, lr), "mgpo_set_lr");
}

/* Gradient mean from the per-chunk sums: g[k] = (sum of chunks) / N. */
static void to_float_grad(const double *sum, float *grads, size_t lo, size_t hi)
{
    for (size_t k = lo; k < hi; k++) grads[k] = (float)(sum[k] / SAMPLES);
}

/* Bytes handed to collectives in one iteration, per rank. */
typedef struct traffic {
    size_t grad_bytes, hook_bytes, gather_bytes;
    int clipped_steps;
} traffic;

/* Under MGPO_SCOPE_TENSOR the hook sums unit u over ranks, so unit u must be
 * (a piece of) the same tensor on every rank: every rank must register a
 * piece of the same tensors.  The same on every rank: all see the same
 * MIN and MAX. */
static int registrations_agree(size_t lo, size_t hi, MPI_Comm comm)
{
    int mine[NTENSORS], min[NTENSORS], max[NTENSORS];
    for (int t = 0; t < NTENSORS; t++)
        mine[t] = TENSORS[t].offset < hi && lo < TENSORS[t].offset + TENSORS[t].count;
    MPI_Allreduce(mine, min, NTENSORS, MPI_INT, MPI_MIN, comm);
    MPI_Allreduce(mine, max, NTENSORS, MPI_INT, MPI_MAX, comm);
    return memcmp(min, max, sizeof min) == 0;
}

/* The distributed run; leaves the clean final parameters in `params` on every
 * rank and returns the state (for its statistics), or NULL (on every rank)
 * when the layout cannot work. */
static mgpo_state *train(const options *opt, const float *x, const float *y, float *params,
                         mpi_hook *hook, traffic *tr)
{
    int rank, size;
    MPI_Comm_rank(hook->comm, &rank);
    MPI_Comm_size(hook->comm, &size);
    static float grads[NPARAM];
    static double gsum[NPARAM];
    size_t lo = 0, hi = NPARAM, first, last;
    share(SAMPLES, rank, size, &first, &last);
    int counts[64] = {0}, displs[64] = {0};
    if (opt->zero1) {
        share(NPARAM, rank, size, &lo, &hi);
        for (int r = 0; r < size; r++) {
            size_t a, b;
            share(NPARAM, r, size, &a, &b);
            displs[r] = (int)a;
            counts[r] = (int)(b - a);
        }
    }
    if (opt->zero1 && opt->config.scope == MGPO_SCOPE_TENSOR &&
        !registrations_agree(lo, hi, hook->comm))
        return NULL;
    mgpo_state *st = make_state(&opt->config, params, grads, lo, hi);
    if (opt->zero1 && opt->use_hook) must(mgpo_set_allreduce(st, mpi_sum, hook), "hook");

    tr->clipped_steps = 0;
    tr->hook_bytes = 0;
    for (int step = 0; step < opt->steps; step++) {
        size_t hook_before = hook->doubles;
        set_lr(st, opt, step);
        must(mgpo_perturb(st), "mgpo_perturb");
        if (opt->zero1)
            MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, counts, displs,
                           MPI_FLOAT, hook->comm);
        loss_grad_sum(x, y, params, first, last, gsum);
        MPI_Allreduce(MPI_IN_PLACE, gsum, NPARAM, MPI_DOUBLE, MPI_SUM, hook->comm);
        to_float_grad(gsum, grads, lo, hi); /* a shard needs only its own part */
        must(mgpo_step(st), "mgpo_step");
        mgpo_stats stats;
        must(mgpo_get_stats(st, &stats), "mgpo_get_stats");
        tr->clipped_steps += stats.clipped;
        tr->hook_bytes = (hook->doubles - hook_before) * sizeof(double); /* last step */
    }
    if (opt->zero1)
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, counts, displs, MPI_FLOAT,
                       hook->comm);
    tr->grad_bytes = NPARAM * sizeof(double);
    tr->gather_bytes = opt->zero1 ? (size_t)(NPARAM - counts[rank]) * sizeof(float) : 0;
    return st;
}

/* The single-process run: full batch, gradient accumulated over the same
 * `chunks` sample chunks in chunk order, no hook. */
static mgpo_state *train_reference(const options *opt, const float *x, const float *y,
                                   float *params, int chunks)
{
    static float grads[NPARAM];
    static double gsum[NPARAM], part[NPARAM];
    mgpo_state *st = make_state(&opt->config, params, grads, 0, NPARAM);
    for (int step = 0; step < opt->steps; step++) {
        set_lr(st, opt, step);
        must(mgpo_perturb(st), "mgpo_perturb");
        memset(gsum, 0, sizeof gsum);
        for (int c = 0; c < chunks; c++) {
            size_t first, last;
            share(SAMPLES, c, chunks, &first, &last);
            loss_grad_sum(x, y, params, first, last, part);
            for (int k = 0; k < NPARAM; k++) gsum[k] += part[k];
        }
        to_float_grad(gsum, grads, 0, NPARAM);
        must(mgpo_step(st), "mgpo_step");
    }
    return st;
}

/* ---- verification -------------------------------------------------------- */

static double rel_diff(double a, double b)
{
    double scale = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return scale > 0.0 ? fabs(a - b) / scale : 0.0;
}

/* Returns the number of failed checks (the same on every rank). */
static int verify(const options *opt, const float *x, const float *y, const float *init,
                  const float *params, mgpo_state *st, MPI_Comm comm)
{
    int rank, size, failures = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);

    static float root[NPARAM];
    memcpy(root, params, sizeof root);
    MPI_Bcast(root, NPARAM, MPI_FLOAT, 0, comm);
    int differs = memcmp(root, params, sizeof root) != 0, any_differs = 0;
    MPI_Allreduce(&differs, &any_differs, 1, MPI_INT, MPI_MAX, comm);
    if (rank == 0)
        printf("check%s: parameters identical on all %d ranks: %s\n",
               any_differs ? " FAILED" : "", size, any_differs ? "no" : "yes (bitwise)");
    failures += any_differs;

    if (rank == 0) {
        static float ref[NPARAM];
        memcpy(ref, init, sizeof ref);
        mgpo_state *rs = train_reference(opt, x, y, ref, size);
        double worst = 0.0;
        for (int k = 0; k < NPARAM; k++) {
            double r = rel_diff(params[k], ref[k]);
            if (r > worst) worst = r;
        }
        mgpo_stats a, b;
        must(mgpo_get_stats(st, &a), "stats");
        must(mgpo_get_stats(rs, &b), "stats");
        double stat_diff = rel_diff(a.grad_norm, b.grad_norm);
        double m_diff = rel_diff(a.momentum_norm, b.momentum_norm);
        int bitwise = memcmp(ref, params, sizeof ref) == 0;
        printf("check: vs single process (%d chunks): %s, max relative difference %.3g\n",
               size, bitwise ? "bitwise equal" : "not bitwise", worst);
        printf("check: ||g|| %.17g vs %.17g, ||m|| %.17g vs %.17g (rel %.3g, %.3g)\n",
               a.grad_norm, b.grad_norm, a.momentum_norm, b.momentum_norm, stat_diff, m_diff);
        if (worst > 1e-6 || stat_diff > 1e-6 || m_diff > 1e-6) {
            printf("check FAILED: differs from the single-process run by more than 1e-6\n");
            failures++;
        }
        if (opt->expect_bitwise && !bitwise) {
            printf("check FAILED: expected bitwise equality with the single-process run\n");
            failures++;
        }
        mgpo_destroy(rs);
    }
    MPI_Bcast(&failures, 1, MPI_INT, 0, comm);
    return failures;
}

/* ---- main ---------------------------------------------------------------- */

static int parse(int argc, char **argv, options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->steps = 30;
    opt->check = 1;
    opt->use_hook = 1;
    opt->config = mgpo_config_default();
    opt->config.lr = 0.02;
    opt->config.weight_decay = 0.01;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--mode")) {
            if (strcmp(v, "zero1") && strcmp(v, "replicated")) return 1;
            opt->zero1 = !strcmp(v, "zero1");
            i++;
        } else if (!strcmp(a, "--steps")) {
            opt->steps = atoi(v);
            i++;
        } else if (!strcmp(a, "--optimizer")) {
            if (strcmp(v, "sgd") && strcmp(v, "adamw")) return 1;
            if (!strcmp(v, "sgd")) {
                opt->config.optimizer = MGPO_OPTIMIZER_SGD;
                opt->config.lr = 0.1;
            }
            i++;
        } else if (!strcmp(a, "--scope")) {
            if (strcmp(v, "tensor") && strcmp(v, "global")) return 1;
            opt->config.scope = !strcmp(v, "tensor") ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
            i++;
        } else if (!strcmp(a, "--clip")) {
            opt->config.max_grad_norm = atof(v);
            i++;
        } else if (!strcmp(a, "--no-check")) {
            opt->check = 0;
        } else if (!strcmp(a, "--expect-bitwise")) {
            opt->expect_bitwise = 1;
        } else if (!strcmp(a, "--no-hook")) { /* to show what the hook is for */
            opt->use_hook = 0;
        } else {
            return 1;
        }
    }
    return opt->steps < 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    options opt;
    if (parse(argc, argv, &opt)) {
        if (rank == 0)
            fprintf(stderr, "usage: mpi_data_parallel [--mode replicated|zero1] [--steps K]"
                            " [--optimizer adamw|sgd] [--scope global|tensor] [--clip X]"
                            " [--no-check] [--expect-bitwise] [--no-hook]\n");
        MPI_Finalize();
        return 2;
    }
    if (size > 64 || (opt.zero1 && size > NPARAM)) {
        if (rank == 0) fprintf(stderr, "mpi_data_parallel: too many ranks (%d)\n", size);
        MPI_Finalize();
        return 2;
    }

    static float x[SAMPLES * D], y[SAMPLES], params[NPARAM], init[NPARAM];
    make_data(x, y, params);
    memcpy(init, params, sizeof init);
    double loss0 = loss_grad_sum(x, y, params, 0, SAMPLES, NULL) / SAMPLES;

    mpi_hook hook = {MPI_COMM_WORLD, 0};
    traffic tr;
    mgpo_state *st = train(&opt, x, y, params, &hook, &tr);
    if (!st) {
        if (rank == 0)
            fprintf(stderr, "mpi_data_parallel: under --scope tensor the ranks' shards hold "
                            "different tensors, so per-tensor norms cannot be summed; "
                            "use --scope global with --mode zero1\n");
        MPI_Finalize();
        return 2;
    }
    double loss1 = loss_grad_sum(x, y, params, 0, SAMPLES, NULL) / SAMPLES;
    if (rank == 0) {
        printf("%s on %d ranks, %d steps: loss %.6f -> %.6f\n",
               opt.zero1 ? "zero1" : "replicated", size, opt.steps, loss0, loss1);
        printf("bytes per step per rank: gradient all-reduce %zu, norm hook %zu, "
               "parameter all-gather %zu; clipped steps %d\n", tr.grad_bytes, tr.hook_bytes,
               tr.gather_bytes, tr.clipped_steps);
    }
    int failures = opt.check ? verify(&opt, x, y, init, params, st, MPI_COMM_WORLD) : 0;
    mgpo_destroy(st);
    MPI_Finalize();
    return failures || !(loss1 < loss0);
}
