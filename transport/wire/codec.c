/*
** codec.c: knit's wire codec, the reference implementation of
** docs/PROTOCOL.md (sections 1-5 and 9-10).
**
** Encoding writes CBOR heads with libcbor's cbor_encode_* straight into a
** growing buffer; nothing is built as a libcbor item tree, so a batch of
** 100k changes encodes in a few milliseconds.  Decoding is a pull reader on
** top of libcbor's stateless cbor_stream_decode(): each call decodes one
** head (or one whole definite string) and the callbacks below just record
** what it was, so the message code reads "expect a map, expect key 1, expect
** a uint" in straight lines and checks every type where it reads it.
**
** Hostile input: every count is bounded by the bytes that remain before it
** is used to allocate (each CBOR item takes at least one byte) and by the
** caller's limits; every string is validated (UTF-8, no NUL in names);
** every dictionary index is checked; decoding stops with KNIT_EPROTO at the
** first problem and says which one in a static string.
**
** Batch layout (PROTOCOL.md section 4, abridged):
**
**   batch = { 1: [site...], 2: [table...], 3: [unit...] }
**   unit  = [ uh ?vdelta ?msdelta ?counter  (rh ?table ?site ?cl pk.. cell..)... ]
**   cell  =   ch ?value ?hd ?counter ?site
**
**   uh = ....0CMV     rh = (ncells-1)<<3 | LST     ch = d<<2 | HS
*/
#include "codec.h"
#include "utf8.h"

#include <cbor.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "orset.h"

/* Tag around a byte string holding TEXT that is not valid UTF-8 ("knit"). */
#define TAG_RAW_TEXT UINT64_C(0x6B6E6974)

/* Head flag bits (PROTOCOL.md section 4). */
#define UH_V 1u /* vdelta follows */
#define UH_M 2u /* msdelta follows */
#define UH_C 4u /* counter follows */
#define RH_T 1u /* table follows */
#define RH_S 2u /* site follows */
#define RH_L 4u /* cl follows */
#define RH_SHIFT 3
#define CH_S 1u /* site follows */
#define CH_H 2u /* hd (and maybe a counter) follows */
#define CH_SHIFT 2

#define HLC_MS_LIMIT (UINT64_C(1) << 48)
#define ANON_ID_MAX 64
#define ANON_SECRET_MAX 256

/* ---------------------------------------------------------------------- */
/* Shared helpers                                                          */

void knit_codec_limits_default(knit_codec_limits_t *lim) /* see codec.h */
{
    lim->max_frame = KNIT_DEFAULT_MAX_FRAME;
    lim->max_changes = KNIT_DEFAULT_MAX_CHANGES;
    lim->max_dict = KNIT_DEFAULT_MAX_DICT;
    lim->max_string = KNIT_DEFAULT_MAX_STRING;
    lim->max_depth = KNIT_DEFAULT_MAX_DEPTH;
}

/* The caller's limits with every zero field replaced by its default. */
static knit_codec_limits_t resolve_limits(const knit_codec_limits_t *in)
{
    knit_codec_limits_t l;
    knit_codec_limits_default(&l);
    if (in) {
        if (in->max_frame)
            l.max_frame = in->max_frame;
        if (in->max_changes)
            l.max_changes = in->max_changes;
        if (in->max_dict)
            l.max_dict = in->max_dict;
        if (in->max_string)
            l.max_string = in->max_string;
        if (in->max_depth)
            l.max_depth = in->max_depth;
    }
    if (l.max_frame > UINT32_MAX)
        l.max_frame = UINT32_MAX; /* the length prefix has 32 bits */
    if (l.max_changes > SIZE_MAX / 4)
        l.max_changes = SIZE_MAX / 4; /* so that max_changes + 1 cannot wrap */
    return l;
}

const char *knit_msg_type_name(int type) /* see codec.h */
{
    static const char *const names[] = {"UNKNOWN",   "HELLO",  "WELCOME", "ERROR", "PUSH",
                                        "ACK",       "REJECT", "DELTAS",  "PING",  "PONG",
                                        "SUBSCRIBE", "CHECK",  "CHECKED"};
    return type >= 1 && type <= KNIT_MSG_CHECKED ? names[type] : names[0];
}

int knit_proto_negotiate(uint32_t min, uint32_t max, uint32_t *version) /* see codec.h */
{
    if (min == 0 || min > max)
        return KNIT_EPROTO;
    uint32_t hi = max < KNIT_PROTO_VERSION_MAX ? max : KNIT_PROTO_VERSION_MAX;
    uint32_t lo = min > KNIT_PROTO_VERSION_MIN ? min : KNIT_PROTO_VERSION_MIN;
    if (lo > hi)
        return KNIT_EVERSION;
    *version = hi;
    return 0;
}

/* A name (namespace, table, column, principal...): non-empty unless
** allow_empty, valid UTF-8, at most max bytes.  C strings hold no NUL. */
static int name_ok(const char *s, size_t max, int allow_empty)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    return (n > 0 || allow_empty) && n <= max && knit__utf8_valid((const uint8_t *)s, n);
}

