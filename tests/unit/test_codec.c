/*
** test_codec.c: the wire codec (transport/codec.c) against its laws.
**
**   round trip     decode(encode(m)) equals m field by field, for random
**                  messages of every type and random batches with values of
**                  every storage class and their edge cases; and encoding is
**                  deterministic: encode(decode(encode(m))) == encode(m).
**   strictness     every strict prefix of a valid message, every field
**                  given a value of the wrong CBOR type, every out-of-range
**                  dictionary index, trailing bytes, indefinite lengths,
**                  over-limit counts: an error, never a crash, never a leak.
**   allocation     failing each allocation in turn gives KNIT_ENOMEM.
**
** Set KNIT_WRITE_CORPUS=<dir> to also write the valid messages as fuzz seeds
** (fuzz/corpus/msg and fuzz/corpus/frame are made this way).
*/
#include <cbor.h>
#include <float.h>
#include <math.h>

#include "alloc.h"
#include "codec.h"
#include "frame.h"
#include "orset.h"
#include "test.h"

/* ---------------------------------------------------------------------- */
/* Random messages                                                         */

/* All memory a random message points to, freed in one go. */
typedef struct pool_s {
    void **p;   /* allocations */
    size_t n;   /* count */
    size_t cap; /* capacity */
} pool_t;

static void *pool_add(pool_t *pl, void *p)
{
    CHECK(p != NULL);
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? pl->cap * 2 : 64;
        pl->p = realloc(pl->p, pl->cap * sizeof *pl->p);
        CHECK(pl->p != NULL);
    }
    pl->p[pl->n++] = p;
    return p;
}

static void *pool_alloc(pool_t *pl, size_t n)
{
    return pool_add(pl, calloc(1, n ? n : 1));
}

static void pool_free(pool_t *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        free(pl->p[i]);
    free(pl->p);
    memset(pl, 0, sizeof *pl);
}

