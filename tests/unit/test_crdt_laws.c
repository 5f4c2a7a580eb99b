/*
** test_crdt_laws.c: the merge laws of the small CRDTs, LWW registers,
** causal lengths and version vectors (crdt/lww.h, crdt/vv.h).
**
** Each merge must be commutative, associative and idempotent, which is what
** lets replicas apply changes in any order, any number of times.  The laws
** are checked over seeded random states drawn from small domains, so that
** ties (equal stamps, equal sites, equal counters) happen often.
*/
#include "alloc.h"
#include "lww.h"
#include "test.h"
#include "vv.h"

/* ---------------------------------------------------------------------- */
/* LWW registers. */

static knit_site_t site_of(unsigned k)
{
    knit_site_t s;

    memset(s.b, 0, sizeof s.b);
    s.b[0] = (uint8_t)(k >> 1); /* sites differ in the first and last byte */
    s.b[15] = (uint8_t)k;
    return s;
}

/* A register state.  Its value is a function of its stamp, as in reality:
** one site never writes two values under one stamp. */
static knit_lww_t gen_lww(knit_rng_t *r)
{
    knit_lww_t w;

    w.cl = 1 + knit_rng_below(r, 3);
    w.hlc = knit_hlc_make(1000 + knit_rng_below(r, 2), (unsigned)knit_rng_below(r, 2));
    w.site = site_of((unsigned)knit_rng_below(r, 3));
    w.value.type = KNIT_INTEGER;
    w.value.u.i = (int64_t)(w.cl * 1000003 + w.hlc * 31 + w.site.b[15]);
    return w;
}

static int lww_same(const knit_lww_t *a, const knit_lww_t *b)
{
    return knit_lww_cmp(a, b) == 0 && a->value.type == b->value.type &&
           a->value.u.i == b->value.u.i;
}

static void lww_laws(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        knit_lww_t a, b, c, x, y;
        int changed;

        knit_test_case_seed(seed + (uint64_t)i);
        a = gen_lww(&r), b = gen_lww(&r), c = gen_lww(&r);
        /* commutative */
        x = a, knit_lww_merge(&x, &b);
        y = b, knit_lww_merge(&y, &a);
        CHECK(lww_same(&x, &y));
        /* associative */
        x = a, knit_lww_merge(&x, &b), knit_lww_merge(&x, &c);
        y = b, knit_lww_merge(&y, &c);
        {
            knit_lww_t z = a;
            knit_lww_merge(&z, &y);
            CHECK(lww_same(&x, &z));
        }
        /* idempotent, and the return value says whether it changed */
        x = a;
        CHECK_EQ_INT(knit_lww_merge(&x, &a), 0);
        CHECK(lww_same(&x, &a));
        x = a;
        changed = knit_lww_merge(&x, &b);
        CHECK_EQ_INT(changed, knit_lww_cmp(&b, &a) > 0);
        CHECK(knit_lww_cmp(&x, &a) >= 0 && knit_lww_cmp(&x, &b) >= 0);
        /* the order itself: cl first, then hlc, then site */
        if (a.cl != b.cl)
            CHECK((knit_lww_cmp(&a, &b) < 0) == (a.cl < b.cl));
        else if (a.hlc != b.hlc)
            CHECK((knit_lww_cmp(&a, &b) < 0) == (a.hlc < b.hlc));
        else
            CHECK((knit_lww_cmp(&a, &b) < 0) == (memcmp(a.site.b, b.site.b, 16) < 0));
    }
}

/* A later life of the row beats any write of an earlier one, whatever the
** clocks say; equal stamps fall to the larger site. */
static void lww_cases(void)
{
    knit_lww_t old = {1, knit_hlc_make(9999, 0), site_of(9), {KNIT_INTEGER, {1}}};
    knit_lww_t del = {2, knit_hlc_make(5, 0), site_of(1), {KNIT_NULL, {0}}};
    knit_lww_t x = del;

    CHECK_EQ_INT(knit_lww_merge(&x, &old), 0);
    CHECK(x.cl == 2);
    x = old;
    CHECK_EQ_INT(knit_lww_merge(&x, &del), 1);
    CHECK(x.cl == 2 && x.value.type == KNIT_NULL);
    old.cl = 2;
    del.hlc = old.hlc;
    x = old;
    CHECK_EQ_INT(knit_lww_merge(&x, &del), 0); /* site 9 > site 1 */
}

/* ---------------------------------------------------------------------- */
/* Causal lengths. */