/* [A-Za-z0-9_-]{1,64}: anonymous ids become part of a namespace name. */
static int anon_id_ok(const char *s, size_t n)
{
    if (n == 0 || n > ANON_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Two key values are the same key: same storage class, same bits. */
static int value_same(const knit_value_t *a, const knit_value_t *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case KNIT_INTEGER:
        return a->u.i == b->u.i;
    case KNIT_REAL:
        return memcmp(&a->u.r, &b->u.r, sizeof(double)) == 0;
    case KNIT_TEXT:
    case KNIT_BLOB:
        return a->u.b.n == b->u.b.n && (a->u.b.n == 0 || memcmp(a->u.b.p, b->u.b.p, a->u.b.n) == 0);
    default:
        return 1;
    }
}

/* If d is exactly representable as an IEEE half, stores its bits. */
static int half_of(double d, uint16_t *h)
{
    if (isinf(d)) {
        *h = signbit(d) ? 0xFC00 : 0x7C00;
        return 1;
    }
    if (!(fabs(d) <= FLT_MAX))
        return 0;
    float f = (float)d;
    if ((double)f != d)
        return 0;
    uint32_t fb;
    memcpy(&fb, &f, 4);
    uint16_t sign = (uint16_t)((fb >> 16) & 0x8000);
    int exp = (int)((fb >> 23) & 0xFF);
    uint32_t man = fb & 0x7FFFFF;
    if (exp == 0 && man == 0) {
        *h = sign; /* +0.0 or -0.0 */
        return 1;
    }
    if (exp == 0)
        return 0; /* single subnormals are far below half's range */
    int e = exp - 127;
    if (e > 15 || e < -24)
        return 0;
    if (e >= -14) { /* a normal half: 10 mantissa bits */
        if (man & 0x1FFF)
            return 0;
        *h = (uint16_t)(sign | (uint32_t)(e + 15) << 10 | man >> 13);
        return 1;
    }
    /* A subnormal half m * 2^-24: value = full * 2^(e-23), m = full >> (-e-1). */
    uint32_t full = man | 0x800000;
    int shift = -e - 1;
    if (full & ((UINT32_C(1) << shift) - 1))
        return 0;
    *h = (uint16_t)(sign | (full >> shift));
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Writer                                                                  */

/* Writes into a knit_buf_t.  Errors are sticky: after the first failure
** every put is a no-op and the caller checks err once at the end. */
typedef struct wr_s {
    knit_buf_t *b;     /* destination */
    int err;           /* first error, 0 if none */
    size_t max_string; /* limit for put_name() */
} wr_t;

void knit_buf_free(knit_buf_t *b) /* see codec.h */
{
    if (!b)
        return;
    knit__free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Makes room for n more bytes; 0 (and err set) on failure. */
static int wr_room(wr_t *w, size_t n)
{
    knit_buf_t *b = w->b;
    if (w->err)
        return 0;
    if (b->cap - b->len >= n)
        return 1;
    if (n > SIZE_MAX / 2 - b->len) {
        w->err = KNIT_ETOOBIG;
        return 0;
    }
    size_t want = b->len + n, cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    uint8_t *p = knit__realloc(b->p, cap);
    if (!p) {
        w->err = KNIT_ENOMEM;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static inline uint8_t *wr_at(wr_t *w)
{
    return w->b->p + w->b->len;
}

static void put_uint(wr_t *w, uint64_t v)
{
    if (wr_room(w, 9))
        w->b->len += cbor_encode_uint(v, wr_at(w), 9);
}

static void put_int(wr_t *w, int64_t v)
{
    if (!wr_room(w, 9))
        return;
    if (v >= 0)
        w->b->len += cbor_encode_uint((uint64_t)v, wr_at(w), 9);
    else
        w->b->len += cbor_encode_negint(~(uint64_t)v, wr_at(w), 9); /* -1 - v */
}

static void put_array(wr_t *w, size_t n)
{
    if (wr_room(w, 9))
        w->b->len += cbor_encode_array_start(n, wr_at(w), 9);
}

static void put_map(wr_t *w, size_t n)
{
    if (wr_room(w, 9))
        w->b->len += cbor_encode_map_start(n, wr_at(w), 9);
}

static void put_bool(wr_t *w, int v)
{
    if (wr_room(w, 1))
        w->b->len += cbor_encode_bool(v != 0, wr_at(w), 1);
}

static void put_null(wr_t *w)
{
    if (wr_room(w, 1))
        w->b->len += cbor_encode_null(wr_at(w), 1);
}

/* A byte string (text = 0) or text string (text = 1) of n bytes. */
static void put_str(wr_t *w, int text, const void *p, size_t n)
{
    if (n > SIZE_MAX / 4 || !wr_room(w, 9 + n)) {
        if (!w->err)
            w->err = KNIT_ETOOBIG;
        return;
    }
    size_t h = text ? cbor_encode_string_start(n, wr_at(w), 9)
                    : cbor_encode_bytestring_start(n, wr_at(w), 9);
    w->b->len += h;
    if (n)
        memcpy(wr_at(w), p, n);
    w->b->len += n;
}

/* A name-like text string: KNIT_EINVAL if NULL, not UTF-8 or empty (unless
** allow_empty), KNIT_ETOOBIG if longer than the limit. */
static void put_name(wr_t *w, const char *s, int allow_empty)
{
    if (!name_ok(s, SIZE_MAX, allow_empty)) {
        if (!w->err)
            w->err = KNIT_EINVAL;
        return;
    }
    size_t n = strlen(s);
    if (n > w->max_string) {
        if (!w->err)
            w->err = KNIT_ETOOBIG;
        return;
    }
    put_str(w, 1, s, n);
}

static void put_tag(wr_t *w, uint64_t tag)
{
    if (wr_room(w, 9))
        w->b->len += cbor_encode_tag(tag, wr_at(w), 9);
}

static void put_double(wr_t *w, double d)
{
    uint16_t h;
    if (!wr_room(w, 9))
        return;
    uint8_t *p = wr_at(w);
    if (half_of(d, &h)) {
        p[0] = 0xF9;
        p[1] = (uint8_t)(h >> 8);
        p[2] = (uint8_t)h;
        w->b->len += 3;
    } else if (fabs(d) <= FLT_MAX && (double)(float)d == d) {
        w->b->len += cbor_encode_single((float)d, p, 9);
    } else {
        w->b->len += cbor_encode_double(d, p, 9);
    }
}

/* One SQLite value (PROTOCOL.md section 5). */
static void put_value(wr_t *w, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_NULL:
        put_null(w);
        return;
    case KNIT_INTEGER:
        put_int(w, v->u.i);
        return;
    case KNIT_REAL:
        if (isnan(v->u.r)) {
            if (!w->err)
                w->err = KNIT_EINVAL;
            return;
        }
        put_double(w, v->u.r);
        return;
    case KNIT_TEXT:
    case KNIT_BLOB:
        if (v->u.b.n && !v->u.b.p) {
            if (!w->err)
                w->err = KNIT_EINVAL;
            return;
        }
        if (v->type == KNIT_TEXT) {
            if (knit__utf8_valid(v->u.b.p, v->u.b.n)) {
                put_str(w, 1, v->u.b.p, v->u.b.n);
                return;
            }
            put_tag(w, TAG_RAW_TEXT);
        }
        put_str(w, 0, v->u.b.p, v->u.b.n);
        return;
    default:
        if (!w->err)
            w->err = KNIT_EINVAL;
    }
}

/* ---------------------------------------------------------------------- */
/* Encoding messages                                                       */

#define ENC_FAIL(w, code)                                                                          \
    do {                                                                                           \
        if (!(w)->err)                                                                             \
            (w)->err = (code);                                                                     \
        return;                                                                                    \
    } while (0)

static void enc_cred(wr_t *w, const knit_cred_t *c, const knit_codec_limits_t *lim)
{
    size_t n = 1 + (c->id != NULL) + (c->secret != NULL) + (c->token != NULL);
    if (c->kind == 0)
        ENC_FAIL(w, KNIT_EINVAL);
    if (c->kind == KNIT_CRED_ANON) {
        if (!c->id || !c->secret || !anon_id_ok(c->id, strlen(c->id)) ||
            !name_ok(c->secret, ANON_SECRET_MAX, 0))
            ENC_FAIL(w, KNIT_EINVAL);
    } else if (c->kind == KNIT_CRED_JWT) {
        if (!c->token)
            ENC_FAIL(w, KNIT_EINVAL);
    }
    put_map(w, n);
    put_uint(w, 1);
    put_uint(w, c->kind);
    if (c->id) {
        put_uint(w, 2);
        put_name(w, c->id, 1);
    }
    if (c->secret) {
        put_uint(w, 3);
        put_name(w, c->secret, 1);
    }
    if (c->token) {
        put_uint(w, 4);
        put_name(w, c->token, 0);
    }
}

static void enc_subs(wr_t *w, const knit_sub_t *subs, size_t n, const knit_codec_limits_t *lim)
{
    if (n > lim->max_dict)
        ENC_FAIL(w, KNIT_ETOOBIG);
    put_array(w, n);
    for (size_t i = 0; i < n; i++) {
        put_map(w, 2);
        put_uint(w, 1);
        put_name(w, subs[i].ns, 0);
        put_uint(w, 2);
        put_uint(w, subs[i].cursor);
    }
}

/* Inserts an array head for `items` items before the bytes written since
** `start`: a unit's item count is known only after its rows are written. */
static void insert_array_head(wr_t *w, size_t start, size_t items)
{
    uint8_t head[9];
    size_t h = cbor_encode_array_start(items, head, sizeof head);
    if (!wr_room(w, h))
        return;
    uint8_t *p = w->b->p + start;
    memmove(p + h, p, w->b->len - start);
    memcpy(p, head, h);
    w->b->len += h;
}

/* Consecutive changes a and b belong to one row. */
static int same_row(const knit_change_t *a, const knit_change_t *b, uint32_t npk)
{
    if (a->table != b->table || a->cl != b->cl || !b->pk)
        return 0;
    for (uint32_t k = 0; k < npk; k++)
        if (!value_same(&a->pk[k], &b->pk[k]))
            return 0;
    return 1;
}

/* The batch of a PUSH or DELTAS.  `ns` is the message's namespace; for
** DELTAS (deltas = 1) unit versions must rise strictly inside (from, to]. */
static void enc_batch(wr_t *w, const knit_batch_t *b, const char *ns, int deltas, uint64_t from,
                      uint64_t to, const knit_codec_limits_t *lim)
{
    if (w->err)
        return;
    if (!b || !ns)
        ENC_FAIL(w, KNIT_EINVAL);
    if (b->nsites > lim->max_dict || b->ntables > lim->max_dict || b->nchanges > lim->max_changes ||
        b->ntxns > lim->max_changes)
        ENC_FAIL(w, KNIT_ETOOBIG);

    /* Which namespace indexes name the message's namespace. */
    uint8_t nsok_small[16], *nsok = nsok_small;
    if (b->nns > sizeof nsok_small && !(nsok = knit__malloc(b->nns)))
        ENC_FAIL(w, KNIT_ENOMEM);
    for (size_t i = 0; i < b->nns; i++)
        nsok[i] = strcmp(b->ns[i], ns) == 0;

    put_map(w, 3);
    put_uint(w, 1);
    put_array(w, b->nsites);
    for (size_t i = 0; i < b->nsites; i++)
        put_str(w, 0, b->sites[i].b, 16);

    put_uint(w, 2);
    put_array(w, b->ntables);
    for (size_t i = 0; i < b->ntables && !w->err; i++) {
        const knit_batch_table_t *t = &b->tables[i];
        if (t->npk == 0) {
            w->err = KNIT_EINVAL;
            break;
        }
        if (t->npk > lim->max_dict || t->ncols > lim->max_dict) {
            w->err = KNIT_ETOOBIG;
            break;
        }
        put_map(w, 4);
        put_uint(w, 1);
        put_name(w, t->name, 0);
        put_uint(w, 2);
        put_uint(w, t->npk);
        put_uint(w, 3);
        put_array(w, t->ncols);
        for (uint32_t c = 0; c < t->ncols; c++) {
            if (t->orset[c] > 1) {
                w->err = KNIT_EINVAL;
                break;
            }
            put_name(w, t->cols[c], 0);
        }
        put_uint(w, 4);
        put_str(w, 0, t->orset, t->ncols);
    }

    put_uint(w, 3);
    put_array(w, b->ntxns);
    uint64_t version = 0, base_ms = 0, prev_unit = 0;
    uint32_t cur_table = 0, cur_site = 0;
    size_t pos = 0; /* units must cover the changes contiguously, in order */
    for (size_t u = 0; u < b->ntxns && !w->err; u++) {
        const knit_txn_t *t = &b->txns[u];
        if (t->first != pos || t->count > b->nchanges - pos) {
            w->err = KNIT_EINVAL;
            break;
        }
        if (deltas && (t->version <= from || t->version > to || (u && t->version <= prev_unit))) {
            w->err = KNIT_EINVAL;
            break;
        }
        prev_unit = t->version;
        const knit_change_t *ch = b->changes + t->first, *end = ch + t->count;
        uint64_t base = t->count ? ch->hlc : base_ms << 16;
        uint64_t ms = base >> 16, counter = base & 0xFFFF;
        uint64_t vdelta = t->version - version - 1;
        size_t start = w->b->len, items = 1;
        put_uint(w, (vdelta ? UH_V : 0) | (ms != base_ms ? UH_M : 0) | (counter ? UH_C : 0));
        if (vdelta)
            put_int(w, (int64_t)vdelta), items++;
        if (ms != base_ms)
            put_int(w, (int64_t)(ms - base_ms)), items++;
        if (counter)
            put_uint(w, counter), items++;
        version = t->version;
        base_ms = ms;

        while (ch < end && !w->err) {
            if (ch->table >= b->ntables || ch->ns >= b->nns || !nsok[ch->ns] ||
                ch->site >= b->nsites || !ch->pk) {
                w->err = KNIT_EINVAL;
                break;
            }
            const knit_batch_table_t *tb = &b->tables[ch->table];
            const knit_change_t *row_end = ch + 1;
            while (row_end < end && same_row(ch, row_end, tb->npk))
                row_end++;
            size_t ncells = (size_t)(row_end - ch);
            unsigned flags = (ch->table != cur_table ? RH_T : 0) |
                             (ch->site != cur_site ? RH_S : 0) | (ch->cl != 1 ? RH_L : 0);
            put_uint(w, (uint64_t)(ncells - 1) << RH_SHIFT | flags);
            items++;
            if (flags & RH_T)
                put_uint(w, ch->table), items++;
            if (flags & RH_S)
                put_uint(w, ch->site), items++;
            if (flags & RH_L)
                put_uint(w, ch->cl), items++;
            for (uint32_t k = 0; k < tb->npk; k++)
                put_value(w, &ch->pk[k]), items++;
            cur_table = ch->table;
            cur_site = ch->site;

            uint64_t m = (uint64_t)tb->ncols + 1, next = 0;
            for (const knit_change_t *c = ch; c < row_end; c++) {
                if (c->col > tb->ncols || c->site >= b->nsites || c->ns >= b->nns || !nsok[c->ns] ||
                    (c->col == 0 && c->value.type != KNIT_NULL) ||
                    (c->col > 0 && tb->orset[c->col - 1] && c->value.type != KNIT_BLOB)) {
                    w->err = KNIT_EINVAL;
                    break;
                }
                uint64_t d = (c->col + m - next % m) % m;
                unsigned cf = (c->site != cur_site ? CH_S : 0) | (c->hlc != base ? CH_H : 0);
                put_uint(w, d << CH_SHIFT | cf);
                items++;
                if (c->col > 0)
                    put_value(w, &c->value), items++;
                if (cf & CH_H) {
                    /* hd = 2 * (ms delta) + 1 if a counter follows; a stamp
                    ** in another millisecond usually has counter 0. */
                    uint64_t cc = c->hlc & 0xFFFF;
                    int64_t msd = (int64_t)((c->hlc >> 16) - ms);
                    put_int(w, msd * 2 + (cc != 0)), items++;
                    if (cc)
                        put_uint(w, cc), items++;
                }
                if (cf & CH_S)
                    put_uint(w, c->site), items++;
                next = (uint64_t)c->col + 1;
            }
            ch = row_end;
        }
        pos += t->count;
        if (!w->err)
            insert_array_head(w, start, items);
    }
    if (!w->err && pos != b->nchanges)
        w->err = KNIT_EINVAL;
    if (nsok != nsok_small)
        knit__free(nsok);
}

/* HELLO's schema (checked canonical by the caller):
**   {1: fp (8 bytes), 2: [{1: name, 2: [key], 3: [col], 4: kinds (1 byte per col)}]} */
static void enc_schema(wr_t *w, const knit_schema_t *s)
{
    uint8_t kinds[KNIT_SCHEMA_MAX_COLS];
    put_map(w, 2);
    put_uint(w, 1);
    put_str(w, 0, s->fp, KNIT_SCHEMA_FP_LEN);
    put_uint(w, 2);
    put_array(w, s->ntables);
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        put_map(w, 4);
        put_uint(w, 1);
        put_name(w, t->name, 0);
        put_uint(w, 2);
        put_array(w, t->nkeys);
        for (uint32_t k = 0; k < t->nkeys; k++)
            put_name(w, t->keys[k], 0);
        put_uint(w, 3);
        put_array(w, t->ncols);
        for (uint32_t c = 0; c < t->ncols; c++) {
            put_name(w, t->cols[c].name, 0);
            kinds[c] = (uint8_t)(t->cols[c].orset != 0);
        }
        put_uint(w, 4);
        put_str(w, 0, kinds, t->ncols);
    }
}

static void enc_body(wr_t *w, const knit_msg_t *m, const knit_codec_limits_t *lim)
{
    switch (m->type) {
    case KNIT_MSG_HELLO: {
        const knit_hello_t *h = &m->u.hello;
        if (h->min_version == 0 || h->min_version > h->max_version || (h->nsubs && !h->subs) ||
            (h->claim.kind && (h->claim.kind != KNIT_CRED_ANON || h->cred.kind != KNIT_CRED_JWT)))
            ENC_FAIL(w, KNIT_EINVAL);
        if (h->schema) {
            uint8_t fp[KNIT_SCHEMA_FP_LEN];
            int src = knit__schema_check(h->schema, NULL);
            if (src)
                ENC_FAIL(w, src == KNIT_ETOOBIG ? KNIT_ETOOBIG : KNIT_EINVAL);
            knit__schema_fingerprint(h->schema, fp);
            if (memcmp(fp, h->schema->fp, sizeof fp) != 0)
                ENC_FAIL(w, KNIT_EINVAL);
        }
        put_map(w, 5 + (h->nsubs > 0) + (h->agent != NULL) + (h->claim.kind != 0) +
                       (h->schema != NULL) + (h->features != 0));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_HELLO);
        put_uint(w, 1);
        put_uint(w, h->min_version);
        put_uint(w, 2);
        put_uint(w, h->max_version);
        put_uint(w, 3);
        put_str(w, 0, h->site.b, 16);
        put_uint(w, 4);
        enc_cred(w, &h->cred, lim);
        if (h->nsubs) {
            put_uint(w, 5);
            enc_subs(w, h->subs, h->nsubs, lim);
        }
        if (h->agent) {
            put_uint(w, 6);
            put_name(w, h->agent, 1);
        }
        if (h->claim.kind) {
            put_uint(w, 7);
            enc_cred(w, &h->claim, lim);
        }
        if (h->schema) {
            put_uint(w, 8);
            enc_schema(w, h->schema);
        }
        if (h->features) {
            put_uint(w, 9);
            put_uint(w, h->features);
        }
        return;
    }
    case KNIT_MSG_WELCOME: {
        const knit_welcome_t *x = &m->u.welcome;
        if (x->version == 0 || (x->ngranted && !x->granted))
            ENC_FAIL(w, KNIT_EINVAL);
        if (x->ngranted > lim->max_dict)
            ENC_FAIL(w, KNIT_ETOOBIG);
        put_map(w, 6 + (x->features != 0));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_WELCOME);
        put_uint(w, 1);
        put_uint(w, x->version);
        put_uint(w, 2);
        put_name(w, x->principal, 0);
        put_uint(w, 3);
        put_array(w, x->ngranted);
        for (size_t i = 0; i < x->ngranted; i++) {
            put_name(w, x->granted[i], 0);
        }
        put_uint(w, 4);
        put_uint(w, x->clock);
        put_uint(w, 5);
        put_map(w, 4);
        put_uint(w, 1);
        put_uint(w, x->limits.max_frame);
        put_uint(w, 2);
        put_uint(w, x->limits.max_changes);
        put_uint(w, 3);
        put_uint(w, x->limits.idle_ms);
        put_uint(w, 4);
        put_uint(w, x->limits.max_drift_ms);
        if (x->features) {
            /* Key 6, a later minor revision: older clients skip it. */
            put_uint(w, 6);
            put_uint(w, x->features);
        }
        return;
    }
    case KNIT_MSG_ERROR: {
        const knit_error_msg_t *x = &m->u.error;
        if (x->code >= 0)
            ENC_FAIL(w, KNIT_EINVAL);
        int msg = x->message && x->message[0]; /* "" is the default: not sent */
        put_map(w, 2 + msg + (x->min_version != 0) + (x->max_version != 0));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_ERROR);
        put_uint(w, 1);
        put_int(w, x->code);
        if (msg) {
            put_uint(w, 2);
            put_name(w, x->message, 1);
        }
        if (x->min_version) {
            put_uint(w, 3);
            put_uint(w, x->min_version);
        }
        if (x->max_version) {
            put_uint(w, 4);
            put_uint(w, x->max_version);
        }
        return;
    }
    case KNIT_MSG_PUSH: {
        const knit_push_t *x = &m->u.push;
        put_map(w, 4);
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_PUSH);
        put_uint(w, 1);
        put_uint(w, x->id);
        put_uint(w, 2);
        put_name(w, x->ns, 0);
        put_uint(w, 3);
        enc_batch(w, x->batch, x->ns, 0, 0, 0, lim);
        return;
    }
    case KNIT_MSG_ACK: {
        /* The sequences are sent together or not at all (PROTOCOL.md ACK). */
        int seqs = m->u.ack.last_seq != 0;
        if (seqs && (m->u.ack.first_seq == 0 || m->u.ack.first_seq > m->u.ack.last_seq))
            ENC_FAIL(w, KNIT_EINVAL);
        put_map(w, 3 + 2 * seqs);
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_ACK);
        put_uint(w, 1);
        put_uint(w, m->u.ack.id);
        put_uint(w, 2);
        put_bool(w, m->u.ack.durable);
        if (seqs) {
            put_uint(w, 3);
            put_uint(w, m->u.ack.first_seq);
            put_uint(w, 4);
            put_uint(w, m->u.ack.last_seq);
        }
        return;
    }
    case KNIT_MSG_REJECT: {
        const knit_reject_t *x = &m->u.reject;
        if (x->nreasons == 0 || !x->reasons)
            ENC_FAIL(w, KNIT_EINVAL);
        if (x->nreasons > lim->max_changes + 1)
            ENC_FAIL(w, KNIT_ETOOBIG);
        put_map(w, 3 + (x->state != NULL));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_REJECT);
        put_uint(w, 1);
        put_uint(w, x->id);
        put_uint(w, 2);
        put_array(w, x->nreasons);
        for (size_t i = 0; i < x->nreasons; i++) {
            const knit_reason_t *r = &x->reasons[i];
            if (r->change < -1 || r->code >= 0)
                ENC_FAIL(w, KNIT_EINVAL);
            int msg = r->message && r->message[0];
            put_map(w, 2 + msg);
            put_uint(w, 1);
            if (r->change < 0)
                put_null(w);
            else
                put_uint(w, (uint64_t)r->change);
            put_uint(w, 2);
            put_int(w, r->code);
            if (msg) {
                put_uint(w, 3);
                put_name(w, r->message, 1);
            }
        }
        if (x->state) {
            /* Key 3 (a later minor revision, skipped by older clients): a
            ** batch in PUSH form whose changes are of one namespace. */
            put_uint(w, 3);
            enc_batch(w, x->state, x->state->nns ? x->state->ns[0] : KNIT_REJECT_STATE_NS, 0, 0, 0,
                      lim);
        }
        return;
    }
    case KNIT_MSG_DELTAS: {
        const knit_deltas_t *x = &m->u.deltas;
        if (!x->ns || x->from > x->to)
            ENC_FAIL(w, KNIT_EINVAL);
        put_map(w, 5 + (x->caught_up != 0));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_DELTAS);
        put_uint(w, 1);
        put_name(w, x->ns, 0);
        put_uint(w, 2);
        put_uint(w, x->from);
        put_uint(w, 3);
        put_uint(w, x->to);
        put_uint(w, 4);
        enc_batch(w, x->batch, x->ns, 1, x->from, x->to, lim);
        if (x->caught_up) {
            put_uint(w, 5);
            put_bool(w, 1);
        }
        return;
    }
    case KNIT_MSG_PING:
    case KNIT_MSG_PONG:
        put_map(w, 2);
        put_uint(w, 0);
        put_uint(w, m->type);
        put_uint(w, 1);
        put_uint(w, m->u.ping.nonce);
        return;
    case KNIT_MSG_SUBSCRIBE:
        if (m->u.subscribe.nsubs == 0 || !m->u.subscribe.subs)
            ENC_FAIL(w, KNIT_EINVAL);
        put_map(w, 2);
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_SUBSCRIBE);
        put_uint(w, 1);
        enc_subs(w, m->u.subscribe.subs, m->u.subscribe.nsubs, lim);
        return;
    case KNIT_MSG_CHECK: {
        const knit_check_msg_t *x = &m->u.check;
        if (x->nbuckets > KNIT_CHECK_MAX_BUCKETS || (x->nfetch && (!x->fetch || !x->nbuckets)))
            ENC_FAIL(w, KNIT_EINVAL);
        if (x->nfetch > KNIT_CHECK_MAX_FETCH)
            ENC_FAIL(w, KNIT_ETOOBIG);
        for (size_t i = 0; i < x->nfetch; i++)
            if (x->fetch[i] >= x->nbuckets)
                ENC_FAIL(w, KNIT_EINVAL);
        put_map(w, 4 + (x->nbuckets != 0) + (x->nfetch != 0));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_CHECK);
        put_uint(w, 1);
        put_uint(w, x->id);
        put_uint(w, 2);
        put_name(w, x->ns, 0);
        put_uint(w, 3);
        put_str(w, 0, x->digest.b, 32);
        if (x->nbuckets) {
            put_uint(w, 4);
            put_uint(w, x->nbuckets);
        }
        if (x->nfetch) {
            put_uint(w, 5);
            put_array(w, x->nfetch);
            for (size_t i = 0; i < x->nfetch; i++)
                put_uint(w, x->fetch[i]);
        }
        return;
    }
    case KNIT_MSG_CHECKED: {
        const knit_checked_t *x = &m->u.checked;
        if (x->nbuckets > KNIT_CHECK_MAX_BUCKETS || (x->nbuckets && !x->buckets))
            ENC_FAIL(w, KNIT_EINVAL);
        put_map(w, 5 + (x->nbuckets != 0) + (x->state != NULL));
        put_uint(w, 0);
        put_uint(w, KNIT_MSG_CHECKED);
        put_uint(w, 1);
        put_uint(w, x->id);
        put_uint(w, 2);
        put_name(w, x->ns, 0);
        put_uint(w, 3);
        put_uint(w, x->seq);
        put_uint(w, 4);
        put_str(w, 0, x->digest.b, 32);
        if (x->nbuckets) {
            /* One byte string: the bucket digests back to back
            ** (knit_digest_t is 32 bytes, so the array is contiguous). */
            put_uint(w, 5);
            put_str(w, 0, x->buckets, sizeof *x->buckets * x->nbuckets);
        }
        if (x->state) {
            put_uint(w, 6);
            enc_batch(w, x->state, x->ns, 0, 0, 0, lim);
        }
        return;
    }
    }
    ENC_FAIL(w, KNIT_EINVAL);
}

