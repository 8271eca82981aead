/* Checkpoints: the state to and from a byte stream (docs/checkpoint-format.md).
 *
 * One writer serves the buffer and the file API: it walks the state in the
 * order of the format, checksumming the payload as it goes, and hands bytes
 * to a sink.  One parser serves validation and loading: it runs twice over
 * the same bytes, first only checking (nothing is written), then only
 * copying, so an invalid checkpoint can never leave a half-loaded state and
 * the two passes cannot disagree about the layout.  Only the state's own
 * buffers are written by a load; it allocates nothing, so it cannot fail
 * half-way. */
#include "internal.h"
#include "checkpoint_format.h"
#include "crc32c.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- Writer -------------------------------------------------------------- */

typedef struct writer {
    mgpo_ckpt_sink sink;
    void *ctx;
    uint32_t crc;
    mgpo_status status;
} writer;

static void put(writer *w, const void *p, size_t n)
{
    if (w->status != MGPO_OK || n == 0) return;
    w->crc = mgpo_crc32c(w->crc, p, n);
    w->status = w->sink(w->ctx, p, n);
}

/* ---- Byte order ------------------------------------------------------------
 * Versions 2 and 3 store every field little-endian on every machine; these
 * helpers are the only code that knows it.  Version 1 (read only) used the
 * writer's byte order, which the reader gets as `little`. */

static bool host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static void store_le16(unsigned char *at, uint16_t x)
{
    at[0] = (unsigned char)x;
    at[1] = (unsigned char)(x >> 8);
}

static void store_le32(unsigned char *at, uint32_t x)
{
    for (int i = 0; i < 4; i++) at[i] = (unsigned char)(x >> (8 * i));
}

static void store_le64(unsigned char *at, uint64_t x)
{
    for (int i = 0; i < 8; i++) at[i] = (unsigned char)(x >> (8 * i));
}

static uint16_t decode16(const unsigned char *at, bool little)
{
    return (uint16_t)(at[little ? 0 : 1] | at[little ? 1 : 0] << 8);
}

static uint32_t decode32(const unsigned char *at, bool little)
{
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) x |= (uint32_t)at[little ? i : 3 - i] << (8 * i);
    return x;
}

static uint64_t decode64(const unsigned char *at, bool little)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)at[little ? i : 7 - i] << (8 * i);
    return x;
}

static uint64_t double_bits(double x) { uint64_t u; memcpy(&u, &x, sizeof u); return u; }
static double bits_double(uint64_t u) { double x; memcpy(&x, &u, sizeof x); return x; }

static void put_u32(writer *w, uint32_t x)
{
    unsigned char b[4];
    store_le32(b, x);
    put(w, b, sizeof b);
}

static void put_u64(writer *w, uint64_t x)
{
    unsigned char b[8];
    store_le64(b, x);
    put(w, b, sizeof b);
}

static void put_i32(writer *w, int32_t x) { put_u32(w, (uint32_t)x); }
static void put_f64(writer *w, double x) { put_u64(w, double_bits(x)); }
static void put_f32(writer *w, float x) { put_u32(w, mgpo_float_bits(x)); }

/* A little-endian machine hands the array over as it is; another converts
 * it piece by piece in a small buffer (saving allocates nothing). */
static void put_floats(writer *w, const float *x, size_t n)
{
    if (host_is_little_endian()) {
        put(w, x, n * sizeof *x);
        return;
    }
    enum { PIECE = 256 };
    unsigned char b[PIECE * 4];
    for (size_t i = 0; i < n; i += PIECE) {
        size_t k = n - i < PIECE ? n - i : PIECE;
        for (size_t j = 0; j < k; j++) store_le32(b + 4 * j, mgpo_float_bits(x[i + j]));
        put(w, b, 4 * k);
    }
}

/* The same for the bit patterns of a bf16/fp16 buffer (uint16_t each). */
static void put_halves(writer *w, const uint16_t *x, size_t n)
{
    if (host_is_little_endian()) {
        put(w, x, n * sizeof *x);
        return;
    }
    enum { PIECE = 512 };
    unsigned char b[PIECE * 2];
    for (size_t i = 0; i < n; i += PIECE) {
        size_t k = n - i < PIECE ? n - i : PIECE;
        for (size_t j = 0; j < k; j++) store_le16(b + 2 * j, x[i + j]);
        put(w, b, 2 * k);
    }
}

/* n elements of `type` (a buffer of the caller's kind). */
static void put_elements(writer *w, const void *x, mgpo_dtype type, size_t n)
{
    switch (type) {
    case MGPO_DTYPE_FLOAT32: put_floats(w, x, n); return;
    case MGPO_DTYPE_BFLOAT16:
    case MGPO_DTYPE_FLOAT16: put_halves(w, x, n); return;
    }
    /* Unknown type (registration refuses one): mgpo_dtype_size is 0, so
     * the sizes count no bytes and none are written. */
}

/* ---- Reader -------------------------------------------------------------- */

typedef struct reader {
    const unsigned char *p;
    size_t left;
    bool short_read; /* a read went past the end: the payload is truncated */
    bool little;     /* the checkpoint's byte order (version 2: always) */
} reader;

static const unsigned char *take(reader *r, size_t n)
{
    if (r->short_read || n > r->left) {
        r->short_read = true;
        return NULL;
    }
    const unsigned char *at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}

static uint32_t get_u32(reader *r)
{
    const unsigned char *at = take(r, 4);
    return at ? decode32(at, r->little) : 0;
}

static uint64_t get_u64(reader *r)
{
    const unsigned char *at = take(r, 8);
    return at ? decode64(at, r->little) : 0;
}

static int32_t get_i32(reader *r)
{
    uint32_t u = get_u32(r);
    int32_t x;
    memcpy(&x, &u, sizeof x); /* two's complement, as the writer's cast */
    return x;
}

static double get_f64(reader *r) { return bits_double(get_u64(r)); }
static float get_f32(reader *r) { return mgpo_bits_float(get_u32(r)); }

