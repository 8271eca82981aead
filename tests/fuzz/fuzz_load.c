/* libFuzzer target for mgpo_load (built with -DMGPO_BUILD_FUZZ=ON and clang;
 * run by .ci/fuzz.sh; docs/fuzzing.md).  Also compiled without libFuzzer
 * into fuzz_replay, which runs the committed corpus in every build.
 *
 * Input: one control byte, then the bytes handed to mgpo_load.  The control
 * byte's low bits pick the state loaded into (FX_LAYOUTS fixture layouts);
 * its top bit recomputes both checksums first, so that mutations reach the
 * record parser instead of stopping at the checksum.
 *
 * Besides crashes and sanitizer reports, the target aborts when
 *   - mgpo_load returns anything but MGPO_OK or a checkpoint error code,
 *   - a refused load changed the state or the caller's parameters,
 *   - an accepted load does not save back to exactly the input bytes,
 *   - an iteration on an accepted state crashes (it may return an error). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"

static int params_same(const fx *f, float *const copy[FX_TENSORS])
{
    for (size_t k = 0; k < FX_TENSORS; k++)
        if (memcmp(copy[k], f->params[k], f->count[k] * sizeof(float)) != 0) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int layout = (data[0] & 0x7f) % FX_LAYOUTS, reseal = (data[0] & 0x80) != 0;
    size--;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) abort();
    memcpy(buf, data + 1, size);
    if (reseal && size >= MGPO_CKPT_HEADER_SIZE) fx_reseal(buf, size);

    fx f;
    if (fx_prepare(&f, layout) != MGPO_OK) abort();
    size_t before_size = 0;
    unsigned char *before = fx_save(f.st, &before_size);
    float *params[FX_TENSORS];
    for (size_t k = 0; k < FX_TENSORS; k++) {
        params[k] = malloc(f.count[k] * sizeof(float));
        if (!before || !params[k]) abort();
        memcpy(params[k], f.params[k], f.count[k] * sizeof(float));
    }

    mgpo_status s = mgpo_load(f.st, buf, size);
    if (s == MGPO_OK) {
        if (!fx_state_is(f.st, buf, size)) abort();
        (void)fx_iterate(&f, 3);
        (void)mgpo_restore(f.st);
    } else {
        if (s < MGPO_ERR_CHECKPOINT_MAGIC || s > MGPO_ERR_CHECKPOINT_TRUNCATED) abort();
        if (!fx_state_is(f.st, before, before_size) || !params_same(&f, params)) abort();
    }
    for (size_t k = 0; k < FX_TENSORS; k++) free(params[k]);
    free(before);
    free(buf);
    fx_free(&f);
    return 0;
}