int knit_msg_encode(const knit_msg_t *m, const knit_codec_limits_t *limits,
                    knit_buf_t *out) /* see codec.h */
{
    knit_codec_limits_t lim = resolve_limits(limits);
    wr_t w = {out, 0, lim.max_string};
    size_t start = out->len;
    if (wr_room(&w, KNIT_FRAME_HEADER))
        out->len += KNIT_FRAME_HEADER;
    enc_body(&w, m, &lim);
    if (!w.err) {
        size_t n = out->len - start - KNIT_FRAME_HEADER;
        if (n > lim.max_frame) {
            w.err = KNIT_ETOOBIG;
        } else {
            uint8_t *h = out->p + start;
            h[0] = (uint8_t)(n >> 24);
            h[1] = (uint8_t)(n >> 16);
            h[2] = (uint8_t)(n >> 8);
            h[3] = (uint8_t)n;
        }
    }
    if (w.err)
        out->len = start;
    return w.err;
}

/* ---------------------------------------------------------------------- */
/* Reader                                                                  */

/* What the last decoded head was. */
enum {
    T_UINT,  /* u */
    T_NEG,   /* the integer -1 - u */
    T_BSTR,  /* s, len */
    T_TSTR,  /* s, len (not yet validated) */
    T_ARRAY, /* u items */
    T_MAP,   /* u pairs */
    T_TAG,   /* tag number u */
    T_FLOAT, /* d (any width) */
    T_NULL,  /* null */
    T_BOOL,  /* u = 0 or 1 */
    T_BAD    /* indefinite length, undefined or break: never allowed */
};