static void cl_laws(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed ^ (uint64_t)i * 7919};
        uint64_t a = knit_rng_below(&r, 8), b = knit_rng_below(&r, 8), c = knit_rng_below(&r, 8);

        knit_test_case_seed(seed ^ (uint64_t)i * 7919);
        CHECK(knit_cl_merge(a, b) == knit_cl_merge(b, a));
        CHECK(knit_cl_merge(knit_cl_merge(a, b), c) == knit_cl_merge(a, knit_cl_merge(b, c)));
        CHECK(knit_cl_merge(a, a) == a);
        CHECK(knit_cl_merge(a, b) >= a && knit_cl_merge(a, b) >= b);
        /* delete makes it even (dead), insert odd (live), each a no-op
        ** when the row is already in that state */
        CHECK(!knit_cl_live(knit_cl_delete(a)) || a == 0);
        CHECK(knit_cl_live(knit_cl_insert(a)));
        CHECK(knit_cl_delete(a) - a <= 1 && knit_cl_insert(a) - a <= 1);
        CHECK(knit_cl_insert(knit_cl_insert(a)) == knit_cl_insert(a));
        CHECK(knit_cl_delete(knit_cl_delete(a)) == knit_cl_delete(a));
    }
    CHECK_EQ_INT(knit_cl_insert(0), 1);
    CHECK_EQ_INT(knit_cl_delete(1), 2);
    CHECK_EQ_INT(knit_cl_insert(2), 3);
    CHECK_EQ_INT(knit_cl_delete(0), 0); /* never inserted: stays */
}

/* ---------------------------------------------------------------------- */
/* Version vectors, checked against a dense array model. */

#define NSITES 6

static void gen_vv(knit_rng_t *r, knit_vv_t *v, uint64_t model[NSITES])
{
    uint32_t s;

    knit_vv_init(v);
    for (s = 0; s < NSITES; s++) {
        model[s] = knit_rng_below(r, 3) ? 0 : knit_rng_below(r, 4);
        if (knit_rng_below(r, 2))
            CHECK_OK(knit_vv_set(v, s * 1000, model[s])); /* sparse site numbers */
    }
    /* set again in another order, so insertion and overwrite both run */
    for (s = NSITES; s-- > 0;)
        CHECK_OK(knit_vv_set(v, s * 1000, model[s]));
}

static void vv_check(const knit_vv_t *v, const uint64_t model[NSITES])
{
    size_t i, live = 0;
    uint32_t s;

    for (s = 0; s < NSITES; s++) {
        CHECK(knit_vv_get(v, s * 1000) == model[s]);
        CHECK(knit_vv_get(v, s * 1000 + 1) == 0);
        live += model[s] != 0;
    }
    CHECK_EQ_INT(v->len, live);
    for (i = 0; i < v->len; i++) {
        CHECK(v->e[i].n > 0);
        CHECK(i == 0 || v->e[i - 1].site < v->e[i].site);
    }
}

static int vv_same(const knit_vv_t *a, const knit_vv_t *b)
{
    size_t i;

    if (a->len != b->len)
        return 0;
    for (i = 0; i < a->len; i++)
        if (a->e[i].site != b->e[i].site || a->e[i].n != b->e[i].n)
            return 0;
    return 1;
}

static int model_cmp(const uint64_t a[NSITES], const uint64_t b[NSITES])
{
    int am = 0, bm = 0, s;

    for (s = 0; s < NSITES; s++)
        am |= a[s] > b[s], bm |= b[s] > a[s];
    return am && bm ? KNIT_VV_CONCURRENT : am ? KNIT_VV_AFTER : bm ? KNIT_VV_BEFORE : KNIT_VV_EQUAL;
}

