/* Checkpoint files: atomic save with no allocation, load that never blocks.
 *
 * A save streams into a new temporary file next to the target (same
 * directory, so the same file system), fsyncs it, renames it over the target
 * and fsyncs the directory.  rename() is atomic on POSIX: a reader, or a
 * process that starts after a crash, sees the old file or the new one, never
 * a mixture.  A crash may leave a stray ".mgpo-XXXXXX"; it is never mistaken
 * for the checkpoint and may be deleted.  The directory is opened once and
 * the temporary named relative to it, so the temporary's name is short
 * whatever the target's (a 255-byte name still works), and the save needs no
 * buffer but a few on the stack: it never calls the allocator, so every
 * failure is an I/O error and concurrent saves of one state are safe.
 *
 * A load opens without blocking (a FIFO or a terminal would otherwise wait
 * for a writer), refuses anything but a regular file, and judges the 48-byte
 * header before it allocates the buffer the rest is read into.
 *
 * POSIX only: on other systems both calls return MGPO_ERR_UNSUPPORTED. */
#if !defined(_WIN32) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* POSIX 2008 with XSI, for realpath */
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64 /* files over 2 GiB on 32-bit systems */
#endif
#include "internal.h"
#include "checkpoint_format.h"

#include <string.h>

#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* Small records are gathered here; long float arrays bypass it. */
#define MGPO_FILE_STAGE 4096u

typedef struct file_sink {
    int fd;
    size_t used;
    unsigned char stage[MGPO_FILE_STAGE];
} file_sink;

static mgpo_status write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return MGPO_ERR_IO;
        p += k;
        n -= (size_t)k;
    }
    return MGPO_OK;
}

static mgpo_status flush_stage(file_sink *f)
{
    mgpo_status s = write_all(f->fd, f->stage, f->used);
    f->used = 0;
    return s;
}

static mgpo_status file_put(void *ctx, const void *data, size_t n)
{
    file_sink *f = ctx;
    if (n > MGPO_FILE_STAGE - f->used) {
        mgpo_status s = flush_stage(f);
        if (s != MGPO_OK) return s;
        if (n >= MGPO_FILE_STAGE) return write_all(f->fd, data, n);
    }
    memcpy(f->stage + f->used, data, n);
    f->used += n;
    return MGPO_OK;
}

/* The header goes first but is known last: reserve its bytes, stream the
 * payload, then write it in place. */