typedef struct rd_s {
    const uint8_t *p;        /* payload */
    size_t n;                /* its length */
    size_t off;              /* next unread byte */
    int t;                   /* last head's kind (T_*) */
    uint64_t u;              /* its integer, count, tag or bool */
    double d;                /* its float */
    const uint8_t *s;        /* its string bytes (into p) */
    size_t len;              /* its string length */
    knit_codec_limits_t lim; /* resolved limits */
    const char *why;         /* first problem found */
    knit_arena_t *arena;     /* the message's storage (out->priv) */
} rd_t;

static void cb_u8(void *c, uint8_t v)
{
    ((rd_t *)c)->t = T_UINT, ((rd_t *)c)->u = v;
}
static void cb_u16(void *c, uint16_t v)
{
    ((rd_t *)c)->t = T_UINT, ((rd_t *)c)->u = v;
}
static void cb_u32(void *c, uint32_t v)
{
    ((rd_t *)c)->t = T_UINT, ((rd_t *)c)->u = v;
}
static void cb_u64(void *c, uint64_t v)
{
    ((rd_t *)c)->t = T_UINT, ((rd_t *)c)->u = v;
}
static void cb_n8(void *c, uint8_t v)
{
    ((rd_t *)c)->t = T_NEG, ((rd_t *)c)->u = v;
}
static void cb_n16(void *c, uint16_t v)
{
    ((rd_t *)c)->t = T_NEG, ((rd_t *)c)->u = v;
}
static void cb_n32(void *c, uint32_t v)
{
    ((rd_t *)c)->t = T_NEG, ((rd_t *)c)->u = v;
}
static void cb_n64(void *c, uint64_t v)
{
    ((rd_t *)c)->t = T_NEG, ((rd_t *)c)->u = v;
}
static void cb_bstr(void *c, cbor_data p, size_t n)
{
    rd_t *r = c;
    r->t = T_BSTR, r->s = p, r->len = n;
}
static void cb_tstr(void *c, cbor_data p, size_t n)
{
    rd_t *r = c;
    r->t = T_TSTR, r->s = p, r->len = n;
}
static void cb_array(void *c, size_t n)
{
    ((rd_t *)c)->t = T_ARRAY, ((rd_t *)c)->u = n;
}
static void cb_map(void *c, size_t n)
{
    ((rd_t *)c)->t = T_MAP, ((rd_t *)c)->u = n;
}
static void cb_tag(void *c, uint64_t v)
{
    ((rd_t *)c)->t = T_TAG, ((rd_t *)c)->u = v;
}
static void cb_f4(void *c, float f)
{
    ((rd_t *)c)->t = T_FLOAT, ((rd_t *)c)->d = f;
}
static void cb_f8(void *c, double d)
{
    ((rd_t *)c)->t = T_FLOAT, ((rd_t *)c)->d = d;
}
static void cb_null(void *c)
{
    ((rd_t *)c)->t = T_NULL;
}
static void cb_bool(void *c, bool v)
{
    ((rd_t *)c)->t = T_BOOL, ((rd_t *)c)->u = v;
}
static void cb_bad(void *c)
{
    ((rd_t *)c)->t = T_BAD;
}

static const struct cbor_callbacks callbacks = {
    .uint8 = cb_u8,
    .uint16 = cb_u16,
    .uint32 = cb_u32,
    .uint64 = cb_u64,
    .negint8 = cb_n8,
    .negint16 = cb_n16,
    .negint32 = cb_n32,
    .negint64 = cb_n64,
    .byte_string_start = cb_bad,
    .byte_string = cb_bstr,
    .string = cb_tstr,
    .string_start = cb_bad,
    .indef_array_start = cb_bad,
    .array_start = cb_array,
    .indef_map_start = cb_bad,
    .map_start = cb_map,
    .tag = cb_tag,
    .float2 = cb_f4,
    .float4 = cb_f4,
    .float8 = cb_f8,
    .undefined = cb_bad,
    .null = cb_null,
    .boolean = cb_bool,
    .indef_break = cb_bad,
};

