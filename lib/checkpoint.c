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

static void put_u32(writer *w, uint32_t x) { put(w, &x, sizeof x); }
static void put_i32(writer *w, int32_t x) { put(w, &x, sizeof x); }
static void put_u64(writer *w, uint64_t x) { put(w, &x, sizeof x); }
static void put_f64(writer *w, double x) { put(w, &x, sizeof x); }
static void put_f32(writer *w, float x) { put(w, &x, sizeof x); }
static void put_floats(writer *w, const float *x, size_t n) { put(w, x, n * sizeof *x); }

/* ---- Reader -------------------------------------------------------------- */

typedef struct reader {
    const unsigned char *p;
    size_t left;
    bool short_read; /* a read went past the end: the payload is truncated */
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

#define MGPO_DEFINE_GET(name, type)                   \
    static type name(reader *r)                       \
    {                                                 \
        type x;                                       \
        memset(&x, 0, sizeof x);                      \
        const unsigned char *at = take(r, sizeof x);  \
        if (at) memcpy(&x, at, sizeof x);             \
        return x;                                     \
    }
MGPO_DEFINE_GET(get_u32, uint32_t)
MGPO_DEFINE_GET(get_i32, int32_t)
MGPO_DEFINE_GET(get_u64, uint64_t)
MGPO_DEFINE_GET(get_f64, double)
MGPO_DEFINE_GET(get_f32, float)
#undef MGPO_DEFINE_GET

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }
static bool is_flag(uint32_t x) { return x <= 1u; }

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (r->short_read) return MGPO_ERR_CHECKPOINT_TRUNCATED;         \
        if (!(cond)) return MGPO_ERR_CHECKPOINT_LAYOUT;                  \
    } while (0)

/* ---- LoRA-specific part ----------------------------------------------------
 * The only code here that knows mgpo_lora_item.  An item record carries the
 * pair's shape (zeros for a plain tensor) and the coefficient applied to W in
 * base mode; the copy of the clean W follows all slot arrays when that
 * coefficient is non-zero. */

static size_t lora_base_floats(const mgpo_item *it)
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
}

static mgpo_status get_item_lora(reader *r, mgpo_item *it, bool perturbed, bool apply)
{
    uint64_t rank = get_u64(r), n_in = get_u64(r), n_out = get_u64(r);
    double scaling = get_f64(r);
    uint32_t mode = get_u32(r);
    float applied = get_f32(r);
    mgpo_lora_item *l = it->lora;
    if (!l) {
        CHECK(rank == 0 && n_in == 0 && n_out == 0 && same_bits(scaling, 0.0) && mode == 0 &&
              same_bits(applied, 0.0f));
        return MGPO_OK;
    }
    CHECK(rank == l->desc.rank && n_in == l->desc.n_in && n_out == l->desc.n_out &&
          same_bits(scaling, l->desc.scaling) && mode == (uint32_t)l->desc.mode);
    CHECK(isfinite(applied));
    CHECK(applied == 0.0f || (l->base_backup && perturbed && it->perturb));
    if (apply) l->base_applied = l->base_backup ? applied : 0.0f;
    return MGPO_OK;
}

static void put_lora_base(writer *w, const mgpo_item *it)
{
    put_floats(w, it->lora ? it->lora->base_backup : NULL, lora_base_floats(it));
}

/* `present`: the record's coefficient is non-zero (validated: then the
 * state has a base backup of n_out*n_in floats). */
static void get_lora_base(reader *r, mgpo_item *it, bool present, bool apply)
{
    if (!present || !it->lora || !it->lora->base_backup) return;
    size_t n = it->lora->desc.n_out * it->lora->desc.n_in * sizeof(float);
    const unsigned char *at = take(r, n);
    if (apply && at) memcpy(it->lora->base_backup, at, n);
}

/* ---- Sizes ----------------------------------------------------------------- */

static size_t slot_floats(const mgpo_slot *sl)
{
    size_t arrays = 1 + (sl->v ? 1 : 0) + (sl->backup && sl->applied != 0.0f ? 1 : 0);
    return arrays * sl->count;
}