/* n floats into dst (pass 2 only); a copy when the byte orders agree. */
static void get_floats(reader *r, float *dst, size_t n, bool apply)
{
    const unsigned char *at = take(r, n * sizeof(float));
    if (!apply || !at) return;
    if (r->little == host_is_little_endian()) {
        memcpy(dst, at, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = mgpo_bits_float(decode32(at + 4 * i, r->little));
}

/* n elements of `type` into dst (pass 2 only), as get_floats. */
static void get_elements(reader *r, void *dst, mgpo_dtype type, size_t n, bool apply)
{
    switch (type) {
    case MGPO_DTYPE_FLOAT32: get_floats(r, dst, n, apply); return;
    case MGPO_DTYPE_BFLOAT16:
    case MGPO_DTYPE_FLOAT16: break;
    default: return; /* unknown type: no bytes, as put_elements */
    }
    const unsigned char *at = take(r, n * sizeof(uint16_t));
    if (!apply || !at) return;
    if (r->little == host_is_little_endian()) {
        memcpy(dst, at, n * sizeof(uint16_t));
        return;
    }
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = decode16(at + 2 * i, r->little);
}

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }
static bool is_flag(uint32_t x) { return x <= 1u; }
/* A norm, EMA or sum of squares as a run computes it: finite, >= 0 and never
 * -0.0 (sums start at +0.0 and round to nearest). */
static bool is_magnitude(double x) { return isfinite(x) && !signbit(x); }
/* A coefficient applied as a float: +0.0 (none), or the float of the unit's
 * coefficient (a run never stores -0.0: an underflowing one skips the unit). */
static bool is_applied(float applied, double unit_coefficient)
{
    return memcmp(&applied, &(float){0.0f}, sizeof applied) == 0 ||
           (unit_coefficient != 0.0 && applied == (float)unit_coefficient);
}

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (r->short_read) return MGPO_ERR_CHECKPOINT_TRUNCATED;         \
        if (!(cond)) return MGPO_ERR_CHECKPOINT_LAYOUT;                  \
    } while (0)

/* ---- LoRA-specific part ----------------------------------------------------
 * The only code here that knows mgpo_lora_item.  An item record carries the
 * pair's shape (zeros for a plain tensor), the coefficient applied to W in
 * base mode and (version 3) W's element type; the copy of the clean W, in
 * W's own type, follows all slot arrays when that coefficient is non-zero. */

/* W's element type as recorded: float32 (0) for a tensor or an adapter-mode
 * pair, which have no W. */
static mgpo_dtype lora_base_type(const mgpo_item *it)
{
    const mgpo_lora_item *l = it->lora;
    return l && l->desc.mode == MGPO_LORA_BASE ? l->desc.base_type : MGPO_DTYPE_FLOAT32;
}

/* Elements of W in the checkpoint (0 unless perturbed in base mode). */
static size_t lora_base_elements(const mgpo_item *it)
{
    const mgpo_lora_item *l = it->lora;
    if (!l || !l->base_backup || l->base_applied == 0.0f) return 0;
    return l->desc.n_out * l->desc.n_in;
}

static void put_item_lora(writer *w, const mgpo_item *it)
{
    const mgpo_lora_item *l = it->lora;
    put_u64(w, l ? l->desc.rank : 0);
    put_u64(w, l ? l->desc.n_in : 0);
    put_u64(w, l ? l->desc.n_out : 0);
    put_f64(w, l ? l->desc.scaling : 0.0);
    put_u32(w, l ? (uint32_t)l->desc.mode : 0);
    put_f32(w, l && l->base_backup ? l->base_applied : 0.0f);
    put_u32(w, (uint32_t)lora_base_type(it));
    put_u32(w, 0);
}

static mgpo_status get_item_lora(reader *r, mgpo_item *it, uint32_t version, bool perturbed,
                                 double coefficient, bool apply)
{
    uint64_t rank = get_u64(r), n_in = get_u64(r), n_out = get_u64(r);
    double scaling = get_f64(r);
    uint32_t mode = get_u32(r);
    float applied = get_f32(r);
    /* Before version 3 every W was float32. */
    uint32_t base_type = MGPO_DTYPE_FLOAT32, reserved = 0;
    if (version >= MGPO_CKPT_VERSION) {
        base_type = get_u32(r);
        reserved = get_u32(r);
    }
    CHECK(reserved == 0 && base_type == (uint32_t)lora_base_type(it));
    mgpo_lora_item *l = it->lora;
    if (!l) {
        CHECK(rank == 0 && n_in == 0 && n_out == 0 && same_bits(scaling, 0.0) && mode == 0 &&
              same_bits(applied, 0.0f));
        return MGPO_OK;
    }
    CHECK(rank == l->desc.rank && n_in == l->desc.n_in && n_out == l->desc.n_out &&
          same_bits(scaling, l->desc.scaling) && mode == (uint32_t)l->desc.mode);
    CHECK(is_applied(applied, coefficient));
    CHECK(applied == 0.0f || (l->base_backup && perturbed && it->perturb));
    if (apply) l->base_applied = l->base_backup ? applied : 0.0f;
    return MGPO_OK;
}

static void put_lora_base(writer *w, const mgpo_item *it)
{
    put_elements(w, it->lora ? it->lora->base_backup : NULL, lora_base_type(it),
                 lora_base_elements(it));
}

/* `present`: the record's coefficient is non-zero (validated: then the
 * state has a base backup of n_out*n_in elements of W's type). */
static void get_lora_base(reader *r, mgpo_item *it, bool present, bool apply)
{
    if (!present || !it->lora || !it->lora->base_backup) return;
    get_elements(r, it->lora->base_backup, lora_base_type(it),
                 it->lora->desc.n_out * it->lora->desc.n_in, apply);
}

/* ---- Sizes ----------------------------------------------------------------- */

/* A slot's clean copy is saved while it is perturbed in exact mode: float32
 * (`backup`), or, for a bf16/fp16 buffer in external mode (no master), in
 * the buffer's own type (`out_backup`). */
static bool slot_saves_backup(const mgpo_slot *sl)
{
    return (sl->backup || sl->out_backup) && sl->applied != 0.0f;
}

/* Bytes of a slot's arrays: m, v, the clean copy while perturbed (exact
 * mode), the master weights of a bf16/fp16 buffer (which has no copy);
 * `all`: as if perturbed (the largest it can be). */
static size_t slot_bytes(const mgpo_state *st, const mgpo_slot *sl, bool all)
{
    bool copy = all ? (sl->backup || sl->out_backup) : slot_saves_backup(sl);
    /* m: the state's own in integrated mode; the caller's in external mode. */
    size_t floats = (mgpo_external(st) ? 0 : 1) + (sl->v ? 1 : 0) + (copy && sl->backup ? 1 : 0) +
                    (mgpo_slot_has_master(sl) ? 1 : 0);
    size_t typed = copy && sl->out_backup ? mgpo_dtype_size(sl->out_type) : 0;
    return sl->count * (floats * sizeof(float) + typed);
}

