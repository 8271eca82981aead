/* Checkpoints across machines (issue 16): write on one machine, resume on
 * another (e.g. x86-64 and s390x under qemu-user), compare with a run that
 * never stopped.
 *
 *   ckpt_endian_tool write PREFIX        for each fixture layout L (0-3):
 *       three iterations of the fixture (fx_prepare: layouts 0, 1 and 3 are
 *       saved perturbed; 3 has bf16 and fp16 tensors), then PREFIX.L.ckpt
 *       (mgpo_save_file) and PREFIX.L.params (the caller's parameters,
 *       each element little-endian in its type: 4 or 2 bytes).
 *   ckpt_endian_tool resume PREFIX [N]   for each layout: a fresh state
 *       registered like the writer's loads PREFIX.L.ckpt, puts the
 *       parameters back (the resume rule of mgpo.h), runs N more iterations
 *       (default 20), and compares the parameters and the saved state with
 *       an uninterrupted run of 3 + N iterations on this machine.
 *
 * Prints one line per layout with both FNV-1a 64 digests (of the parameters'
 * little-endian bytes, then of the final checkpoint); exits 0 when every
 * layout matches bit for bit, 1 on a mismatch, 2 on a usage or I/O error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

static void le_float(unsigned char out[4], float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    for (int i = 0; i < 4; i++) out[i] = (unsigned char)(u >> (8 * i));
}

static float float_le(const unsigned char in[4])
{
    uint32_t u = 0;
    for (int i = 0; i < 4; i++) u |= (uint32_t)in[i] << (8 * i);
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Element i of tensor k, little-endian in its type, into b; its size. */
static size_t element_le(unsigned char b[4], const fx *f, size_t k, size_t i)
{
    if (f->type[k] == MGPO_DTYPE_FLOAT32) {
        le_float(b, f->params[k][i]);
        return 4;
    }
    uint16_t h = ((const uint16_t *)(const void *)f->params[k])[i];
    b[0] = (unsigned char)h;
    b[1] = (unsigned char)(h >> 8);
    return 2;
}

/* Digest of the parameters (little-endian bytes) and the checkpoint. */
static int digests(const fx *f, uint64_t *params, uint64_t *state)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t k = 0; k < FX_TENSORS; k++)
        for (size_t i = 0; i < f->count[k]; i++) {
            unsigned char b[4] = {0};
            size_t n = element_le(b, f, k, i);
            h = fnv1a(h, b, n);
        }
    *params = h;
    size_t n = 0;
    unsigned char *ck = fx_save(f->st, &n);
    if (!ck) return 0;
    *state = fnv1a(0xCBF29CE484222325ull, ck, n);
    free(ck);
    return 1;
}

static int write_layout(const char *prefix, int layout)
{
    char path[4096];
    fx f;
    if (fx_prepare(&f, layout) != MGPO_OK) return 2;
    snprintf(path, sizeof path, "%s.%d.ckpt", prefix, layout);
    mgpo_status s = mgpo_save_file(f.st, path);
    if (s != MGPO_OK) {
        fprintf(stderr, "%s: %s\n", path, mgpo_strerror(s));
        fx_free(&f);
        return 2;
    }
    snprintf(path, sizeof path, "%s.%d.params", prefix, layout);
    FILE *out = fopen(path, "wb");
    int bad = !out;
    for (size_t k = 0; k < FX_TENSORS && !bad; k++)
        for (size_t i = 0; i < f.count[k] && !bad; i++) {
            unsigned char b[4];
            size_t n = element_le(b, &f, k, i);
            bad = fwrite(b, 1, n, out) != n;
        }
    if (out && fclose(out) != 0) bad = 1;
    if (bad) fprintf(stderr, "%s: cannot write\n", path);
    else printf("layout %d: wrote %s.%d.ckpt and .params\n", layout, prefix, layout);
    fx_free(&f);
    return bad ? 2 : 0;
}

static int resume_layout(const char *prefix, int layout, uint64_t more)
{
    char path[4096];
    fx resumed, straight;
    if (fx_init_layout(&resumed, layout) != MGPO_OK || fx_prepare(&straight, layout) != MGPO_OK)
        return 2;
    snprintf(path, sizeof path, "%s.%d.ckpt", prefix, layout);
    mgpo_status s = mgpo_load_file(resumed.st, path);
    int rc = 0;
    if (s != MGPO_OK) {
        fprintf(stderr, "%s: %s\n", path, mgpo_strerror(s));
        rc = 2;
    }
    snprintf(path, sizeof path, "%s.%d.params", prefix, layout);
    FILE *in = rc ? NULL : fopen(path, "rb");
    if (!rc && !in) rc = 2;
    for (size_t k = 0; k < FX_TENSORS && !rc; k++)
        for (size_t i = 0; i < resumed.count[k] && !rc; i++) {
            unsigned char b[4];
            size_t n = resumed.type[k] == MGPO_DTYPE_FLOAT32 ? 4 : 2;
            if (fread(b, 1, n, in) != n) rc = 2;
            else if (n == 4) resumed.params[k][i] = float_le(b);
            else ((uint16_t *)(void *)resumed.params[k])[i] = (uint16_t)(b[0] | b[1] << 8);
        }
    if (in) fclose(in);
    for (uint64_t t = 3; t < 3 + more && !rc; t++)
        if (fx_iterate(&resumed, t) != MGPO_OK || fx_iterate(&straight, t) != MGPO_OK) rc = 2;
    uint64_t pr = 0, sr = 0, pu = 0, su = 0;
    if (!rc && (!digests(&resumed, &pr, &sr) || !digests(&straight, &pu, &su))) rc = 2;
    if (!rc) {
        int same = pr == pu && sr == su;
        printf("layout %d: resumed params %016llx state %016llx, uninterrupted params %016llx "
               "state %016llx: %s\n",
               layout, (unsigned long long)pr, (unsigned long long)sr, (unsigned long long)pu,
               (unsigned long long)su, same ? "identical" : "DIFFERENT");
        rc = same ? 0 : 1;
    } else {
        fprintf(stderr, "layout %d: cannot resume from %s.%d.*\n", layout, prefix, layout);
    }
    fx_free(&resumed);
    fx_free(&straight);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "resume")) ||
        (argc == 4 && strcmp(argv[1], "resume"))) {
        fprintf(stderr, "usage: %s write PREFIX | resume PREFIX [N]\n", argv[0]);
        return 2;
    }
    uint64_t more = argc == 4 ? strtoull(argv[3], NULL, 10) : 20;
    int rc = 0;
    for (int layout = 0; layout < FX_LAYOUTS; layout++) {
        int r = argv[1][0] == 'w' ? write_layout(argv[2], layout)
                                  : resume_layout(argv[2], layout, more);
        if (r > rc) rc = r;
    }
    return rc;
}