size_t mgpo_ckpt_size(const mgpo_state *st)
{
    size_t floats = 0;
    for (size_t i = 0; i < st->slot_count; i++) floats += slot_floats(&st->slots[i]);
    for (size_t i = 0; i < st->item_count; i++) floats += lora_base_floats(&st->items[i]);
    return MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE +
           st->unit_count * MGPO_CKPT_UNIT_SIZE + st->item_count * MGPO_CKPT_ITEM_SIZE +
           st->slot_count * MGPO_CKPT_SLOT_SIZE + floats * sizeof(float);
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

    const mgpo_stats *s = &st->stats;
    put_u64(w, s->step);
    put_u64(w, s->skipped_steps);
    const double sd[6] = {s->lr, s->grad_norm, s->grad_norm_ema, s->momentum_norm,
                          s->perturbation_norm, s->perturbation_scale};
    for (size_t i = 0; i < 6; i++) put_f64(w, sd[i]);
    put_i32(w, s->perturbed);
    put_i32(w, s->clipped);

    put_u64(w, st->item_count);
    put_u64(w, st->slot_count);
    put_u64(w, st->unit_count);
    put_u64(w, c->seed);
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
        bool backup = sl->backup && sl->applied != 0.0f;
        put_u64(w, sl->count);
        put_u64(w, sl->item);
        put_f64(w, sl->lr_scale);
        put_f64(w, sl->weight_decay_scale);
        put_u32(w, sl->perturb ? 1u : 0u);
        put_u32(w, (sl->v ? MGPO_CKPT_SLOT_HAS_V : 0u) | (backup ? MGPO_CKPT_SLOT_HAS_BACKUP : 0u));
        put_f32(w, sl->applied);
        put_u32(w, 0);
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
        put_floats(w, sl->m, sl->count);
        if (sl->v) put_floats(w, sl->v, sl->count);
        if (sl->backup && sl->applied != 0.0f) put_clean_params(w, st, sl);
    }
    for (size_t i = 0; i < st->item_count; i++) put_lora_base(w, &st->items[i]);
}

static void store_u32(unsigned char *at, uint32_t x) { memcpy(at, &x, sizeof x); }
static uint32_t load_u32(const unsigned char *at) { uint32_t x; memcpy(&x, at, sizeof x); return x; }

void mgpo_ckpt_header(unsigned char header[MGPO_CKPT_HEADER_SIZE], uint64_t total,
                      uint32_t payload_crc)
{
    memset(header, 0, MGPO_CKPT_HEADER_SIZE);
    memcpy(header, MGPO_CKPT_MAGIC, MGPO_CKPT_MAGIC_SIZE);
    store_u32(header + MGPO_CKPT_OFF_ENDIAN, MGPO_CKPT_ENDIAN_MARK);
    store_u32(header + MGPO_CKPT_OFF_VERSION, MGPO_CKPT_VERSION);
    store_u32(header + MGPO_CKPT_OFF_HEADER_SIZE, MGPO_CKPT_HEADER_SIZE);
    memcpy(header + MGPO_CKPT_OFF_TOTAL_SIZE, &total, sizeof total);
    store_u32(header + MGPO_CKPT_OFF_PAYLOAD_CRC, payload_crc);
    store_u32(header + MGPO_CKPT_OFF_HEADER_CRC,
              mgpo_crc32c(0, header, MGPO_CKPT_OFF_HEADER_CRC));
}

