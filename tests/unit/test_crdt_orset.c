/*
** test_crdt_orset.c: the add-wins OR-set (crdt/orset.h).
**
** Random states come from a small "world": three replicas with sparse site
** numbers add and remove elements from a domain of eight values (1 and 1.0
** among them, to exercise canonical form), swap whole states and deliver
** each other's operation deltas late, twice or out of order, which is what
** fills the context's cloud.  Every state and delta the world produces is
** checked against the design notes of orset.c, and the lattice laws are
** checked over states and deltas drawn from it.
*/
#include <math.h>

#include "alloc.h"
#include "orset.h"
#include "test.h"

/* ---------------------------------------------------------------------- */
/* Invariants (design notes 1-3 of orset.c), checked from the outside. */

static int dot_lt(const knit_dot_t *a, const knit_dot_t *b)
{
    return a->site < b->site || (a->site == b->site && a->n < b->n);
}

static int covered(const knit_orset_t *s, const knit_dot_t *d)
{
    size_t i;

    if (d->n <= knit_vv_get(&s->vv, d->site))
        return 1;
    for (i = 0; i < s->ncloud; i++)
        if (s->cloud[i].site == d->site && s->cloud[i].n == d->n)
            return 1;
    return 0;
}

static void check_inv(const knit_orset_t *s)
{
    size_t i, j;

    CHECK(s->nelems <= s->cap || s->nelems == 0);
    for (i = 0; i < s->vv.len; i++) {
        CHECK(s->vv.e[i].n > 0);
        CHECK(i == 0 || s->vv.e[i - 1].site < s->vv.e[i].site);
    }
    for (i = 0; i < s->ncloud; i++) {
        CHECK(i == 0 || dot_lt(&s->cloud[i - 1], &s->cloud[i]));
        CHECK(s->cloud[i].n > knit_vv_get(&s->vv, s->cloud[i].site) + 1);
    }
    for (i = 0; i < s->nelems; i++) {
        const knit_orset_elem_t *e = &s->elems[i];
        knit_value_t c = e->v;
        knit_value_canon(&c);
        CHECK(c.type == e->v.type);
        CHECK(i == 0 || knit_value_cmp(&s->elems[i - 1].v, &e->v) < 0);
        CHECK(e->ndots >= 1);
        for (j = 0; j < e->ndots; j++) {
            CHECK(j == 0 || dot_lt(&e->dots[j - 1], &e->dots[j]));
            CHECK(covered(s, &e->dots[j]));
        }
    }
}

static void check_same_bytes(const knit_orset_t *a, const knit_orset_t *b)
{
    uint8_t *pa, *pb;
    size_t na, nb;

    CHECK_OK(knit_orset_encode(a, &pa, &na));
    CHECK_OK(knit_orset_encode(b, &pb, &nb));
    CHECK(na == nb && memcmp(pa, pb, na) == 0);
    knit__free(pa);
    knit__free(pb);
}

/* ---------------------------------------------------------------------- */
/* The world. */

#define NREP 3
#define MAXLOG 12

static const uint32_t rep_site[NREP] = {4, 0, 17};

static knit_value_t elem(unsigned k)
{
    knit_value_t v;

    switch (k % 8) {
    case 0:
        v.type = KNIT_NULL;
        break;
    case 1:
        v.type = KNIT_INTEGER, v.u.i = 1;
        break;
    case 2:
        v.type = KNIT_REAL, v.u.r = 1.0; /* the same element as 1 */
        break;
    case 3:
        v.type = KNIT_INTEGER, v.u.i = -7;
        break;
    case 4:
        v.type = KNIT_REAL, v.u.r = 2.5;
        break;
    case 5:
        v.type = KNIT_TEXT, v.u.b.p = "a", v.u.b.n = 1;
        break;
    case 6:
        v.type = KNIT_TEXT, v.u.b.p = "bb", v.u.b.n = 2;
        break;
    default:
        v.type = KNIT_BLOB, v.u.b.p = "\0", v.u.b.n = 1;
        break;
    }
    return v;
}

typedef struct world_s {
    knit_orset_t s[NREP];           /* replica states */
    knit_orset_t log[NREP][MAXLOG]; /* each replica's operation deltas */
    int nlog[NREP];                 /* deltas logged per replica */
} world_t;

static void world_init(world_t *w)
{
    int i;

    memset(w, 0, sizeof *w);
    for (i = 0; i < NREP; i++)
        knit_orset_init(&w->s[i]);
}