/* A random name: ASCII, sometimes with multi-byte UTF-8. */
static char *rand_name(knit_rng_t *r, pool_t *pl, size_t maxlen)
{
    static const char *const pieces[] = {"a",
                                         "b",
                                         "z",
                                         "_",
                                         "0",
                                         "9",
                                         "-",
                                         ":",
                                         ".",
                                         " ",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80"};
    size_t n = 1 + knit_rng_below(r, maxlen);
    char *s = pool_alloc(pl, n * 4 + 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[knit_rng_below(r, sizeof pieces / sizeof pieces[0])];
        memcpy(s + len, p, strlen(p));
        len += strlen(p);
    }
    s[len] = 0;
    return s;
}

static char *rand_anon_id(knit_rng_t *r, pool_t *pl)
{
    static const char set[] = "ABCXYZabcxyz0189_-";
    size_t n = 1 + knit_rng_below(r, 64);
    char *s = pool_alloc(pl, n + 1);
    for (size_t i = 0; i < n; i++)
        s[i] = set[knit_rng_below(r, sizeof set - 1)];
    return s;
}

static const double special_reals[] = {0.0,
                                       -0.0,
                                       1.0,
                                       -1.0,
                                       1.5,
                                       0.1,
                                       65504.0,
                                       65505.0,
                                       6.103515625e-05 /* smallest normal half */,
                                       5.9604644775390625e-08 /* smallest half */,
                                       3.0517578125e-05 /* subnormal half */,
                                       1e-40 /* subnormal single */,
                                       4.9406564584124654e-324 /* smallest double */,
                                       2.2250738585072014e-308,
                                       1.7976931348623157e308,
                                       3.4028234663852886e38,
                                       3.4028235677973366e38 /* just above FLT_MAX */,
                                       16777217.0,
                                       9007199254740993.0,
                                       -2.5,
                                       1e300,
                                       -1e-300,
                                       0.333333333333333314829616256247};

static void rand_value(knit_rng_t *r, pool_t *pl, knit_value_t *v)
{
    switch (knit_rng_below(r, 5)) {
    case 0:
        v->type = KNIT_NULL;
        return;
    case 1: {
        v->type = KNIT_INTEGER;
        switch (knit_rng_below(r, 6)) {
        case 0:
            v->u.i = INT64_MIN;
            return;
        case 1:
            v->u.i = INT64_MAX;
            return;
        case 2:
            v->u.i = (int64_t)knit_rng_below(r, 50) - 25;
            return;
        case 3:
            v->u.i = -(int64_t)knit_rng_below(r, 70000);
            return;
        default:
            v->u.i = (int64_t)knit_rng_next(r);
            return;
        }
    }
    case 2: {
        v->type = KNIT_REAL;
        uint64_t k = knit_rng_below(r, 6);
        if (k < 2) {
            v->u.r = special_reals[knit_rng_below(r, sizeof special_reals / sizeof(double))];
        } else if (k == 2) {
            v->u.r = knit_rng_below(r, 2) ? INFINITY : -INFINITY;
        } else if (k == 3) {
            v->u.r = (double)(float)((double)(int64_t)knit_rng_next(r) / 1e6);
        } else {
            do {
                uint64_t bits = knit_rng_next(r);
                memcpy(&v->u.r, &bits, 8);
            } while (isnan(v->u.r));
        }
        return;
    }
    default: {
        v->type = knit_rng_below(r, 2) ? KNIT_TEXT : KNIT_BLOB;
        size_t n;
        switch (knit_rng_below(r, 8)) {
        case 0:
            n = 0;
            break;
        case 1:
            n = 24 + knit_rng_below(r, 300);
            break;
        case 2:
            n = knit_rng_below(r, 50) == 0 ? 70000 + knit_rng_below(r, 1000) : 5;
            break;
        default:
            n = 1 + knit_rng_below(r, 23);
        }
        uint8_t *p = pool_alloc(pl, n);
        int mode = (int)knit_rng_below(r, 3); /* 0 ASCII, 1 UTF-8 text, 2 raw bytes */
        size_t i = 0;
        while (i < n) {
            if (mode == 0) {
                p[i++] = (uint8_t)knit_rng_below(r, 128); /* includes NUL */
            } else if (mode == 1 && n - i >= 3) {
                p[i++] = 0xE2, p[i++] = 0x82, p[i++] = 0xAC;
            } else {
                p[i++] = (uint8_t)knit_rng_next(r);
            }
        }
        v->u.b.p = p;
        v->u.b.n = n;
        return;
    }
    }
}

/* A valid OR-set state over sites < nsites, encoded. */
static void rand_orset(knit_rng_t *r, pool_t *pl, size_t nsites, knit_value_t *v)
{
    knit_orset_t s;
    knit_orset_init(&s);
    size_t ops = knit_rng_below(r, 6);
    for (size_t i = 0; i < ops; i++) {
        knit_value_t e;
        e.type = KNIT_INTEGER;
        e.u.i = (int64_t)knit_rng_below(r, 5);
        if (knit_rng_below(r, 4) == 0)
            CHECK_OK(knit_orset_remove(&s, &e, NULL));
        else
            CHECK_OK(knit_orset_add(&s, (uint32_t)knit_rng_below(r, nsites), &e, NULL));
    }
    uint8_t *buf;
    size_t n;
    CHECK_OK(knit_orset_encode(&s, &buf, &n));
    knit_orset_free(&s);
    uint8_t *copy = pool_alloc(pl, n);
    memcpy(copy, buf, n);
    knit__free(buf);
    v->type = KNIT_BLOB;
    v->u.b.p = copy;
    v->u.b.n = n;
}

/* A random batch in namespace ns.  deltas: versions rise inside (from, to]. */
static knit_batch_t *rand_batch(knit_rng_t *r, pool_t *pl, const char *ns, int deltas,
                                uint64_t from, uint64_t to)
{
    knit_batch_t *b;
    uint32_t idx;
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    int big = knit_rng_below(r, 20) == 0;
    size_t nsites = 1 + knit_rng_below(r, big ? 300 : 6);
    for (size_t i = 0; i < nsites; i++) {
        knit_site_t s;
        for (int k = 0; k < 16; k += 8) {
            uint64_t x = knit_rng_next(r);
            memcpy(s.b + k, &x, 8);
        }
        CHECK_OK(knit_batch_site(b, &s, &idx));
    }
    size_t ntables = 1 + knit_rng_below(r, big ? 40 : 4);
    for (size_t t = 0; t < ntables; t++) {
        uint32_t npk = 1 + (uint32_t)knit_rng_below(r, 3);
        uint32_t ncols = (uint32_t)knit_rng_below(r, big ? 40 : 7);
        const char **cols = pool_alloc(pl, (ncols + 1) * sizeof *cols);
        uint8_t *kinds = pool_alloc(pl, ncols + 1);
        for (uint32_t c = 0; c < ncols; c++) {
            char *nm = pool_alloc(pl, 16);
            snprintf(nm, 16, "c%u", c);
            cols[c] = c % 3 == 0 ? rand_name(r, pl, 8) : nm;
            kinds[c] = knit_rng_below(r, 4) == 0;
        }
        char *name = pool_alloc(pl, 64);
        snprintf(name, 64, "t%zu_%s", t, rand_name(r, pl, 6));
        int rc = knit_batch_table(b, name, npk, ncols, cols, kinds, &idx);
        CHECK(rc == 0 || rc == KNIT_EINVAL); /* EINVAL: a duplicate column name is fine */
    }
    ntables = b->ntables;
    size_t nunits = knit_rng_below(r, big ? 200 : 12);
    uint64_t version = deltas                 ? from
                       : knit_rng_below(r, 3) ? 1 + knit_rng_below(r, 1000000)
                                              : knit_rng_next(r);
    uint64_t hlc = knit_rng_below(r, 4) ? UINT64_C(1750000000000) << 16 : knit_rng_next(r);
    for (size_t u = 0; u < nunits; u++) {
        if (deltas) {
            if (version >= to)
                break;
            version += 1 + knit_rng_below(r, knit_rng_below(r, 4) ? 1 : (to - version));
            if (version > to)
                version = to;
        } else {
            version += knit_rng_below(r, 5) ? 1 : knit_rng_next(r);
        }
        CHECK_OK(knit_batch_begin(b, version));
        switch (knit_rng_below(r, 5)) {
        case 0:
            break; /* same millisecond */
        case 1:
            hlc = knit_rng_next(r);
            break;
        default:
            hlc += (knit_rng_below(r, 70000) << 16) + knit_rng_below(r, 3);
        }
        size_t nch = knit_rng_below(r, 4) == 0 ? 0 : 1 + knit_rng_below(r, big ? 60 : 12);
        knit_change_t prev;
        int have_prev = 0;
        for (size_t k = 0; k < nch; k++) {
            knit_change_t c;
            memset(&c, 0, sizeof c);
            if (have_prev && knit_rng_below(r, 3)) {
                c = prev; /* same row, another cell */
            } else {
                c.table = (uint32_t)knit_rng_below(r, ntables);
                uint32_t npk = b->tables[c.table].npk;
                c.pk = pool_alloc(pl, npk * sizeof *c.pk);
                for (uint32_t i = 0; i < npk; i++)
                    rand_value(r, pl, &c.pk[i]);
                c.cl = knit_rng_below(r, 3)   ? 1
                       : knit_rng_below(r, 2) ? 2 + knit_rng_below(r, 5)
                                              : knit_rng_next(r);
                c.site = (uint32_t)knit_rng_below(r, nsites);
            }
            const knit_batch_table_t *tb = &b->tables[c.table];
            c.col = (uint32_t)knit_rng_below(r, tb->ncols + 1);
            if (knit_rng_below(r, 4) == 0)
                c.site = (uint32_t)knit_rng_below(r, nsites);
            c.hlc = knit_rng_below(r, 3)   ? hlc
                    : knit_rng_below(r, 2) ? hlc + knit_rng_below(r, 9)
                                           : knit_rng_next(r);
            if (c.col == 0)
                c.value.type = KNIT_NULL;
            else if (tb->orset[c.col - 1])
                rand_orset(r, pl, nsites, &c.value);
            else
                rand_value(r, pl, &c.value);
            CHECK_OK(knit_batch_add(b, &c));
            prev = c;
            have_prev = 1;
        }
    }
    return b;
}

static knit_sub_t *rand_subs(knit_rng_t *r, pool_t *pl, size_t n)
{
    knit_sub_t *s = pool_alloc(pl, (n ? n : 1) * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        s[i].ns = rand_name(r, pl, 20);
        s[i].cursor = knit_rng_below(r, 2) ? knit_rng_below(r, 1000) : knit_rng_next(r);
    }
    return s;
}

static void rand_cred(knit_rng_t *r, pool_t *pl, knit_cred_t *c, int kind)
{
    memset(c, 0, sizeof *c);
    c->kind = (uint32_t)kind;
    if (kind == KNIT_CRED_ANON) {
        c->id = rand_anon_id(r, pl);
        c->secret = rand_name(r, pl, 40);
    } else if (kind == KNIT_CRED_JWT) {
        c->token = rand_name(r, pl, 300);
    } else {
        c->token = knit_rng_below(r, 2) ? rand_name(r, pl, 10) : NULL;
    }
}

/* A random message of the given type; batches are owned by the caller
** (freed by free_rand). */
static void rand_msg(knit_rng_t *r, pool_t *pl, int type, knit_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->type = (knit_msg_type_t)type;
    switch (type) {
    case KNIT_MSG_HELLO: {
        knit_hello_t *h = &m->u.hello;
        h->min_version = 1 + (uint32_t)knit_rng_below(r, 3);
        h->max_version = h->min_version + (uint32_t)knit_rng_below(r, 3);
        for (int i = 0; i < 16; i++)
            h->site.b[i] = (uint8_t)knit_rng_next(r);
        int kind = knit_rng_below(r, 5) == 0 ? 3 + (int)knit_rng_below(r, 100)
                                             : 1 + (int)knit_rng_below(r, 2);
        rand_cred(r, pl, &h->cred, kind);
        if (kind == KNIT_CRED_JWT && knit_rng_below(r, 2))
            rand_cred(r, pl, &h->claim, KNIT_CRED_ANON);
        h->nsubs = knit_rng_below(r, 4);
        h->subs = rand_subs(r, pl, h->nsubs);
        h->agent = knit_rng_below(r, 2) ? rand_name(r, pl, 30) : NULL;
        h->features = knit_rng_below(r, 2) ? knit_rng_next(r) >> knit_rng_below(r, 64) : 0;
        return;
    }
    case KNIT_MSG_WELCOME: {
        knit_welcome_t *x = &m->u.welcome;
        x->version = 1 + (uint32_t)knit_rng_below(r, 5);
        x->principal = rand_name(r, pl, 30);
        x->ngranted = knit_rng_below(r, 4);
        const char **g = pool_alloc(pl, (x->ngranted + 1) * sizeof *g);
        for (size_t i = 0; i < x->ngranted; i++)
            g[i] = rand_name(r, pl, 30);
        x->granted = g;
        x->clock = knit_rng_next(r);
        x->limits.max_frame = knit_rng_below(r, 1u << 30);
        x->limits.max_changes = knit_rng_next(r);
        x->limits.idle_ms = knit_rng_below(r, 100000);
        x->limits.max_drift_ms = 300000;
        x->features = knit_rng_below(r, 2) ? KNIT_FEATURE_CHECK : 0;
        return;
    }
    case KNIT_MSG_ERROR: {
        knit_error_msg_t *x = &m->u.error;
        x->code = knit_rng_below(r, 2) ? KNIT_EPROTO : -1 - (int32_t)knit_rng_below(r, INT32_MAX);
        x->message = knit_rng_below(r, 4) ? rand_name(r, pl, 60) : knit_rng_below(r, 2) ? "" : NULL;
        if (knit_rng_below(r, 2)) {
            x->min_version = 1;
            x->max_version = 1 + (uint32_t)knit_rng_below(r, 4);
        }
        return;
    }
    case KNIT_MSG_PUSH:
        m->u.push.id = knit_rng_next(r);
        m->u.push.ns = rand_name(r, pl, 30);
        m->u.push.batch = rand_batch(r, pl, m->u.push.ns, 0, 0, 0);
        return;
    case KNIT_MSG_ACK:
        m->u.ack.id = knit_rng_next(r);
        m->u.ack.durable = (int)knit_rng_below(r, 2);
        return;
    case KNIT_MSG_REJECT: {
        knit_reject_t *x = &m->u.reject;
        x->id = knit_rng_below(r, 100);
        x->nreasons = 1 + knit_rng_below(r, 5);
        knit_reason_t *rs = pool_alloc(pl, x->nreasons * sizeof *rs);
        for (size_t i = 0; i < x->nreasons; i++) {
            rs[i].change = knit_rng_below(r, 3) ? (int64_t)knit_rng_below(r, 1000) : -1;
            rs[i].code = knit_rng_below(r, 2) ? KNIT_ECLOCKSKEW : KNIT_ESCHEMA;
            rs[i].message = knit_rng_below(r, 2) ? rand_name(r, pl, 40) : NULL;
        }
        x->reasons = rs;
        /* The relay's state of the refused cells (optional key 3). */
        x->state = knit_rng_below(r, 2) ? rand_batch(r, pl, KNIT_REJECT_STATE_NS, 0, 0, 0) : NULL;
        return;
    }
    case KNIT_MSG_DELTAS: {
        knit_deltas_t *x = &m->u.deltas;
        x->ns = rand_name(r, pl, 30);
        x->from = knit_rng_below(r, 3) ? knit_rng_below(r, 1000) : knit_rng_next(r) >> 1;
        x->to = x->from + (knit_rng_below(r, 4) ? knit_rng_below(r, 300) : 0);
        x->caught_up = (int)knit_rng_below(r, 2);
        x->batch = rand_batch(r, pl, x->ns, 1, x->from, x->to);
        return;
    }
    case KNIT_MSG_PING:
    case KNIT_MSG_PONG:
        m->u.ping.nonce = knit_rng_next(r);
        return;
    case KNIT_MSG_SUBSCRIBE:
        m->u.subscribe.nsubs = 1 + knit_rng_below(r, 5);
        m->u.subscribe.subs = rand_subs(r, pl, m->u.subscribe.nsubs);
        return;
    case KNIT_MSG_CHECK: {
        knit_check_msg_t *x = &m->u.check;
        x->id = knit_rng_next(r);
        x->ns = rand_name(r, pl, 30);
        for (int i = 0; i < 32; i++)
            x->digest.b[i] = (uint8_t)knit_rng_next(r);
        x->nbuckets = knit_rng_below(r, 3) ? 1 + (uint32_t)knit_rng_below(r, 300) : 0;
        x->nfetch = x->nbuckets ? knit_rng_below(r, 4) : 0;
        if (x->nfetch > x->nbuckets)
            x->nfetch = x->nbuckets;
        uint32_t *f = pool_alloc(pl, (x->nfetch + 1) * sizeof *f);
        for (size_t i = 0; i < x->nfetch; i++) /* ascending, below nbuckets */
            f[i] = (uint32_t)(i * (x->nbuckets / x->nfetch));
        x->fetch = f;
        return;
    }
    case KNIT_MSG_CHECKED: {
        knit_checked_t *x = &m->u.checked;
        x->id = knit_rng_next(r);
        x->ns = rand_name(r, pl, 30);
        x->seq = knit_rng_below(r, 100000);
        for (int i = 0; i < 32; i++)
            x->digest.b[i] = (uint8_t)knit_rng_next(r);
        x->nbuckets = knit_rng_below(r, 2) ? 1 + knit_rng_below(r, 64) : 0;
        knit_digest_t *d = pool_alloc(pl, (x->nbuckets + 1) * sizeof *d);
        for (size_t i = 0; i < x->nbuckets; i++)
            for (int j = 0; j < 32; j++)
                d[i].b[j] = (uint8_t)knit_rng_next(r);
        x->buckets = x->nbuckets ? d : NULL;
        x->state = knit_rng_below(r, 2) ? rand_batch(r, pl, x->ns, 0, 0, 0) : NULL;
        return;
    }
    }
}

static void free_rand(knit_msg_t *m)
{
    if (m->type == KNIT_MSG_PUSH)
        knit_batch_free(m->u.push.batch);
    if (m->type == KNIT_MSG_DELTAS)
        knit_batch_free(m->u.deltas.batch);
    if (m->type == KNIT_MSG_REJECT)
        knit_batch_free(m->u.reject.state);
    if (m->type == KNIT_MSG_CHECKED)
        knit_batch_free(m->u.checked.state);
}

/* ---------------------------------------------------------------------- */
/* Field-by-field equality                                                 */

static int str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static void check_value(const knit_value_t *a, const knit_value_t *b)
{
    CHECK_EQ_INT(a->type, b->type);
    switch (a->type) {
    case KNIT_INTEGER:
        CHECK(a->u.i == b->u.i);
        break;
    case KNIT_REAL:
        CHECK(memcmp(&a->u.r, &b->u.r, 8) == 0); /* bit-exact: -0.0 stays -0.0 */
        break;
    case KNIT_TEXT:
    case KNIT_BLOB:
        CHECK_EQ_INT(a->u.b.n, b->u.b.n);
        CHECK(a->u.b.n == 0 || memcmp(a->u.b.p, b->u.b.p, a->u.b.n) == 0);
        break;
    }
}

/* a: the batch encoded, d: the batch decoded (namespace index 0 = ns). */
static void check_batch(const knit_batch_t *a, const knit_batch_t *d, const char *ns)
{
    CHECK_EQ_INT(d->nns, 1);
    CHECK_STR(d->ns[0], ns);
    CHECK_EQ_INT(a->nsites, d->nsites);
    for (size_t i = 0; i < a->nsites; i++)
        CHECK(memcmp(a->sites[i].b, d->sites[i].b, 16) == 0);
    CHECK_EQ_INT(a->ntables, d->ntables);
    for (size_t i = 0; i < a->ntables; i++) {
        const knit_batch_table_t *x = &a->tables[i], *y = &d->tables[i];
        CHECK_STR(x->name, y->name);
        CHECK_EQ_INT(x->npk, y->npk);
        CHECK_EQ_INT(x->ncols, y->ncols);
        for (uint32_t c = 0; c < x->ncols; c++) {
            CHECK_STR(x->cols[c], y->cols[c]);
            CHECK_EQ_INT(x->orset[c], y->orset[c]);
        }
    }
    CHECK_EQ_INT(a->ntxns, d->ntxns);
    for (size_t i = 0; i < a->ntxns; i++) {
        CHECK(a->txns[i].version == d->txns[i].version);
        CHECK_EQ_INT(a->txns[i].first, d->txns[i].first);
        CHECK_EQ_INT(a->txns[i].count, d->txns[i].count);
    }
    CHECK_EQ_INT(a->nchanges, d->nchanges);
    for (size_t i = 0; i < a->nchanges; i++) {
        const knit_change_t *x = &a->changes[i], *y = &d->changes[i];
        CHECK_STR(a->ns[x->ns], d->ns[y->ns]);
        CHECK_EQ_INT(x->table, y->table);
        CHECK_EQ_INT(x->col, y->col);
        CHECK_EQ_INT(x->site, y->site);
        CHECK(x->cl == y->cl);
        CHECK(x->hlc == y->hlc);
        for (uint32_t k = 0; k < a->tables[x->table].npk; k++)
            check_value(&x->pk[k], &y->pk[k]);
        check_value(&x->value, &y->value);
    }
}

static void check_cred(const knit_cred_t *a, const knit_cred_t *b)
{
    CHECK_EQ_INT(a->kind, b->kind);
    CHECK(str_eq(a->id, b->id));
    CHECK(str_eq(a->secret, b->secret));
    CHECK(str_eq(a->token, b->token));
}

static void check_subs(const knit_sub_t *a, size_t na, const knit_sub_t *b, size_t nb)
{
    CHECK_EQ_INT(na, nb);
    for (size_t i = 0; i < na; i++) {
        CHECK_STR(a[i].ns, b[i].ns);
        CHECK(a[i].cursor == b[i].cursor);
    }
}

static void check_msg(const knit_msg_t *a, const knit_msg_t *d)
{
    CHECK_EQ_INT(a->type, d->type);
    switch (a->type) {
    case KNIT_MSG_HELLO: {
        const knit_hello_t *x = &a->u.hello, *y = &d->u.hello;
        CHECK_EQ_INT(x->min_version, y->min_version);
        CHECK_EQ_INT(x->max_version, y->max_version);
        CHECK(memcmp(x->site.b, y->site.b, 16) == 0);
        check_cred(&x->cred, &y->cred);
        check_cred(&x->claim, &y->claim);
        check_subs(x->subs, x->nsubs, y->subs, y->nsubs);
        CHECK(str_eq(x->agent, y->agent));
        CHECK(x->features == y->features);
        break;
    }
    case KNIT_MSG_WELCOME: {
        const knit_welcome_t *x = &a->u.welcome, *y = &d->u.welcome;
        CHECK_EQ_INT(x->version, y->version);
        CHECK_STR(x->principal, y->principal);
        CHECK_EQ_INT(x->ngranted, y->ngranted);
        for (size_t i = 0; i < x->ngranted; i++)
            CHECK_STR(x->granted[i], y->granted[i]);
        CHECK(x->clock == y->clock);
        CHECK(memcmp(&x->limits, &y->limits, sizeof x->limits) == 0);
        CHECK(x->features == y->features);
        break;
    }
    case KNIT_MSG_ERROR: {
        const knit_error_msg_t *x = &a->u.error, *y = &d->u.error;
        CHECK_EQ_INT(x->code, y->code);
        CHECK_STR(x->message ? x->message : "", y->message);
        CHECK_EQ_INT(x->min_version, y->min_version);
        CHECK_EQ_INT(x->max_version, y->max_version);
        break;
    }
    case KNIT_MSG_PUSH:
        CHECK(a->u.push.id == d->u.push.id);
        CHECK_STR(a->u.push.ns, d->u.push.ns);
        check_batch(a->u.push.batch, d->u.push.batch, a->u.push.ns);
        break;
    case KNIT_MSG_ACK:
        CHECK(a->u.ack.id == d->u.ack.id);
        CHECK_EQ_INT(a->u.ack.durable, d->u.ack.durable);
        break;
    case KNIT_MSG_REJECT: {
        const knit_reject_t *x = &a->u.reject, *y = &d->u.reject;
        CHECK(x->id == y->id);
        CHECK_EQ_INT(x->nreasons, y->nreasons);
        for (size_t i = 0; i < x->nreasons; i++) {
            CHECK_EQ_INT(x->reasons[i].change, y->reasons[i].change);
            CHECK_EQ_INT(x->reasons[i].code, y->reasons[i].code);
            CHECK_STR(x->reasons[i].message ? x->reasons[i].message : "", y->reasons[i].message);
        }
        CHECK_EQ_INT(x->state != NULL, y->state != NULL);
        if (x->state)
            check_batch(x->state, y->state, KNIT_REJECT_STATE_NS);
        break;
    }
    case KNIT_MSG_DELTAS: {
        const knit_deltas_t *x = &a->u.deltas, *y = &d->u.deltas;
        CHECK_STR(x->ns, y->ns);
        CHECK(x->from == y->from);
        CHECK(x->to == y->to);
        CHECK_EQ_INT(x->caught_up, y->caught_up);
        check_batch(x->batch, y->batch, x->ns);
        break;
    }
    case KNIT_MSG_PING:
    case KNIT_MSG_PONG:
        CHECK(a->u.ping.nonce == d->u.ping.nonce);
        break;
    case KNIT_MSG_SUBSCRIBE:
        check_subs(a->u.subscribe.subs, a->u.subscribe.nsubs, d->u.subscribe.subs,
                   d->u.subscribe.nsubs);
        break;
    case KNIT_MSG_CHECK: {
        const knit_check_msg_t *x = &a->u.check, *y = &d->u.check;
        CHECK(x->id == y->id);
        CHECK_STR(x->ns, y->ns);
        CHECK(memcmp(x->digest.b, y->digest.b, 32) == 0);
        CHECK_EQ_INT(x->nbuckets, y->nbuckets);
        CHECK_EQ_INT(x->nfetch, y->nfetch);
        for (size_t i = 0; i < x->nfetch; i++)
            CHECK_EQ_INT(x->fetch[i], y->fetch[i]);
        break;
    }
    case KNIT_MSG_CHECKED: {
        const knit_checked_t *x = &a->u.checked, *y = &d->u.checked;
        CHECK(x->id == y->id);
        CHECK_STR(x->ns, y->ns);
        CHECK(x->seq == y->seq);
        CHECK(memcmp(x->digest.b, y->digest.b, 32) == 0);
        CHECK_EQ_INT(x->nbuckets, y->nbuckets);
        for (size_t i = 0; i < x->nbuckets; i++)
            CHECK(memcmp(x->buckets[i].b, y->buckets[i].b, 32) == 0);
        CHECK_EQ_INT(x->state != NULL, y->state != NULL);
        if (x->state)
            check_batch(x->state, y->state, x->ns);
        break;
    }
    }
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

/* Writes seed files when KNIT_WRITE_CORPUS is set: the payload into
** <dir>/msg/<name>, and into <dir>/frame/<name> the frame after one byte
** that tells fuzz_frame how to cut it into chunks (see fuzz/fuzz_frame.c). */
static void maybe_write_seed(const char *name, uint8_t cut, const uint8_t *frame, size_t n)
{
    const char *dir = getenv("KNIT_WRITE_CORPUS");
    if (!dir)
        return;
    char path[1024];
    FILE *f;
    if (n > 4 && knit_frame_length(frame) == n - 4) {
        snprintf(path, sizeof path, "%s/msg/%s", dir, name);
        f = fopen(path, "wb");
        CHECK(f != NULL);
        fwrite(frame + 4, 1, n - 4, f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/frame/%s", dir, name);
    f = fopen(path, "wb");
    CHECK(f != NULL);
    fwrite(&cut, 1, 1, f);
    fwrite(frame, 1, n, f);
    fclose(f);
}

/* Encodes m, checks the frame header, decodes, compares, re-encodes. */
static void roundtrip(const knit_msg_t *m)
{
    knit_buf_t buf = {0}, again = {0};
    const char *why;
    knit_msg_t d;
    CHECK_OK(knit_msg_encode(m, NULL, &buf));
    CHECK(buf.len > 4);
    CHECK_EQ_INT(knit_frame_length(buf.p), buf.len - 4);
    int rc = knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, &why);
    if (rc)
        fprintf(stderr, "decode: %s (%s)\n", knit_err_name(rc), why);
    CHECK_OK(rc);
    check_msg(m, &d);
    CHECK_OK(knit_msg_encode(&d, NULL, &again));
    CHECK_EQ_INT(again.len, buf.len);
    CHECK(memcmp(again.p, buf.p, buf.len) == 0);
    knit_msg_free(&d);
    knit_buf_free(&buf);
    knit_buf_free(&again);
}

/* Expects decoding p[0..n) to fail with code. */
static void expect_fail(const uint8_t *p, size_t n, const knit_codec_limits_t *lim, int code)
{
    knit_msg_t d;
    const char *why = NULL;
    int rc = knit_msg_decode(p, n, lim, &d, &why);
    if (rc != code)
        fprintf(stderr, "expected %s, got %s (%s)\n", knit_err_name(code), knit_err_name(rc),
                why ? why : "");
    CHECK_EQ_INT(rc, code);
    CHECK(why != NULL);
    CHECK(d.priv == NULL);
    knit_msg_free(&d);
}

/* A tiny CBOR writer for hand-made (mostly malformed) messages. */
typedef struct cb_s {
    uint8_t p[4096]; /* bytes */
    size_t n;        /* used */
} cb_t;

static void cb_uint(cb_t *c, uint64_t v)
{
    c->n += cbor_encode_uint(v, c->p + c->n, sizeof c->p - c->n);
}
static void cb_neg(cb_t *c, int64_t v)
{
    c->n += cbor_encode_negint((uint64_t)(-1 - v), c->p + c->n, sizeof c->p - c->n);
}
static void cb_int(cb_t *c, int64_t v)
{
    if (v >= 0)
        cb_uint(c, (uint64_t)v);
    else
        cb_neg(c, v);
}
static void cb_null(cb_t *c)
{
    c->p[c->n++] = 0xF6;
}
static void cb_arr(cb_t *c, size_t n)
{
    c->n += cbor_encode_array_start(n, c->p + c->n, sizeof c->p - c->n);
}
static void cb_map(cb_t *c, size_t n)
{
    c->n += cbor_encode_map_start(n, c->p + c->n, sizeof c->p - c->n);
}
static void cb_txt(cb_t *c, const char *s)
{
    size_t n = strlen(s);
    c->n += cbor_encode_string_start(n, c->p + c->n, sizeof c->p - c->n);
    memcpy(c->p + c->n, s, n);
    c->n += n;
}
static void cb_bin(cb_t *c, const void *s, size_t n)
{
    c->n += cbor_encode_bytestring_start(n, c->p + c->n, sizeof c->p - c->n);
    memcpy(c->p + c->n, s, n);
    c->n += n;
}
static void cb_byte(cb_t *c, uint8_t b)
{
    c->p[c->n++] = b;
}

/* PUSH {0:4, 1:7, 2:"ns", 3: batch{1:[nsites sites], 2:[table t(npk 1,
** cols a,s; kinds 0,1)], 3:[unit]}} with the caller writing the unit. */
static void push_head(cb_t *c, size_t nsites)
{
    cb_map(c, 4);
    cb_uint(c, 0), cb_uint(c, KNIT_MSG_PUSH);
    cb_uint(c, 1), cb_uint(c, 7);
    cb_uint(c, 2), cb_txt(c, "ns");
    cb_uint(c, 3);
    cb_map(c, 3);
    cb_uint(c, 1);
    cb_arr(c, nsites);
    for (size_t i = 0; i < nsites; i++) {
        uint8_t s[16] = {(uint8_t)i};
        cb_bin(c, s, 16);
    }
    cb_uint(c, 2);
    cb_arr(c, 1);
    cb_map(c, 4);
    cb_uint(c, 1), cb_txt(c, "t");
    cb_uint(c, 2), cb_uint(c, 1);
    cb_uint(c, 3), cb_arr(c, 2), cb_txt(c, "a"), cb_txt(c, "s");
    cb_uint(c, 4), cb_bin(c, "\0\1", 2);
    cb_uint(c, 3);
    cb_arr(c, 1);
}

/* ---------------------------------------------------------------------- */
/* Cases                                                                   */

static void roundtrip_messages(void)
{
    uint64_t seed = knit_test_seed();
    long n = knit_test_cases(12000);
    for (long i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        knit_test_case_seed(seed + (uint64_t)i);
        pool_t pl = {0};
        knit_msg_t m;
        rand_msg(&r, &pl, 1 + (int)(i % KNIT_MSG_CHECKED), &m);
        roundtrip(&m);
        free_rand(&m);
        pool_free(&pl);
    }
}

static void roundtrip_batches(void)
{
    uint64_t seed = knit_test_seed() ^ UINT64_C(0x5eed);
    long n = knit_test_cases(10000);
    for (long i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        knit_test_case_seed(seed + (uint64_t)i);
        pool_t pl = {0};
        knit_msg_t m;
        rand_msg(&r, &pl, i % 2 ? KNIT_MSG_PUSH : KNIT_MSG_DELTAS, &m);
        roundtrip(&m);
        free_rand(&m);
        pool_free(&pl);
    }
}

/* Every value edge case, one change each, with exact bytes where the spec
** names them. */
static void values(void)
{
    knit_batch_t *b;
    uint32_t idx;
    knit_site_t s = {{1}};
    const char *cols[] = {"v"};
    uint8_t kinds[] = {0};
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, "ns", &idx));
    CHECK_OK(knit_batch_site(b, &s, &idx));
    CHECK_OK(knit_batch_table(b, "t", 1, 1, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(b, 1));
    knit_value_t vals[64];
    size_t nv = 0;
    for (size_t i = 0; i < sizeof special_reals / sizeof(double); i++)
        vals[nv].type = KNIT_REAL, vals[nv++].u.r = special_reals[i];
    vals[nv].type = KNIT_REAL, vals[nv++].u.r = INFINITY;
    vals[nv].type = KNIT_REAL, vals[nv++].u.r = -INFINITY;
    int64_t ints[] = {0, -1, 23, 24, -24, -25, 255, 256, 65535, 65536, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        vals[nv].type = KNIT_INTEGER, vals[nv++].u.i = ints[i];
    static const char *texts[] = {"",          "plain",    "caf\xc3\xa9",  "nul\0in",
                                  "\xff\xfe",  "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                  "ok\xe2\x82"};
    static const size_t tlen[] = {0, 5, 5, 6, 2, 2, 3, 4, 4};
    for (size_t i = 0; i < 9; i++) {
        vals[nv].type = KNIT_TEXT, vals[nv].u.b.p = texts[i], vals[nv++].u.b.n = tlen[i];
        vals[nv].type = KNIT_BLOB, vals[nv].u.b.p = texts[i], vals[nv++].u.b.n = tlen[i];
    }
    vals[nv++].type = KNIT_NULL;
    for (size_t i = 0; i < nv; i++) {
        knit_change_t c = {0};
        c.pk = &vals[nv - 1 - i];
        c.col = 1;
        c.cl = 1;
        c.hlc = 5;
        c.value = vals[i];
        CHECK_OK(knit_batch_add(b, &c));
    }
    knit_msg_t m = {0};
    m.type = KNIT_MSG_PUSH;
    m.u.push.ns = "ns";
    m.u.push.batch = b;
    roundtrip(&m);

    /* Exact encodings of a few REALs (PROTOCOL.md section 5). */
    knit_batch_t *one;
    struct {
        double d;
        const char *hex;
    } exact[] = {{-0.0, "f98000"},           {1.5, "f93e00"},
                 {65504.0, "f97bff"},        {5.9604644775390625e-08, "f90001"},
                 {INFINITY, "f97c00"},       {100000.0, "fa47c35000"},
                 {0.1, "fb3fb999999999999a"}};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        CHECK_OK(knit_batch_new(&one));
        CHECK_OK(knit_batch_ns(one, "ns", &idx));
        CHECK_OK(knit_batch_site(one, &s, &idx));
        CHECK_OK(knit_batch_table(one, "t", 1, 1, cols, kinds, &idx));
        CHECK_OK(knit_batch_begin(one, 1));
        knit_value_t k = {.type = KNIT_NULL};
        knit_change_t c = {0};
        c.pk = &k;
        c.col = 1;
        c.cl = 1;
        c.value.type = KNIT_REAL;
        c.value.u.r = exact[i].d;
        CHECK_OK(knit_batch_add(one, &c));
        knit_buf_t buf = {0};
        m.u.push.batch = one;
        CHECK_OK(knit_msg_encode(&m, NULL, &buf));
        /* The value is the unit's last item: ... cell head 0x04, then it. */
        size_t hl = strlen(exact[i].hex) / 2;
        char got[64] = "";
        for (size_t k2 = 0; k2 < hl; k2++)
            snprintf(got + 2 * k2, 3, "%02x", buf.p[buf.len - hl + k2]);
        CHECK_STR(got, exact[i].hex);
        CHECK_EQ_INT(buf.p[buf.len - hl - 1], 0x04);
        knit_buf_free(&buf);
        knit_batch_free(one);
    }

    /* NaN cannot be sent; a liveness change cannot carry a value. */
    knit_buf_t buf = {0};
    b->changes[0].value.type = KNIT_REAL;
    b->changes[0].value.u.r = NAN;
    m.u.push.batch = b;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    CHECK_EQ_INT(buf.len, 0);
    b->changes[0].col = 0;
    b->changes[0].value.type = KNIT_INTEGER;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    knit_buf_free(&buf);
    knit_batch_free(b);
}

/* A few valid messages of every type, used by the strictness cases. */
static void sample_frames(knit_buf_t *out, size_t *offs, size_t *nframes)
{
    knit_rng_t r = {42};
    *nframes = 0;
    for (int round = 0; round < 3; round++) {
        for (int t = 1; t <= KNIT_MSG_CHECKED; t++) {
            pool_t pl = {0};
            knit_msg_t m;
            rand_msg(&r, &pl, t, &m);
            offs[(*nframes)++] = out->len;
            CHECK_OK(knit_msg_encode(&m, NULL, out));
            free_rand(&m);
            pool_free(&pl);
        }
    }
    offs[*nframes] = out->len;
}

static void truncated(void)
{
    knit_buf_t all = {0};
    size_t offs[64], nf;
    sample_frames(&all, offs, &nf);
    for (size_t f = 0; f < nf; f++) {
        const uint8_t *p = all.p + offs[f] + 4;
        size_t n = offs[f + 1] - offs[f] - 4;
        for (size_t cut = 0; cut < n; cut++) {
            /* A copy of exactly `cut` bytes, so ASan sees any over-read. */
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, p, cut);
            expect_fail(copy, cut, NULL, KNIT_EPROTO);
            free(copy);
        }
    }
    knit_buf_free(&all);
}

static void trailing(void)
{
    knit_buf_t all = {0};
    size_t offs[64], nf;
    sample_frames(&all, offs, &nf);
    for (size_t f = 0; f < nf; f++) {
        size_t n = offs[f + 1] - offs[f] - 4;
        uint8_t *copy = malloc(n + 1);
        memcpy(copy, all.p + offs[f] + 4, n);
        copy[n] = 0x00;
        expect_fail(copy, n + 1, NULL, KNIT_EPROTO);
        copy[n] = 0xF6;
        expect_fail(copy, n + 1, NULL, KNIT_EPROTO);
        free(copy);
    }
    knit_buf_free(&all);
}

/* Replaces, one at a time, the value of every map entry anywhere in the
** message (outside the positional units) with items of other CBOR types;
** each replacement must be refused. */
static int major_of(cbor_item_t *it)
{
    switch (cbor_typeof(it)) {
    case CBOR_TYPE_UINT:
        return 0;
    case CBOR_TYPE_NEGINT:
        return 1;
    case CBOR_TYPE_BYTESTRING:
        return 2;
    case CBOR_TYPE_STRING:
        return 3;
    case CBOR_TYPE_ARRAY:
        return 4;
    case CBOR_TYPE_MAP:
        return 5;
    case CBOR_TYPE_TAG:
        return 6;
    default:
        if (cbor_is_null(it))
            return 8;
        if (cbor_is_bool(it))
            return 9;
        return 7;
    }
}

static cbor_item_t *wrong_item(int kind)
{
    switch (kind) {
    case 0:
        return cbor_build_uint8(7);
    case 1:
        return cbor_build_negint8(6);
    case 2:
        return cbor_build_bytestring((cbor_data) "\0", 1);
    case 3:
        return cbor_build_string("x");
    case 4:
        return cbor_new_definite_array(0);
    case 5:
        return cbor_new_definite_map(0);
    case 6: {
        cbor_item_t *in = cbor_build_uint8(0), *t = cbor_build_tag(1, in);
        cbor_decref(&in); /* the tag holds its own reference */
        return t;
    }
    case 7:
        return cbor_build_float8(1.5);
    case 8:
        return cbor_new_null();
    default:
        return cbor_build_bool(true);
    }
}

static size_t mutations;

/* Walks every map in the tree under it; `root` is what gets serialized. */
static void mutate_maps(cbor_item_t *root, cbor_item_t *it, int in_reason, int in_units)
{
    if (cbor_isa_array(it)) {
        for (size_t i = 0; i < cbor_array_size(it); i++)
            mutate_maps(root, cbor_array_handle(it)[i], in_reason, in_units);
        return;
    }
    if (!cbor_isa_map(it) || in_units)
        return;
    struct cbor_pair *pairs = cbor_map_handle(it);
    for (size_t i = 0; i < cbor_map_size(it); i++) {
        cbor_item_t *orig = pairs[i].value;
        uint64_t key = cbor_get_int(pairs[i].key);
        int om = major_of(orig);
        for (int kind = 0; kind < 10; kind++) {
            if (kind == om)
                continue;
            /* A reason's change may be null; a bool may be either bool. */
            if (in_reason && key == 1 && (kind == 8 || om == 8))
                continue;
            cbor_item_t *w = wrong_item(kind);
            pairs[i].value = w;
            unsigned char *buf = NULL;
            size_t size = 0;
            size_t len = cbor_serialize_alloc(root, &buf, &size);
            CHECK(len > 0);
            knit_msg_t d;
            const char *why;
            int rc = knit_msg_decode(buf, len, NULL, &d, &why);
            if (rc == 0)
                fprintf(stderr, "accepted wrong type %d for key %llu\n", kind,
                        (unsigned long long)key);
            CHECK(rc == KNIT_EPROTO);
            free(buf);
            cbor_decref(&w);
            mutations++;
        }
        pairs[i].value = orig;
        /* Recurse into this value; the batch's key 3 holds the units. */
        int units = cbor_isa_array(orig) && key == 3 && cbor_map_size(it) == 3 &&
                    cbor_isa_array(pairs[0].value) && cbor_isa_array(pairs[1].value);
        int reason = cbor_isa_array(orig) && key == 2 && cbor_map_size(it) >= 3 &&
                     cbor_is_int(pairs[0].value) && cbor_get_int(pairs[0].value) == KNIT_MSG_REJECT;
        mutate_maps(root, orig, reason || (in_reason && cbor_isa_array(orig)), units);
    }
}

static void wrong_types(void)
{
    knit_buf_t all = {0};
    size_t offs[64], nf;
    sample_frames(&all, offs, &nf);
    for (size_t f = 0; f < nf; f++) {
        struct cbor_load_result res;
        cbor_item_t *root = cbor_load(all.p + offs[f] + 4, offs[f + 1] - offs[f] - 4, &res);
        CHECK(root != NULL);
        /* The message type itself must be refused too (done by the walk,
        ** skipping key 0's own replacement by a uint: it would be valid or
        ** unknown and is covered by `unknown`). */
        mutate_maps(root, root, 0, 0);
        cbor_decref(&root);
    }
    CHECK(mutations > 500);
    knit_buf_free(&all);
}

/* Hand-made batches that break one rule each. */
static void bad_indexes(void)
{
    cb_t c;
    /* Valid baseline: unit [uh=0, rh=0, pk=1, ch=1<<2 (col 1), 5]. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4), cb_uint(&c, 5);
    {
        knit_msg_t d;
        CHECK_OK(knit_msg_decode(c.p, c.n, NULL, &d, NULL));
        CHECK_EQ_INT(d.u.push.batch->nchanges, 1);
        CHECK_EQ_INT(d.u.push.batch->changes[0].col, 1);
        CHECK(d.u.push.batch->txns[0].version == 1);
        knit_msg_free(&d);
    }
    /* Row table index out of range (T flag, table 1 of 1). */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 6), cb_uint(&c, 0), cb_uint(&c, 1), cb_uint(&c, 1),
    cb_uint(&c, 1), cb_uint(&c, 0), cb_null(&c);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Row table redundant (T flag with the current table 0). */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 1), cb_uint(&c, 0),
    cb_uint(&c, 1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Row site out of range. */
    c.n = 0, push_head(&c, 2), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 2), cb_uint(&c, 2),
    cb_uint(&c, 1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* No sites at all. */
    c.n = 0, push_head(&c, 0), cb_arr(&c, 4), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Cell column step beyond ncols (2). */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 3 << 2), cb_uint(&c, 5);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Cell site out of range, and redundant. */
    c.n = 0, push_head(&c, 2), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 1), cb_uint(&c, 2);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 2), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* OR-set column (col 2) with a non-blob, and with a site outside. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 2 << 2), cb_uint(&c, 5);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    {
        knit_orset_t s;
        knit_value_t e = {.type = KNIT_INTEGER};
        uint8_t *bytes;
        size_t n;
        knit_orset_init(&s);
        CHECK_OK(knit_orset_add(&s, 3, &e, NULL));
        CHECK_OK(knit_orset_encode(&s, &bytes, &n));
        knit_orset_free(&s);
        c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
        cb_uint(&c, 2 << 2), cb_bin(&c, bytes, n);
        expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
        c.n = 0, push_head(&c, 4), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
        cb_uint(&c, 2 << 2), cb_bin(&c, bytes, n);
        knit_msg_t d;
        CHECK_OK(knit_msg_decode(c.p, c.n, NULL, &d, NULL));
        knit_msg_free(&d);
        c.n = 0, push_head(&c, 4), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
        cb_uint(&c, 2 << 2), cb_bin(&c, "\x07", 1);
        expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
        knit__free(bytes);
    }
    /* Unit head with unknown bits; zero deltas; counter out of range. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 1), cb_uint(&c, 8);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 2), cb_uint(&c, 1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 2), cb_uint(&c, 2), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 2), cb_uint(&c, 4), cb_uint(&c, 65536);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 2), cb_uint(&c, 2), cb_uint(&c, UINT64_C(1) << 48);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 2), cb_uint(&c, 2), cb_neg(&c, -1);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* cl 1 given explicitly; hdelta 0. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 4), cb_uint(&c, 1),
    cb_uint(&c, 1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 2), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* The unit ends inside a row: two cells announced, one given. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 4), cb_uint(&c, 0), cb_uint(&c, 1 << 3), cb_uint(&c, 1),
    cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Integers beyond int64 as values. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0),
    cb_uint(&c, UINT64_MAX), cb_uint(&c, 4), cb_uint(&c, 5);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Raw-TEXT tag around valid UTF-8, and around a non-bytestring. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4);
    c.n += cbor_encode_tag(0x6B6E6974, c.p + c.n, 9);
    cb_bin(&c, "ok", 2);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* NaN value, text with invalid UTF-8, half NaN. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4);
    c.n += cbor_encode_double(NAN, c.p + c.n, 9);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4), cb_byte(&c, 0xF9), cb_byte(&c, 0x7E), cb_byte(&c, 0x00);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4), cb_byte(&c, 0x61), cb_byte(&c, 0xFF);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Undefined and unassigned simple values as values. */
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4), cb_byte(&c, 0xF7);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, push_head(&c, 1), cb_arr(&c, 5), cb_uint(&c, 0), cb_uint(&c, 0), cb_uint(&c, 1),
    cb_uint(&c, 4), cb_byte(&c, 0xF0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
}

