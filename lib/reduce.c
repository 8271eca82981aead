/* Deterministic sums of squares.
 *
 * A block's sum uses eight interleaved double accumulators combined in a fixed
 * tree, so the compiler may vectorise it without changing a single bit, and
 * blocks are combined in index order by mgpo_sum_blocks.  The result is the
 * same for any thread count and any instruction set. */
#include "internal.h"

double mgpo_sum_squares(const float *x, size_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++) lane[k] += (double)x[i + k] * (double)x[i + k];
    for (size_t k = 0; i < n; i++, k++) lane[k] += (double)x[i] * (double)x[i];
    return mgpo_combine_lanes(lane);
}

double mgpo_sum_blocks(const mgpo_state *st, const mgpo_slot *slot)
{
    double sum = 0.0;
    for (size_t k = 0; k < slot->block_count; k++) sum += st->block_sums[slot->first_block + k];
    return sum;
}