static int fail(rd_t *r, int code, const char *why)
{
    if (!r->why)
        r->why = why;
    return code;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

/* Decodes the next head. */
static int next(rd_t *r)
{
    if (r->off >= r->n)
        return fail(r, KNIT_EPROTO, "message ends too early");
    struct cbor_decoder_result res =
        cbor_stream_decode(r->p + r->off, r->n - r->off, &callbacks, r);
    if (res.status == CBOR_DECODER_NEDATA)
        return fail(r, KNIT_EPROTO, "message ends too early");
    if (res.status != CBOR_DECODER_FINISHED)
        return fail(r, KNIT_EPROTO, "malformed CBOR");
    r->off += res.read;
    if (r->t == T_BAD)
        return fail(r, KNIT_EPROTO, "indefinite length or undefined value");
    return 0;
}

static int expect(rd_t *r, int t, const char *why)
{
    TRY(next(r));
    return r->t == t ? 0 : fail(r, KNIT_EPROTO, why);
}

static int rd_uint(rd_t *r, uint64_t *v, const char *why)
{
    TRY(expect(r, T_UINT, why));
    *v = r->u;
    return 0;
}

static int rd_uint32(rd_t *r, uint32_t *v, const char *why)
{
    uint64_t x;
    TRY(rd_uint(r, &x, why));
    if (x > UINT32_MAX)
        return fail(r, KNIT_EPROTO, why);
    *v = (uint32_t)x;
    return 0;
}

/* A CBOR integer of either sign, within int64. */
static int rd_int(rd_t *r, int64_t *v, const char *why)
{
    TRY(next(r));
    if ((r->t != T_UINT && r->t != T_NEG) || r->u > INT64_MAX)
        return fail(r, KNIT_EPROTO, why);
    *v = r->t == T_UINT ? (int64_t)r->u : -1 - (int64_t)r->u;
    return 0;
}

/* An error code: -2^31 .. -1. */
static int rd_code(rd_t *r, int32_t *v, const char *why)
{
    int64_t x;
    TRY(rd_int(r, &x, why));
    if (x >= 0 || x < INT32_MIN)
        return fail(r, KNIT_EPROTO, why);
    *v = (int32_t)x;
    return 0;
}

static int rd_bool(rd_t *r, int *v, const char *why)
{
    TRY(expect(r, T_BOOL, why));
    *v = (int)r->u;
    return 0;
}

/* An array or map head whose count the remaining bytes can hold (each item
** takes at least one byte; a map pair two) and that is at most max. */
static int rd_count(rd_t *r, int t, size_t max, size_t *count, const char *why)
{
    TRY(expect(r, t, why));
    uint64_t per = t == T_MAP ? 2 : 1;
    if (r->u > (r->n - r->off) / per)
        return fail(r, KNIT_EPROTO, "count exceeds the message");
    if (r->u > max)
        return fail(r, KNIT_ETOOBIG, "count exceeds the limit");
    *count = (size_t)r->u;
    return 0;
}

/* Reads a map key: keys are uints in strictly ascending order. */
static int rd_key(rd_t *r, int64_t *prev, uint64_t *key)
{
    TRY(rd_uint(r, key, "map key is not an unsigned integer"));
    if (*key > INT64_MAX || (int64_t)*key <= *prev)
        return fail(r, KNIT_EPROTO, "map keys not in ascending order");
    *prev = (int64_t)*key;
    return 0;
}

/* Skips one well-formed item of an unknown field (PROTOCOL.md section 10). */
static int skip(rd_t *r, unsigned depth)
{
    if (depth > r->lim.max_depth)
        return fail(r, KNIT_ETOOBIG, "unknown field nested too deeply");
    TRY(next(r));
    switch (r->t) {
    case T_TSTR:
        if (!knit__utf8_valid(r->s, r->len))
            return fail(r, KNIT_EPROTO, "text string is not UTF-8");
        return 0;
    case T_ARRAY:
    case T_MAP: {
        uint64_t items = r->u;
        if (r->t == T_MAP) {
            if (items > (r->n - r->off) / 2)
                return fail(r, KNIT_EPROTO, "count exceeds the message");
            items *= 2;
        }
        if (items > r->n - r->off)
            return fail(r, KNIT_EPROTO, "count exceeds the message");
        for (uint64_t i = 0; i < items; i++)
            TRY(skip(r, depth + 1));
        return 0;
    }
    case T_TAG:
        if (r->u != TAG_RAW_TEXT)
            return fail(r, KNIT_EPROTO, "unexpected tag");
        return skip(r, depth + 1);
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------------- */
/* The decoded message's storage                                           */

#define MSG_BLOCK 4096 /* most messages fit in one */

static void *arena_alloc(rd_t *r, size_t n)
{
    return knit__arena_alloc(r->arena, n);
}

/* Reads a name-like text string into the arena, NUL-terminated.
** allow_empty: "" is acceptable (messages, secrets). */
static int rd_name(rd_t *r, int allow_empty, const char **out, const char *why)
{
    TRY(expect(r, T_TSTR, why));
    if (r->len > r->lim.max_string)
        return fail(r, KNIT_ETOOBIG, "string exceeds the limit");
    if ((!allow_empty && r->len == 0) || memchr(r->s, 0, r->len) || !knit__utf8_valid(r->s, r->len))
        return fail(r, KNIT_EPROTO, why);
    char *s = arena_alloc(r, r->len + 1);
    if (!s)
        return KNIT_ENOMEM;
    memcpy(s, r->s, r->len);
    s[r->len] = 0;
    *out = s;
    return 0;
}

/* One SQLite value (PROTOCOL.md section 5); TEXT/BLOB point into the input. */
static int rd_value(rd_t *r, knit_value_t *v)
{
    TRY(next(r));
    switch (r->t) {
    case T_UINT:
    case T_NEG:
        if (r->u > INT64_MAX)
            return fail(r, KNIT_EPROTO, "integer value outside int64");
        v->type = KNIT_INTEGER;
        v->u.i = r->t == T_UINT ? (int64_t)r->u : -1 - (int64_t)r->u;
        return 0;
    case T_FLOAT:
        if (isnan(r->d))
            return fail(r, KNIT_EPROTO, "NaN value");
        v->type = KNIT_REAL;
        v->u.r = r->d;
        return 0;
    case T_TSTR:
        if (!knit__utf8_valid(r->s, r->len))
            return fail(r, KNIT_EPROTO, "text string is not UTF-8");
        v->type = KNIT_TEXT;
        v->u.b.p = r->s;
        v->u.b.n = r->len;
        return 0;
    case T_TAG:
        if (r->u != TAG_RAW_TEXT)
            return fail(r, KNIT_EPROTO, "unexpected tag");
        TRY(expect(r, T_BSTR, "raw TEXT tag without a byte string"));
        if (knit__utf8_valid(r->s, r->len))
            return fail(r, KNIT_EPROTO, "raw TEXT tag around valid UTF-8");
        v->type = KNIT_TEXT;
        v->u.b.p = r->s;
        v->u.b.n = r->len;
        return 0;
    case T_BSTR:
        v->type = KNIT_BLOB;
        v->u.b.p = r->s;
        v->u.b.n = r->len;
        return 0;
    case T_NULL:
        v->type = KNIT_NULL;
        return 0;
    default:
        return fail(r, KNIT_EPROTO, "not a value");
    }
}

/* An OR-set state must decode, and name only sites of the batch. */
static int check_orset(rd_t *r, const uint8_t *p, size_t n, size_t nsites)
{
    knit_orset_t s;
    knit_orset_init(&s);
    int rc = knit_orset_decode(p, n, &s);
    if (rc == KNIT_ENOMEM)
        return rc;
    if (rc)
        return fail(r, KNIT_EPROTO, "malformed OR-set state");
    int bad = 0;
    for (size_t i = 0; i < s.vv.len; i++)
        bad |= s.vv.e[i].site >= nsites;
    for (size_t i = 0; i < s.ncloud; i++)
        bad |= s.cloud[i].site >= nsites;
    for (size_t i = 0; i < s.nelems; i++)
        for (size_t k = 0; k < s.elems[i].ndots; k++)
            bad |= s.elems[i].dots[k].site >= nsites;
    knit_orset_free(&s);
    return bad ? fail(r, KNIT_EPROTO, "OR-set names a site outside the batch") : 0;
}

/* ---------------------------------------------------------------------- */
/* Decoding the batch                                                      */

static int rd_sites(rd_t *r, knit_batch_t *b)
{
    size_t n;
    TRY(rd_count(r, T_ARRAY, r->lim.max_dict, &n, "batch sites is not an array"));
    for (size_t i = 0; i < n; i++) {
        TRY(expect(r, T_BSTR, "site id is not a byte string"));
        if (r->len != 16)
            return fail(r, KNIT_EPROTO, "site id is not 16 bytes");
        knit_site_t s;
        uint32_t idx;
        memcpy(s.b, r->s, 16);
        TRY(knit_batch_site(b, &s, &idx));
        if (idx != i)
            return fail(r, KNIT_EPROTO, "duplicate site id");
    }
    return 0;
}

static int rd_table(rd_t *r, knit_batch_t *b, size_t i)
{
    size_t pairs, ncols = 0;
    int64_t prev = -1;
    const char *name = NULL, **cols = NULL;
    const uint8_t *kinds = NULL;
    size_t nkinds = 0;
    uint64_t npk = 0;
    int have = 0;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "table is not a map"));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key;
        TRY(rd_key(r, &prev, &key));
        switch (key) {
        case 1:
            TRY(rd_name(r, 0, &name, "table name is not a name"));
            break;
        case 2:
            TRY(rd_uint(r, &npk, "table npk is not an unsigned integer"));
            if (npk == 0)
                return fail(r, KNIT_EPROTO, "table npk is 0");
            if (npk > r->lim.max_dict)
                return fail(r, KNIT_ETOOBIG, "table npk exceeds the limit");
            break;
        case 3:
            TRY(rd_count(r, T_ARRAY, r->lim.max_dict, &ncols, "table cols is not an array"));
            cols = arena_alloc(r, (ncols ? ncols : 1) * sizeof *cols);
            if (!cols)
                return KNIT_ENOMEM;
            for (size_t c = 0; c < ncols; c++)
                TRY(rd_name(r, 0, &cols[c], "column name is not a name"));
            break;
        case 4:
            TRY(expect(r, T_BSTR, "table kinds is not a byte string"));
            kinds = r->s;
            nkinds = r->len;
            break;
        default:
            TRY(skip(r, 1));
            continue;
        }
        have |= 1 << key;
    }
    if (have != 0x1E)
        return fail(r, KNIT_EPROTO, "table lacks a required field");
    if (nkinds != ncols)
        return fail(r, KNIT_EPROTO, "table kinds and cols differ in length");
    for (size_t c = 0; c < ncols; c++)
        if (kinds[c] > 1)
            return fail(r, KNIT_EPROTO, "unknown column kind");
    uint32_t idx;
    int rc = knit_batch_table(b, name, (uint32_t)npk, (uint32_t)ncols, cols, kinds, &idx);
    if (rc == KNIT_ENOMEM)
        return rc;
    if (rc || idx != i)
        return fail(r, KNIT_EPROTO, "duplicate table name");
    return 0;
}

/* Takes one item from a unit's remaining count. */
static int take(rd_t *r, uint64_t *items)
{
    if (*items == 0)
        return fail(r, KNIT_EPROTO, "unit ends inside a row");
    (*items)--;
    return 0;
}