/* Bytes of a base-mode pair's W in its own type (whether saved or not). */
static size_t lora_base_bytes(const mgpo_item *it)
{
    const mgpo_lora_item *l = it->lora;
    return l && l->base_backup
               ? l->desc.n_out * l->desc.n_in * mgpo_dtype_size(lora_base_type(it))
               : 0;
}

/* Header and records: everything but the float arrays. */
static size_t records_size(const mgpo_state *st)
{
    return MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE +
           st->unit_count * MGPO_CKPT_UNIT_SIZE + st->item_count * MGPO_CKPT_ITEM_SIZE +
           st->slot_count * MGPO_CKPT_SLOT_SIZE;
}

size_t mgpo_ckpt_max_size(const mgpo_state *st)
{
    size_t bytes = 0, base = 0;
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        /* m counted even in external mode: a bound, not the size. */
        bytes += slot_bytes(st, sl, true) + (mgpo_external(st) ? sl->count * sizeof(float) : 0);
    }
    for (size_t i = 0; i < st->item_count; i++) base += lora_base_bytes(&st->items[i]);
    return records_size(st) + bytes + base;
}

size_t mgpo_ckpt_size(const mgpo_state *st)
{
    size_t bytes = 0, base = 0;
    for (size_t i = 0; i < st->slot_count; i++) bytes += slot_bytes(st, &st->slots[i], false);
    for (size_t i = 0; i < st->item_count; i++)
        base += lora_base_elements(&st->items[i]) * mgpo_dtype_size(lora_base_type(&st->items[i]));
    return records_size(st) + bytes + base;
}

/* ---- Saving ---------------------------------------------------------------- */

static void put_state(writer *w, const mgpo_state *st)
{
    const mgpo_config *c = &st->config;
    put_u32(w, (uint32_t)c->optimizer);
    put_i32(w, (int32_t)c->sign);
    put_u32(w, (uint32_t)c->scope);
    put_u32(w, (uint32_t)c->restore_mode);
    put_u32(w, (uint32_t)c->nesterov);
    put_u32(w, c->normalize ? 0u : MGPO_CKPT_FIXED_SCALE);
    const double hyper[12] = {c->lr,           c->beta1,    c->beta2,     c->eps,
                              c->weight_decay, c->momentum, c->dampening, c->rho,
                              c->norm_ema,     c->scale_max, c->norm_eps, c->max_grad_norm};
    for (size_t i = 0; i < 12; i++) put_f64(w, hyper[i]);

    put_u64(w, st->step);
    put_u64(w, st->skipped_steps);
    put_u32(w, st->perturbed ? 1u : 0u);
    put_u32(w, (uint32_t)c->direction);

    /* The statistics as mgpo_get_stats reports them: its step, skipped and
     * perturbed fields are the counters (version 1 wrote zeros there). */
    const mgpo_stats *s = &st->stats;
    put_u64(w, st->step);
    put_u64(w, st->skipped_steps);
    const double sd[6] = {s->lr, s->grad_norm, s->grad_norm_ema, s->momentum_norm,
                          s->perturbation_norm, s->perturbation_scale};
    for (size_t i = 0; i < 6; i++) put_f64(w, sd[i]);
    put_i32(w, st->perturbed ? 1 : 0);
    put_i32(w, s->clipped);

    put_u64(w, st->item_count);
    put_u64(w, st->slot_count);
    put_u64(w, st->unit_count);
    put_u64(w, c->seed);
    /* Version 3.  Stochastic rounding needs nothing else: its generator's
     * position is (seed, step), both above. */
    put_u32(w, (uint32_t)c->rounding);
    put_u32(w, 0);
    put_f64(w, st->grad_scale);
}

/* The slot record's `arrays` bits: which float arrays follow the record. */
static uint32_t slot_arrays(const mgpo_state *st, const mgpo_slot *sl, bool backup)
{
    return (sl->v ? MGPO_CKPT_SLOT_HAS_V : 0u) | (backup ? MGPO_CKPT_SLOT_HAS_BACKUP : 0u) |
           (mgpo_external(st) ? MGPO_CKPT_SLOT_EXTERNAL : 0u) |
           (mgpo_slot_has_master(sl) ? MGPO_CKPT_SLOT_MASTER : 0u);
}

/* The element type of the caller's parameter buffer of a slot. */
static uint32_t slot_param_type(const mgpo_slot *sl)
{
    return (uint32_t)(mgpo_slot_typed_out(sl) ? sl->out_type : MGPO_DTYPE_FLOAT32);
}

static void put_records(writer *w, const mgpo_state *st)
{
    for (size_t u = 0; u < st->unit_count; u++) {
        const mgpo_unit *un = &st->units[u];
        put_u32(w, un->gbar_set ? 1u : 0u);
        put_u32(w, 0);
        put_f64(w, un->gbar);
        put_f64(w, un->gamma);
        put_f64(w, un->momentum_norm);
        put_f64(w, un->scale);
        put_f64(w, un->coefficient);
    }
    for (size_t i = 0; i < st->item_count; i++) {
        const mgpo_item *it = &st->items[i];
        put_u32(w, (uint32_t)it->kind);
        put_u32(w, it->perturb ? 1u : 0u);
        put_u64(w, it->slot_count);
        put_u64(w, it->unit);
        put_item_lora(w, it);
    }
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        bool backup = slot_saves_backup(sl);
        put_u64(w, sl->count);
        put_u64(w, sl->item);
        put_f64(w, sl->lr_scale);
        put_f64(w, sl->weight_decay_scale);
        put_u32(w, sl->perturb ? 1u : 0u);
        put_u32(w, slot_arrays(st, sl, backup));
        put_f32(w, sl->applied);
        put_u32(w, slot_param_type(sl));
        put_f64(w, sl->momentum_sq);
    }
}

/* The clean parameters of a perturbed exact-mode slot: its plain copy, or
 * block by block its perturbed values with the perturbation undone and the
 * block's exception list applied (bit-exact, see MGPO_FULL_BACKUP), rebuilt
 * in a small buffer so that saving allocates nothing. */
