/*
** value.c: order, canonical form and byte encoding of SQLite values.
**
** Every replica must agree on when two values are equal and which one sorts
** first (OR-set elements are kept sorted and unique by this order), and every
** replica must turn a value into the same bytes (digests hash them).  So the
** comparison here is exact where C's usual arithmetic is not: an INTEGER is
** compared with a REAL by numeric value without first rounding the integer
** to a double, which would make 2^53 + 1 "equal" to 2^53.
*/
#include "value.h"

#include <string.h>

/* 2^63 as a double; every double at or above it is beyond int64. */
#define TWO63 9223372036854775808.0

/* SQLite sorts NULL, then numbers, then TEXT, then BLOB.  A NaN REAL is
** treated as NULL, as sqlite3_bind_double() does with it, so the order stays
** total even if a caller hands one in (decoding never produces one). */
static int rank(const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        return 1;
    case KNIT_REAL:
        return v->u.r != v->u.r ? 0 : 1;
    case KNIT_TEXT:
        return 2;
    case KNIT_BLOB:
        return 3;
    default:
        return 0;
    }
}

/* Exact order of integer i and non-NaN double r.  When r lies inside the
** int64 range its truncation t is an int64 that converts back to a double
** exactly (below 2^53 every integer is a double; at or above it r is already
** an integer), so comparing i with t and then r with (double)t never rounds. */
static int cmp_int_real(int64_t i, double r)
{
    int64_t t;
    double dt;

    if (r < -TWO63)
        return 1;
    if (r >= TWO63)
        return -1;
    t = (int64_t)r;
    if (i != t)
        return i < t ? -1 : 1;
    dt = (double)t;
    if (r > dt)
        return -1;
    if (r < dt)
        return 1;
    return 0;
}

/* memcmp over the common prefix, then the shorter sorts first: SQLite's
** BINARY collation and its BLOB order. */
static int cmp_bytes(const knit_value_t *a, const knit_value_t *b)
{
    size_t n = a->u.b.n < b->u.b.n ? a->u.b.n : b->u.b.n;
    int c = n ? memcmp(a->u.b.p, b->u.b.p, n) : 0;

    if (c)
        return c < 0 ? -1 : 1;
    if (a->u.b.n != b->u.b.n)
        return a->u.b.n < b->u.b.n ? -1 : 1;
    return 0;
}

int knit_value_cmp(const knit_value_t *a, const knit_value_t *b) /* see value.h */
{
    int ra = rank(a), rb = rank(b);

    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 0:
        return 0;
    case 1:
        if (a->type == KNIT_INTEGER && b->type == KNIT_INTEGER)
            return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
        if (a->type == KNIT_REAL && b->type == KNIT_REAL)
            return a->u.r < b->u.r ? -1 : a->u.r > b->u.r; /* -0.0 == 0.0 */
        if (a->type == KNIT_INTEGER)
            return cmp_int_real(a->u.i, b->u.r);
        return -cmp_int_real(b->u.i, a->u.r);
    default:
        return cmp_bytes(a, b);
    }
}

void knit_value_canon(knit_value_t *v) /* see value.h */
{
    double r;
    int64_t t;

    if (v->type != KNIT_REAL)
        return;
    r = v->u.r;
    /* NaN fails both range tests and stays a REAL. */
    if (!(r >= -TWO63 && r < TWO63))
        return;
    t = (int64_t)r;
    if ((double)t == r) {
        v->type = KNIT_INTEGER;
        v->u.i = t; /* -0.0 becomes 0, as it compares equal to it */
    }
}

/* ---------------------------------------------------------------------- */
/* varints: LEB128, shortest form only.
**
**   byte 0: bits 0..6 | 0x80 if more follow
**   byte 1: bits 7..13 | 0x80 if more follow
**   ...
**   byte 9: bit 63 (only 0x01 is possible there)
*/

