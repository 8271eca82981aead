/* Paired resume (issue 20, "Model and optimizer checkpoints can get out of
 * step"): a small trainer keeps its parameters, its data position and a
 * loss-scaler value in the caller's record of one checkpoint file
 * (mgpo_save_file_with_user) and resumes with mgpo_load_file_with_user.  It
 * is killed with SIGKILL at random points, 40 times; every resumed run must
 * end bitwise equal (parameters, record, optimizer state) to the run that
 * was never interrupted.  Also: the record round-trips through a buffer,
 * size queries, refusals that change nothing, and plain loads ignore it. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mgpo.h"

enum { N = 2048, STEPS = 80 };

/* What the caller must resume besides the optimizer: its parameters, the
 * next batch and its loss scale (changed by a GradScaler-like rule). */
typedef struct trainer_record {
    uint64_t next_batch;
    float loss_scale;
    uint32_t good_steps;
    float params[N];
} trainer_record;

typedef struct trainer {
    mgpo_state *st;
    trainer_record rec;
    float grads[N];
} trainer;

static void trainer_init(trainer *t)
{
    memset(t, 0, sizeof *t);
    mgpo_config cfg = mgpo_config_default();
    cfg.lr = 1e-3;
    cfg.rho = 0.05;
    ck_assert_int_eq(mgpo_create(&t->st, &cfg, NULL), MGPO_OK);
    for (size_t i = 0; i < N; i++) t->rec.params[i] = (float)((int)(i % 41) - 20) / 16.0f;
    t->rec.loss_scale = 1024.0f;
    ck_assert_int_eq(mgpo_add_tensor(t->st, t->rec.params, t->grads, N, NULL, NULL), MGPO_OK);
}

/* Batch b's gradient (times the loss scale) at the current parameters;
 * batch 37 overflows, as a loss scale too large would. */
static void trainer_grads(trainer *t, uint64_t b)
{
    for (size_t i = 0; i < N; i++)
        t->grads[i] = t->rec.loss_scale *
                      (t->rec.params[i] - (float)((i * 7 + b * 13) % 29) / 29.0f);
    if (b % 37 == 36) t->grads[b % N] = INFINITY;
}

static void trainer_iterate(trainer *t)
{
    ck_assert_int_eq(mgpo_set_grad_scale(t->st, t->rec.loss_scale), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(t->st), MGPO_OK);
    trainer_grads(t, t->rec.next_batch);
    mgpo_status s = mgpo_step(t->st);
    ck_assert(s == MGPO_OK || s == MGPO_ERR_NONFINITE_GRADIENT);
    if (s == MGPO_OK && ++t->rec.good_steps % 10 == 0) t->rec.loss_scale *= 2.0f;
    if (s != MGPO_OK) {
        t->rec.loss_scale *= 0.5f;
        t->rec.good_steps = 0;
    }
    t->rec.next_batch++;
}

/* Runs to STEPS from the checkpoint at `path` if there is one, saving the
 * optimizer state and the record together after every iteration. */
static void trainer_run(trainer *t, const char *path)
{
    size_t got = 0;
    mgpo_status s = mgpo_load_file_with_user(t->st, path, &t->rec, sizeof t->rec, &got);
    if (s == MGPO_OK) ck_assert_uint_eq(got, sizeof t->rec);
    else ck_assert_int_eq(s, MGPO_ERR_IO); /* no file yet */
    while (t->rec.next_batch < STEPS) {
        trainer_iterate(t);
        ck_assert_int_eq(mgpo_save_file_with_user(t->st, path, &t->rec, sizeof t->rec), MGPO_OK);
    }
}

static unsigned char *state_bytes(const mgpo_state *st, size_t *n)
{
    ck_assert_int_eq(mgpo_checkpoint_size(st, n), MGPO_OK);
    unsigned char *b = malloc(*n);
    ck_assert_ptr_nonnull(b);
    size_t written = 0;
    ck_assert_int_eq(mgpo_save(st, b, *n, &written), MGPO_OK);
    return b;
}

