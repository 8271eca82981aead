/* Which kernel table a state uses.  Every table gives the same bits
 * (tests/test_kernels.c), so the choice changes speed only. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Every table's probe, fastest first; the portable one, which always runs,
 * last.  A new table is one line here (and its file). */
static const mgpo_kernels *(*const probes[])(void) = {
    mgpo_kernels_avx512,
    mgpo_kernels_avx2,
    mgpo_kernels_portable,
};
#define PROBES (sizeof probes / sizeof probes[0])

const mgpo_kernels *mgpo_kernels_best(void)
{
    for (size_t i = 0; i < PROBES; i++) {
        const mgpo_kernels *k = probes[i]();
        if (k) return k;
    }
    return mgpo_kernels_portable(); /* not reached: the portable probe runs */
}

size_t mgpo_kernels_runnable(const mgpo_kernels **tables, size_t capacity)
{
    size_t count = 0;
    for (size_t i = 0; i < PROBES; i++) {
        const mgpo_kernels *k = probes[i]();
        if (!k) continue;
        if (count < capacity) tables[count] = k;
        count++;
    }
    return count;
}

const mgpo_kernels *mgpo_kernels_named(const char *name)
{
    for (size_t i = 0; name && i < PROBES; i++) {
        const mgpo_kernels *k = probes[i]();
        if (k && strcmp(k->name, name) == 0) return k;
    }
    return NULL;
}

mgpo_status mgpo_kernels_choose(const mgpo_kernels **out)
{
    const char *forced = getenv("MGPO_KERNELS");
    if (!forced || !*forced) {
        *out = mgpo_kernels_best();
        return MGPO_OK;
    }
    const mgpo_kernels *k = mgpo_kernels_named(forced);
    if (!k) return MGPO_ERR_UNSUPPORTED;
    *out = k;
    return MGPO_OK;
}
