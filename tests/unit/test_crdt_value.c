/*
** test_crdt_value.c: value order, canonical form and encoding (crdt/value.h).
**
** SQLite itself is the oracle for the order: random pairs are compared both
** with knit_value_cmp() and with `?1 < ?2` / `?1 > ?2` in SQL, with the
** values bound exactly as the runtime binds them.  The generator leans on the
** hard spots: integers and reals around 2^53 and 2^63, signed zeros,
** infinities, and strings that share prefixes or contain NUL bytes.
*/
#include <math.h>
#include <sqlite3.h>

#include "test.h"
#include "value.h"

#define TWO53 9007199254740992.0
#define TWO63 9223372036854775808.0

static uint8_t pool[16][8]; /* byte strings values point into */

static void pool_init(knit_rng_t *r)
{
    size_t i, j;

    for (i = 0; i < 16; i++)
        for (j = 0; j < 8; j++)
            pool[i][j] =
                knit_rng_below(r, 4) == 0 ? (uint8_t)knit_rng_next(r) : (uint8_t) "ab\0z"[j % 4];
}

static int64_t gen_int(knit_rng_t *r)
{
    switch (knit_rng_below(r, 6)) {
    case 0:
        return (int64_t)knit_rng_below(r, 21) - 10;
    case 1:
        return (int64_t)(1ULL << 53) + (int64_t)knit_rng_below(r, 9) - 4;
    case 2:
        return -(int64_t)(1ULL << 53) + (int64_t)knit_rng_below(r, 9) - 4;
    case 3:
        return INT64_MAX - (int64_t)knit_rng_below(r, 2000);
    case 4:
        return INT64_MIN + (int64_t)knit_rng_below(r, 2000);
    default:
        return (int64_t)knit_rng_next(r) >> knit_rng_below(r, 64);
    }
}

static double gen_real(knit_rng_t *r)
{
    double d;

    switch (knit_rng_below(r, 8)) {
    case 0:
        return (double)((int64_t)knit_rng_below(r, 21) - 10) / 4;
    case 1:
        return nextafter(TWO53, 0) + (double)knit_rng_below(r, 6) - 2;
    case 2:
        d = TWO63;
        for (uint64_t k = knit_rng_below(r, 4); k; k--)
            d = nextafter(d, 0);
        return knit_rng_below(r, 2) ? d : -d;
    case 3:
        return knit_rng_below(r, 2) ? 0.0 : -0.0;
    case 4:
        return knit_rng_below(r, 2) ? INFINITY : -INFINITY;
    case 5:
        return (double)gen_int(r);
    case 6:
        return ldexp((double)(knit_rng_next(r) >> 11), (int)knit_rng_below(r, 200) - 100) *
               (knit_rng_below(r, 2) ? 1 : -1);
    default: {
        uint64_t bits = knit_rng_next(r);
        memcpy(&d, &bits, 8);
        return d != d ? 1.5 : d;
    }
    }
}

static knit_value_t gen_value(knit_rng_t *r)
{
    knit_value_t v;

    switch (knit_rng_below(r, 5)) {
    case 0:
        v.type = KNIT_NULL;
        break;
    case 1:
        v.type = KNIT_INTEGER;
        v.u.i = gen_int(r);
        break;
    case 2:
        v.type = KNIT_REAL;
        v.u.r = gen_real(r);
        break;
    default:
        v.type = knit_rng_below(r, 2) ? KNIT_TEXT : KNIT_BLOB;
        v.u.b.p = pool[knit_rng_below(r, 16)];
        v.u.b.n = (size_t)knit_rng_below(r, 9);
        break;
    }
    return v;
}

static void bind(sqlite3_stmt *st, int i, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        sqlite3_bind_int64(st, i, v->u.i);
        break;
    case KNIT_REAL:
        sqlite3_bind_double(st, i, v->u.r);
        break;
    case KNIT_TEXT:
        sqlite3_bind_text(st, i, (const char *)v->u.b.p, (int)v->u.b.n, SQLITE_STATIC);
        break;
    case KNIT_BLOB:
        sqlite3_bind_blob(st, i, v->u.b.p, (int)v->u.b.n, SQLITE_STATIC);
        break;
    default:
        sqlite3_bind_null(st, i);
    }
}

