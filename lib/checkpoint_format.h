/* The checkpoint format's constants (docs/checkpoint-format.md is the
 * specification; this header and lib/checkpoint.c must agree with it).
 * Private: shared by lib/checkpoint.c and the tests that craft or reseal
 * checkpoints.  Versions 2 and 3 store every field little-endian on every
 * machine (lib/checkpoint.c's put/get helpers are the only code that knows
 * it); the endian mark is then the bytes 04 03 02 01. */
#ifndef MGPO_CHECKPOINT_FORMAT_H
#define MGPO_CHECKPOINT_FORMAT_H

#define MGPO_CKPT_MAGIC "MGPOCKPT" /* 8 bytes, no terminator */
#define MGPO_CKPT_MAGIC_SIZE 8u
#define MGPO_CKPT_ENDIAN_MARK 0x01020304u
#define MGPO_CKPT_VERSION 3u        /* the version written: mixed precision */
#define MGPO_CKPT_VERSION_FLOAT32 2u /* read only: little-endian, float32 buffers
                                        only, shorter state and item records */
#define MGPO_CKPT_VERSION_NATIVE 1u /* read only: version 2's layout in the
                                       writer's byte order, statistics step
                                       fields 0, no seed */

/* Header: 48 bytes at offset 0. */
#define MGPO_CKPT_OFF_ENDIAN 8u       /* u32 MGPO_CKPT_ENDIAN_MARK */
#define MGPO_CKPT_OFF_VERSION 12u     /* u32 MGPO_CKPT_VERSION */
#define MGPO_CKPT_OFF_HEADER_SIZE 16u /* u32 MGPO_CKPT_HEADER_SIZE */
#define MGPO_CKPT_OFF_FLAGS 20u       /* u32, 0 or MGPO_CKPT_FLAG_USER */
/* Header flag (version 3): the payload ends with the caller's record, its
 * bytes then their count as a u64 (mgpo_save_file_with_user).  A reader
 * without the feature refuses the flag (MGPO_ERR_CHECKPOINT_VERSION). */
#define MGPO_CKPT_FLAG_USER 1u
#define MGPO_CKPT_USER_TRAILER 8u /* the u64 count after the caller's bytes */
#define MGPO_CKPT_OFF_TOTAL_SIZE 24u  /* u64 bytes of the whole checkpoint */
#define MGPO_CKPT_OFF_PAYLOAD_CRC 32u /* u32 CRC-32C of bytes [48, total) */
#define MGPO_CKPT_OFF_RESERVED 36u    /* 8 bytes of zeros */
#define MGPO_CKPT_OFF_HEADER_CRC 44u  /* u32 CRC-32C of bytes [0, 44) */
#define MGPO_CKPT_HEADER_SIZE 48u

/* Payload records (sizes in bytes, of version 3). */
#define MGPO_CKPT_STATE_SIZE 264u /* configuration, counters, statistics, counts, seed,
                                     rounding, loss scale */
#define MGPO_CKPT_STATE_SIZE_V2 248u /* ends after the seed */
#define MGPO_CKPT_STATE_SIZE_V1 240u /* ends before the seed */
#define MGPO_CKPT_STATE_OFF_ROUNDING 248u   /* u32 config.rounding, then u32 0 */
#define MGPO_CKPT_STATE_OFF_GRAD_SCALE 256u /* f64 the loss scale */
/* State record offset 20: bit set = normalize off (the scale fixed at 1). */
#define MGPO_CKPT_FIXED_SCALE 1u
#define MGPO_CKPT_UNIT_SIZE 48u
#define MGPO_CKPT_ITEM_SIZE 72u
#define MGPO_CKPT_ITEM_SIZE_V2 64u /* versions 1 and 2: no base type */
#define MGPO_CKPT_SLOT_SIZE 56u
#define MGPO_CKPT_ITEM_OFF_BASE_APPLIED 60u /* f32 within an item record */
#define MGPO_CKPT_ITEM_OFF_BASE_TYPE 64u    /* u32 W's mgpo_dtype, then u32 0 */
#define MGPO_CKPT_SLOT_OFF_ARRAYS 36u       /* u32 within a slot record */
#define MGPO_CKPT_SLOT_OFF_PARAM_TYPE 44u   /* u32 the caller's parameter
                                               mgpo_dtype (reserved, 0, before
                                               version 3) */