/* Duplicate dictionary entries, DELTAS version rules, map rules. */
static void structure(void)
{
    cb_t c;
    /* Duplicate site. */
    c.n = 0;
    cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 4), cb_uint(&c, 1), cb_uint(&c, 1);
    cb_uint(&c, 2), cb_txt(&c, "ns"), cb_uint(&c, 3), cb_map(&c, 3);
    cb_uint(&c, 1), cb_arr(&c, 2), cb_bin(&c, "0123456789abcdef", 16),
        cb_bin(&c, "0123456789abcdef", 16);
    cb_uint(&c, 2), cb_arr(&c, 0), cb_uint(&c, 3), cb_arr(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Site of 15 bytes. */
    c.n = 0;
    cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 4), cb_uint(&c, 1), cb_uint(&c, 1);
    cb_uint(&c, 2), cb_txt(&c, "ns"), cb_uint(&c, 3), cb_map(&c, 3);
    cb_uint(&c, 1), cb_arr(&c, 1), cb_bin(&c, "0123456789abcde", 15);
    cb_uint(&c, 2), cb_arr(&c, 0), cb_uint(&c, 3), cb_arr(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Batch keys out of order (units before sites). */
    c.n = 0;
    cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 4), cb_uint(&c, 1), cb_uint(&c, 1);
    cb_uint(&c, 2), cb_txt(&c, "ns"), cb_uint(&c, 3), cb_map(&c, 3);
    cb_uint(&c, 3), cb_arr(&c, 0), cb_uint(&c, 1), cb_arr(&c, 0), cb_uint(&c, 2), cb_arr(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Duplicate table; kinds length mismatch; kind 2; npk 0. */
    for (int variant = 0; variant < 4; variant++) {
        c.n = 0;
        cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 4), cb_uint(&c, 1), cb_uint(&c, 1);
        cb_uint(&c, 2), cb_txt(&c, "ns"), cb_uint(&c, 3), cb_map(&c, 3);
        cb_uint(&c, 1), cb_arr(&c, 0), cb_uint(&c, 2), cb_arr(&c, variant == 0 ? 2 : 1);
        for (int k = 0; k < (variant == 0 ? 2 : 1); k++) {
            cb_map(&c, 4), cb_uint(&c, 1), cb_txt(&c, "t"), cb_uint(&c, 2),
                cb_uint(&c, variant == 3 ? 0 : 1);
            cb_uint(&c, 3), cb_arr(&c, 1), cb_txt(&c, "a"), cb_uint(&c, 4);
            cb_bin(&c, variant == 2 ? "\2" : "\0\0", variant == 1 ? 2 : 1);
        }
        cb_uint(&c, 3), cb_arr(&c, 0);
        expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    }
    /* DELTAS: unit version outside (from, to], not rising, to < from. */
    uint64_t bad[][4] = {{5, 9, 5, 0}, {5, 9, 10, 0}, {5, 9, 7, 7}, {9, 5, 0, 0}};
    for (int k = 0; k < 4; k++) {
        c.n = 0;
        cb_map(&c, 5), cb_uint(&c, 0), cb_uint(&c, 7), cb_uint(&c, 1), cb_txt(&c, "ns");
        cb_uint(&c, 2), cb_uint(&c, bad[k][0]), cb_uint(&c, 3), cb_uint(&c, bad[k][1]);
        cb_uint(&c, 4), cb_map(&c, 3), cb_uint(&c, 1), cb_arr(&c, 0), cb_uint(&c, 2), cb_arr(&c, 0),
            cb_uint(&c, 3);
        size_t nu = bad[k][2] ? (bad[k][3] ? 2 : 1) : 0;
        cb_arr(&c, nu);
        uint64_t prev = 0;
        for (size_t u = 0; u < nu; u++) {
            uint64_t v = u == 0 ? bad[k][2] : bad[k][3];
            int64_t vd = (int64_t)(v - prev - 1);
            if (vd)
                cb_arr(&c, 2), cb_uint(&c, 1), cb_int(&c, vd);
            else
                cb_arr(&c, 1), cb_uint(&c, 0);
            prev = v;
        }
        expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    }
    /* Map keys: not ascending, duplicate, non-integer, message key 0 not first. */
    c.n = 0, cb_map(&c, 2), cb_uint(&c, 1), cb_uint(&c, 5), cb_uint(&c, 0), cb_uint(&c, 8);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, cb_map(&c, 3), cb_uint(&c, 0), cb_uint(&c, 8), cb_uint(&c, 1), cb_uint(&c, 5),
    cb_uint(&c, 1), cb_uint(&c, 5);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, cb_map(&c, 2), cb_uint(&c, 0), cb_uint(&c, 8), cb_txt(&c, "1"), cb_uint(&c, 5);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Unknown keys are skipped, even holding nested data. */
    c.n = 0, cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 8), cb_uint(&c, 1), cb_uint(&c, 5),
    cb_uint(&c, 9), cb_arr(&c, 2), cb_map(&c, 1), cb_txt(&c, "k"), cb_bin(&c, "v", 1),
    cb_byte(&c, 0xFB);
    for (int k = 0; k < 8; k++)
        cb_byte(&c, 0x40);
    cb_uint(&c, 1000), cb_txt(&c, "later");
    {
        knit_msg_t d;
        CHECK_OK(knit_msg_decode(c.p, c.n, NULL, &d, NULL));
        CHECK_EQ_INT(d.type, KNIT_MSG_PING);
        CHECK(d.u.ping.nonce == 5);
        knit_msg_free(&d);
    }
    /* ... but not a tag other than the raw-TEXT one, nor bad UTF-8. */
    c.n = 0, cb_map(&c, 3), cb_uint(&c, 0), cb_uint(&c, 8), cb_uint(&c, 1), cb_uint(&c, 5),
    cb_uint(&c, 9), cb_byte(&c, 0xC1), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, cb_map(&c, 3), cb_uint(&c, 0), cb_uint(&c, 8), cb_uint(&c, 1), cb_uint(&c, 5),
    cb_uint(&c, 9), cb_byte(&c, 0x62), cb_byte(&c, 0xC3), cb_byte(&c, 0x28);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Missing a required field; empty map; not a map; unknown types. */
    c.n = 0, cb_map(&c, 1), cb_uint(&c, 0), cb_uint(&c, 8);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, cb_map(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    c.n = 0, cb_arr(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    expect_fail(c.p, 0, NULL, KNIT_EPROTO);
    for (uint64_t t = 0; t < 40; t += (t == 0 ? 11 : 7)) {
        c.n = 0, cb_map(&c, 2), cb_uint(&c, 0), cb_uint(&c, t), cb_uint(&c, 1), cb_uint(&c, 5);
        expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    }
    /* Indefinite-length map, array, strings. */
    const uint8_t indef_map[] = {0xBF, 0x00, 0x08, 0x01, 0x05, 0xFF};
    expect_fail(indef_map, sizeof indef_map, NULL, KNIT_EPROTO);
    const uint8_t indef_str[] = {0xA2, 0x00, 0x03, 0x01, 0x7F, 0x61, 0x78, 0xFF};
    expect_fail(indef_str, sizeof indef_str, NULL, KNIT_EPROTO);
    const uint8_t indef_arr[] = {0xA2, 0x00, 0x0A, 0x01, 0x9F, 0xFF};
    expect_fail(indef_arr, sizeof indef_arr, NULL, KNIT_EPROTO);
    /* A text name containing NUL; an empty namespace name. */
    c.n = 0, cb_map(&c, 4), cb_uint(&c, 0), cb_uint(&c, 7), cb_uint(&c, 1);
    c.n += cbor_encode_string_start(3, c.p + c.n, 9);
    memcpy(c.p + c.n, "a\0b", 3), c.n += 3;
    cb_uint(&c, 2), cb_uint(&c, 0), cb_uint(&c, 3), cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* A count far beyond the payload: refused before allocating. */
    c.n = 0, cb_map(&c, 2), cb_uint(&c, 0), cb_uint(&c, 10), cb_uint(&c, 1), cb_byte(&c, 0x9B);
    for (int k = 0; k < 8; k++)
        cb_byte(&c, 0x7F);
    knit__alloc_fail_at(0, 0);
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    CHECK(knit__alloc_fail_at(0, 0) <= 2); /* the message arena at most */
}

static void limits(void)
{
    knit_rng_t r = {7};
    pool_t pl = {0};
    knit_msg_t m;
    knit_buf_t buf = {0};
    knit_codec_limits_t lim;

    /* max_frame: the decoder refuses a larger payload; the encoder too. */
    rand_msg(&r, &pl, KNIT_MSG_WELCOME, &m);
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    memset(&lim, 0, sizeof lim);
    lim.max_frame = buf.len - 5;
    expect_fail(buf.p + 4, buf.len - 4, &lim, KNIT_ETOOBIG);
    knit_buf_t small = {0};
    CHECK_EQ_INT(knit_msg_encode(&m, &lim, &small), KNIT_ETOOBIG);
    CHECK_EQ_INT(small.len, 0);
    knit_buf_free(&buf);

    /* max_string. */
    memset(&lim, 0, sizeof lim);
    lim.max_string = 3;
    knit_msg_t e = {.type = KNIT_MSG_ERROR};
    e.u.error.code = KNIT_EPROTO;
    e.u.error.message = "four";
    CHECK_OK(knit_msg_encode(&e, NULL, &buf));
    expect_fail(buf.p + 4, buf.len - 4, &lim, KNIT_ETOOBIG);
    CHECK_EQ_INT(knit_msg_encode(&e, &lim, &small), KNIT_ETOOBIG);
    knit_buf_free(&buf);

    /* max_changes and max_dict on a batch. */
    knit_msg_t p;
    for (;;) {
        rand_msg(&r, &pl, KNIT_MSG_PUSH, &p);
        if (p.u.push.batch->nchanges >= 3 && p.u.push.batch->nsites >= 2)
            break;
        free_rand(&p);
    }
    CHECK_OK(knit_msg_encode(&p, NULL, &buf));
    memset(&lim, 0, sizeof lim);
    lim.max_changes = p.u.push.batch->nchanges - 1;
    expect_fail(buf.p + 4, buf.len - 4, &lim, KNIT_ETOOBIG);
    CHECK_EQ_INT(knit_msg_encode(&p, &lim, &small), KNIT_ETOOBIG);
    memset(&lim, 0, sizeof lim);
    lim.max_dict = p.u.push.batch->nsites - 1;
    expect_fail(buf.p + 4, buf.len - 4, &lim, KNIT_ETOOBIG);
    lim.max_changes = p.u.push.batch->nchanges;
    lim.max_dict = 0;
    knit_msg_t d;
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, &lim, &d, NULL));
    knit_msg_free(&d);
    knit_buf_free(&buf);
    free_rand(&p);

    /* max_depth for skipped fields. */
    cb_t c;
    c.n = 0, cb_map(&c, 3), cb_uint(&c, 0), cb_uint(&c, 8), cb_uint(&c, 1), cb_uint(&c, 5),
    cb_uint(&c, 9);
    for (int k = 0; k < 20; k++)
        cb_arr(&c, 1);
    cb_uint(&c, 0);
    expect_fail(c.p, c.n, NULL, KNIT_ETOOBIG);
    memset(&lim, 0, sizeof lim);
    lim.max_depth = 30;
    CHECK_OK(knit_msg_decode(c.p, c.n, &lim, &d, NULL));
    knit_msg_free(&d);
    knit_buf_free(&small);
    pool_free(&pl);
}