static int sign(int c)
{
    return c < 0 ? -1 : c > 0;
}

static knit_value_t vint(int64_t i)
{
    knit_value_t v;
    v.type = KNIT_INTEGER;
    v.u.i = i;
    return v;
}

static knit_value_t vreal(double r)
{
    knit_value_t v;
    v.type = KNIT_REAL;
    v.u.r = r;
    return v;
}

static knit_value_t vbytes(int type, const char *p, size_t n)
{
    knit_value_t v;
    v.type = type;
    v.u.b.p = p;
    v.u.b.n = n;
    return v;
}

/* Hand-picked pairs where rounding the integer to a double gives the wrong
** answer, or where types meet. */
static void cmp_edges(void)
{
    knit_value_t null = {KNIT_NULL, {0}};
    knit_value_t a, b;

    a = vint((int64_t)(1ULL << 53) + 1), b = vreal(TWO53);
    CHECK(knit_value_cmp(&a, &b) > 0 && knit_value_cmp(&b, &a) < 0);
    a = vint(INT64_MAX), b = vreal(TWO63);
    CHECK(knit_value_cmp(&a, &b) < 0 && knit_value_cmp(&b, &a) > 0);
    a = vint(INT64_MIN), b = vreal(-TWO63);
    CHECK(knit_value_cmp(&a, &b) == 0);
    a = vint(INT64_MIN + 1);
    CHECK(knit_value_cmp(&a, &b) > 0);
    a = vint(0), b = vreal(-0.0);
    CHECK(knit_value_cmp(&a, &b) == 0);
    a = vreal(0.0);
    CHECK(knit_value_cmp(&a, &b) == 0);
    a = vint(2), b = vreal(2.5);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vint(-3), b = vreal(-2.5);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vint(INT64_MAX), b = vreal(INFINITY);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vint(INT64_MIN), b = vreal(-INFINITY);
    CHECK(knit_value_cmp(&a, &b) > 0);
    a = vreal(NAN); /* treated as NULL */
    CHECK(knit_value_cmp(&a, &null) == 0);
    b = vint(INT64_MIN);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vbytes(KNIT_TEXT, "", 0), b = vreal(INFINITY);
    CHECK(knit_value_cmp(&a, &b) > 0);
    b = vbytes(KNIT_BLOB, "", 0);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vbytes(KNIT_TEXT, "ab", 2), b = vbytes(KNIT_TEXT, "ab\0", 3);
    CHECK(knit_value_cmp(&a, &b) < 0);
    a = vbytes(KNIT_BLOB, "\xff", 1), b = vbytes(KNIT_BLOB, "\x01\x02", 2);
    CHECK(knit_value_cmp(&a, &b) > 0);
}

