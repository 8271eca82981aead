/* Checkpoint files: atomic save, load through a buffer.
 *
 * A save streams into a new temporary file next to the target (same
 * directory, so the same file system), fsyncs it, renames it over the target
 * and fsyncs the directory.  rename() is atomic on POSIX: a reader, or a
 * process that starts after a crash, sees the old file or the new one, never
 * a mixture.  A crash may leave a stray "<path>.tmp.XXXXXX"; it is never
 * mistaken for the checkpoint and may be deleted.  POSIX only: on other
 * systems both calls return MGPO_ERR_UNSUPPORTED. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "internal.h"
#include "checkpoint_format.h"

#include <string.h>

#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Small records are gathered here; float arrays bypass it. */
#define MGPO_FILE_STAGE 16384u

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
static mgpo_status write_checkpoint(const mgpo_state *st, int fd)
{
    file_sink *f = mgpo_alloc(st, sizeof *f);
    if (!f) return MGPO_ERR_OUT_OF_MEMORY;
    f->fd = fd;
    memset(f->stage, 0, MGPO_CKPT_HEADER_SIZE);
    f->used = MGPO_CKPT_HEADER_SIZE;
    unsigned char header[MGPO_CKPT_HEADER_SIZE];
    mgpo_status s = mgpo_ckpt_stream(st, file_put, f, header);
    if (s == MGPO_OK) s = flush_stage(f);
    mgpo_free(st, f, sizeof *f);
    if (s == MGPO_OK && pwrite(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
        s = MGPO_ERR_IO;
    if (s == MGPO_OK && fsync(fd) != 0) s = MGPO_ERR_IO;
    return s;
}

/* Makes the rename durable.  Best effort: some file systems refuse fsync on
 * a directory, and the rename itself has already succeeded. */
static void sync_directory(const mgpo_state *st, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) + 1 : 1;
    char *dir = mgpo_alloc(st, len + 1);
    if (!dir) return;
    if (slash) memcpy(dir, path, len);
    else dir[0] = '.';
    dir[len] = '\0';
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        (void)close(fd);
    }
    mgpo_free(st, dir, len + 1);
}

mgpo_status mgpo_save_file(const mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    if (!*path) return MGPO_ERR_INVALID_ARGUMENT;
    static const char suffix[] = ".tmp.XXXXXX";
    size_t len = strlen(path), bytes = len + sizeof suffix;
    char *tmp = mgpo_alloc(st, bytes);
    if (!tmp) return MGPO_ERR_OUT_OF_MEMORY;
    memcpy(tmp, path, len);
    memcpy(tmp + len, suffix, sizeof suffix);

    mgpo_status s = MGPO_ERR_IO;
    int fd = mkstemp(tmp);
    if (fd >= 0) {
        /* mkstemp makes 0600; keep the mode of the file being replaced, or
         * use the usual 0644 for a new one. */
        struct stat old;
        (void)fchmod(fd, stat(path, &old) == 0 ? (old.st_mode & 07777) : 0644);
        s = write_checkpoint(st, fd);
        if (close(fd) != 0 && s == MGPO_OK) s = MGPO_ERR_IO;
        if (s == MGPO_OK && rename(tmp, path) != 0) s = MGPO_ERR_IO;
        if (s == MGPO_OK) sync_directory(st, path);
        else (void)unlink(tmp);
    }
    mgpo_free(st, tmp, bytes);
    return s;
}

mgpo_status mgpo_load_file(mgpo_state *st, const char *path)
{
    if (!st || !path) return MGPO_ERR_NULL_ARGUMENT;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return MGPO_ERR_IO;
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_size < 0 ||
        (uintmax_t)info.st_size > (uintmax_t)SIZE_MAX) {
        (void)close(fd);
        return MGPO_ERR_IO;
    }
    /* The whole file is read first: validation needs all of it, and a second
     * read after validating could see a file that changed meanwhile. */
    size_t size = (size_t)info.st_size, got = 0;
    unsigned char *buf = size ? mgpo_alloc(st, size) : NULL;
    mgpo_status s = (size && !buf) ? MGPO_ERR_OUT_OF_MEMORY : MGPO_OK;
    while (s == MGPO_OK && got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) s = MGPO_ERR_IO; /* a file that shrank while read */
        else got += (size_t)k;
    }
    (void)close(fd);
    if (s == MGPO_OK) {
        static const unsigned char empty[1] = {0};
        s = mgpo_load(st, size ? (const void *)buf : (const void *)empty, size);
    }
    mgpo_free(st, buf, size);
    return s;
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

#endif