static void put_clean_params(writer *w, const mgpo_state *st, const mgpo_slot *sl)
{
    enum { PIECE = 256 };
    float clean[PIECE], scratch[MGPO_BLOCK_FLOATS];
    if (sl->full_copy) {
        put_floats(w, sl->backup, sl->count);
        return;
    }
    for (size_t begin = 0; begin < sl->count; begin += MGPO_BLOCK_FLOATS) {
        size_t count = mgpo_block_length(sl, begin);
        mgpo_exception_reader list = mgpo_exceptions_of(sl->backup + begin, count);
        const float *direction = mgpo_direction_block(st, sl, begin, count, scratch);
        for (size_t i = 0; i < count; i += PIECE) {
            size_t n = count - i < PIECE ? count - i : PIECE;
            mgpo_restore_range(clean, sl->params + begin, direction, sl->applied, &list, i, n);
            put_floats(w, clean, n);
        }
    }
}

static void put_arrays(writer *w, const mgpo_state *st)
{
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        if (!mgpo_external(st)) put_floats(w, sl->m, sl->count);
        if (sl->v) put_floats(w, sl->v, sl->count);
        if (sl->backup && sl->applied != 0.0f) put_clean_params(w, st, sl);
        /* External mode, bf16/fp16: the copy in the buffer's type. */
        if (sl->out_backup && sl->applied != 0.0f)
            put_elements(w, sl->out_backup, sl->out_type, sl->count);
        /* The master is the clean value (never perturbed). */
        if (mgpo_slot_has_master(sl)) put_floats(w, sl->params, sl->count);
    }
    for (size_t i = 0; i < st->item_count; i++) put_lora_base(w, &st->items[i]);
}


void mgpo_ckpt_header(unsigned char header[MGPO_CKPT_HEADER_SIZE], uint64_t total,
                      uint32_t payload_crc)
{
    mgpo_ckpt_header_flags(header, total, payload_crc, 0);
}

void mgpo_ckpt_header_flags(unsigned char header[MGPO_CKPT_HEADER_SIZE], uint64_t total,
                            uint32_t payload_crc, uint32_t flags)
{
    memset(header, 0, MGPO_CKPT_HEADER_SIZE);
    store_le32(header + MGPO_CKPT_OFF_FLAGS, flags);
    memcpy(header, MGPO_CKPT_MAGIC, MGPO_CKPT_MAGIC_SIZE);
    store_le32(header + MGPO_CKPT_OFF_ENDIAN, MGPO_CKPT_ENDIAN_MARK);
    store_le32(header + MGPO_CKPT_OFF_VERSION, MGPO_CKPT_VERSION);
    store_le32(header + MGPO_CKPT_OFF_HEADER_SIZE, MGPO_CKPT_HEADER_SIZE);
    store_le64(header + MGPO_CKPT_OFF_TOTAL_SIZE, total);
    store_le32(header + MGPO_CKPT_OFF_PAYLOAD_CRC, payload_crc);
    store_le32(header + MGPO_CKPT_OFF_HEADER_CRC,
              mgpo_crc32c(0, header, MGPO_CKPT_OFF_HEADER_CRC));
}

mgpo_status mgpo_ckpt_stream(const mgpo_state *st, mgpo_ckpt_sink sink, void *ctx,
                             unsigned char header[MGPO_CKPT_HEADER_SIZE])
{
    return mgpo_ckpt_stream_user(st, sink, ctx, header, NULL);
}

mgpo_status mgpo_ckpt_stream_user(const mgpo_state *st, mgpo_ckpt_sink sink, void *ctx,
                                  unsigned char header[MGPO_CKPT_HEADER_SIZE],
                                  const mgpo_ckpt_user *user)
{
    writer w = {sink, ctx, 0, MGPO_OK};
    /* Rebuilding the clean parameters is arithmetic: the kernels' environment. */
    fenv_t caller;
    mgpo_fp_enter(&caller);
    put_state(&w, st);
    put_records(&w, st);
    put_arrays(&w, st);
    mgpo_fp_leave(&caller);
    size_t total = mgpo_ckpt_size(st);
    if (user) {
        /* The caller's bytes, then their count: inside the payload, so the
         * same checksum and the same atomic file cover both. */
        put(&w, user->data, user->size);
        put_u64(&w, (uint64_t)user->size);
        total += user->size + MGPO_CKPT_USER_TRAILER;
    }
    if (w.status == MGPO_OK)
        mgpo_ckpt_header_flags(header, total, w.crc, user ? MGPO_CKPT_FLAG_USER : 0u);
    return w.status;
}

typedef struct memory_sink {
    unsigned char *at;
} memory_sink;

static mgpo_status memory_put(void *ctx, const void *data, size_t n)
{
    memory_sink *m = ctx;
    memcpy(m->at, data, n);
    m->at += n;
    return MGPO_OK;
}

mgpo_status mgpo_checkpoint_size(const mgpo_state *st, size_t *size)
{
    if (!st || !size) return MGPO_ERR_NULL_ARGUMENT;
    *size = mgpo_ckpt_size(st);
    return MGPO_OK;
}

mgpo_status mgpo_save(const mgpo_state *st, void *buffer, size_t capacity, size_t *written)
{
    if (!st || !buffer || !written) return MGPO_ERR_NULL_ARGUMENT;
    size_t size = mgpo_ckpt_size(st);
    if (capacity < size) return MGPO_ERR_BUFFER_TOO_SMALL;
    unsigned char *out = buffer;
    memory_sink m = {out + MGPO_CKPT_HEADER_SIZE};
    mgpo_status s = mgpo_ckpt_stream(st, memory_put, &m, out);
    if (s == MGPO_OK) *written = size;
    return s;
}

mgpo_status mgpo_save_with_user(const mgpo_state *st, const void *user, size_t user_size,
                                void *buffer, size_t capacity, size_t *written)
{
    if (!st || !buffer || !written || (!user && user_size)) return MGPO_ERR_NULL_ARGUMENT;
    size_t size = mgpo_ckpt_size(st);
    if (user_size > SIZE_MAX - size - MGPO_CKPT_USER_TRAILER) return MGPO_ERR_INVALID_ARGUMENT;
    size += user_size + MGPO_CKPT_USER_TRAILER;
    if (capacity < size) return MGPO_ERR_BUFFER_TOO_SMALL;
    unsigned char *out = buffer;
    memory_sink m = {out + MGPO_CKPT_HEADER_SIZE};
    const mgpo_ckpt_user record = {user, user_size};
    mgpo_status s = mgpo_ckpt_stream_user(st, memory_put, &m, out, &record);
    if (s == MGPO_OK) *written = size;
    return s;
}