static void cmp_vs_sqlite(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(20000);
    sqlite3 *db;
    sqlite3_stmt *st;

    CHECK_EQ_INT(sqlite3_open(":memory:", &db), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_prepare_v2(db,
                                    "SELECT CASE WHEN ?1 IS NULL AND ?2 IS NULL THEN 0 "
                                    "WHEN ?1 IS NULL THEN -1 WHEN ?2 IS NULL THEN 1 "
                                    "WHEN ?1 < ?2 THEN -1 WHEN ?1 > ?2 THEN 1 "
                                    "WHEN ?1 = ?2 THEN 0 ELSE 99 END",
                                    -1, &st, NULL),
                 SQLITE_OK);
    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        knit_value_t a, b;
        int want, got;

        knit_test_case_seed(seed + (uint64_t)i);
        pool_init(&r);
        a = gen_value(&r);
        b = knit_rng_below(&r, 8) ? gen_value(&r) : a;
        bind(st, 1, &a);
        bind(st, 2, &b);
        CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
        want = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        got = sign(knit_value_cmp(&a, &b));
        if (got != want)
            fprintf(stderr, "types %d %d\n", a.type, b.type);
        CHECK_EQ_INT(got, want);
        CHECK_EQ_INT(sign(knit_value_cmp(&b, &a)), -want);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void canon(void)
{
    knit_value_t v;

    v = vreal(1.0), knit_value_canon(&v);
    CHECK(v.type == KNIT_INTEGER && v.u.i == 1);
    v = vreal(-0.0), knit_value_canon(&v);
    CHECK(v.type == KNIT_INTEGER && v.u.i == 0);
    v = vreal(-TWO63), knit_value_canon(&v);
    CHECK(v.type == KNIT_INTEGER && v.u.i == INT64_MIN);
    v = vreal(TWO63), knit_value_canon(&v);
    CHECK(v.type == KNIT_REAL);
    v = vreal(nextafter(TWO63, 0)), knit_value_canon(&v);
    CHECK(v.type == KNIT_INTEGER && v.u.i == INT64_MAX - 1023);
    v = vreal(0.5), knit_value_canon(&v);
    CHECK(v.type == KNIT_REAL);
    v = vreal(INFINITY), knit_value_canon(&v);
    CHECK(v.type == KNIT_REAL);
    v = vreal(NAN), knit_value_canon(&v);
    CHECK(v.type == KNIT_REAL);
    v = vbytes(KNIT_TEXT, "1", 1), knit_value_canon(&v);
    CHECK(v.type == KNIT_TEXT);
}

/* Canonicalizing never changes where a value sorts. */
static void canon_property(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed ^ (uint64_t)i << 1};
        knit_value_t a, c, b;

        knit_test_case_seed(seed ^ (uint64_t)i << 1);
        pool_init(&r);
        a = gen_value(&r);
        b = gen_value(&r);
        c = a;
        knit_value_canon(&c);
        CHECK_EQ_INT(knit_value_cmp(&a, &c), 0);
        CHECK_EQ_INT(sign(knit_value_cmp(&a, &b)), sign(knit_value_cmp(&c, &b)));
        if (c.type == KNIT_REAL && a.type == KNIT_REAL)
            CHECK(!(a.u.r >= -TWO63 && a.u.r < TWO63) || a.u.r != floor(a.u.r));
    }
}

static void roundtrip(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed * 3 + (uint64_t)i};
        knit_value_t a, b;
        uint8_t buf[64], big[300];
        size_t len, used, k;

        knit_test_case_seed(seed * 3 + (uint64_t)i);
        pool_init(&r);
        a = gen_value(&r);
        if (a.type == KNIT_TEXT && knit_rng_below(&r, 4) == 0) {
            /* lengths that need a two-byte varint */
            memset(big, 'x', sizeof big);
            a.u.b.p = big;
            a.u.b.n = 100 + (size_t)knit_rng_below(&r, 200);
        }
        len = knit_value_encoded_size(&a);
        uint8_t *out = len <= sizeof buf ? buf : malloc(len);
        CHECK_EQ_INT(knit_value_encode(&a, out), len);
        CHECK_OK(knit_value_decode(out, len, &b, &used));
        CHECK_EQ_INT(used, len);
        CHECK_EQ_INT(b.type, a.type);
        switch (a.type) {
        case KNIT_INTEGER:
            CHECK(a.u.i == b.u.i);
            break;
        case KNIT_REAL:
            CHECK(memcmp(&a.u.r, &b.u.r, 8) == 0); /* the sign of zero too */
            break;
        case KNIT_TEXT:
        case KNIT_BLOB:
            CHECK(a.u.b.n == b.u.b.n && memcmp(a.u.b.p, b.u.b.p, a.u.b.n) == 0);
            CHECK(b.u.b.p == out + len - a.u.b.n);
            break;
        }
        /* Every strict prefix is truncated; trailing bytes are not read. */
        for (k = 0; k < len; k++)
            CHECK_EQ_INT(knit_value_decode(out, k, &b, &used), KNIT_ETRUNCATED);
        if (out != buf)
            free(out);
    }
}