#define MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ 48u  /* f64 within a slot record */

/* Bits of a slot record's `arrays` field: which float arrays follow m. */
#define MGPO_CKPT_SLOT_HAS_V 1u
#define MGPO_CKPT_SLOT_HAS_BACKUP 2u
/* The momentum is the caller's (external optimizer mode): no m array. */
#define MGPO_CKPT_SLOT_EXTERNAL 4u
/* The caller's buffer is bf16/fp16: the float32 master array follows
 * (version 3). */
#define MGPO_CKPT_SLOT_MASTER 8u

/* Between lib/checkpoint.c and lib/checkpoint_file.c (need internal.h). */
#ifdef MGPO_INTERNAL_H
/* Receives the payload in order; returns MGPO_OK or the error to stop with. */
typedef mgpo_status (*mgpo_ckpt_sink)(void *ctx, const void *data, size_t n);
/* Bytes of the whole checkpoint of `st`. */
size_t mgpo_ckpt_size(const mgpo_state *st);
/* Streams the payload of `st` to sink, then fills the header that goes
 * before it (its checksum covers the payload just streamed). */
mgpo_status mgpo_ckpt_stream(const mgpo_state *st, mgpo_ckpt_sink sink, void *ctx,
                             unsigned char header[MGPO_CKPT_HEADER_SIZE]);
/* The caller's record saved with a checkpoint (NULL: none). */
typedef struct mgpo_ckpt_user {
    const void *data; /* may be NULL when size is 0 */
    size_t size;
} mgpo_ckpt_user;
/* mgpo_ckpt_stream with the caller's record after the state (user not
 * NULL: the header gets MGPO_CKPT_FLAG_USER).  The size of the whole
 * checkpoint is then mgpo_ckpt_size + user->size + MGPO_CKPT_USER_TRAILER. */
mgpo_status mgpo_ckpt_stream_user(const mgpo_state *st, mgpo_ckpt_sink sink, void *ctx,
                                  unsigned char header[MGPO_CKPT_HEADER_SIZE],
                                  const mgpo_ckpt_user *user);
/* mgpo_load, and with `want` the caller's record: into user (capacity
 * bytes), its size to *user_size.  A checkpoint without the record is then
 * CHECKPOINT_LAYOUT, a record above capacity BUFFER_TOO_SMALL (*user_size
 * set to the size needed, nothing else changed). */
mgpo_status mgpo_ckpt_load(mgpo_state *st, const unsigned char *b, size_t size, bool want,
                           void *user, size_t capacity, size_t *user_size);
/* The largest checkpoint `st` can produce with its registrations (every
 * backup present): a bound for a file's size before it is read. */
size_t mgpo_ckpt_max_size(const mgpo_state *st);
/* Checks what the first `size` bytes of a header decide alone (magic, byte
 * order, version, header checksum, header fields; steps 1-7 of the format's
 * list), so that a file's header can be judged before the rest is read.  On
 * MGPO_OK: *total the recorded size, *version, *little the byte order,
 * *flags the header's flags (0 or MGPO_CKPT_FLAG_USER). */
mgpo_status mgpo_ckpt_check_header(const unsigned char *b, size_t size, uint64_t *total,
                                   uint32_t *version, bool *little, uint32_t *flags);
/* Writes a valid header for a payload of total-48 bytes with that CRC. */
void mgpo_ckpt_header(unsigned char header[MGPO_CKPT_HEADER_SIZE], uint64_t total,
                      uint32_t payload_crc);
/* The same with header flags. */
void mgpo_ckpt_header_flags(unsigned char header[MGPO_CKPT_HEADER_SIZE], uint64_t total,
                            uint32_t payload_crc, uint32_t flags);
#endif

#endif