/* ---- Loading --------------------------------------------------------------- */

/* Steps 1-7 of docs/checkpoint-format.md's list: everything the 48 header
 * bytes decide on their own (`size` may be smaller: then the checks stop
 * where the bytes end).  On MGPO_OK *total is the recorded size, *version
 * the format version and *little the byte order of every later field. */
mgpo_status mgpo_ckpt_check_header(const unsigned char *b, size_t size, uint64_t *total,
                                   uint32_t *version, bool *little, uint32_t *flags)
{
    size_t magic = size < MGPO_CKPT_MAGIC_SIZE ? size : MGPO_CKPT_MAGIC_SIZE;
    if (memcmp(b, MGPO_CKPT_MAGIC, magic) != 0) return MGPO_ERR_CHECKPOINT_MAGIC;
    if (size < MGPO_CKPT_OFF_VERSION + 4) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    /* The mark gives the writer's byte order, in which the version is read
     * (bytes 0-15 mean the same in every version). */
    bool le;
    if (decode32(b + MGPO_CKPT_OFF_ENDIAN, true) == MGPO_CKPT_ENDIAN_MARK) le = true;
    else if (decode32(b + MGPO_CKPT_OFF_ENDIAN, false) == MGPO_CKPT_ENDIAN_MARK) le = false;
    else return MGPO_ERR_CHECKPOINT_ENDIAN;
    uint32_t v = decode32(b + MGPO_CKPT_OFF_VERSION, le);
    if (v != MGPO_CKPT_VERSION && v != MGPO_CKPT_VERSION_FLOAT32 && v != MGPO_CKPT_VERSION_NATIVE)
        return MGPO_ERR_CHECKPOINT_VERSION;
    /* Versions 2 and 3 are little-endian by definition; version 1 is read
     * only on the byte order that wrote it. */
    if (v != MGPO_CKPT_VERSION_NATIVE ? !le : le != host_is_little_endian())
        return MGPO_ERR_CHECKPOINT_ENDIAN;
    if (size < MGPO_CKPT_HEADER_SIZE) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (mgpo_crc32c(0, b, MGPO_CKPT_OFF_HEADER_CRC) != decode32(b + MGPO_CKPT_OFF_HEADER_CRC, le))
        return MGPO_ERR_CHECKPOINT_CHECKSUM;
    static const unsigned char zeros[8] = {0};
    /* The caller's record came with version 3's readers. */
    uint32_t f = decode32(b + MGPO_CKPT_OFF_FLAGS, le);
    bool known = f == 0 || (f == MGPO_CKPT_FLAG_USER && v == MGPO_CKPT_VERSION);
    if (decode32(b + MGPO_CKPT_OFF_HEADER_SIZE, le) != MGPO_CKPT_HEADER_SIZE || !known ||
        memcmp(b + MGPO_CKPT_OFF_RESERVED, zeros, sizeof zeros) != 0)
        return MGPO_ERR_CHECKPOINT_VERSION;
    *total = decode64(b + MGPO_CKPT_OFF_TOTAL_SIZE, le);
    *version = v;
    *little = le;
    *flags = f;
    return MGPO_OK;
}

/* Steps 8 and 9: the size and the payload checksum. */
static mgpo_status check_header(const unsigned char *b, size_t size, uint32_t *version,
                                bool *little, uint32_t *flags)
{
    uint64_t total = 0;
    mgpo_status s = mgpo_ckpt_check_header(b, size, &total, version, little, flags);
    if (s != MGPO_OK) return s;
    if (total != size) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (mgpo_crc32c(0, b + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE) !=
        decode32(b + MGPO_CKPT_OFF_PAYLOAD_CRC, *little))
        return MGPO_ERR_CHECKPOINT_CHECKSUM;
    return MGPO_OK;
}

/* The fixed state record.  *perturbed, *step_out and *config_out get the
 * flag, the step count and the configuration for the later checks. */