static mgpo_status write_checkpoint(const mgpo_state *st, int fd, const mgpo_ckpt_user *user)
{
    file_sink f;
    f.fd = fd;
    memset(f.stage, 0, MGPO_CKPT_HEADER_SIZE);
    f.used = MGPO_CKPT_HEADER_SIZE;
    unsigned char header[MGPO_CKPT_HEADER_SIZE];
    mgpo_status s = mgpo_ckpt_stream_user(st, file_put, &f, header, user);
    if (s == MGPO_OK) s = flush_stage(&f);
    if (s == MGPO_OK && pwrite(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
        s = MGPO_ERR_IO;
    if (s == MGPO_OK && fsync(fd) != 0) s = MGPO_ERR_IO;
    return s;
}

/* Where the checkpoint goes: the directory (into dir, PATH_MAX + 1 bytes) and
 * the name in it (*name points into path or dir).  A symbolic link is
 * followed to its final target, so the link stays and the file it names is
 * replaced; a dangling link or a loop is an error. */
static mgpo_status locate_target(const char *path, char dir[PATH_MAX + 1], const char **name)
{
    struct stat info;
    const char *full = path;
    if (lstat(path, &info) == 0 && S_ISLNK(info.st_mode)) {
        if (!realpath(path, dir)) return MGPO_ERR_IO;
        full = dir; /* absolute, so it has a slash */
    }
    const char *slash = strrchr(full, '/');
    if (!slash) {
        *name = full;
        strcpy(dir, ".");
    } else if (slash == full) {
        if (full == dir) { /* "/name": move the name to make room for "/" */
            memmove(dir + 2, dir + 1, strlen(dir + 1) + 1);
            *name = dir + 2;
            dir[1] = '\0';
        } else {
            *name = slash + 1;
            strcpy(dir, "/");
        }
    } else {
        size_t len = (size_t)(slash - full);
        if (len >= PATH_MAX) return MGPO_ERR_IO; /* open() would refuse it */
        *name = slash + 1;                        /* before dir[len] is cut */
        if (full != dir) memcpy(dir, full, len);
        dir[len] = '\0';
    }
    return **name ? MGPO_OK : MGPO_ERR_IO; /* "dir/" names no file */
}

/* Creates ".mgpo-XXXXXX" in the directory with mode 0666, so the umask
 * decides the permissions of a new checkpoint.  The letters mix the
 * process id, the clock and a stack address (no global state); a name that
 * exists is retried with new letters. */
static int create_temporary(int dirfd, char name[16])
{
    static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    struct timespec now;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    uint64_t x = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)now.tv_nsec ^
                 ((uint64_t)now.tv_sec << 30) ^ (uint64_t)(uintptr_t)&now;
    for (int attempt = 0; attempt < 100; attempt++) {
        memcpy(name, ".mgpo-", 6);
        for (int i = 0; i < 6; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            name[6 + i] = letters[(x >> 33) % (sizeof letters - 1)];
        }
        name[12] = '\0';
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

static mgpo_status save_file(const mgpo_state *st, const char *path, const mgpo_ckpt_user *user)
{
    if (!*path) return MGPO_ERR_INVALID_ARGUMENT;
    char dir[PATH_MAX + 1];
    const char *name = NULL;
    mgpo_status s = locate_target(path, dir, &name);
    if (s != MGPO_OK) return s;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return MGPO_ERR_IO;

    /* A file being replaced keeps its permission bits; anything else by
     * that name (a directory, a FIFO, a device) is not replaced. */
    struct stat old;
    bool replacing = fstatat(dirfd, name, &old, 0) == 0;
    char tmp[16];
    int fd = -1;
    if (replacing && !S_ISREG(old.st_mode)) s = MGPO_ERR_IO;
    if (s == MGPO_OK && (fd = create_temporary(dirfd, tmp)) < 0) s = MGPO_ERR_IO;
    if (fd >= 0) {
        if (replacing && fchmod(fd, old.st_mode & 07777) != 0) s = MGPO_ERR_IO;
        if (s == MGPO_OK) s = write_checkpoint(st, fd, user);
        if (close(fd) != 0 && s == MGPO_OK) s = MGPO_ERR_IO;
        if (s == MGPO_OK && renameat(dirfd, tmp, dirfd, name) != 0) s = MGPO_ERR_IO;
        if (s != MGPO_OK) (void)unlinkat(dirfd, tmp, 0);
        /* The rename is durable only once the directory is: a failure here
         * is reported although the new file is already in place. */
        else if (fsync(dirfd) != 0) s = MGPO_ERR_IO;
    }
    if (close(dirfd) != 0 && s == MGPO_OK) s = MGPO_ERR_IO;
    return s;
}

mgpo_status mgpo_save_file(const mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    return save_file(st, path, NULL);
}

mgpo_status mgpo_save_file_with_user(const mgpo_state *st, const char *path, const void *user,
                                     size_t user_size)
{
    if (!st || !path || (!user && user_size)) return MGPO_ERR_NULL_ARGUMENT;
    const mgpo_ckpt_user record = {user, user_size};
    return save_file(st, path, &record);
}

static mgpo_status read_exact(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return MGPO_ERR_IO; /* a file that shrank while read */
        p += k;
        n -= (size_t)k;
    }
    return MGPO_OK;
}

/* The caller's record's size, from the count that ends the file. */
static mgpo_status read_user_size(int fd, uint64_t total, bool little, uint64_t *n)
{
    unsigned char b[MGPO_CKPT_USER_TRAILER];
    if (total < MGPO_CKPT_HEADER_SIZE + sizeof b) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (pread(fd, b, sizeof b, (off_t)(total - sizeof b)) != (ssize_t)sizeof b) return MGPO_ERR_IO;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)b[little ? i : 7 - i] << (8 * i);
    if (x > total - MGPO_CKPT_HEADER_SIZE - sizeof b) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    *n = x;
    return MGPO_OK;
}

/* After the file is open: its header decides, before anything is
 * allocated, whether the rest is worth reading. */
static mgpo_status load_open_file(mgpo_state *st, int fd, bool want, void *user,
                                  size_t capacity, size_t *user_size)
{
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_size < 0)
        return MGPO_ERR_IO;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return MGPO_ERR_IO;

    unsigned char head[MGPO_CKPT_HEADER_SIZE];
    uintmax_t file_size = (uintmax_t)info.st_size;
    size_t have = file_size < sizeof head ? (size_t)file_size : sizeof head;
    mgpo_status s = read_exact(fd, head, have);
    uint64_t total = 0;
    uint32_t version = 0, header_flags = 0;
    bool little = true;
    if (s == MGPO_OK) s = mgpo_ckpt_check_header(head, have, &total, &version, &little, &header_flags);
    if (s != MGPO_OK) return s;
    if (total != file_size) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    uint64_t record = 0;
    if (header_flags & MGPO_CKPT_FLAG_USER) {
        s = read_user_size(fd, total, little, &record);
        if (s != MGPO_OK) return s;
        record += MGPO_CKPT_USER_TRAILER;
    } else if (want) {
        return MGPO_ERR_CHECKPOINT_LAYOUT; /* written without a record */
    }
    if (want && record - MGPO_CKPT_USER_TRAILER > capacity) {
        *user_size = (size_t)(record - MGPO_CKPT_USER_TRAILER);
        return MGPO_ERR_BUFFER_TOO_SMALL;
    }
    /* More than any checkpoint of this state's registrations can hold: the
     * file was written for other tensors (or forged).  The caller's record
     * is the caller's size: it is read only into a buffer of that size. */
    if (total - record > mgpo_ckpt_max_size(st)) return MGPO_ERR_CHECKPOINT_LAYOUT;
    if (total > SIZE_MAX) return MGPO_ERR_OUT_OF_MEMORY;

    size_t size = (size_t)total;
    unsigned char *buf = mgpo_alloc(st, size);
    if (!buf) return MGPO_ERR_OUT_OF_MEMORY;
    memcpy(buf, head, sizeof head);
    s = read_exact(fd, buf + sizeof head, size - sizeof head);
    if (s == MGPO_OK) s = mgpo_ckpt_load(st, buf, size, want, user, capacity, user_size);
    mgpo_free(st, buf, size);
    return s;
}

static mgpo_status load_file(mgpo_state *st, const char *path, bool want, void *user,
                             size_t capacity, size_t *user_size)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return MGPO_ERR_IO;
    mgpo_status s = load_open_file(st, fd, want, user, capacity, user_size);
    (void)close(fd); /* read-only: nothing a failed close could lose */
    return s;
}

mgpo_status mgpo_load_file(mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    return load_file(st, path, false, NULL, 0, NULL);
}

mgpo_status mgpo_load_file_with_user(mgpo_state *st, const char *path, void *user,
                                     size_t capacity, size_t *user_size)
{
    if (!st || !path || !user_size || (!user && capacity)) return MGPO_ERR_NULL_ARGUMENT;
    return load_file(st, path, true, user, capacity, user_size);
}

#else /* _WIN32 */

mgpo_status mgpo_save_file(const mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_load_file(mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_save_file_with_user(const mgpo_state *st, const char *path, const void *user,
                                     size_t user_size)
{
    if (!st || !path || (!user && user_size)) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_load_file_with_user(mgpo_state *st, const char *path, void *user,
                                     size_t capacity, size_t *user_size)
{
    if (!st || !path || !user_size || (!user && capacity)) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

#endif