static void decode_corrupt(void)
{
    uint8_t buf[16];
    knit_value_t v;
    size_t used;
    double nan = NAN;
    uint64_t bits;
    int t, k;

    for (t = 5; t < 256; t++) {
        buf[0] = (uint8_t)t;
        CHECK_EQ_INT(knit_value_decode(buf, sizeof buf, &v, &used), KNIT_ECORRUPT);
    }
    /* NaN, with any payload, is refused. */
    memcpy(&bits, &nan, 8);
    buf[0] = 0x02;
    for (k = 0; k < 8; k++)
        buf[1 + k] = (uint8_t)(bits >> (56 - 8 * k));
    CHECK_EQ_INT(knit_value_decode(buf, 9, &v, &used), KNIT_ECORRUPT);
    buf[8] ^= 1;
    CHECK_EQ_INT(knit_value_decode(buf, 9, &v, &used), KNIT_ECORRUPT);
    /* A length written long (0x80 0x00 for 0) is refused. */
    memcpy(buf, "\x03\x80\x00", 3);
    CHECK_EQ_INT(knit_value_decode(buf, 3, &v, &used), KNIT_ECORRUPT);
    /* A length beyond the input is truncation, not a read past the end. */
    memcpy(buf, "\x04\xff\xff\xff\xff\x0f", 6);
    CHECK_EQ_INT(knit_value_decode(buf, 6, &v, &used), KNIT_ETRUNCATED);
    CHECK_EQ_INT(knit_value_decode(buf, 0, &v, &used), KNIT_ETRUNCATED);
}

static void varint(void)
{
    uint64_t seed = knit_test_seed(), x, y;
    uint8_t buf[16];
    size_t n, used, k;
    long i;

    for (i = 0; i < knit_test_cases(10000); i++) {
        knit_rng_t r = {seed + 77 * (uint64_t)i};
        knit_test_case_seed(seed + 77 * (uint64_t)i);
        x = knit_rng_next(&r) >> knit_rng_below(&r, 64);
        n = knit_varint_put(buf, x);
        /* Shortest: exactly ceil(bits / 7) bytes. */
        for (k = 1, y = x >> 7; y; y >>= 7)
            k++;
        CHECK_EQ_INT(n, k);
        CHECK_OK(knit_varint_get(buf, n, &y, &used));
        CHECK(y == x && used == n);
        for (k = 0; k < n; k++)
            CHECK_EQ_INT(knit_varint_get(buf, k, &y, &used), KNIT_ETRUNCATED);
    }
    CHECK_EQ_INT(knit_varint_put(buf, UINT64_MAX), 10);
    CHECK_EQ_INT(buf[9], 1);
    CHECK_OK(knit_varint_get(buf, 10, &y, &used));
    CHECK(y == UINT64_MAX);
    buf[9] = 2; /* bit 64 */
    CHECK_EQ_INT(knit_varint_get(buf, 10, &y, &used), KNIT_ECORRUPT);
    buf[9] = 0x81; /* an 11th byte */
    buf[10] = 0;
    CHECK_EQ_INT(knit_varint_get(buf, 11, &y, &used), KNIT_ECORRUPT);
    memcpy(buf, "\x85\x00", 2); /* 5 written in two bytes */
    CHECK_EQ_INT(knit_varint_get(buf, 2, &y, &used), KNIT_ECORRUPT);
    memcpy(buf, "\x00", 1);
    CHECK_OK(knit_varint_get(buf, 1, &y, &used));
    CHECK(y == 0 && used == 1);
}

KNIT_TESTS(T(cmp_edges), T(cmp_vs_sqlite), T(canon), T(canon_property), T(roundtrip),
           T(decode_corrupt), T(varint))