/* The units array.  DELTAS (deltas = 1) also checks versions against
** (from, to].  pk is scratch room for the largest npk of the batch. */
static int rd_units(rd_t *r, knit_batch_t *b, int deltas, uint64_t from, uint64_t to)
{
    size_t nunits, total = 0;
    uint32_t maxpk = 1;
    for (size_t i = 0; i < b->ntables; i++)
        if (b->tables[i].npk > maxpk)
            maxpk = b->tables[i].npk;
    knit_value_t *pk = arena_alloc(r, maxpk * sizeof *pk);
    if (!pk)
        return KNIT_ENOMEM;
    TRY(rd_count(r, T_ARRAY, r->lim.max_changes, &nunits, "batch units is not an array"));

    uint64_t version = 0, base_ms = 0;
    uint32_t cur_table = 0, cur_site = 0;
    for (size_t u = 0; u < nunits; u++) {
        uint64_t items, uh;
        int64_t x;
        TRY(expect(r, T_ARRAY, "unit is not an array"));
        items = r->u;
        if (items > r->n - r->off)
            return fail(r, KNIT_EPROTO, "count exceeds the message");
        TRY(take(r, &items));
        TRY(rd_uint(r, &uh, "unit head is not an unsigned integer"));
        if (uh & ~(uint64_t)(UH_V | UH_M | UH_C))
            return fail(r, KNIT_EPROTO, "unknown unit head bits");
        uint64_t v = version + 1, counter = 0;
        if (uh & UH_V) {
            TRY(take(r, &items));
            TRY(rd_int(r, &x, "unit vdelta is not an integer"));
            if (x == 0)
                return fail(r, KNIT_EPROTO, "unit vdelta is 0");
            v += (uint64_t)x;
        }
        if (uh & UH_M) {
            TRY(take(r, &items));
            TRY(rd_int(r, &x, "unit msdelta is not an integer"));
            if (x == 0)
                return fail(r, KNIT_EPROTO, "unit msdelta is 0");
            uint64_t ms = base_ms + (uint64_t)x;
            if (ms >= HLC_MS_LIMIT)
                return fail(r, KNIT_EPROTO, "unit base outside the HLC range");
            base_ms = ms;
        }
        if (uh & UH_C) {
            TRY(take(r, &items));
            TRY(rd_uint(r, &counter, "unit counter is not an unsigned integer"));
            if (counter == 0 || counter > 0xFFFF)
                return fail(r, KNIT_EPROTO, "unit counter out of range");
        }
        if (deltas && (v <= from || v > to || (u && v <= version)))
            return fail(r, KNIT_EPROTO, "DELTAS unit version outside (from, to] or not rising");
        version = v;
        uint64_t base = base_ms << 16 | counter;
        TRY(knit_batch_begin(b, version));

        while (items > 0) {
            uint64_t rh, y;
            TRY(take(r, &items));
            TRY(rd_uint(r, &rh, "row head is not an unsigned integer"));
            uint64_t ncells = (rh >> RH_SHIFT) + 1;
            if (ncells > r->lim.max_changes - total)
                return fail(r, KNIT_ETOOBIG, "changes exceed the limit");
            if (rh & RH_T) {
                TRY(take(r, &items));
                TRY(rd_uint(r, &y, "row table is not an unsigned integer"));
                if (y >= b->ntables || y == cur_table)
                    return fail(r, KNIT_EPROTO, "row table index out of range or redundant");
                cur_table = (uint32_t)y;
            }
            if (rh & RH_S) {
                TRY(take(r, &items));
                TRY(rd_uint(r, &y, "row site is not an unsigned integer"));
                if (y >= b->nsites || y == cur_site)
                    return fail(r, KNIT_EPROTO, "row site index out of range or redundant");
                cur_site = (uint32_t)y;
            }
            uint64_t cl = 1;
            if (rh & RH_L) {
                TRY(take(r, &items));
                TRY(rd_uint(r, &cl, "row cl is not an unsigned integer"));
                if (cl == 1)
                    return fail(r, KNIT_EPROTO, "row cl is redundant");
            }
            if (cur_table >= b->ntables)
                return fail(r, KNIT_EPROTO, "row without a table");
            if (cur_site >= b->nsites)
                return fail(r, KNIT_EPROTO, "row without a site");
            const knit_batch_table_t *tb = &b->tables[cur_table];
            if (items < tb->npk + ncells)
                return fail(r, KNIT_EPROTO, "unit ends inside a row");
            for (uint32_t k = 0; k < tb->npk; k++) {
                items--;
                TRY(rd_value(r, &pk[k]));
            }
            uint64_t m = (uint64_t)tb->ncols + 1, next_col = 0;
            for (uint64_t k = 0; k < ncells; k++) {
                uint64_t chd;
                knit_change_t c;
                TRY(take(r, &items));
                TRY(rd_uint(r, &chd, "cell head is not an unsigned integer"));
                uint64_t d = chd >> CH_SHIFT;
                if (d > tb->ncols)
                    return fail(r, KNIT_EPROTO, "cell column step out of range");
                c.ns = 0;
                c.table = cur_table;
                c.col = (uint32_t)((next_col + d) % m);
                c.site = cur_site;
                c.pk = pk;
                c.cl = cl;
                c.hlc = base;
                c.value.type = KNIT_NULL;
                if (c.col > 0) {
                    TRY(take(r, &items));
                    TRY(rd_value(r, &c.value));
                    if (tb->orset[c.col - 1]) {
                        if (c.value.type != KNIT_BLOB)
                            return fail(r, KNIT_EPROTO, "OR-set value is not a byte string");
                        TRY(check_orset(r, c.value.u.b.p, c.value.u.b.n, b->nsites));
                    }
                }
                if (chd & CH_H) {
                    uint64_t cc = 0;
                    TRY(take(r, &items));
                    TRY(rd_int(r, &x, "cell hd is not an integer"));
                    uint64_t ms = base_ms + (uint64_t)((x - (x & 1)) / 2);
                    if (ms >= HLC_MS_LIMIT)
                        return fail(r, KNIT_EPROTO, "cell stamp outside the HLC range");
                    if (x & 1) {
                        TRY(take(r, &items));
                        TRY(rd_uint(r, &cc, "cell counter is not an unsigned integer"));
                        if (cc == 0 || cc > 0xFFFF)
                            return fail(r, KNIT_EPROTO, "cell counter out of range");
                    }
                    c.hlc = ms << 16 | cc;
                    if (c.hlc == base)
                        return fail(r, KNIT_EPROTO, "cell stamp is redundant");
                }
                if (chd & CH_S) {
                    TRY(take(r, &items));
                    TRY(rd_uint(r, &y, "cell site is not an unsigned integer"));
                    if (y >= b->nsites || y == cur_site)
                        return fail(r, KNIT_EPROTO, "cell site index out of range or redundant");
                    c.site = (uint32_t)y;
                }
                TRY(knit_batch_add(b, &c));
                next_col = (uint64_t)c.col + 1;
            }
            total += ncells;
        }
    }
    return 0;
}

/* A batch map; ns is the message's namespace (interned as index 0). */
static int rd_batch(rd_t *r, const char *ns, int deltas, uint64_t from, uint64_t to,
                    knit_batch_t **out)
{
    size_t pairs;
    int64_t prev = -1;
    int have = 0;
    uint32_t idx;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "batch is not a map"));
    TRY(knit_batch_new(out));
    knit_batch_t *b = *out;
    TRY(knit_batch_ns(b, ns, &idx));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key;
        TRY(rd_key(r, &prev, &key));
        switch (key) {
        case 1:
            TRY(rd_sites(r, b));
            break;
        case 2: {
            size_t n;
            TRY(rd_count(r, T_ARRAY, r->lim.max_dict, &n, "batch tables is not an array"));
            for (size_t i = 0; i < n; i++)
                TRY(rd_table(r, b, i));
            break;
        }
        case 3:
            if (have != 0x6)
                return fail(r, KNIT_EPROTO, "batch units before its dictionaries");
            TRY(rd_units(r, b, deltas, from, to));
            break;
        default:
            TRY(skip(r, 1));
            continue;
        }
        have |= 1 << key;
    }
    if (have != 0xE)
        return fail(r, KNIT_EPROTO, "batch lacks a required field");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Decoding messages                                                       */

static int rd_cred(rd_t *r, knit_cred_t *c)
{
    size_t pairs;
    int64_t prev = -1;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "credential is not a map"));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key;
        TRY(rd_key(r, &prev, &key));
        switch (key) {
        case 1:
            TRY(rd_uint32(r, &c->kind, "credential kind is not a uint32"));
            if (c->kind == 0)
                return fail(r, KNIT_EPROTO, "credential kind is 0");
            break;
        case 2:
            TRY(rd_name(r, 1, &c->id, "credential id is not text"));
            break;
        case 3:
            TRY(rd_name(r, 1, &c->secret, "credential secret is not text"));
            break;
        case 4:
            TRY(rd_name(r, 0, &c->token, "credential token is not text"));
            break;
        default:
            TRY(skip(r, 1));
        }
    }
    if (c->kind == 0)
        return fail(r, KNIT_EPROTO, "credential lacks its kind");
    if (c->kind == KNIT_CRED_ANON && (!c->id || !c->secret || !anon_id_ok(c->id, strlen(c->id)) ||
                                      !c->secret[0] || strlen(c->secret) > ANON_SECRET_MAX))
        return fail(r, KNIT_EPROTO, "bad anonymous credential");
    if (c->kind == KNIT_CRED_JWT && !c->token)
        return fail(r, KNIT_EPROTO, "JWT credential lacks its token");
    return 0;
}

static int rd_subs(rd_t *r, const knit_sub_t **out, size_t *n)
{
    TRY(rd_count(r, T_ARRAY, r->lim.max_dict, n, "subscriptions is not an array"));
    knit_sub_t *s = arena_alloc(r, (*n ? *n : 1) * sizeof *s);
    if (!s)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        size_t pairs;
        int64_t prev = -1;
        int have = 0;
        TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "subscription is not a map"));
        for (size_t k = 0; k < pairs; k++) {
            uint64_t key;
            TRY(rd_key(r, &prev, &key));
            if (key == 1)
                TRY(rd_name(r, 0, &s[i].ns, "subscription ns is not a name"));
            else if (key == 2)
                TRY(rd_uint(r, &s[i].cursor, "subscription cursor is not a uint"));
            else
                TRY(skip(r, 1));
            if (key == 1 || key == 2)
                have |= 1 << key;
        }
        if (have != 0x6)
            return fail(r, KNIT_EPROTO, "subscription lacks a required field");
    }
    *out = s;
    return 0;
}

static int rd_limits(rd_t *r, knit_wire_limits_t *l)
{
    size_t pairs;
    int64_t prev = -1;
    int have = 0;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "limits is not a map"));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key, *f = NULL;
        TRY(rd_key(r, &prev, &key));
        switch (key) {
        case 1:
            f = &l->max_frame;
            break;
        case 2:
            f = &l->max_changes;
            break;
        case 3:
            f = &l->idle_ms;
            break;
        case 4:
            f = &l->max_drift_ms;
            break;
        default:
            TRY(skip(r, 1));
            continue;
        }
        TRY(rd_uint(r, f, "limit is not an unsigned integer"));
        have |= 1 << key;
    }
    return have == 0x1E ? 0 : fail(r, KNIT_EPROTO, "limits lacks a required field");
}

/* A name of HELLO's schema: a name (rule 7) of at most KNIT_SCHEMA_MAX_NAME
** bytes. */
static int rd_schema_name(rd_t *r, const char **out, const char *why)
{
    TRY(rd_name(r, 0, out, why));
    if (strlen(*out) > KNIT_SCHEMA_MAX_NAME)
        return fail(r, KNIT_ETOOBIG, "HELLO schema name is longer than 1024 bytes");
    return 0;
}