mgpo_status mgpo_ckpt_stream(const mgpo_state *st, mgpo_ckpt_sink sink, void *ctx,
                             unsigned char header[MGPO_CKPT_HEADER_SIZE])
{
    writer w = {sink, ctx, 0, MGPO_OK};
    put_state(&w, st);
    put_records(&w, st);
    put_arrays(&w, st);
    if (w.status == MGPO_OK) mgpo_ckpt_header(header, mgpo_ckpt_size(st), w.crc);
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

/* ---- Loading --------------------------------------------------------------- */

static mgpo_status check_header(const unsigned char *b, size_t size)
{
    /* Bytes 0-15 (magic, endian mark, version) mean the same in every version. */
    size_t magic = size < MGPO_CKPT_MAGIC_SIZE ? size : MGPO_CKPT_MAGIC_SIZE;
    if (memcmp(b, MGPO_CKPT_MAGIC, magic) != 0) return MGPO_ERR_CHECKPOINT_MAGIC;
    if (size < MGPO_CKPT_OFF_VERSION + 4) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (load_u32(b + MGPO_CKPT_OFF_ENDIAN) != MGPO_CKPT_ENDIAN_MARK)
        return MGPO_ERR_CHECKPOINT_ENDIAN;
    if (load_u32(b + MGPO_CKPT_OFF_VERSION) != MGPO_CKPT_VERSION)
        return MGPO_ERR_CHECKPOINT_VERSION;
    if (size < MGPO_CKPT_HEADER_SIZE) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (mgpo_crc32c(0, b, MGPO_CKPT_OFF_HEADER_CRC) != load_u32(b + MGPO_CKPT_OFF_HEADER_CRC))
        return MGPO_ERR_CHECKPOINT_CHECKSUM;
    static const unsigned char zeros[8] = {0};
    if (load_u32(b + MGPO_CKPT_OFF_HEADER_SIZE) != MGPO_CKPT_HEADER_SIZE ||
        load_u32(b + MGPO_CKPT_OFF_FLAGS) != 0 ||
        memcmp(b + MGPO_CKPT_OFF_RESERVED, zeros, sizeof zeros) != 0)
        return MGPO_ERR_CHECKPOINT_VERSION;
    uint64_t total;
    memcpy(&total, b + MGPO_CKPT_OFF_TOTAL_SIZE, sizeof total);
    if (total != size) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    if (mgpo_crc32c(0, b + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE) !=
        load_u32(b + MGPO_CKPT_OFF_PAYLOAD_CRC))
        return MGPO_ERR_CHECKPOINT_CHECKSUM;
    return MGPO_OK;
}

/* The fixed state record.  *perturbed gets the flag for the later checks. */
static mgpo_status get_state(reader *r, mgpo_state *st, bool apply, bool *perturbed)
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
    CHECK(mgpo_config_validate(&c) == MGPO_OK);

    uint64_t step = get_u64(r), skipped = get_u64(r);
    uint32_t flag = get_u32(r), direction = get_u32(r);
    CHECK(is_flag(flag));
    /* Decides which registrations are allowed (no LoRA pairs), so it must
     * match the state. */
    CHECK(direction == (uint32_t)c.direction);
    *perturbed = flag != 0;

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

    uint64_t items = get_u64(r), slots = get_u64(r), units = get_u64(r);
    CHECK(items == st->item_count && slots == st->slot_count && units == st->unit_count);
    c.seed = get_u64(r);
    if (apply) {
        st->config = c;
        st->lr = c.lr;
        st->step = step;
        st->skipped_steps = skipped;
        st->perturbed = *perturbed;
        st->stats = s;
    }
    return MGPO_OK;
}

static mgpo_status get_units(reader *r, mgpo_state *st, bool apply)
{
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
        CHECK(isfinite(un.gbar) && un.gbar >= 0.0 && isfinite(un.gamma) && un.gamma >= 0.0);
        CHECK(isfinite(un.scale) && isfinite(un.coefficient));
        if (apply) st->units[u] = un;
    }
    return MGPO_OK;
}

static mgpo_status get_items(reader *r, mgpo_state *st, bool perturbed, bool apply)
{
    for (size_t i = 0; i < st->item_count; i++) {
        mgpo_item *it = &st->items[i];
        uint32_t kind = get_u32(r), perturb = get_u32(r);
        uint64_t slots = get_u64(r), unit = get_u64(r);
        CHECK(kind == (uint32_t)it->kind && perturb == (it->perturb ? 1u : 0u) &&
              slots == it->slot_count && unit == it->unit);
        mgpo_status s = get_item_lora(r, it, perturbed, apply);
        if (s != MGPO_OK) return s;
    }
    return MGPO_OK;
}