static void world_free(world_t *w)
{
    int i, j;

    for (i = 0; i < NREP; i++) {
        knit_orset_free(&w->s[i]);
        for (j = 0; j < w->nlog[i]; j++)
            knit_orset_free(&w->log[i][j]);
    }
}

/* One local operation, checking the delta law: state before joined with
** the operation's delta equals the state after. */
static void local_op(world_t *w, int i, int add, knit_value_t e)
{
    knit_orset_t before, d;

    CHECK_OK(knit_orset_copy(&before, &w->s[i]));
    knit_orset_init(&d);
    if (add) {
        CHECK_OK(knit_orset_add(&w->s[i], rep_site[i], &e, &d));
        CHECK(knit_orset_contains(&w->s[i], &e));
    } else {
        CHECK_OK(knit_orset_remove(&w->s[i], &e, &d));
        CHECK(!knit_orset_contains(&w->s[i], &e));
    }
    check_inv(&w->s[i]);
    check_inv(&d);
    CHECK_OK(knit_orset_join(&before, &d));
    check_inv(&before);
    CHECK(knit_orset_equal(&before, &w->s[i]));
    knit_orset_free(&before);
    if (w->nlog[i] < MAXLOG)
        w->log[i][w->nlog[i]++] = d;
    else
        knit_orset_free(&d);
}

static void world_step(world_t *w, knit_rng_t *r)
{
    int i = (int)knit_rng_below(r, NREP), j = (int)knit_rng_below(r, NREP);
    unsigned op = (unsigned)knit_rng_below(r, 10);

    if (op < 4) {
        local_op(w, i, 1, elem((unsigned)knit_rng_below(r, 8)));
    } else if (op < 6) {
        knit_value_t e = elem((unsigned)knit_rng_below(r, 8));
        unsigned tries;
        /* Usually one that is there.  A value of the domain, not a pointer
        ** into the set, whose bytes the removal frees. */
        for (tries = 0; tries < 8 && knit_rng_below(r, 4); tries++) {
            e = elem((unsigned)knit_rng_below(r, 8));
            if (knit_orset_contains(&w->s[i], &e))
                break;
        }
        local_op(w, i, 0, e);
    } else if (op < 7) {
        CHECK_OK(knit_orset_join(&w->s[i], &w->s[j]));
        check_inv(&w->s[i]);
    } else if (w->nlog[j]) {
        /* A delta delivered late, twice or before an earlier one. */
        CHECK_OK(knit_orset_join(&w->s[i], &w->log[j][knit_rng_below(r, w->nlog[j])]));
        check_inv(&w->s[i]);
    }
}

static void world_run(world_t *w, knit_rng_t *r, int steps)
{
    world_init(w);
    while (steps-- > 0)
        world_step(w, r);
}

/* Any state or delta of the world: all are elements of one lattice. */
static const knit_orset_t *pick(world_t *w, knit_rng_t *r)
{
    int i = (int)knit_rng_below(r, NREP);

    if (w->nlog[i] && knit_rng_below(r, 3) == 0)
        return &w->log[i][knit_rng_below(r, w->nlog[i])];
    return &w->s[i];
}

static knit_orset_t joined(const knit_orset_t *a, const knit_orset_t *b)
{
    knit_orset_t x;

    CHECK_OK(knit_orset_copy(&x, a));
    CHECK_OK(knit_orset_join(&x, b));
    check_inv(&x);
    return x;
}

/* ---------------------------------------------------------------------- */
/* Laws. */

static void join_laws(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        world_t w;
        const knit_orset_t *a, *b, *c;
        knit_orset_t ab, ba, ab_c, bc, a_bc, aa, abb;

        knit_test_case_seed(seed + (uint64_t)i);
        world_run(&w, &r, (int)knit_rng_below(&r, 30));
        a = pick(&w, &r), b = pick(&w, &r), c = pick(&w, &r);
        /* commutative */
        ab = joined(a, b), ba = joined(b, a);
        CHECK(knit_orset_equal(&ab, &ba));
        check_same_bytes(&ab, &ba);
        /* associative */
        ab_c = joined(&ab, c), bc = joined(b, c), a_bc = joined(a, &bc);
        CHECK(knit_orset_equal(&ab_c, &a_bc));
        check_same_bytes(&ab_c, &a_bc);
        /* idempotent */
        aa = joined(a, a), abb = joined(&ab, b);
        CHECK(knit_orset_equal(&aa, a));
        CHECK(knit_orset_equal(&abb, &ab));
        knit_orset_free(&ab), knit_orset_free(&ba), knit_orset_free(&ab_c);
        knit_orset_free(&bc), knit_orset_free(&a_bc), knit_orset_free(&aa);
        knit_orset_free(&abb);
        world_free(&w);
    }
}

