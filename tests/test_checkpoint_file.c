/* Checkpoint files as a careful user expects them (issue 15, sections 2 and
 * 2b): loads that never block and judge the header before allocating, saves
 * that allocate nothing, respect the umask, work with the longest file
 * names, and write through symbolic links. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"
#include "test_util.h"

/* ---- Helpers --------------------------------------------------------------- */

static char *make_dir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/mgpo-file-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

/* Entries of dir (without . and ..) and how many are save temporaries. */
static int entries(const char *dir, int *temporaries)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0, t = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        t += strncmp(e->d_name, ".mgpo-", 6) == 0;
    }
    closedir(d);
    if (temporaries) *temporaries = t;
    return n;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat info;
        if (lstat(path, &info) == 0 && S_ISDIR(info.st_mode)) remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* An allocator that counts calls, remembers the largest request and
 * refuses every call from number `fail_from` on (0-based). */
typedef struct probe {
    size_t calls, largest, fail_from;
} probe;

static void *probe_alloc(void *ctx, size_t size)
{
    probe *p = ctx;
    size_t call = p->calls++;
    if (size > p->largest) p->largest = size;
    return call >= p->fail_from ? NULL : malloc(size);
}

static void probe_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

/* A fixture-like state (fx_init's tensors, 64 floats in tensor 0) whose
 * allocator is the probe; three iterations, then perturbed. */
typedef struct probed {
    probe p;
    mgpo_state *st;
    fx f; /* only its buffers: f.st is NULL */
} probed;

static void probed_init(probed *s)
{
    memset(s, 0, sizeof *s);
    s->p.fail_from = (size_t)-1;
    mgpo_config cfg = fx_layout_config(0);
    ck_assert_int_eq(fx_init(&s->f, &cfg, 64), MGPO_OK);
    mgpo_destroy(s->f.st);
    s->f.st = NULL;
    mgpo_allocator a = {probe_alloc, probe_free, &s->p};
    ck_assert_int_eq(mgpo_create(&s->st, &cfg, &a), MGPO_OK);
    for (size_t k = 0; k < FX_TENSORS; k++) {
        mgpo_tensor_options o = mgpo_tensor_options_default();
        if (k == 3) {
            o.perturb = 0;
            o.lr_scale = 0.5;
            o.weight_decay_scale = 0.0;
        }
        ck_assert_int_eq(mgpo_add_tensor(s->st, s->f.params[k], s->f.grads[k], s->f.count[k],
                                         &o, NULL),
                         MGPO_OK);
    }
    s->f.st = s->st;
    for (uint64_t t = 0; t < 3; t++) ck_assert_int_eq(fx_iterate(&s->f, t), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(s->st), MGPO_OK);
}

static void probed_free(probed *s)
{
    fx_free(&s->f); /* destroys s->st too */
}

/* 1 when the file at path holds exactly the checkpoint of st. */
static int file_holds(const char *path, const mgpo_state *st)
{
    size_t n = 0;
    unsigned char *want = fx_save(st, &n), *got = malloc(n + 1);
    FILE *f = fopen(path, "rb");
    size_t k = f && got ? fread(got, 1, n + 1, f) : 0;
    if (f) fclose(f);
    int same = want && got && k == n && memcmp(want, got, n) == 0;
    free(want);
    free(got);
    return same;
}

/* ---- Loading never blocks ---------------------------------------------------- */

/* mgpo_load_file on `path` in a child with a 20 s alarm (valgrind is slow): the child's exit
 * code is the status; a child that blocks is killed by the alarm. */
static int load_in_child(const char *path)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check may have installed a handler */
        alarm(20);
        fx f;
        if (fx_prepare(&f, 0) != MGPO_OK) _exit(100);
        int status = (int)mgpo_load_file(f.st, path);
        fx_free(&f);
        _exit(status);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(!WIFSIGNALED(status), "mgpo_load_file blocked on %s (signal %d)", path,
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

START_TEST(test_load_refuses_fifo_device_directory)
{
    char *dir = make_dir(), fifo[4200];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(load_in_child(fifo), MGPO_ERR_IO); /* no writer: open would wait */
    ck_assert_int_eq(load_in_child("/dev/null"), MGPO_ERR_IO);
    ck_assert_int_eq(load_in_child(dir), MGPO_ERR_IO);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* ---- The header is judged before anything is allocated ---------------------- */

static void write_file(const char *path, const unsigned char *bytes, size_t n, off_t length)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, n), (ssize_t)n);
    if (length > 0) ck_assert_int_eq(ftruncate(fd, length), 0);
    ck_assert_int_eq(close(fd), 0);
}