static mgpo_status get_slots(reader *r, mgpo_state *st, bool perturbed, bool apply)
{
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        uint64_t count = get_u64(r), item = get_u64(r);
        double lr_scale = get_f64(r), wd_scale = get_f64(r);
        uint32_t perturb = get_u32(r), arrays = get_u32(r);
        float applied = get_f32(r);
        uint32_t reserved = get_u32(r);
        double momentum_sq = get_f64(r); /* any value: m may have overflowed */
        CHECK(count == sl->count && item == sl->item && same_bits(lr_scale, sl->lr_scale) &&
              same_bits(wd_scale, sl->weight_decay_scale) &&
              perturb == (sl->perturb ? 1u : 0u) && reserved == 0);
        CHECK(isfinite(applied) && (applied == 0.0f || (perturbed && sl->perturb)));
        uint32_t want = (sl->v ? MGPO_CKPT_SLOT_HAS_V : 0u) |
                        (sl->backup && applied != 0.0f ? MGPO_CKPT_SLOT_HAS_BACKUP : 0u);
        CHECK(arrays == want);
        if (apply) {
            sl->applied = applied;
            sl->momentum_sq = momentum_sq;
        }
    }
    return MGPO_OK;
}

static void get_floats(reader *r, float *dst, size_t n, bool apply)
{
    const unsigned char *at = take(r, n * sizeof(float));
    if (apply && at) memcpy(dst, at, n * sizeof(float));
}

/* The arrays.  Which ones are present is read back from the (validated)
 * records, not from the state, whose flags pass 1 must not change.  Array
 * lengths come from the state's own slots, which the records matched, so no
 * size read here can overflow or miss a buffer. */
static void get_arrays(reader *r, mgpo_state *st, const unsigned char *items,
                       const unsigned char *slots, bool apply)
{
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        uint32_t arrays = load_u32(slots + i * MGPO_CKPT_SLOT_SIZE + MGPO_CKPT_SLOT_OFF_ARRAYS);
        get_floats(r, sl->m, sl->count, apply);
        if (arrays & MGPO_CKPT_SLOT_HAS_V) get_floats(r, sl->v, sl->count, apply);
        if (arrays & MGPO_CKPT_SLOT_HAS_BACKUP) {
            get_floats(r, sl->backup, sl->count, apply);
            /* The clean values arrive as a plain copy. */
            if (apply) sl->full_copy = true;
        }
    }
    for (size_t i = 0; i < st->item_count; i++) {
        float base;
        memcpy(&base, items + i * MGPO_CKPT_ITEM_SIZE + MGPO_CKPT_ITEM_OFF_BASE_APPLIED,
               sizeof base);
        get_lora_base(r, &st->items[i], base != 0.0f, apply);
    }
}

/* Pass 1 (apply false) checks everything and writes nothing; pass 2 (apply
 * true) copies, and cannot fail once pass 1 has succeeded. */
static mgpo_status parse(mgpo_state *st, const unsigned char *payload, size_t size, bool apply)
{
    reader rd = {payload, size, false}, *r = &rd;
    bool perturbed = false;
    mgpo_status s = get_state(r, st, apply, &perturbed);
    if (s == MGPO_OK) s = get_units(r, st, apply);
    const unsigned char *items = r->p;
    if (s == MGPO_OK) s = get_items(r, st, perturbed, apply);
    const unsigned char *slots = r->p;
    if (s == MGPO_OK) s = get_slots(r, st, perturbed, apply);
    if (s != MGPO_OK) return s;
    get_arrays(r, st, items, slots, apply);
    if (r->short_read || r->left != 0) return MGPO_ERR_CHECKPOINT_TRUNCATED;
    return MGPO_OK;
}

mgpo_status mgpo_load(mgpo_state *st, const void *buffer, size_t size)
{
    if (!st || !buffer) return MGPO_ERR_NULL_ARGUMENT;
    const unsigned char *b = buffer;
    mgpo_status s = check_header(b, size);
    if (s != MGPO_OK) return s;
    s = parse(st, b + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE, false);
    if (s != MGPO_OK) return s;
    return parse(st, b + MGPO_CKPT_HEADER_SIZE, size - MGPO_CKPT_HEADER_SIZE, true);
}