static void version(void)
{
    uint32_t v = 0;
    CHECK_OK(knit_proto_negotiate(1, 1, &v));
    CHECK_EQ_INT(v, 1);
    CHECK_OK(knit_proto_negotiate(1, 9, &v));
    CHECK_EQ_INT(v, KNIT_PROTO_VERSION_MAX);
    CHECK_EQ_INT(knit_proto_negotiate(2, 5, &v), KNIT_EVERSION);
    CHECK_EQ_INT(knit_proto_negotiate(0, 1, &v), KNIT_EPROTO);
    CHECK_EQ_INT(knit_proto_negotiate(3, 2, &v), KNIT_EPROTO);

    /* A HELLO offering only future versions decodes (the relay answers
    ** ERROR KNIT_EVERSION); an empty range does not. */
    knit_msg_t m = {.type = KNIT_MSG_HELLO}, d;
    knit_buf_t buf = {0};
    m.u.hello.min_version = 7;
    m.u.hello.max_version = 9;
    m.u.hello.cred.kind = KNIT_CRED_ANON;
    m.u.hello.cred.id = "abc";
    m.u.hello.cred.secret = "s3cret";
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
    CHECK_EQ_INT(knit_proto_negotiate(d.u.hello.min_version, d.u.hello.max_version, &v),
                 KNIT_EVERSION);
    knit_msg_free(&d);
    knit_buf_free(&buf);
    m.u.hello.min_version = 3;
    m.u.hello.max_version = 2;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    knit_buf_free(&buf);
    cb_t c;
    c.n = 0, cb_map(&c, 5), cb_uint(&c, 0), cb_uint(&c, 1), cb_uint(&c, 1), cb_uint(&c, 3),
    cb_uint(&c, 2), cb_uint(&c, 2), cb_uint(&c, 3), cb_bin(&c, "0123456789abcdef", 16),
    cb_uint(&c, 4), cb_map(&c, 2), cb_uint(&c, 1), cb_uint(&c, 2), cb_uint(&c, 4),
    cb_txt(&c, "tok");
    expect_fail(c.p, c.n, NULL, KNIT_EPROTO);
    /* Bad anonymous ids are refused both ways. */
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    m.u.hello.cred.id = "has space";
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    knit_buf_free(&buf);
    /* The names of the types. */
    CHECK_STR(knit_msg_type_name(KNIT_MSG_DELTAS), "DELTAS");
    CHECK_STR(knit_msg_type_name(99), "UNKNOWN");
}