/* Deltas accumulate: the join of several operations' deltas, joined into
** the state before them, gives the state after them. */
static void delta_group(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed ^ (0xd17a + (uint64_t)i)};
        world_t w;
        knit_orset_t before, acc;
        int k, ops;

        knit_test_case_seed(seed ^ (0xd17a + (uint64_t)i));
        world_run(&w, &r, (int)knit_rng_below(&r, 20));
        CHECK_OK(knit_orset_copy(&before, &w.s[0]));
        knit_orset_init(&acc);
        ops = 1 + (int)knit_rng_below(&r, 6);
        for (k = 0; k < ops; k++) {
            knit_value_t e = elem((unsigned)knit_rng_below(&r, 8));
            if (knit_rng_below(&r, 3))
                CHECK_OK(knit_orset_add(&w.s[0], rep_site[0], &e, &acc));
            else
                CHECK_OK(knit_orset_remove(&w.s[0], &e, &acc));
            check_inv(&acc);
        }
        CHECK_OK(knit_orset_join(&before, &acc));
        CHECK(knit_orset_equal(&before, &w.s[0]));
        /* and another replica that had the old state catches up with it */
        knit_orset_free(&before), knit_orset_free(&acc);
        world_free(&w);
    }
}

static void encode_roundtrip(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed * 5 + (uint64_t)i};
        world_t w;
        knit_orset_t d;
        uint8_t *p, *q;
        size_t np, nq, k;

        knit_test_case_seed(seed * 5 + (uint64_t)i);
        world_run(&w, &r, (int)knit_rng_below(&r, 30));
        CHECK_OK(knit_orset_encode(pick(&w, &r), &p, &np));
        CHECK_OK(knit_orset_decode(p, np, &d));
        check_inv(&d);
        CHECK_OK(knit_orset_encode(&d, &q, &nq));
        CHECK(np == nq && memcmp(p, q, np) == 0);
        knit__free(q);
        knit_orset_free(&d);
        /* every strict prefix fails, and leaves an empty set */
        for (k = 0; k < np; k++) {
            int rc = knit_orset_decode(p, k, &d);
            CHECK(rc == KNIT_ETRUNCATED || rc == KNIT_ECORRUPT);
            CHECK(d.nelems == 0 && d.vv.len == 0 && d.ncloud == 0);
        }
        /* trailing bytes */
        q = malloc(np + 1);
        memcpy(q, p, np);
        q[np] = 0;
        CHECK_EQ_INT(knit_orset_decode(q, np + 1, &d), KNIT_ECORRUPT);
        /* a random byte changed: refused, or accepted only as another
        ** canonical state that encodes back to exactly these bytes */
        for (k = 0; k < 4 && np; k++) {
            uint8_t *p2, old;
            size_t n2, at = (size_t)knit_rng_below(&r, np);
            memcpy(q, p, np);
            old = q[at];
            q[at] = (uint8_t)knit_rng_next(&r);
            if (q[at] == old)
                continue;
            if (knit_orset_decode(q, np, &d) == 0) {
                check_inv(&d);
                CHECK_OK(knit_orset_encode(&d, &p2, &n2));
                CHECK(n2 == np && memcmp(p2, q, np) == 0);
                knit__free(p2);
                knit_orset_free(&d);
            }
        }
        free(q);
        knit__free(p);
        world_free(&w);
    }
}

/* One site adding and removing forever: one vector entry, no cloud, no
** tombstones, one dot per element. */
static void churn_bounded(void)
{
    uint64_t seed = knit_test_seed();
    knit_rng_t r = {seed};
    knit_orset_t s, d;
    long i, n = knit_test_cases(10000);
    unsigned k;

    knit_test_case_seed(seed);
    knit_orset_init(&s);
    for (i = 0; i < n; i++) {
        knit_value_t e = elem((unsigned)knit_rng_below(&r, 8));
        knit_orset_init(&d);
        if (knit_rng_below(&r, 2))
            CHECK_OK(knit_orset_add(&s, 3, &e, &d));
        else
            CHECK_OK(knit_orset_remove(&s, &e, &d));
        CHECK(s.vv.len <= 1 && s.ncloud == 0 && s.nelems <= 7);
        for (k = 0; k < s.nelems; k++)
            CHECK_EQ_INT(s.elems[k].ndots, 1);
        CHECK(d.ncloud <= 2 && d.nelems <= 1);
        knit_orset_free(&d);
    }
    CHECK(knit_vv_get(&s.vv, 3) > 0);
    for (k = 0; k < 8; k++) {
        knit_value_t e = elem(k);
        CHECK_OK(knit_orset_remove(&s, &e, NULL));
    }
    CHECK(s.nelems == 0 && s.vv.len == 1 && s.ncloud == 0);
    knit_orset_free(&s);
}