/* One table of HELLO's schema; cols holds room for KNIT_SCHEMA_MAX_COLS
** names read before the kinds. */
static int rd_schema_table(rd_t *r, knit_schema_table_t *t)
{
    size_t pairs, n;
    int64_t prev = -1;
    int have = 0;
    knit_schema_col_t *cols = NULL;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "HELLO schema table is not a map"));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key;
        TRY(rd_key(r, &prev, &key));
        switch (key) {
        case 1:
            TRY(rd_schema_name(r, &t->name, "HELLO schema table name is not a name"));
            break;
        case 2: {
            const char **keys;
            TRY(rd_count(r, T_ARRAY, SIZE_MAX, &n, "HELLO schema keys is not an array"));
            if (n > KNIT_SCHEMA_MAX_COLS)
                return fail(r, KNIT_ETOOBIG, "HELLO schema table has too many columns");
            if (n == 0)
                return fail(r, KNIT_EPROTO, "HELLO schema table has no key column");
            if (!(keys = arena_alloc(r, n * sizeof *keys)))
                return KNIT_ENOMEM;
            for (size_t i = 0; i < n; i++)
                TRY(rd_schema_name(r, &keys[i], "HELLO schema key is not a name"));
            t->keys = keys;
            t->nkeys = (uint32_t)n;
            break;
        }
        case 3:
            TRY(rd_count(r, T_ARRAY, SIZE_MAX, &n, "HELLO schema cols is not an array"));
            if (n + t->nkeys > KNIT_SCHEMA_MAX_COLS)
                return fail(r, KNIT_ETOOBIG, "HELLO schema table has too many columns");
            if (!(cols = arena_alloc(r, (n ? n : 1) * sizeof *cols)))
                return KNIT_ENOMEM;
            for (size_t i = 0; i < n; i++) {
                cols[i].orset = 0;
                TRY(rd_schema_name(r, &cols[i].name, "HELLO schema column is not a name"));
            }
            t->cols = cols;
            t->ncols = (uint32_t)n;
            break;
        case 4:
            TRY(expect(r, T_BSTR, "HELLO schema kinds is not a byte string"));
            if (!(have & 8) || r->len != t->ncols)
                return fail(r, KNIT_EPROTO, "HELLO schema kinds do not match its columns");
            for (size_t i = 0; i < r->len; i++) {
                if (r->s[i] > 1)
                    return fail(r, KNIT_EPROTO, "HELLO schema column kind is unknown");
                cols[i].orset = r->s[i];
            }
            break;
        default:
            TRY(skip(r, 1));
            continue;
        }
        have |= 1 << key;
    }
    return have == 0x1E ? 0 : fail(r, KNIT_EPROTO, "HELLO schema table lacks a required field");
}

/* HELLO's schema (key 8): bounded, canonical, and its fingerprint must be
** that of its tables. */
static int rd_schema(rd_t *r, const knit_schema_t **out)
{
    size_t pairs, n;
    int64_t prev = -1;
    int have = 0, rc;
    const char *why = NULL;
    uint8_t fp[KNIT_SCHEMA_FP_LEN];
    knit_schema_t *s = arena_alloc(r, sizeof *s);
    if (!s)
        return KNIT_ENOMEM;
    memset(s, 0, sizeof *s);
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "HELLO schema is not a map"));
    for (size_t k = 0; k < pairs; k++) {
        uint64_t key;
        TRY(rd_key(r, &prev, &key));
        if (key == 1) {
            TRY(expect(r, T_BSTR, "HELLO schema fingerprint is not a byte string"));
            if (r->len != KNIT_SCHEMA_FP_LEN)
                return fail(r, KNIT_EPROTO, "HELLO schema fingerprint is not 8 bytes");
            memcpy(s->fp, r->s, KNIT_SCHEMA_FP_LEN);
        } else if (key == 2) {
            knit_schema_table_t *t;
            TRY(rd_count(r, T_ARRAY, SIZE_MAX, &n, "HELLO schema tables is not an array"));
            if (n > KNIT_SCHEMA_MAX_TABLES)
                return fail(r, KNIT_ETOOBIG, "HELLO schema has more than 1024 tables");
            if (!(t = arena_alloc(r, (n ? n : 1) * sizeof *t)))
                return KNIT_ENOMEM;
            memset(t, 0, (n ? n : 1) * sizeof *t);
            for (size_t i = 0; i < n; i++)
                TRY(rd_schema_table(r, &t[i]));
            s->tables = n ? t : NULL;
            s->ntables = n;
        } else {
            TRY(skip(r, 1));
            continue;
        }
        have |= 1 << key;
    }
    if (have != 0x6)
        return fail(r, KNIT_EPROTO, "HELLO schema lacks a required field");
    if ((rc = knit__schema_check(s, &why)) != 0)
        return fail(r, rc == KNIT_ETOOBIG ? KNIT_ETOOBIG : KNIT_EPROTO,
                    why ? why : "HELLO schema is not canonical");
    knit__schema_fingerprint(s, fp);
    if (memcmp(fp, s->fp, sizeof fp) != 0)
        return fail(r, KNIT_EPROTO, "HELLO schema fingerprint does not match its tables");
    *out = s;
    return 0;
}

/* A state digest: a byte string of exactly 32 bytes. */
static int rd_digest(rd_t *r, knit_digest_t *d, const char *why)
{
    TRY(expect(r, T_BSTR, why));
    if (r->len != 32)
        return fail(r, KNIT_EPROTO, why);
    memcpy(d->b, r->s, 32);
    return 0;
}

/* Bits of the required keys of each message type (bit k = key k). */
static const uint32_t required[] = {
    [KNIT_MSG_HELLO] = 0x1F,    [KNIT_MSG_WELCOME] = 0x3F, [KNIT_MSG_ERROR] = 0x3,
    [KNIT_MSG_PUSH] = 0xF,      [KNIT_MSG_ACK] = 0x7,      [KNIT_MSG_REJECT] = 0x7,
    [KNIT_MSG_DELTAS] = 0x1F,   [KNIT_MSG_PING] = 0x3,     [KNIT_MSG_PONG] = 0x3,
    [KNIT_MSG_SUBSCRIBE] = 0x3, [KNIT_MSG_CHECK] = 0xF,    [KNIT_MSG_CHECKED] = 0x1F,
};

