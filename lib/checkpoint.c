/* Checkpoints: not yet implemented (issue 4). */
#include "internal.h"

mgpo_status mgpo_checkpoint_size(const mgpo_state *st, size_t *size)
{
    if (!st || !size) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_save(const mgpo_state *st, void *buffer, size_t capacity, size_t *written)
{
    (void)capacity;
    if (!st || !buffer || !written) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_load(mgpo_state *st, const void *buffer, size_t size)
{
    (void)size;
    if (!st || !buffer) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

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