/* ---------------------------------------------------------------------- */
/* Semantics. */

static void sequential_model(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(2000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + 31 * (uint64_t)i};
        knit_orset_t s;
        int model[8] = {0}, k, step, count;

        knit_test_case_seed(seed + 31 * (uint64_t)i);
        knit_orset_init(&s);
        for (step = 0; step < 30; step++) {
            unsigned x = (unsigned)knit_rng_below(&r, 8);
            knit_value_t e = elem(x);
            int add = (int)knit_rng_below(&r, 2);
            if (add)
                CHECK_OK(knit_orset_add(&s, 1, &e, NULL));
            else
                CHECK_OK(knit_orset_remove(&s, &e, NULL));
            /* elements 1 and 2 are one element (1 and 1.0) */
            model[x == 2 ? 1 : x] = add;
            for (k = 0, count = 0; k < 8; k++) {
                knit_value_t f = elem((unsigned)k);
                CHECK_EQ_INT(knit_orset_contains(&s, &f), model[k == 2 ? 1 : k]);
                count += k != 2 && model[k];
            }
            CHECK_EQ_INT(s.nelems, count);
        }
        knit_orset_free(&s);
    }
}

static void add_wins(void)
{
    knit_orset_t a, b, x;
    knit_value_t e = elem(5);

    knit_orset_init(&a);
    knit_orset_init(&b);
    /* a adds, b sees it; then b removes while a adds again concurrently */
    CHECK_OK(knit_orset_add(&a, 0, &e, NULL));
    CHECK_OK(knit_orset_join(&b, &a));
    CHECK_OK(knit_orset_remove(&b, &e, NULL));
    CHECK_OK(knit_orset_add(&a, 0, &e, NULL));
    x = joined(&a, &b);
    CHECK(knit_orset_contains(&x, &e)); /* the add b did not see wins */
    knit_orset_free(&x);
    /* once b has seen that add, its remove removes the element everywhere */
    CHECK_OK(knit_orset_join(&b, &a));
    CHECK(knit_orset_contains(&b, &e));
    CHECK_OK(knit_orset_remove(&b, &e, NULL));
    CHECK_OK(knit_orset_join(&a, &b));
    CHECK(!knit_orset_contains(&a, &e));
    /* concurrent adds on two sites, one removed where only its own is seen */
    CHECK_OK(knit_orset_add(&a, 0, &e, NULL));
    CHECK_OK(knit_orset_add(&b, 1, &e, NULL));
    CHECK_OK(knit_orset_remove(&a, &e, NULL));
    CHECK_OK(knit_orset_join(&a, &b));
    CHECK(knit_orset_contains(&a, &e));
    CHECK_EQ_INT(a.elems[0].ndots, 1);
    CHECK_EQ_INT(a.elems[0].dots[0].site, 1);
    knit_orset_free(&a);
    knit_orset_free(&b);
}