/* Fails each allocation of encode and decode in turn. */
static void alloc_failures(void)
{
    knit_rng_t r = {99};
    pool_t pl = {0};
    knit_msg_t m;
    do {
        rand_msg(&r, &pl, KNIT_MSG_DELTAS, &m);
        if (m.u.deltas.batch->nchanges >= 10)
            break;
        free_rand(&m);
    } while (1);
    knit_buf_t ok = {0};
    CHECK_OK(knit_msg_encode(&m, NULL, &ok));
    int done = 0;
    for (long nth = 1; !done; nth++) {
        knit_buf_t buf = {0};
        knit__alloc_fail_at(nth, 0);
        int rc = knit_msg_encode(&m, NULL, &buf);
        long used = knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        done = rc == 0 && used < nth;
        knit_buf_free(&buf);
    }
    done = 0;
    for (long nth = 1; !done; nth++) {
        knit_msg_t d;
        knit__alloc_fail_at(nth, 0);
        int rc = knit_msg_decode(ok.p + 4, ok.len - 4, NULL, &d, NULL);
        long used = knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        if (rc == 0)
            check_msg(&m, &d);
        done = rc == 0 && used < nth;
        knit_msg_free(&d);
    }
    knit_buf_free(&ok);
    free_rand(&m);
    pool_free(&pl);
}