static mgpo_status get_state(reader *r, mgpo_state *st, uint32_t version, bool apply,
                             bool *perturbed, uint64_t *step_out, mgpo_config *config_out)
{
    mgpo_config c = st->config; /* num_threads is the loading machine's */
    uint32_t optimizer = get_u32(r), scope, restore_mode, nesterov;
    int32_t sign = get_i32(r);
    scope = get_u32(r);
    restore_mode = get_u32(r);
    nesterov = get_u32(r);
    uint32_t scale_flags = get_u32(r);
    CHECK((scale_flags & ~MGPO_CKPT_FIXED_SCALE) == 0);
    c.normalize = (scale_flags & MGPO_CKPT_FIXED_SCALE) ? 0 : 1;
    /* These decide which buffers exist, so they must match the state. */
    CHECK(optimizer == (uint32_t)c.optimizer && scope == (uint32_t)c.scope &&
          restore_mode == (uint32_t)c.restore_mode);
    CHECK((sign == -1 || sign == 1) && is_flag(nesterov));
    c.sign = sign < 0 ? MGPO_SIGN_LOOKAHEAD : MGPO_SIGN_ASCENT;
    c.nesterov = (int)nesterov;
    double *hyper[12] = {&c.lr,           &c.beta1,    &c.beta2,     &c.eps,
                         &c.weight_decay, &c.momentum, &c.dampening, &c.rho,
                         &c.norm_ema,     &c.scale_max, &c.norm_eps, &c.max_grad_norm};
    for (size_t i = 0; i < 12; i++) *hyper[i] = get_f64(r);
    CHECK(mgpo_config_validate(&c) == MGPO_OK && mgpo_check_slot_rates(st, &c) == MGPO_OK);

    uint64_t step = get_u64(r), skipped = get_u64(r);
    uint32_t flag = get_u32(r), direction = get_u32(r);
    CHECK(is_flag(flag));
    /* Decides which registrations are allowed (no LoRA pairs), so it must
     * match the state. */
    CHECK(direction == (uint32_t)c.direction);
    /* No run reaches UINT64_MAX steps (t + 1 would wrap to 0), and none is
     * perturbed before its first step but in external mode (which perturbs
     * once the caller's momentum is attached). */
    CHECK(step != UINT64_MAX &&
          (flag == 0 || step > 0 || c.optimizer_mode == MGPO_OPTIMIZER_EXTERNAL));
    *perturbed = flag != 0;
    *step_out = step;
    *config_out = c;

    mgpo_stats s;
    memset(&s, 0, sizeof s);
    s.step = get_u64(r);
    s.skipped_steps = get_u64(r);
    double *sd[6] = {&s.lr, &s.grad_norm, &s.grad_norm_ema, &s.momentum_norm,
                     &s.perturbation_norm, &s.perturbation_scale};
    for (size_t i = 0; i < 6; i++) *sd[i] = get_f64(r);
    s.perturbed = get_i32(r);
    s.clipped = get_i32(r);
    CHECK(s.perturbed == 0 || s.perturbed == 1);
    CHECK(s.clipped == 0 || s.clipped == 1);
    /* The statistics as a run leaves them: the lr as mgpo_set_lr accepts it
     * (which lets -0.0 through); sums of squares' roots finite, >= 0 and not
     * -0.0 (the step refuses an EMA whose squares overflow).  Only the
     * momentum norm, the root of a sum over units of squared norms that
     * are each finite, can overflow to +Inf (LoRA weight-space norms). */
    CHECK(isfinite(s.lr) && s.lr >= 0.0);
    CHECK(is_magnitude(s.grad_norm) && is_magnitude(s.grad_norm_ema) &&
          is_magnitude(s.perturbation_norm) && is_magnitude(s.perturbation_scale));
    CHECK(!isnan(s.momentum_norm) && !signbit(s.momentum_norm));
    /* Versions 2 and 3 store the counters here as mgpo_get_stats reports
     * them; version 1 wrote zeros (and a perturbed flag of 0). */
    if (version != MGPO_CKPT_VERSION_NATIVE)
        CHECK(s.step == step && s.skipped_steps == skipped && s.perturbed == (int)flag);
    else
        CHECK(s.step == 0 && s.skipped_steps == 0);
    s.step = step;
    s.skipped_steps = skipped;
    s.perturbed = (int)flag;

    uint64_t items = get_u64(r), slots = get_u64(r), units = get_u64(r);
    CHECK(items == st->item_count && slots == st->slot_count && units == st->unit_count);
    /* Version 1 has no seed (its state record ends here, 240 bytes). */
    c.seed = version == MGPO_CKPT_VERSION_NATIVE ? 0 : get_u64(r);
    /* Version 2 ends here (248 bytes): its runs rounded to nearest (there
     * were no bf16/fp16 buffers) and had no loss scale. */
    uint32_t rounding = MGPO_ROUNDING_NEAREST, reserved = 0;
    double grad_scale = 1.0;
    if (version >= MGPO_CKPT_VERSION) {
        rounding = get_u32(r);
        reserved = get_u32(r);
        grad_scale = get_f64(r);
    }
    CHECK((rounding == MGPO_ROUNDING_NEAREST || rounding == MGPO_ROUNDING_STOCHASTIC) &&
          reserved == 0);
    /* As mgpo_set_grad_scale accepts (NaN fails both comparisons). */
    CHECK(grad_scale >= MGPO_GRAD_SCALE_MIN && grad_scale <= MGPO_GRAD_SCALE_MAX);
    c.rounding = (mgpo_rounding)rounding;
    if (apply) {
        st->config = c;
        st->grad_scale = grad_scale;
        /* The reciprocal as mgpo_set_grad_scale rounds it. */
        st->grad_unscale = (float)(1.0 / grad_scale);
        st->lr = c.lr;
        st->step = step;
        st->skipped_steps = skipped;
        st->perturbed = *perturbed;
        st->stats = s;
    }
    return MGPO_OK;
}

/* A unit's gradient norm or its EMA: the root of a finite sum of squares
 * (or a convex mix of such), so its square is finite too. */
static bool is_unit_norm(double x) { return is_magnitude(x) && isfinite(x * x); }

/* Each unit's coefficient goes to coefficient[u] and 1.0 when its momentum
 * norm is NaN (else 0.0) to coefficient[unit_count + u] (scratch:
 * reduce_buf, 2 * (unit_count + 1) doubles) for the item and slot checks. */
static mgpo_status get_units(reader *r, mgpo_state *st, const mgpo_config *c, uint64_t step,
                             double *coefficient, bool apply)
{
    /* The next step's grad_norm_ema squares and sums every unit's EMA; a
     * run's never overflows (the step refuses that). */
    double ema_sq = 0.0;
    for (size_t u = 0; u < st->unit_count; u++) {
        mgpo_unit un;
        uint32_t set = get_u32(r), reserved = get_u32(r);
        un.gbar_set = set != 0;
        un.gbar = get_f64(r);
        un.gamma = get_f64(r);
        un.momentum_norm = get_f64(r); /* may be Inf/NaN: perturb then skipped the unit */
        un.scale = get_f64(r);
        un.coefficient = get_f64(r);
        CHECK(is_flag(set) && reserved == 0);
        /* Every step sets every unit's EMA; before the first nothing is set. */
        CHECK(un.gbar_set == (step > 0));
        CHECK(is_unit_norm(un.gbar) && is_unit_norm(un.gamma));
        ema_sq += un.gbar * un.gbar;
        CHECK(isfinite(ema_sq));
        CHECK(isnan(un.momentum_norm) || !signbit(un.momentum_norm));
        /* A skipped unit has +0.0 for both; a perturbed one a scale in
         * (0, scale_max] and a coefficient of the configured sign whose
         * float is finite and non-zero. */
        bool none = same_bits(un.scale, 0.0) && same_bits(un.coefficient, 0.0);
        /* External mode perturbs before the first step too (once the
         * momentum is attached), with the scale of an unset EMA: 1. */
        bool external = c->optimizer_mode == MGPO_OPTIMIZER_EXTERNAL;
        bool early = !un.gbar_set && external;
        /* APN off fixes the scale at 1, whatever scale_max (which may be
         * below 1) says: unit_scale in iteration.c.  An early perturb's 1
         * stays in the record after the step until the next perturb. */
        bool fixed = early || !c->normalize;
        bool scale_ok = fixed ? same_bits(un.scale, 1.0)
                              : un.scale <= c->scale_max || (external && same_bits(un.scale, 1.0));
        CHECK(none || (un.scale > 0.0 && scale_ok &&
                       (un.coefficient > 0.0) == (c->sign == MGPO_SIGN_ASCENT) &&
                       fabs(un.coefficient) <= FLT_MAX && (float)un.coefficient != 0.0f));
        if (!un.gbar_set)
            CHECK(same_bits(un.gbar, 0.0) && same_bits(un.gamma, 0.0) &&
                  (early || (same_bits(un.momentum_norm, 0.0) && none)));
        coefficient[u] = un.coefficient;
        coefficient[st->unit_count + u] = isnan(un.momentum_norm) ? 1.0 : 0.0;
        if (apply) st->units[u] = un;
    }
    return MGPO_OK;
}

