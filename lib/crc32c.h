/* CRC-32C of the checkpoint format (private, not installed). */
#ifndef MGPO_CRC32C_H
#define MGPO_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes, continuing from `crc` (0 to start; pass the previous
 * result to checksum data given in pieces).  "123456789" gives 0xE3069283. */
uint32_t mgpo_crc32c(uint32_t crc, const void *data, size_t n);
/* The portable byte-wise version, same results (exposed for the tests). */
uint32_t mgpo_crc32c_sw(uint32_t crc, const void *data, size_t n);

#endif