/* Flipping bytes of valid messages: decode may accept or refuse, never
** crash; what it accepts re-encodes. */
static void mutations_smoke(void)
{
    knit_buf_t all = {0};
    size_t offs[64], nf;
    uint64_t seed = knit_test_seed();
    knit_rng_t r = {seed};
    sample_frames(&all, offs, &nf);
    long n = knit_test_cases(20000);
    for (long i = 0; i < n; i++) {
        size_t f = (size_t)knit_rng_below(&r, nf);
        size_t len = offs[f + 1] - offs[f] - 4;
        uint8_t *copy = malloc(len);
        memcpy(copy, all.p + offs[f] + 4, len);
        size_t flips = 1 + knit_rng_below(&r, 3);
        for (size_t k = 0; k < flips; k++)
            copy[knit_rng_below(&r, len)] ^= (uint8_t)(1u << knit_rng_below(&r, 8));
        knit_msg_t d;
        if (knit_msg_decode(copy, len, NULL, &d, NULL) == 0) {
            knit_buf_t again = {0};
            int rc = knit_msg_encode(&d, NULL, &again);
            CHECK(rc == 0);
            knit_buf_free(&again);
            knit_msg_free(&d);
        }
        free(copy);
    }
    knit_buf_free(&all);
}

/* Writes seeds when KNIT_WRITE_CORPUS is set (see the file comment). */
static void corpus(void)
{
    if (!getenv("KNIT_WRITE_CORPUS"))
        return;
    knit_buf_t all = {0};
    size_t offs[64], nf;
    sample_frames(&all, offs, &nf);
    for (size_t f = 0; f < nf; f++) {
        char name[64];
        knit_msg_t d;
        CHECK_OK(knit_msg_decode(all.p + offs[f] + 4, offs[f + 1] - offs[f] - 4, NULL, &d, NULL));
        snprintf(name, sizeof name, "%s-%zu", knit_msg_type_name(d.type), f / KNIT_MSG_CHECKED);
        knit_msg_free(&d);
        maybe_write_seed(name, (uint8_t)(f * 13), all.p + offs[f], offs[f + 1] - offs[f]);
    }
    /* Streams of several frames, and hostile lengths. */
    maybe_write_seed("stream-all", 7, all.p, all.len);
    maybe_write_seed("stream-small", 0, all.p, offs[4]);
    const uint8_t huge[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xA0};
    maybe_write_seed("len-huge", 1, huge, sizeof huge);
    const uint8_t zero[] = {0, 0, 0, 0, 0, 0, 0, 1, 0xA0};
    maybe_write_seed("len-zero", 0, zero, sizeof zero);
    knit_buf_free(&all);
}