static mgpo_status get_items(reader *r, mgpo_state *st, uint32_t version, bool perturbed,
                             const double *coefficient, bool apply)
{
    for (size_t i = 0; i < st->item_count; i++) {
        mgpo_item *it = &st->items[i];
        uint32_t kind = get_u32(r), perturb = get_u32(r);
        uint64_t slots = get_u64(r), unit = get_u64(r);
        CHECK(kind == (uint32_t)it->kind && perturb == (it->perturb ? 1u : 0u) &&
              slots == it->slot_count && unit == it->unit);
        mgpo_status s = get_item_lora(r, it, version, perturbed, coefficient[it->unit], apply);
        if (s != MGPO_OK) return s;
    }
    return MGPO_OK;
}

static mgpo_status get_slots(reader *r, mgpo_state *st, uint32_t version, bool perturbed,
                             const double *coefficient, bool apply)
{
    float item_applied = 0.0f;
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        uint64_t count = get_u64(r), item = get_u64(r);
        double lr_scale = get_f64(r), wd_scale = get_f64(r);
        uint32_t perturb = get_u32(r), arrays = get_u32(r);
        float applied = get_f32(r);
        /* Reserved (0, which is float32) before version 3. */
        uint32_t param_type = get_u32(r);
        double momentum_sq = get_f64(r); /* integrated: checked against m in get_arrays */
        CHECK(count == sl->count && item == sl->item && same_bits(lr_scale, sl->lr_scale) &&
              same_bits(wd_scale, sl->weight_decay_scale) &&
              perturb == (sl->perturb ? 1u : 0u));
        /* The element type decides which buffers exist (a master, no
         * copy), so it must match; older versions had float32 only. */
        CHECK(param_type == slot_param_type(sl) &&
              (version >= MGPO_CKPT_VERSION || param_type == MGPO_DTYPE_FLOAT32));
        CHECK(is_applied(applied, coefficient[st->items[sl->item].unit]) &&
              (applied == 0.0f || (perturbed && sl->perturb)));
        /* The slots of one item (A and B of a pair) move together. */
        bool first = sl->item == 0 || st->slots[i - 1].item != sl->item;
        CHECK(first || same_bits(applied, item_applied));
        item_applied = applied;
        CHECK(arrays == slot_arrays(st, sl, (sl->backup || sl->out_backup) && applied != 0.0f));
        /* A perturbation is undone along the momentum it followed: in
         * external mode the caller must have attached it before loading. */
        CHECK(applied == 0.0f || sl->dir || sl->dir_typed);
        /* External mode: the caller's momentum's sum of squares as the last
         * perturb measured it, >= +0.0 (+Inf from an Inf in it); NaN only
         * from a NaN in it, which made the unit's norm NaN too. */
        if (arrays & MGPO_CKPT_SLOT_EXTERNAL) {
            bool unit_nan = coefficient[st->unit_count + st->items[sl->item].unit] != 0.0;
            CHECK(isnan(momentum_sq) ? unit_nan : !signbit(momentum_sq));
        }
        if (apply) {
            sl->applied = applied;
            sl->momentum_sq = momentum_sq;
        }
    }
    return MGPO_OK;
}

/* What a run can leave in a moment array (m, or v when `second`): finite
 * values (AdamW's m and v cannot overflow: MGPO_GRAD_NORM_MAX), v >= +0.0,
 * all +0.0 before the first step; and the slot's recorded momentum_sq must
 * be the sum of squares of m that the step computes (block partials added
 * exactly), which the perturbation's bounds rely on.  With `recomputed`
 * (version-1 files), that sum is written there instead of being compared.
 * Reads the array without consuming it. */
static bool moments_valid(const reader *r, const mgpo_slot *sl, uint64_t step, bool second,
                          double momentum_sq, double *recomputed)
{
    if (r->short_read || r->left < sl->count * sizeof(float)) return true; /* truncated */
    float piece[MGPO_BLOCK_FLOATS];
    mgpo_exact_sum sum;
    mgpo_exact_clear(&sum);
    for (size_t begin = 0; begin < sl->count; begin += MGPO_BLOCK_FLOATS) {
        size_t n = mgpo_block_length(sl, begin);
        for (size_t k = 0; k < n; k++)
            piece[k] = mgpo_bits_float(decode32(r->p + (begin + k) * sizeof(float), r->little));
        for (size_t k = 0; k < n; k++) {
            float x = piece[k];
            if (!isfinite(x) || (second && signbit(x)) || (step == 0 && mgpo_float_bits(x) != 0))
                return false;
        }
        if (!second) mgpo_exact_add(&sum, mgpo_sum_squares(piece, n));
    }
    if (recomputed) {
        *recomputed = mgpo_exact_round(&sum);
        return true;
    }
    return second || same_bits(mgpo_exact_round(&sum), momentum_sq);
}

static double recorded_momentum_sq(const unsigned char *slot_record, bool little)
{
    reader rec = {slot_record + MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ, sizeof(double), false, little};
    return get_f64(&rec);
}

/* A master array (not consumed): finite, as every value a run gives one
 * (registration, mgpo_set_master_weights and a step from finite values). */
static bool master_valid(const reader *r, const mgpo_slot *sl)
{
    if (r->short_read || r->left < sl->count * sizeof(float)) return true; /* truncated */
    for (size_t i = 0; i < sl->count; i++)
        if (!isfinite(mgpo_bits_float(decode32(r->p + i * sizeof(float), r->little)))) return false;
    return true;
}

/* The arrays.  Which ones are present is read back from the (validated)
 * records, not from the state, whose flags pass 1 must not change.  Array
 * lengths come from the state's own slots, which the records matched, so no
 * size read here can overflow or miss a buffer.  The moments and masters
 * are checked in pass 1; the clean parameter copies may hold anything the
 * caller's parameters held. */