/* A dot that arrives ahead of its predecessor waits in the cloud, and folds
** into the vector when the gap fills; a fresh dot after it skips past it. */
static void cloud_gap(void)
{
    knit_orset_t a, b, d1, d2, d3;
    knit_value_t e1 = elem(1), e2 = elem(5), e3 = elem(6);

    knit_orset_init(&a), knit_orset_init(&b);
    knit_orset_init(&d1), knit_orset_init(&d2), knit_orset_init(&d3);
    CHECK_OK(knit_orset_add(&a, 2, &e1, &d1));
    CHECK_OK(knit_orset_add(&a, 2, &e2, &d2));
    CHECK_OK(knit_orset_add(&a, 2, &e3, &d3));
    CHECK_OK(knit_orset_join(&b, &d3));
    CHECK(b.vv.len == 0 && b.ncloud == 1 && b.cloud[0].n == 3);
    CHECK_OK(knit_orset_join(&b, &d2));
    CHECK(b.vv.len == 0 && b.ncloud == 2);
    /* b issues a dot for site 2 itself (a copied replica): past the cloud */
    {
        knit_orset_t c;
        knit_value_t z = elem(0);
        CHECK_OK(knit_orset_copy(&c, &b));
        CHECK_OK(knit_orset_add(&c, 2, &z, NULL));
        check_inv(&c);
        CHECK(c.ncloud == 3 && c.cloud[2].n == 4);
        knit_orset_free(&c);
    }
    CHECK_OK(knit_orset_join(&b, &d1));
    CHECK(b.vv.len == 1 && b.vv.e[0].n == 3 && b.ncloud == 0);
    CHECK(knit_orset_equal(&a, &b));
    knit_orset_free(&a), knit_orset_free(&b);
    knit_orset_free(&d1), knit_orset_free(&d2), knit_orset_free(&d3);
}

static void json_out(void)
{
    knit_orset_t s;
    knit_value_t v;
    char *out;
    size_t n;
    static const char ctl[] = "q\"b\\c\x01\x1f\n\xc3\xa9\xf0\x9f\x98\x80";

    knit_orset_init(&s);
    CHECK_OK(knit_orset_json(&s, &out, &n));
    CHECK_STR(out, "[]");
    knit__free(out);
    v = elem(5);
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v = elem(4);
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v = elem(0);
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v.type = KNIT_INTEGER, v.u.i = -1;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v = elem(2);
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    CHECK_OK(knit_orset_json(&s, &out, &n));
    CHECK_STR(out, "[null,-1,1,2.5,\"a\"]");
    CHECK_EQ_INT(n, strlen(out));
    knit__free(out);
    knit_orset_free(&s);

    v.type = KNIT_REAL, v.u.r = 1e20;

    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v.u.r = -INFINITY;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v.u.r = INFINITY;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v.u.r = 0.1;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    v.type = KNIT_TEXT, v.u.b.p = ctl, v.u.b.n = sizeof ctl - 1;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    CHECK_OK(knit_orset_json(&s, &out, &n));
    CHECK_STR(out, "[-9e999,0.10000000000000001,1e+20,9e999,"
                   "\"q\\\"b\\\\c\\u0001\\u001f\\u000a\xc3\xa9\xf0\x9f\x98\x80\"]");
    knit__free(out);
    /* invalid UTF-8 (an overlong '/', a lone surrogate) and BLOBs refused */
    v.u.b.p = "\xc0\xaf", v.u.b.n = 2;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    out = NULL;
    CHECK_EQ_INT(knit_orset_json(&s, &out, &n), KNIT_EINVAL);
    CHECK(out == NULL);
    CHECK_OK(knit_orset_remove(&s, &v, NULL));
    v.u.b.p = "\xed\xa0\x80", v.u.b.n = 3;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    CHECK_EQ_INT(knit_orset_json(&s, &out, &n), KNIT_EINVAL);
    CHECK_OK(knit_orset_remove(&s, &v, NULL));
    v = elem(7);
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    CHECK_EQ_INT(knit_orset_json(&s, &out, &n), KNIT_EINVAL);
    CHECK_OK(knit_orset_remove(&s, &v, NULL));
    /* a REAL with no fraction beyond int64 still reads as a REAL */
    v.type = KNIT_REAL, v.u.r = 9223372036854775808.0;
    CHECK_OK(knit_orset_add(&s, 0, &v, NULL));
    CHECK_OK(knit_orset_json(&s, &out, &n));
    CHECK(strstr(out, ",9.2233720368547758e+18,") != NULL);
    knit__free(out);
    /* NaN has no encoding: refused, set unchanged */
    n = s.nelems;
    v.type = KNIT_REAL, v.u.r = NAN;
    CHECK_EQ_INT(knit_orset_add(&s, 0, &v, NULL), KNIT_EINVAL);
    CHECK_EQ_INT(s.nelems, n);
    knit_orset_free(&s);
}