/* REJECT's optional state (PROTOCOL.md REJECT, key 3): exact bytes, a
** round trip, an old decoder's view (a REJECT without it still decodes) and
** a wrong type refused. */
static void reject_state(void)
{
    knit_batch_t *b;
    knit_site_t s;
    uint32_t idx;
    const char *cols[] = {"v"};
    const uint8_t kinds[] = {0};
    memset(s.b, 0xaa, 16);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, "user:a", &idx));
    CHECK_OK(knit_batch_site(b, &s, &idx));
    CHECK_OK(knit_batch_table(b, "t", 1, 1, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(b, 1));
    knit_value_t k = {.type = KNIT_INTEGER, .u.i = 1};
    knit_change_t c = {0};
    c.pk = &k;
    c.col = 1;
    c.cl = 1;
    c.hlc = (uint64_t)1000 << 16;
    c.value.type = KNIT_INTEGER;
    c.value.u.i = 7;
    CHECK_OK(knit_batch_add(b, &c));
    knit_reason_t r = {.change = 0, .code = KNIT_ECLOCKSKEW, .message = ""};
    knit_msg_t m = {0}, d;
    m.type = KNIT_MSG_REJECT;
    m.u.reject.id = 9;
    m.u.reject.reasons = &r;
    m.u.reject.nreasons = 1;
    knit_buf_t buf = {0};
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    /* Without state: a3 00 06 01 09 02 81 a2 01 00 02 24. */
    char got[256] = "";
    for (size_t i = 4; i < buf.len && i < 100; i++)
        snprintf(got + 2 * (i - 4), 3, "%02x", buf.p[i]);
    CHECK_STR(got, "a3000601090281a201000224");
    knit_buf_free(&buf);
    m.u.reject.state = b;
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    CHECK_EQ_INT(buf.p[4], 0xa4); /* map(4): key 3 added */
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
    CHECK(d.u.reject.state != NULL);
    CHECK_EQ_INT(d.u.reject.state->nchanges, 1);
    CHECK_STR(d.u.reject.state->ns[0], KNIT_REJECT_STATE_NS);
    CHECK_EQ_INT(d.u.reject.state->changes[0].value.u.i, 7);
    CHECK(d.u.reject.state->changes[0].hlc == c.hlc);
    knit_msg_free(&d);
    /* Key 3 that is not a batch is refused. */
    uint8_t bad[] = {0xa4, 0x00, 0x06, 0x01, 0x09, 0x02, 0x81,
                     0xa2, 0x01, 0x00, 0x02, 0x24, 0x03, 0x01};
    CHECK_EQ_INT(knit_msg_decode(bad, sizeof bad, NULL, &d, NULL), KNIT_EPROTO);
    /* An unknown key 4 after it is skipped (section 10). */
    uint8_t fwd[] = {0xa4, 0x00, 0x06, 0x01, 0x09, 0x02, 0x81,
                     0xa2, 0x01, 0x00, 0x02, 0x24, 0x04, 0x01};
    CHECK_OK(knit_msg_decode(fwd, sizeof fwd, NULL, &d, NULL));
    CHECK(d.u.reject.state == NULL);
    knit_msg_free(&d);
    knit_buf_free(&buf);
    knit_batch_free(b);
}