START_TEST(test_load_judges_header_before_allocating)
{
    probed s;
    probed_init(&s);
    char *dir = make_dir(), path[4200];
    snprintf(path, sizeof path, "%s/sparse", dir);
    const off_t huge = (off_t)16 << 30; /* 16 GiB, sparse */
    size_t before_size = 0;
    unsigned char *before = fx_save(s.st, &before_size);

    /* A valid header recording the file's 16 GiB: more than this state's
     * largest checkpoint, refused before the allocator is asked. */
    unsigned char header[MGPO_CKPT_HEADER_SIZE];
    mgpo_ckpt_header(header, (uint64_t)huge, 0);
    write_file(path, header, sizeof header, huge);
    s.p.calls = s.p.largest = 0;
    s.p.fail_from = 0; /* a reader that asks anyway gets NULL, not 16 GiB */
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_ERR_CHECKPOINT_LAYOUT);
    ck_assert_uint_eq(s.p.largest, 0);
    /* Zeros (no magic) and a header recording another size: no request. */
    write_file(path, (const unsigned char *)"", 0, huge);
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_ERR_CHECKPOINT_MAGIC);
    mgpo_ckpt_header(header, 1000, 0);
    write_file(path, header, sizeof header, 999);
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_ERR_CHECKPOINT_TRUNCATED);
    write_file(path, header, 20, 0); /* a header cut short */
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_ERR_CHECKPOINT_TRUNCATED);
    ck_assert_uint_eq(s.p.calls, 0);
    ck_assert(fx_state_is(s.st, before, before_size));

    /* A good file: one request, of its size (plus the library's alignment
     * slack, as lib/state.c); it loads. */
    s.p.fail_from = (size_t)-1;
    ck_assert_int_eq(mgpo_save_file(s.st, path), MGPO_OK);
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_OK);
    ck_assert_uint_eq(s.p.calls, 1);
    ck_assert_uint_eq(s.p.largest, before_size + MGPO_ALIGNMENT + sizeof(void *));
    /* That request refused: OUT_OF_MEMORY, state unchanged. */
    s.p.fail_from = s.p.calls;
    ck_assert_int_eq(mgpo_load_file(s.st, path), MGPO_ERR_OUT_OF_MEMORY);
    ck_assert(fx_state_is(s.st, before, before_size));
    free(before);
    probed_free(&s);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* ---- Saving allocates nothing ----------------------------------------------- */

/* The allocator refuses its k-th call on (k = 0, 1, ...): each save must
 * return an error and leave the old file and no temporary, or return OK
 * with the new checkpoint complete at the path.  A save that makes no call
 * (the library's) makes this one round; it also shows the save never
 * enters the allocator, so concurrent saves cannot enter it together. */