/* Hand-made bytes for decode's refusals. */
static void decode_strict(void)
{
    static const struct {
        const char *bytes;
        size_t n;
        int rc;
    } cases[] = {
        {"\x00\x00\x00", 3, 0},                                     /* empty */
        {"\x01\x00\x01\x00\x00", 5, 0},                             /* vv {0:1} */
        {"\x01\x00\x00\x00\x00", 5, KNIT_ECORRUPT},                 /* vv n = 0 */
        {"\x02\x05\x01\x03\x01\x00\x00", 7, KNIT_ECORRUPT},         /* vv unsorted */
        {"\x02\x05\x01\x05\x02\x00\x00", 7, KNIT_ECORRUPT},         /* vv duplicate */
        {"\x01\x00\x01\x01\x00\x02\x00", 7, KNIT_ECORRUPT},         /* cloud extends vv */
        {"\x01\x00\x01\x01\x00\x01\x00", 7, KNIT_ECORRUPT},         /* cloud under vv */
        {"\x00\x01\x00\x01\x00", 5, KNIT_ECORRUPT},                 /* cloud (0,1) not compact */
        {"\x00\x01\x00\x03\x00", 5, 0},                             /* cloud (0,3) beyond a gap */
        {"\x00\x02\x00\x03\x00\x03\x00", 7, KNIT_ECORRUPT},         /* cloud duplicate */
        {"\x01\x00\x01\x00\x01\x00\x01\x00\x01", 9, 0},             /* {null: (0,1)} */
        {"\x01\x00\x01\x00\x01\x00\x01\x00\x02", 9, KNIT_ECORRUPT}, /* dot unseen */
        {"\x01\x00\x01\x00\x01\x00\x00\x00\x00", 9, KNIT_ECORRUPT}, /* ndots = 0 */
        {"\x01\x00\x01\x00\x01\x00\x00", 7, KNIT_ETRUNCATED},       /* too short for it */
        {"\x01\x00\x02\x00\x02\x00\x01\x00\x01\x00\x01\x00\x02", 13,
         KNIT_ECORRUPT}, /* null twice */
        {"\x01\x00\x02\x00\x02\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x01"
         "\x00\x01\x00\x02",
         21, KNIT_ECORRUPT}, /* 1 before null */
        {"\x01\x00\x01\x00\x01\x02\x3f\xf0\x00\x00\x00\x00\x00\x00\x01\x00\x01", 17,
         KNIT_ECORRUPT}, /* REAL 1.0 is not canonical */
        {"\x01\x00\x01\x00\x01\x00\x02\x00\x01\x00\x01", 11, KNIT_ECORRUPT}, /* dots dup */
        {"\x00\x00\x00\x00", 4, KNIT_ECORRUPT},                              /* trailing */
        {"\xff\xff\xff\xff\x0f", 5, KNIT_ETRUNCATED},                        /* huge count */
        {"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, KNIT_ETRUNCATED},
        {"\x01\x80\x80\x80\x80\x10\x01\x00\x00", 9, KNIT_ECORRUPT}, /* site > 2^32 */
        {"\x01\x80\x00\x01\x00\x00", 6, KNIT_ECORRUPT},             /* long varint */
        {"", 0, KNIT_ETRUNCATED},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        knit_orset_t s;
        int rc = knit_orset_decode((const uint8_t *)cases[i].bytes, cases[i].n, &s);
        if (rc != cases[i].rc)
            fprintf(stderr, "case %zu\n", i);
        CHECK_EQ_INT(rc, cases[i].rc);
        if (rc == 0) {
            uint8_t *p;
            size_t n;
            check_inv(&s);
            CHECK_OK(knit_orset_encode(&s, &p, &n));
            CHECK(n == cases[i].n && memcmp(p, cases[i].bytes, n) == 0);
            knit__free(p);
        }
        knit_orset_free(&s);
    }
}

static int has_cloud_site(const knit_orset_t *s, uint32_t site)
{
    size_t i;

    for (i = 0; i < s->ncloud; i++)
        if (s->cloud[i].site == site)
            return 1;
    return 0;
}

static void remap(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(2000);
    uint32_t fwd[18], back[18], bad[18];
    int k;

    /* a permutation of 0..17 that reverses, and its inverse */
    for (k = 0; k < 18; k++)
        fwd[k] = (uint32_t)(17 - k), back[17 - k] = (uint32_t)k, bad[k] = (uint32_t)(k / 5);
    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed ^ (0x7e3a + (uint64_t)i)};
        world_t w;
        knit_orset_t x, y, ym;

        knit_test_case_seed(seed ^ (0x7e3a + (uint64_t)i));
        world_run(&w, &r, (int)knit_rng_below(&r, 30));
        CHECK_OK(knit_orset_copy(&x, &w.s[0]));
        CHECK_OK(knit_orset_copy(&y, &w.s[1]));
        CHECK_OK(knit_orset_remap(&x, fwd, 18));
        check_inv(&x);
        /* join commutes with renumbering */
        CHECK_OK(knit_orset_remap(&y, fwd, 18));
        CHECK_OK(knit_orset_join(&x, &y));
        CHECK_OK(knit_orset_remap(&x, back, 18));
        ym = joined(&w.s[0], &w.s[1]);
        CHECK(knit_orset_equal(&x, &ym));
        /* refused mappings change nothing */
        knit_orset_free(&y);
        CHECK_OK(knit_orset_copy(&y, &x));
        {
            /* bad sends sites 0 and 4 both to 0 */
            int both = (knit_vv_get(&x.vv, 0) || (x.ncloud && x.cloud[0].site == 0)) &&
                       (knit_vv_get(&x.vv, 4) || has_cloud_site(&x, 4));
            int rc = knit_orset_remap(&x, bad, 18);
            CHECK_EQ_INT(rc, both ? KNIT_EINVAL : 0);
            if (rc)
                CHECK(knit_orset_equal(&x, &y));
            else
                check_inv(&x);
        }
        {
            /* only site 0 has a mapping in a one-entry map */
            int other = knit_vv_get(&y.vv, 4) || knit_vv_get(&y.vv, 17) || has_cloud_site(&y, 4) ||
                        has_cloud_site(&y, 17);
            CHECK_EQ_INT(knit_orset_remap(&y, fwd, 1), other ? KNIT_EINVAL : 0);
            if (other)
                CHECK(knit_orset_equal(&y, &ym));
        }
        knit_orset_free(&x), knit_orset_free(&y), knit_orset_free(&ym);
        world_free(&w);
    }
}