/* CHECK / CHECKED (the consistency check) and WELCOME's features: exact
** bytes of a small CHECK, the bounds decoders enforce, and what an older
** peer sees. */
static void check_messages(void)
{
    knit_msg_t m = {0}, d;
    knit_buf_t buf = {0};
    uint32_t fetch[] = {3, 7};
    char got[256] = "";
    m.type = KNIT_MSG_CHECK;
    m.u.check.id = 5;
    m.u.check.ns = "u";
    m.u.check.nbuckets = 8;
    m.u.check.fetch = fetch;
    m.u.check.nfetch = 2;
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    for (size_t i = 4; i < buf.len && i < 100; i++)
        snprintf(got + 2 * (i - 4), 3, "%02x", buf.p[i]);
    /* {0: 11, 1: 5, 2: "u", 3: h'00'x32, 4: 8, 5: [3, 7]} */
    CHECK_STR(got, "a6000b010502617503582000000000000000000000000000000000000000000000000000000000"
                   "000000000408058203"
                   "07");
    CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
    CHECK_EQ_INT(d.type, KNIT_MSG_CHECK);
    CHECK_EQ_INT(d.u.check.nfetch, 2);
    CHECK_EQ_INT(d.u.check.fetch[1], 7);
    knit_msg_free(&d);
    knit_buf_free(&buf);

    /* Encoders refuse what decoders would: a fetch beyond the buckets, or
    ** without any, or too long. */
    fetch[1] = 8;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    m.u.check.nbuckets = 0;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    m.u.check.nbuckets = KNIT_CHECK_MAX_BUCKETS + 1;
    m.u.check.nfetch = 0;
    CHECK_EQ_INT(knit_msg_encode(&m, NULL, &buf), KNIT_EINVAL);
    CHECK_EQ_INT(buf.len, 0);

    /* Hostile CHECKs. */
    static const uint8_t no_fetch_order[] = {
        0xa6, 0x00, 0x0b, 0x01, 0x05, 0x02, 0x61, 0x75, 0x03, 0x58, 0x20, 0,    0,   0, 0, 0, 0, 0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,   0, 0, 0, 0, 0,
        0,    0,    0,    0,    0,    0,    0,    0x04, 0x08, 0x05, 0x82, 0x07, 0x03};
    expect_fail(no_fetch_order, sizeof no_fetch_order, NULL, KNIT_EPROTO);
    static const uint8_t short_digest[] = {0xa4, 0x00, 0x0b, 0x01, 0x05, 0x02,
                                           0x61, 0x75, 0x03, 0x41, 0x00};
    expect_fail(short_digest, sizeof short_digest, NULL, KNIT_EPROTO);
    static const uint8_t zero_buckets[] = {
        0xa5, 0x00, 0x0b, 0x01, 0x05, 0x02, 0x61, 0x75, 0x03, 0x58, 0x20, 0, 0, 0,    0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0, 0, 0,    0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0, 0, 0x04, 0x00};
    expect_fail(zero_buckets, sizeof zero_buckets, NULL, KNIT_EPROTO);
    static const uint8_t no_digest[] = {0xa3, 0x00, 0x0b, 0x01, 0x05, 0x02, 0x61, 0x75};
    expect_fail(no_digest, sizeof no_digest, NULL, KNIT_EPROTO);
    /* CHECKED buckets must be whole digests. */
    static const uint8_t ragged[] = {
        0xa6, 0x00, 0x0c, 0x01, 0x05, 0x02, 0x61, 0x75, 0x03, 0x00, 0x04, 0x58, 0x20, 0, 0, 0, 0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0, 0, 0, 0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x05, 0x43, 1, 2, 3};
    expect_fail(ragged, sizeof ragged, NULL, KNIT_EPROTO);
    /* Types after CHECKED stay unknown. */
    static const uint8_t unknown[] = {0xa2, 0x00, 0x0d, 0x01, 0x00};
    expect_fail(unknown, sizeof unknown, NULL, KNIT_EPROTO);

    /* WELCOME's features: sent only when set, so a relay without the
    ** feature sends the WELCOME of before; an older client skips key 6 as
    ** an unknown key (section 10), which the decoder shows by accepting an
    ** unknown key 7 as well. */
    const char *granted[] = {"u"};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_WELCOME;
    m.u.welcome.version = 1;
    m.u.welcome.principal = "u";
    m.u.welcome.granted = granted;
    m.u.welcome.ngranted = 1;
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    CHECK_EQ_INT(buf.p[4], 0xa6);
    knit_buf_free(&buf);
    m.u.welcome.features = KNIT_FEATURE_CHECK;
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    CHECK_EQ_INT(buf.p[4], 0xa7);
    CHECK_EQ_INT(buf.p[buf.len - 2], 0x06);
    CHECK_EQ_INT(buf.p[buf.len - 1], 0x01);
    buf.p[4] = 0xa8; /* and an unknown key 7 after it */
    uint8_t extra[2] = {0x07, 0xf5};
    uint8_t *p = malloc(buf.len + 2);
    memcpy(p, buf.p, buf.len);
    memcpy(p + buf.len, extra, 2);
    CHECK_OK(knit_msg_decode(p + 4, buf.len - 2, NULL, &d, NULL));
    CHECK(d.u.welcome.features == KNIT_FEATURE_CHECK);
    knit_msg_free(&d);
    free(p);
    knit_buf_free(&buf);
}

KNIT_TESTS(T(roundtrip_messages), T(roundtrip_batches), T(values), T(truncated), T(trailing),
           T(wrong_types), T(bad_indexes), T(structure), T(limits), T(version), T(alloc_failures),
           T(mutations_smoke), T(corpus), T(reject_state), T(check_messages))