static mgpo_status get_arrays(reader *r, mgpo_state *st, uint32_t version, uint64_t step,
                              const unsigned char *items, const unsigned char *slots,
                              bool apply)
{
    const size_t item_size =
        version >= MGPO_CKPT_VERSION ? MGPO_CKPT_ITEM_SIZE : MGPO_CKPT_ITEM_SIZE_V2;
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        const unsigned char *record = slots + i * MGPO_CKPT_SLOT_SIZE;
        uint32_t arrays = decode32(record + MGPO_CKPT_SLOT_OFF_ARRAYS, r->little);
        if (!(arrays & MGPO_CKPT_SLOT_EXTERNAL)) {
            /* A version-1 file comes from an older library, whose sums of
             * squares may round differently (8 lanes, no FMA): its m is
             * checked like any other and momentum_sq recomputed from it. */
            if (version == 1) {
                double sum = 0.0;
                CHECK(moments_valid(r, sl, step, false, 0.0, &sum));
                if (apply) sl->momentum_sq = sum;
            } else {
                CHECK(apply || moments_valid(r, sl, step, false,
                                             recorded_momentum_sq(record, r->little), NULL));
            }
            get_floats(r, sl->m, sl->count, apply);
        }
        if (arrays & MGPO_CKPT_SLOT_HAS_V) {
            CHECK(apply || moments_valid(r, sl, step, true, 0.0, NULL));
            get_floats(r, sl->v, sl->count, apply);
        }
        if ((arrays & MGPO_CKPT_SLOT_HAS_BACKUP) && sl->out_backup) {
            get_elements(r, sl->out_backup, sl->out_type, sl->count, apply);
        } else if (arrays & MGPO_CKPT_SLOT_HAS_BACKUP) {
            get_floats(r, sl->backup, sl->count, apply);
            /* The clean values arrive as a plain copy. */
            if (apply) sl->full_copy = true;
        }
        if (arrays & MGPO_CKPT_SLOT_MASTER) {
            CHECK(apply || master_valid(r, sl));
            get_floats(r, sl->params, sl->count, apply);
        }
    }
    for (size_t i = 0; i < st->item_count; i++) {
        float base = mgpo_bits_float(
            decode32(items + i * item_size + MGPO_CKPT_ITEM_OFF_BASE_APPLIED, r->little));
        get_lora_base(r, &st->items[i], base != 0.0f, apply);
    }
    return MGPO_OK;
}

/* Pass 1 (apply false) checks everything and writes nothing but scratch (the
 * units' coefficients, in reduce_buf); pass 2 (apply true) copies, and
 * cannot fail once pass 1 has succeeded. */
static mgpo_status parse(mgpo_state *st, const unsigned char *payload, size_t size,
                         uint32_t version, bool little, bool apply)
{
    reader rd = {payload, size, false, little}, *r = &rd;
    bool perturbed = false;
    uint64_t step = 0;
    mgpo_config config;
    double *coefficient = st->reduce_buf;
    mgpo_status s = get_state(r, st, version, apply, &perturbed, &step, &config);
    if (s == MGPO_OK) s = get_units(r, st, &config, step, coefficient, apply);
    const unsigned char *items = r->p;
    if (s == MGPO_OK) s = get_items(r, st, version, perturbed, coefficient, apply);
    const unsigned char *slots = r->p;
    if (s == MGPO_OK) s = get_slots(r, st, version, perturbed, coefficient, apply);
    if (s == MGPO_OK) s = get_arrays(r, st, version, step, items, slots, apply);
    if (s != MGPO_OK) return s;
    if (r->short_read || r->left != 0) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    return MGPO_OK;
}

mgpo_status mgpo_ckpt_load(mgpo_state *st, const unsigned char *b, size_t size, bool want,
                           void *user, size_t capacity, size_t *user_size)
{
    uint32_t version = 0, flags = 0;
    bool little = true;
    mgpo_status s = check_header(b, size, &version, &little, &flags);
    if (s != MGPO_OK) return s;
    const unsigned char *payload = b + MGPO_CKPT_HEADER_SIZE;
    size_t state_bytes = size - MGPO_CKPT_HEADER_SIZE;
    /* The caller's record ends the payload: its bytes, then their count. */
    const unsigned char *record = NULL;
    size_t record_size = 0;
    if (flags & MGPO_CKPT_FLAG_USER) {
        if (state_bytes < MGPO_CKPT_USER_TRAILER) return MGPO_ERR_CHECKPOINT_TRUNCATED;
        uint64_t n = decode64(payload + state_bytes - MGPO_CKPT_USER_TRAILER, little);
        if (n > state_bytes - MGPO_CKPT_USER_TRAILER) return MGPO_ERR_CHECKPOINT_TRUNCATED;
        record_size = (size_t)n;
        state_bytes -= MGPO_CKPT_USER_TRAILER + record_size;
        record = payload + state_bytes;
    } else if (want) {
        return MGPO_ERR_CHECKPOINT_LAYOUT; /* written without a record */
    }
    if (want && record_size > capacity) {
        *user_size = record_size;
        return MGPO_ERR_BUFFER_TOO_SMALL;
    }
    /* Validation recomputes each momentum_sq as the step does. */
    fenv_t caller;
    mgpo_fp_enter(&caller);
    s = parse(st, payload, state_bytes, version, little, false);
    if (s == MGPO_OK) s = parse(st, payload, state_bytes, version, little, true);
    mgpo_fp_leave(&caller);
    if (s == MGPO_OK && want) {
        if (record_size) memcpy(user, record, record_size);
        *user_size = record_size;
    }
    return s;
}

mgpo_status mgpo_load(mgpo_state *st, const void *buffer, size_t size)
{
    if (!st || !buffer) return MGPO_ERR_NULL_ARGUMENT;
    return mgpo_ckpt_load(st, buffer, size, false, NULL, 0, NULL);
}

mgpo_status mgpo_load_with_user(mgpo_state *st, const void *buffer, size_t size, void *user,
                                size_t capacity, size_t *user_size)
{
    if (!st || !buffer || !user_size || (!user && capacity)) return MGPO_ERR_NULL_ARGUMENT;
    return mgpo_ckpt_load(st, buffer, size, true, user, capacity, user_size);
}