static char *make_dir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = malloc(4096);
    ck_assert_ptr_nonnull(dir);
    snprintf(dir, 4096, "%s/mgpo-paired-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

/* Temporaries a killed save left (".mgpo-XXXXXX"): the kill hit a save. */
static int temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strncmp(e->d_name, ".mgpo-", 6) == 0;
    closedir(d);
    return n;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A forked child: the whole run from the checkpoint at `path` (or from
 * the start), then exit.  Everything is freed, the parent's copies too, so
 * that a leak checker watching the child finds nothing. */
static _Noreturn void run_child(const char *path, trainer *ref, unsigned char *ref_state, char *dir)
{
    trainer *t = malloc(sizeof *t);
    if (!t) _exit(2);
    trainer_init(t);
    trainer_run(t, path);
    mgpo_destroy(t->st);
    free(t);
    free(ref_state);
    mgpo_destroy(ref->st);
    free(ref);
    free(dir);
    _exit(0);
}

START_TEST(test_killed_trainer_resumes_bitwise)
{
    char *dir = make_dir(), path[4200];
    snprintf(path, sizeof path, "%s/run.mgpo", dir);

    /* The uninterrupted run (it saves too, so it takes as long as a child). */
    trainer *ref = malloc(sizeof *ref);
    ck_assert_ptr_nonnull(ref);
    trainer_init(ref);
    double t0 = now_seconds();
    trainer_run(ref, path);
    double full = now_seconds() - t0;
    size_t ref_n = 0;
    unsigned char *ref_state = state_bytes(ref->st, &ref_n);

    /* How long a child's whole run takes (forked, from no file). */
    clear_dir(dir);
    t0 = now_seconds();
    pid_t whole = fork();
    ck_assert_int_ge(whole, 0);
    if (whole == 0) run_child(path, ref, ref_state, dir);
    int whole_status = 0;
    ck_assert_int_eq(waitpid(whole, &whole_status, 0), whole);
    ck_assert(WIFEXITED(whole_status) && WEXITSTATUS(whole_status) == 0);
    full = now_seconds() - t0;

    unsigned seed = (unsigned)time(NULL);
    int killed_mid_run = 0, in_save = 0;
    /* Until 40 kills have landed while the child was training (a child that
     * finished first is checked too, and the next pause is shorter: file
     * system latency varies a lot on a shared machine). */
    int trials = 0;
    for (; killed_mid_run < 40 && trials < 400; trials++) {
        clear_dir(dir);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) run_child(path, ref, ref_state, dir);
        /* A random point of the child's run. */
        long ns = (long)((double)(rand_r(&seed) % 1000) / 1000.0 * full * 1e9);
        struct timespec pause = {ns / 1000000000L, ns % 1000000000L};
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) killed_mid_run++;
        else full *= 0.8;
        in_save += temporaries(dir) > 0;

        trainer *t = malloc(sizeof *t);
        ck_assert_ptr_nonnull(t);
        trainer_init(t);
        trainer_run(t, path);
        ck_assert_mem_eq(&t->rec, &ref->rec, sizeof t->rec);
        size_t n = 0;
        unsigned char *state = state_bytes(t->st, &n);
        ck_assert_uint_eq(n, ref_n);
        ck_assert_mem_eq(state, ref_state, n);
        free(state);
        mgpo_destroy(t->st);
        free(t);
    }
    ck_assert_int_eq(killed_mid_run, 40);
    printf("paired resume: %d runs, 40 killed mid-run (%d inside a save), every resume "
           "bitwise equal\n", trials, in_save);
    free(ref_state);
    mgpo_destroy(ref->st);
    free(ref);
    clear_dir(dir);
    rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_record_in_buffer)
{
    trainer *t = malloc(sizeof *t);
    ck_assert_ptr_nonnull(t);
    trainer_init(t);
    for (int i = 0; i < 3; i++) trainer_iterate(t);
    size_t plain = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(t->st, &plain), MGPO_OK);
    const char record[] = "batch 3 of epoch 0";
    size_t cap = plain + sizeof record + 8, written = 0;
    unsigned char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(mgpo_save_with_user(t->st, record, sizeof record, buf, cap - 1, &written),
                     MGPO_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(mgpo_save_with_user(t->st, record, sizeof record, buf, cap, &written),
                     MGPO_OK);
    ck_assert_uint_eq(written, cap);
    size_t n = 0;
    unsigned char *before = state_bytes(t->st, &n);

    trainer *u = malloc(sizeof *u);
    ck_assert_ptr_nonnull(u);
    trainer_init(u);
    size_t un = 0;
    unsigned char *fresh = state_bytes(u->st, &un);
    char got[64];
    memset(got, 'x', sizeof got);
    size_t got_size = 0;
    /* Too small: only the size is written. */
    ck_assert_int_eq(mgpo_load_with_user(u->st, buf, written, got, 4, &got_size),
                     MGPO_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(got_size, sizeof record);
    ck_assert_int_eq(got[0], 'x');
    size_t un2 = 0;
    unsigned char *still = state_bytes(u->st, &un2);
    ck_assert_uint_eq(un2, un);
    ck_assert_mem_eq(still, fresh, un);
    free(still);
    /* A corrupted record fails the payload checksum: nothing changes. */
    buf[written - 9] ^= 1;
    ck_assert_int_eq(mgpo_load_with_user(u->st, buf, written, got, sizeof got, &got_size),
                     MGPO_ERR_CHECKPOINT_CHECKSUM);
    ck_assert_int_eq(got[0], 'x');
    buf[written - 9] ^= 1;
    ck_assert_int_eq(mgpo_load_with_user(u->st, buf, written, got, sizeof got, &got_size),
                     MGPO_OK);
    ck_assert_uint_eq(got_size, sizeof record);
    ck_assert_str_eq(got, record);
    unsigned char *after = state_bytes(u->st, &un2);
    ck_assert_uint_eq(un2, n);
    ck_assert_mem_eq(after, before, n);
    free(after);
    /* mgpo_load ignores the record; a checkpoint without one is refused by
     * the _with_user load (it cannot be a pair). */
    ck_assert_int_eq(mgpo_load(u->st, buf, written), MGPO_OK);
    ck_assert_int_eq(mgpo_load_with_user(u->st, before, n, got, sizeof got, &got_size),
                     MGPO_ERR_CHECKPOINT_LAYOUT);
    /* An empty record is a record. */
    ck_assert_int_eq(mgpo_save_with_user(t->st, NULL, 0, buf, cap, &written), MGPO_OK);
    ck_assert_uint_eq(written, plain + 8);
    ck_assert_int_eq(mgpo_load_with_user(u->st, buf, written, NULL, 0, &got_size), MGPO_OK);
    ck_assert_uint_eq(got_size, 0);
    free(before);
    free(fresh);
    free(buf);
    mgpo_destroy(t->st);
    mgpo_destroy(u->st);
    free(t);
    free(u);
}
END_TEST

START_TEST(test_record_in_file)
{
    char *dir = make_dir(), path[4200];
    snprintf(path, sizeof path, "%s/r.mgpo", dir);
    trainer *t = malloc(sizeof *t);
    ck_assert_ptr_nonnull(t);
    trainer_init(t);
    trainer_iterate(t);
    ck_assert_int_eq(mgpo_save_file_with_user(t->st, path, &t->rec, sizeof t->rec), MGPO_OK);
    size_t need = 0;
    /* The size query: capacity 0. */
    ck_assert_int_eq(mgpo_load_file_with_user(t->st, path, NULL, 0, &need),
                     MGPO_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(need, sizeof t->rec);
    ck_assert_int_eq(mgpo_load_file(t->st, path), MGPO_OK); /* ignores the record */
    ck_assert_int_eq(mgpo_save_file(t->st, path), MGPO_OK);
    ck_assert_int_eq(mgpo_load_file_with_user(t->st, path, &t->rec, sizeof t->rec, &need),
                     MGPO_ERR_CHECKPOINT_LAYOUT);
    mgpo_destroy(t->st);
    free(t);
    clear_dir(dir);
    rmdir(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("paired_resume");
    TCase *tc = tcase_create("paired");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_record_in_buffer);
    tcase_add_test(tc, test_record_in_file);
    tcase_add_test(tc, test_killed_trainer_resumes_bitwise);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