/* One field (key >= 1) of a message of type m->type.  Returns 1 in *known
** when the key is one this type has. */
static int rd_field(rd_t *r, knit_msg_t *m, uint64_t key, uint32_t have, int *known)
{
    *known = 1;
    switch (m->type) {
    case KNIT_MSG_HELLO: {
        knit_hello_t *h = &m->u.hello;
        switch (key) {
        case 1:
            return rd_uint32(r, &h->min_version, "HELLO min_version is not a uint32");
        case 2:
            return rd_uint32(r, &h->max_version, "HELLO max_version is not a uint32");
        case 3:
            TRY(expect(r, T_BSTR, "HELLO site is not a byte string"));
            if (r->len != 16)
                return fail(r, KNIT_EPROTO, "HELLO site is not 16 bytes");
            memcpy(h->site.b, r->s, 16);
            return 0;
        case 4:
            return rd_cred(r, &h->cred);
        case 5:
            return rd_subs(r, &h->subs, &h->nsubs);
        case 6:
            return rd_name(r, 1, &h->agent, "HELLO agent is not text");
        case 7:
            return rd_cred(r, &h->claim);
        case 8:
            return rd_schema(r, &h->schema);
        case 9:
            return rd_uint(r, &h->features, "HELLO features is not an unsigned integer");
        }
        break;
    }
    case KNIT_MSG_WELCOME: {
        knit_welcome_t *x = &m->u.welcome;
        switch (key) {
        case 1:
            TRY(rd_uint32(r, &x->version, "WELCOME version is not a uint32"));
            return x->version ? 0 : fail(r, KNIT_EPROTO, "WELCOME version is 0");
        case 2:
            return rd_name(r, 0, &x->principal, "WELCOME principal is not a name");
        case 3: {
            TRY(rd_count(r, T_ARRAY, r->lim.max_dict, &x->ngranted,
                         "WELCOME granted is not an array"));
            const char **g = arena_alloc(r, (x->ngranted ? x->ngranted : 1) * sizeof *g);
            if (!g)
                return KNIT_ENOMEM;
            for (size_t i = 0; i < x->ngranted; i++)
                TRY(rd_name(r, 0, &g[i], "WELCOME granted entry is not a name"));
            x->granted = g;
            return 0;
        }
        case 4:
            return rd_uint(r, &x->clock, "WELCOME clock is not an unsigned integer");
        case 5:
            return rd_limits(r, &x->limits);
        case 6:
            return rd_uint(r, &x->features, "WELCOME features is not an unsigned integer");
        }
        break;
    }
    case KNIT_MSG_ERROR: {
        knit_error_msg_t *x = &m->u.error;
        switch (key) {
        case 1:
            return rd_code(r, &x->code, "ERROR code is not a negative int32");
        case 2:
            return rd_name(r, 1, &x->message, "ERROR message is not text");
        case 3:
            return rd_uint32(r, &x->min_version, "ERROR min_version is not a uint32");
        case 4:
            return rd_uint32(r, &x->max_version, "ERROR max_version is not a uint32");
        }
        break;
    }
    case KNIT_MSG_PUSH: {
        knit_push_t *x = &m->u.push;
        switch (key) {
        case 1:
            return rd_uint(r, &x->id, "PUSH id is not an unsigned integer");
        case 2:
            return rd_name(r, 0, &x->ns, "PUSH ns is not a name");
        case 3:
            if (!(have & 4))
                return fail(r, KNIT_EPROTO, "PUSH batch before its ns");
            return rd_batch(r, x->ns, 0, 0, 0, &x->batch);
        }
        break;
    }
    case KNIT_MSG_ACK:
        if (key == 1)
            return rd_uint(r, &m->u.ack.id, "ACK id is not an unsigned integer");
        if (key == 2)
            return rd_bool(r, &m->u.ack.durable, "ACK durable is not a bool");
        if (key == 3) {
            TRY(rd_uint(r, &m->u.ack.first_seq, "ACK first is not an unsigned integer"));
            return m->u.ack.first_seq ? 0 : fail(r, KNIT_EPROTO, "ACK first is 0");
        }
        if (key == 4) {
            if (!(have & 8))
                return fail(r, KNIT_EPROTO, "ACK last without first");
            TRY(rd_uint(r, &m->u.ack.last_seq, "ACK last is not an unsigned integer"));
            return m->u.ack.last_seq >= m->u.ack.first_seq
                       ? 0
                       : fail(r, KNIT_EPROTO, "ACK last is before first");
        }
        break;
    case KNIT_MSG_REJECT: {
        knit_reject_t *x = &m->u.reject;
        if (key == 1)
            return rd_uint(r, &x->id, "REJECT id is not an unsigned integer");
        if (key == 3)
            return rd_batch(r, KNIT_REJECT_STATE_NS, 0, 0, 0, &x->state);
        if (key != 2)
            break;
        TRY(rd_count(r, T_ARRAY, r->lim.max_changes + 1, &x->nreasons,
                     "REJECT reasons is not an array"));
        if (x->nreasons == 0)
            return fail(r, KNIT_EPROTO, "REJECT without a reason");
        knit_reason_t *rs = arena_alloc(r, x->nreasons * sizeof *rs);
        if (!rs)
            return KNIT_ENOMEM;
        for (size_t i = 0; i < x->nreasons; i++) {
            size_t pairs;
            int64_t prev = -1;
            int got = 0;
            rs[i].message = "";
            TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "REJECT reason is not a map"));
            for (size_t k = 0; k < pairs; k++) {
                uint64_t rk;
                TRY(rd_key(r, &prev, &rk));
                if (rk == 1) {
                    TRY(next(r));
                    if (r->t == T_NULL)
                        rs[i].change = -1;
                    else if (r->t == T_UINT && r->u <= INT64_MAX)
                        rs[i].change = (int64_t)r->u;
                    else
                        return fail(r, KNIT_EPROTO, "REJECT change is not a uint or null");
                } else if (rk == 2) {
                    TRY(rd_code(r, &rs[i].code, "REJECT code is not a negative int32"));
                } else if (rk == 3) {
                    TRY(rd_name(r, 1, &rs[i].message, "REJECT message is not text"));
                } else {
                    TRY(skip(r, 1));
                    continue;
                }
                got |= 1 << rk;
            }
            if ((got & 6) != 6)
                return fail(r, KNIT_EPROTO, "REJECT reason lacks a required field");
        }
        x->reasons = rs;
        return 0;
    }
    case KNIT_MSG_DELTAS: {
        knit_deltas_t *x = &m->u.deltas;
        switch (key) {
        case 1:
            return rd_name(r, 0, &x->ns, "DELTAS ns is not a name");
        case 2:
            return rd_uint(r, &x->from, "DELTAS from is not an unsigned integer");
        case 3:
            TRY(rd_uint(r, &x->to, "DELTAS to is not an unsigned integer"));
            return x->to >= x->from ? 0 : fail(r, KNIT_EPROTO, "DELTAS to < from");
        case 4:
            if ((have & 0xE) != 0xE)
                return fail(r, KNIT_EPROTO, "DELTAS batch before ns, from and to");
            return rd_batch(r, x->ns, 1, x->from, x->to, &x->batch);
        case 5:
            return rd_bool(r, &x->caught_up, "DELTAS caught_up is not a bool");
        }
        break;
    }
    case KNIT_MSG_PING:
    case KNIT_MSG_PONG:
        if (key == 1)
            return rd_uint(r, &m->u.ping.nonce, "PING/PONG nonce is not an unsigned integer");
        break;
    case KNIT_MSG_SUBSCRIBE:
        if (key == 1) {
            TRY(rd_subs(r, &m->u.subscribe.subs, &m->u.subscribe.nsubs));
            return m->u.subscribe.nsubs ? 0 : fail(r, KNIT_EPROTO, "SUBSCRIBE without subs");
        }
        break;
    case KNIT_MSG_CHECK: {
        knit_check_msg_t *x = &m->u.check;
        switch (key) {
        case 1:
            return rd_uint(r, &x->id, "CHECK id is not an unsigned integer");
        case 2:
            return rd_name(r, 0, &x->ns, "CHECK ns is not a name");
        case 3:
            return rd_digest(r, &x->digest, "CHECK digest is not 32 bytes");
        case 4:
            TRY(rd_uint32(r, &x->nbuckets, "CHECK buckets is not a uint32"));
            if (x->nbuckets == 0)
                return fail(r, KNIT_EPROTO, "CHECK buckets is 0");
            return x->nbuckets <= KNIT_CHECK_MAX_BUCKETS
                       ? 0
                       : fail(r, KNIT_ETOOBIG, "CHECK asks for too many buckets");
        case 5: {
            if (!(have & 16))
                return fail(r, KNIT_EPROTO, "CHECK fetch without buckets");
            TRY(rd_count(r, T_ARRAY, KNIT_CHECK_MAX_FETCH, &x->nfetch,
                         "CHECK fetch is not an array"));
            uint32_t *f = arena_alloc(r, (x->nfetch ? x->nfetch : 1) * sizeof *f);
            if (!f)
                return KNIT_ENOMEM;
            for (size_t i = 0; i < x->nfetch; i++) {
                TRY(rd_uint32(r, &f[i], "CHECK fetch entry is not a uint32"));
                if (f[i] >= x->nbuckets || (i && f[i] <= f[i - 1]))
                    return fail(r, KNIT_EPROTO, "CHECK fetch is not ascending buckets");
            }
            x->fetch = f;
            return 0;
        }
        }
        break;
    }
    case KNIT_MSG_CHECKED: {
        knit_checked_t *x = &m->u.checked;
        switch (key) {
        case 1:
            return rd_uint(r, &x->id, "CHECKED id is not an unsigned integer");
        case 2:
            return rd_name(r, 0, &x->ns, "CHECKED ns is not a name");
        case 3:
            return rd_uint(r, &x->seq, "CHECKED seq is not an unsigned integer");
        case 4:
            return rd_digest(r, &x->digest, "CHECKED digest is not 32 bytes");
        case 5: {
            TRY(expect(r, T_BSTR, "CHECKED buckets is not a byte string"));
            if (r->len == 0 || r->len % 32 || r->len / 32 > KNIT_CHECK_MAX_BUCKETS)
                return fail(r, KNIT_EPROTO, "CHECKED buckets is not 1..4096 digests");
            knit_digest_t *d = arena_alloc(r, r->len);
            if (!d)
                return KNIT_ENOMEM;
            memcpy(d, r->s, r->len);
            x->buckets = d;
            x->nbuckets = r->len / 32;
            return 0;
        }
        case 6:
            if (!(have & 4))
                return fail(r, KNIT_EPROTO, "CHECKED state before its ns");
            return rd_batch(r, x->ns, 0, 0, 0, &x->state);
        }
        break;
    }
    }
    *known = 0;
    return skip(r, 1);
}

/* Cross-field rules checked once every field is in. */
static int rd_finish(rd_t *r, knit_msg_t *m)
{
    switch (m->type) {
    case KNIT_MSG_HELLO: {
        knit_hello_t *h = &m->u.hello;
        if (h->min_version == 0 || h->min_version > h->max_version)
            return fail(r, KNIT_EPROTO, "HELLO version range is empty");
        if (h->claim.kind && (h->claim.kind != KNIT_CRED_ANON || h->cred.kind != KNIT_CRED_JWT))
            return fail(r, KNIT_EPROTO, "HELLO claim needs an ANON claim and a JWT cred");
        return 0;
    }
    case KNIT_MSG_ERROR:
        if (!m->u.error.message)
            m->u.error.message = "";
        return 0;
    default:
        return 0;
    }
}

static int decode(rd_t *r, knit_msg_t *m)
{
    size_t pairs;
    uint64_t type;
    int64_t prev = 0;
    uint32_t have = 1;
    TRY(rd_count(r, T_MAP, SIZE_MAX, &pairs, "message is not a map"));
    if (pairs == 0)
        return fail(r, KNIT_EPROTO, "message is an empty map");
    TRY(rd_uint(r, &type, "message does not start with key 0"));
    if (type != 0)
        return fail(r, KNIT_EPROTO, "message does not start with key 0");
    TRY(rd_uint(r, &type, "message type is not an unsigned integer"));
    if (type < KNIT_MSG_HELLO || type > KNIT_MSG_CHECKED)
        return fail(r, KNIT_EPROTO, "unknown message type");
    m->type = (knit_msg_type_t)type;
    for (size_t k = 1; k < pairs; k++) {
        uint64_t key;
        int known;
        TRY(rd_key(r, &prev, &key));
        TRY(rd_field(r, m, key, have, &known));
        if (known)
            have |= UINT32_C(1) << key;
    }
    if ((have & required[m->type]) != required[m->type])
        return fail(r, KNIT_EPROTO, "message lacks a required field");
    if (m->type == KNIT_MSG_ACK && (have & 8) && !(have & 16))
        return fail(r, KNIT_EPROTO, "ACK first without last");
    if (r->off != r->n)
        return fail(r, KNIT_EPROTO, "trailing bytes after the message");
    return rd_finish(r, m);
}

static void free_batch_of(knit_msg_t *m)
{
    if (m->type == KNIT_MSG_PUSH) {
        knit_batch_free(m->u.push.batch);
        m->u.push.batch = NULL;
    } else if (m->type == KNIT_MSG_DELTAS) {
        knit_batch_free(m->u.deltas.batch);
        m->u.deltas.batch = NULL;
    } else if (m->type == KNIT_MSG_REJECT) {
        knit_batch_free(m->u.reject.state);
        m->u.reject.state = NULL;
    } else if (m->type == KNIT_MSG_CHECKED) {
        knit_batch_free(m->u.checked.state);
        m->u.checked.state = NULL;
    }
}

void knit_msg_free(knit_msg_t *m) /* see codec.h */
{
    if (!m || !m->priv)
        return;
    free_batch_of(m);
    knit__arena_free(m->priv);
    knit__free(m->priv);
    memset(m, 0, sizeof *m);
}

int knit_msg_decode(const uint8_t *p, size_t n, const knit_codec_limits_t *limits, knit_msg_t *out,
                    const char **why) /* see codec.h */
{
    rd_t r;
    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    r.p = p;
    r.n = n;
    r.lim = resolve_limits(limits);
    if (why)
        *why = NULL;
    int rc;
    if (n > r.lim.max_frame) {
        rc = fail(&r, KNIT_ETOOBIG, "frame exceeds the limit");
    } else if (!(r.arena = knit__malloc(sizeof *r.arena))) {
        rc = fail(&r, KNIT_ENOMEM, "out of memory");
    } else {
        knit__arena_init(r.arena, MSG_BLOCK);
        out->priv = r.arena;
        rc = decode(&r, out);
        if (rc == KNIT_ENOMEM)
            fail(&r, rc, "out of memory");
        if (rc)
            knit_msg_free(out);
    }
    if (rc) {
        memset(out, 0, sizeof *out);
        if (why)
            *why = r.why ? r.why : knit_strerror(rc);
    }
    return rc;
}