/* knit_orset_canonical() names sites by id: renumbering the state and the
** site table together leaves its bytes unchanged, while giving a dot to
** another site changes them. */
static void canonical_numbering(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(2000);
    knit_site_t ids[18], perm_ids[18];
    uint32_t perm[18];
    int k;

    for (k = 0; k < 18; k++) {
        memset(ids[k].b, 0, 16);
        ids[k].b[0] = (uint8_t)(200 - 7 * k); /* id order opposes index order */
        ids[k].b[15] = (uint8_t)k;
        perm[k] = (uint32_t)((k * 5 + 3) % 18); /* a permutation of 0..17 */
    }
    for (k = 0; k < 18; k++)
        perm_ids[perm[k]] = ids[k];
    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + 0xca11 * (uint64_t)i};
        world_t w;
        knit_orset_t x;
        uint8_t *p, *q;
        size_t np, nq;

        knit_test_case_seed(seed + 0xca11 * (uint64_t)i);
        world_run(&w, &r, (int)knit_rng_below(&r, 30));
        CHECK_OK(knit_orset_canonical(&w.s[0], ids, 18, &p, &np));
        CHECK_OK(knit_orset_copy(&x, &w.s[0]));
        CHECK_OK(knit_orset_remap(&x, perm, 18));
        CHECK_OK(knit_orset_canonical(&x, perm_ids, 18, &q, &nq));
        CHECK(np == nq && memcmp(p, q, np) == 0);
        knit__free(q);
        if (x.vv.len || x.ncloud) {
            /* the same numbers under other ids: different bytes */
            CHECK_OK(knit_orset_canonical(&x, ids, 18, &q, &nq));
            CHECK(np != nq || memcmp(p, q, np) != 0);
            knit__free(q);
            CHECK_EQ_INT(knit_orset_canonical(&w.s[0], ids, 17, &q, &nq),
                         knit_vv_get(&w.s[0].vv, 17) || has_cloud_site(&w.s[0], 17) ? KNIT_EINVAL
                                                                                    : 0);
            if (!(knit_vv_get(&w.s[0].vv, 17) || has_cloud_site(&w.s[0], 17)))
                knit__free(q);
        }
        knit__free(p);
        knit_orset_free(&x);
        world_free(&w);
    }
}

/* ---------------------------------------------------------------------- */
/* Allocation failure: fail the 1st, 2nd, ... allocation of each operation
** until it succeeds; every failure must return KNIT_ENOMEM and leave the
** set (and the delta accumulator) exactly as it was, and usable. */

enum {
    OP_ADD_NEW,
    OP_ADD_OLD,
    OP_REMOVE,
    OP_JOIN,
    OP_COPY,
    OP_ENCODE,
    OP_DECODE,
    OP_JSON,
    OP_REMAP,
    OP_COUNT
};