static void vv_laws(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + 0x1234567 * (uint64_t)i};
        knit_vv_t a, b, c, x, y, z;
        uint64_t ma[NSITES], mb[NSITES], mc[NSITES], mx[NSITES];
        int s;

        knit_test_case_seed(seed + 0x1234567 * (uint64_t)i);
        gen_vv(&r, &a, ma), gen_vv(&r, &b, mb), gen_vv(&r, &c, mc);
        vv_check(&a, ma);
        CHECK_EQ_INT(knit_vv_compare(&a, &b), model_cmp(ma, mb));
        CHECK_EQ_INT(knit_vv_compare(&a, &a), KNIT_VV_EQUAL);
        /* merge = pointwise max */
        CHECK_OK(knit_vv_copy(&x, &a));
        CHECK_OK(knit_vv_merge(&x, &b));
        for (s = 0; s < NSITES; s++)
            mx[s] = ma[s] > mb[s] ? ma[s] : mb[s];
        vv_check(&x, mx);
        CHECK(knit_vv_compare(&a, &x) == KNIT_VV_EQUAL ||
              knit_vv_compare(&a, &x) == KNIT_VV_BEFORE);
        CHECK(knit_vv_compare(&x, &b) == KNIT_VV_EQUAL || knit_vv_compare(&x, &b) == KNIT_VV_AFTER);
        /* commutative */
        CHECK_OK(knit_vv_copy(&y, &b));
        CHECK_OK(knit_vv_merge(&y, &a));
        CHECK(vv_same(&x, &y));
        /* associative */
        CHECK_OK(knit_vv_merge(&x, &c));
        knit_vv_free(&y);
        CHECK_OK(knit_vv_copy(&y, &b));
        CHECK_OK(knit_vv_merge(&y, &c));
        CHECK_OK(knit_vv_copy(&z, &a));
        CHECK_OK(knit_vv_merge(&z, &y));
        CHECK(vv_same(&x, &z));
        /* idempotent */
        knit_vv_free(&z);
        CHECK_OK(knit_vv_copy(&z, &x));
        CHECK_OK(knit_vv_merge(&z, &x));
        CHECK_OK(knit_vv_merge(&z, &c));
        CHECK(vv_same(&x, &z));
        knit_vv_free(&a), knit_vv_free(&b), knit_vv_free(&c);
        knit_vv_free(&x), knit_vv_free(&y), knit_vv_free(&z);
    }
}

static void vv_remap(void)
{
    knit_vv_t v;
    uint32_t rev[] = {3, 2, 1, 0}, dup[] = {0, 0, 1, 2};

    knit_vv_init(&v);
    CHECK_OK(knit_vv_set(&v, 0, 10));
    CHECK_OK(knit_vv_set(&v, 2, 20));
    CHECK_OK(knit_vv_set(&v, 3, 30));
    CHECK_OK(knit_vv_remap(&v, rev, 4));
    CHECK(v.len == 3 && v.e[0].site == 0 && v.e[0].n == 30 && v.e[1].site == 1 && v.e[1].n == 20 &&
          v.e[2].site == 3 && v.e[2].n == 10);
    /* two sites onto one, or a site with no mapping: refused, unchanged */
    CHECK_EQ_INT(knit_vv_remap(&v, dup, 4), KNIT_EINVAL);
    CHECK_EQ_INT(knit_vv_remap(&v, rev, 3), KNIT_EINVAL);
    CHECK(v.len == 3 && v.e[0].n == 30 && v.e[2].site == 3);
    CHECK_OK(knit_vv_set(&v, 1, 0)); /* 0 removes */
    CHECK(v.len == 2 && knit_vv_get(&v, 1) == 0);
    knit_vv_free(&v);
    knit_vv_free(NULL);
}

/* Every allocation failure leaves the vector as it was. */
static void vv_alloc_fail(void)
{
    knit_vv_t a, b, before;
    uint32_t s, map[8] = {7, 6, 5, 4, 3, 2, 1, 0};
    long nth;
    int rc;

    knit_vv_init(&a);
    knit_vv_init(&b);
    for (s = 0; s < 8; s += 2)
        CHECK_OK(knit_vv_set(&a, s, s + 1));
    for (s = 1; s < 8; s += 2)
        CHECK_OK(knit_vv_set(&b, s, s + 5));
    CHECK_OK(knit_vv_copy(&before, &a));
    for (nth = 1;; nth++) {
        knit__alloc_fail_at(nth, 0);
        rc = knit_vv_merge(&a, &b);
        knit__alloc_fail_at(0, 0);
        if (rc == 0)
            break;
        CHECK_EQ_INT(rc, KNIT_ENOMEM);
        CHECK(vv_same(&a, &before));
    }
    CHECK_EQ_INT(a.len, 8);
    knit__alloc_fail_at(1, 1);
    CHECK_EQ_INT(knit_vv_remap(&a, map, 8), KNIT_ENOMEM);
    CHECK_EQ_INT(knit_vv_set(&before, 99, 1), KNIT_ENOMEM);
    knit_vv_free(&b);
    CHECK_EQ_INT(knit_vv_copy(&b, &a), KNIT_ENOMEM);
    knit__alloc_fail_at(0, 0);
    CHECK(a.len == 8 && a.e[0].site == 0 && knit_vv_get(&before, 99) == 0 && b.len == 0);
    knit_vv_free(&a);
    knit_vv_free(&b);
    knit_vv_free(&before);
}

KNIT_TESTS(T(lww_laws), T(lww_cases), T(cl_laws), T(vv_laws), T(vv_remap), T(vv_alloc_fail))