size_t knit_varint_put(uint8_t *out, uint64_t x) /* see value.h */
{
    size_t n = 0;

    while (x >= 0x80) {
        out[n++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    out[n++] = (uint8_t)x;
    return n;
}

int knit_varint_get(const uint8_t *p, size_t n, uint64_t *x, size_t *used) /* see value.h */
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < KNIT_VARINT_MAX; i++) {
        uint8_t b;
        if (i == n)
            return KNIT_ETRUNCATED;
        b = p[i];
        if (i == KNIT_VARINT_MAX - 1 && b > 1)
            return KNIT_ECORRUPT; /* more than 64 bits, or a continuation */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return KNIT_ECORRUPT; /* a redundant zero group */
            *x = v;
            *used = i + 1;
            return 0;
        }
    }
    return KNIT_ECORRUPT; /* unreachable: byte 9 cannot continue */
}

static size_t varint_len(uint64_t x)
{
    size_t n = 1;

    while (x >= 0x80) {
        x >>= 7;
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* Value encoding (layout in value.h). */

static void put_be64(uint8_t *out, uint64_t x)
{
    int i;

    for (i = 7; i >= 0; i--) {
        out[i] = (uint8_t)x;
        x >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t x = 0;
    int i;

    for (i = 0; i < 8; i++)
        x = (x << 8) | p[i];
    return x;
}

size_t knit_value_encoded_size(const knit_value_t *v) /* see value.h */
{
    switch (v->type) {
    case KNIT_INTEGER:
    case KNIT_REAL:
        return 9;
    case KNIT_TEXT:
    case KNIT_BLOB:
        return 1 + varint_len(v->u.b.n) + v->u.b.n;
    default:
        return 1;
    }
}

size_t knit_value_encode(const knit_value_t *v, uint8_t *out) /* see value.h */
{
    uint64_t bits;
    size_t k;

    switch (v->type) {
    case KNIT_INTEGER:
        out[0] = 0x01;
        put_be64(out + 1, (uint64_t)v->u.i);
        return 9;
    case KNIT_REAL:
        out[0] = 0x02;
        memcpy(&bits, &v->u.r, 8);
        put_be64(out + 1, bits);
        return 9;
    case KNIT_TEXT:
    case KNIT_BLOB:
        out[0] = v->type == KNIT_TEXT ? 0x03 : 0x04;
        k = 1 + knit_varint_put(out + 1, v->u.b.n);
        if (v->u.b.n)
            memcpy(out + k, v->u.b.p, v->u.b.n);
        return k + v->u.b.n;
    default:
        out[0] = 0x00;
        return 1;
    }
}

int knit_value_decode(const uint8_t *p, size_t n, knit_value_t *v, size_t *used) /* see value.h */
{
    uint64_t len, bits;
    size_t k;
    double r;
    int rc;

    if (n == 0)
        return KNIT_ETRUNCATED;
    switch (p[0]) {
    case 0x00:
        v->type = KNIT_NULL;
        *used = 1;
        return 0;
    case 0x01:
    case 0x02:
        if (n < 9)
            return KNIT_ETRUNCATED;
        bits = get_be64(p + 1);
        if (p[0] == 0x01) {
            v->type = KNIT_INTEGER;
            v->u.i = (int64_t)bits;
        } else {
            memcpy(&r, &bits, 8);
            if (r != r)
                return KNIT_ECORRUPT;
            v->type = KNIT_REAL;
            v->u.r = r;
        }
        *used = 9;
        return 0;
    case 0x03:
    case 0x04:
        rc = knit_varint_get(p + 1, n - 1, &len, &k);
        if (rc)
            return rc;
        if (len > n - 1 - k)
            return KNIT_ETRUNCATED;
        v->type = p[0] == 0x03 ? KNIT_TEXT : KNIT_BLOB;
        v->u.b.p = p + 1 + k;
        v->u.b.n = (size_t)len;
        *used = 1 + k + (size_t)len;
        return 0;
    default:
        return KNIT_ECORRUPT;
    }
}
