/* Writes the seed corpus of fuzz_load into the directory given (the
 * committed one is tests/fuzz/corpus; regenerate with
 * `make_fuzz_corpus tests/fuzz/corpus`).  For each fixture layout: a valid
 * checkpoint, the same with the reseal bit, one truncated, one with a
 * flipped payload byte, and a valid one offered to another layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"

static int write_seed(const char *dir, const char *name, int layout, unsigned char control,
                      const unsigned char *ck, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%d-%s", dir, layout, name);
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = fputc(control, f) == EOF || fwrite(ck, 1, size, f) != size;
    return fclose(f) != 0 || bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    int bad = 0;
    for (int layout = 0; layout < FX_LAYOUTS; layout++) {
        fx f;
        size_t size = 0;
        if (fx_prepare(&f, layout) != MGPO_OK) return 1;
        unsigned char *ck = fx_save(f.st, &size);
        if (!ck) return 1;
        unsigned char l = (unsigned char)layout;
        bad |= write_seed(argv[1], "valid", layout, l, ck, size);
        bad |= write_seed(argv[1], "valid-resealed", layout, l | 0x80, ck, size);
        bad |= write_seed(argv[1], "other-layout", layout, (unsigned char)((layout + 1) % FX_LAYOUTS),
                          ck, size);
        bad |= write_seed(argv[1], "truncated", layout, l, ck, size * 2 / 3);
        ck[size / 2] ^= 0x20;
        bad |= write_seed(argv[1], "flipped", layout, l, ck, size);
        free(ck);
        fx_free(&f);
    }
    return bad;
}