START_TEST(test_save_allocates_nothing)
{
    probed s;
    probed_init(&s);
    char *dir = make_dir(), path[4200];
    snprintf(path, sizeof path, "%s/ckpt", dir);
    fx old;
    ck_assert_int_eq(fx_prepare(&old, 2), MGPO_OK); /* other layout: other bytes */
    ck_assert_int_eq(mgpo_save_file(old.st, path), MGPO_OK);
    for (size_t k = 0;; k++) {
        s.p.calls = 0;
        s.p.fail_from = k;
        mgpo_status got = mgpo_save_file(s.st, path);
        int temporaries = 0;
        ck_assert_int_eq(entries(dir, &temporaries), 1);
        ck_assert_int_eq(temporaries, 0);
        if (got == MGPO_OK) {
            ck_assert(file_holds(path, s.st));
        } else {
            ck_assert_int_eq(got, MGPO_ERR_OUT_OF_MEMORY);
            ck_assert(file_holds(path, old.st));
        }
        if (s.p.calls <= k) break;
        ck_assert_uint_lt(k, 16);
    }
    ck_assert_uint_eq(s.p.calls, 0); /* no allocation at all */
    fx_free(&old);
    probed_free(&s);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* ---- Permissions, long names, symbolic links -------------------------------- */

static mode_t mode_of(const char *path)
{
    struct stat info;
    ck_assert_int_eq(stat(path, &info), 0);
    return info.st_mode & 07777;
}

START_TEST(test_new_file_respects_umask)
{
    fx f;
    ck_assert_int_eq(fx_prepare(&f, 0), MGPO_OK);
    char *dir = make_dir(), path[4200];
    static const mode_t masks[] = {077, 022, 027};
    static const mode_t modes[] = {0600, 0644, 0640};
    mode_t saved = umask(022);
    for (size_t k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/new%zu", dir, k);
        umask(masks[k]);
        ck_assert_int_eq(mgpo_save_file(f.st, path), MGPO_OK);
        ck_assert_uint_eq(mode_of(path), modes[k]);
        /* A replaced file keeps its bits, whatever the umask. */
        ck_assert_int_eq(chmod(path, 0604), 0);
        ck_assert_int_eq(mgpo_save_file(f.st, path), MGPO_OK);
        ck_assert_uint_eq(mode_of(path), 0604);
    }
    umask(saved);
    fx_free(&f);
    remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(test_longest_file_name)
{
    fx f, g;
    ck_assert_int_eq(fx_prepare(&f, 0), MGPO_OK);
    ck_assert_int_eq(fx_prepare(&g, 0), MGPO_OK);
    ck_assert_int_eq(mgpo_restore(g.st), MGPO_OK); /* differs from f */
    char *dir = make_dir(), path[4400];
    long name_max = pathconf(dir, _PC_NAME_MAX);
    ck_assert_int_ge(name_max, 250);
    for (size_t len = 250; len <= (size_t)name_max && len <= 255; len += 5) {
        int at = snprintf(path, sizeof path, "%s/", dir);
        memset(path + at, 'n', len);
        path[at + (int)len] = '\0';
        ck_assert_int_eq(mgpo_save_file(f.st, path), MGPO_OK);
        ck_assert_int_eq(mgpo_load_file(g.st, path), MGPO_OK);
        ck_assert(file_holds(path, f.st));
        ck_assert(file_holds(path, g.st));
        unlink(path);
        ck_assert_int_eq(mgpo_restore(g.st), MGPO_OK);
    }
    ck_assert_int_eq(entries(dir, NULL), 0);
    fx_free(&f);
    fx_free(&g);
    remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(test_save_writes_through_symlink)
{
    fx f, old;
    ck_assert_int_eq(fx_prepare(&f, 0), MGPO_OK);
    ck_assert_int_eq(fx_prepare(&old, 2), MGPO_OK);
    char *dir = make_dir(), real_dir[4200], link_dir[4200], target[4300], link[4300];
    snprintf(real_dir, sizeof real_dir, "%s/real", dir);
    snprintf(link_dir, sizeof link_dir, "%s/links", dir);
    ck_assert_int_eq(mkdir(real_dir, 0700), 0);
    ck_assert_int_eq(mkdir(link_dir, 0700), 0);
    snprintf(target, sizeof target, "%s/ckpt", real_dir);
    snprintf(link, sizeof link, "%s/ckpt", link_dir);
    ck_assert_int_eq(mgpo_save_file(old.st, target), MGPO_OK);
    ck_assert_int_eq(chmod(target, 0640), 0);
    ck_assert_int_eq(symlink("../real/ckpt", link), 0); /* relative to the link */

    ck_assert_int_eq(mgpo_save_file(f.st, link), MGPO_OK);
    struct stat info;
    ck_assert_int_eq(lstat(link, &info), 0);
    ck_assert(S_ISLNK(info.st_mode)); /* the link stays */
    ck_assert(file_holds(target, f.st));
    ck_assert_uint_eq(mode_of(target), 0640);
    int temporaries = 0;
    ck_assert_int_eq(entries(real_dir, &temporaries), 1);
    ck_assert_int_eq(temporaries, 0);
    ck_assert_int_eq(entries(link_dir, NULL), 1);
    ck_assert_int_eq(mgpo_load_file(old.st, link), MGPO_ERR_CHECKPOINT_LAYOUT);

    /* A link to a link, and a dangling link (refused, nothing created). */
    char link2[4300], dangling[4300];
    snprintf(link2, sizeof link2, "%s/ckpt2", link_dir);
    ck_assert_int_eq(symlink("ckpt", link2), 0);
    ck_assert_int_eq(mgpo_save_file(old.st, link2), MGPO_OK);
    ck_assert(file_holds(target, old.st));
    snprintf(dangling, sizeof dangling, "%s/dangling", link_dir);
    ck_assert_int_eq(symlink("../real/missing", dangling), 0);
    ck_assert_int_eq(mgpo_save_file(f.st, dangling), MGPO_ERR_IO);
    ck_assert_int_eq(entries(real_dir, NULL), 1);

    /* Something other than a regular file at the path is not replaced. */
    char fifo[4300];
    snprintf(fifo, sizeof fifo, "%s/fifo", real_dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(mgpo_save_file(f.st, fifo), MGPO_ERR_IO);
    ck_assert_int_eq(lstat(fifo, &info), 0);
    ck_assert(S_ISFIFO(info.st_mode));
    ck_assert_int_eq(mgpo_save_file(f.st, real_dir), MGPO_ERR_IO); /* a directory */
    ck_assert_int_eq(entries(real_dir, &temporaries), 2);
    ck_assert_int_eq(temporaries, 0);
    fx_free(&f);
    fx_free(&old);
    remove_tree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_file");
    TCase *tc = tcase_create("files");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_load_refuses_fifo_device_directory);
    tcase_add_test(tc, test_load_judges_header_before_allocating);
    tcase_add_test(tc, test_save_allocates_nothing);
    tcase_add_test(tc, test_new_file_respects_umask);
    tcase_add_test(tc, test_longest_file_name);
    tcase_add_test(tc, test_save_writes_through_symlink);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