static int run_op(int op, knit_orset_t *s, knit_orset_t *delta, const knit_orset_t *other,
                  const uint8_t *bytes, size_t nbytes)
{
    static const uint32_t map[18] = {17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    knit_value_t fresh = {KNIT_TEXT, {0}};
    knit_orset_t tmp;
    uint8_t *p;
    char *j;
    size_t n;
    int rc;

    fresh.u.b.p = "fresh element";
    fresh.u.b.n = 13;
    switch (op) {
    case OP_ADD_NEW:
        return knit_orset_add(s, rep_site[0], &fresh, delta);
    case OP_ADD_OLD:
        return knit_orset_add(s, rep_site[1], &s->elems[0].v, delta);
    case OP_REMOVE:
        return knit_orset_remove(s, &s->elems[s->nelems - 1].v, delta);
    case OP_JOIN:
        return knit_orset_join(s, other);
    case OP_COPY:
        rc = knit_orset_copy(&tmp, s);
        if (rc == 0)
            CHECK(knit_orset_equal(&tmp, s));
        knit_orset_free(&tmp);
        return rc;
    case OP_ENCODE:
        rc = knit_orset_encode(s, &p, &n);
        if (rc == 0)
            knit__free(p);
        return rc;
    case OP_DECODE:
        rc = knit_orset_decode(bytes, nbytes, &tmp);
        if (rc == 0)
            CHECK(knit_orset_equal(&tmp, s));
        knit_orset_free(&tmp);
        return rc;
    case OP_JSON:
        rc = knit_orset_json(s, &j, &n);
        if (rc == 0)
            knit__free(j);
        return rc;
    default:
        return knit_orset_remap(s, map, 18);
    }
}

static void alloc_fail(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(300);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + 0xa110c * (uint64_t)i};
        world_t w;
        int op, sticky;

        knit_test_case_seed(seed + 0xa110c * (uint64_t)i);
        world_run(&w, &r, 10 + (int)knit_rng_below(&r, 30));
        for (op = 0; op < OP_COUNT; op++) {
            for (sticky = 0; sticky < 2; sticky++) {
                knit_orset_t s, before, delta, dbefore;
                uint8_t *bytes;
                size_t nbytes;
                long nth;
                int rc;
                knit_value_t e;

                CHECK_OK(knit_orset_copy(&s, &w.s[0]));
                /* JSON refuses BLOBs; keep them out of its runs */
                e = elem(7);
                if (op == OP_JSON)
                    CHECK_OK(knit_orset_remove(&s, &e, NULL));
                if (s.nelems == 0 && (op == OP_ADD_OLD || op == OP_REMOVE))
                    CHECK_OK(knit_orset_add(&s, rep_site[0], &e, NULL));
                knit_orset_init(&delta);
                if (w.nlog[1] && knit_rng_below(&r, 2))
                    CHECK_OK(knit_orset_join(&delta, &w.log[1][0]));
                CHECK_OK(knit_orset_copy(&before, &s));
                CHECK_OK(knit_orset_copy(&dbefore, &delta));
                CHECK_OK(knit_orset_encode(&s, &bytes, &nbytes));
                for (nth = 1;; nth++) {
                    knit__alloc_fail_at(nth, sticky);
                    rc = run_op(op, &s, &delta, &w.s[1], bytes, nbytes);
                    knit__alloc_fail_at(0, 0);
                    if (rc == 0)
                        break;
                    CHECK_EQ_INT(rc, KNIT_ENOMEM);
                    check_inv(&s);
                    CHECK(knit_orset_equal(&s, &before));
                    CHECK(knit_orset_equal(&delta, &dbefore));
                    CHECK(nth < 1000);
                }
                check_inv(&s);
                check_inv(&delta);
                /* still usable */
                e = elem(3);
                CHECK_OK(knit_orset_add(&s, rep_site[2], &e, &delta));
                CHECK_OK(knit_orset_join(&s, &w.s[2]));
                check_inv(&s);
                knit__free(bytes);
                knit_orset_free(&s), knit_orset_free(&before);
                knit_orset_free(&delta), knit_orset_free(&dbefore);
            }
        }
        world_free(&w);
    }
}

KNIT_TESTS(T(join_laws), T(delta_group), T(encode_roundtrip), T(churn_bounded), T(sequential_model),
           T(add_wins), T(cloud_gap), T(json_out), T(decode_strict), T(remap),
           T(canonical_numbering), T(alloc_fail))
