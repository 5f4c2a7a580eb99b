/*
** test_crdt_digest.c: cell hashes and additive digests (crdt/digest.h).
**
** The cell byte format is pinned by hashes computed independently (Python's
** hashlib over the layout in digest.h), because replicas and the relay must
** agree on it bit for bit.  The digest's algebra is checked as properties:
** the order of adds does not matter, and sub undoes add.
*/
#include "digest.h"
#include "test.h"
#include "value.h"

static void hex32(const uint8_t h[32], char out[65])
{
    int i;

    for (i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static knit_cell_t sample(uint8_t pk[9], uint8_t val[4])
{
    knit_cell_t c;
    knit_value_t k = {KNIT_INTEGER, {7}}, v;
    int i;

    v.type = KNIT_TEXT;
    v.u.b.p = "hi";
    v.u.b.n = 2;
    knit_value_encode(&k, pk);
    knit_value_encode(&v, val);
    c.ns = "user:alice";
    c.table = "todo";
    c.pk = pk;
    c.pk_len = 9;
    c.column = "title";
    c.val = val;
    c.val_len = 4;
    c.cl = 1;
    c.hlc = knit_hlc_make(1795237306123, 42);
    for (i = 0; i < 16; i++)
        c.site.b[i] = (uint8_t)i;
    return c;
}

static void known_vectors(void)
{
    uint8_t pk[9], val[4], h[32], h2[32];
    static const uint8_t null_enc[1] = {0};
    knit_cell_t c = sample(pk, val);
    knit_digest_t d;
    char hex[65];

    knit_cell_hash(&c, h);
    hex32(h, hex);
    CHECK_STR(hex, "7232bca5a49d61a558445a8398dda80de3df287a5503670a5af32181ef7f31b2");
    knit_digest_zero(&d);
    knit_digest_add(&d, h);
    knit_digest_hex(&d, hex);
    CHECK_STR(hex, "b2317fef8121f35a0a6703557a28dfe30da8dd98835a4458a5619da4a5bc3272");
    /* the row's liveness cell: empty column, NULL value, cl 3 */
    c.column = "";
    c.val = null_enc;
    c.val_len = 1;
    c.cl = 3;
    c.hlc = 0;
    memset(c.site.b, 0, 16);
    knit_cell_hash(&c, h2);
    hex32(h2, hex);
    CHECK_STR(hex, "edc04817da95011ee65b644355000852f39890b41f500cb07ba0c1ef8cca1782");
    knit_digest_add(&d, h2);
    knit_digest_hex(&d, hex);
    CHECK_STR(hex, "34494a7c70e393d5ba7353752eb978d65fb0ddedc6bea03ec363337ebd04f35f");
}

/* Length prefixes keep field boundaries: moving a byte from one field to
** the next changes the hash; so does every other field. */
static void fields_matter(void)
{
    uint8_t pk[9], val[4], base[32], h[32];
    knit_cell_t c0 = sample(pk, val), c;

    knit_cell_hash(&c0, base);
    c = c0, c.ns = "user:alic", c.table = "etodo";
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.column = "titl";
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.pk_len = 8;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.val_len = 3;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.cl = 2;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.hlc++;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0, c.site.b[15] ^= 1;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) != 0);
    c = c0;
    knit_cell_hash(&c, h);
    CHECK(memcmp(h, base, 32) == 0);
}

static void carry_wraps(void)
{
    knit_digest_t d;
    uint8_t one[32] = {1}, ff[32];
    char hex[65];

    memset(ff, 0xff, 32);
    knit_digest_zero(&d);
    knit_digest_add(&d, ff);
    knit_digest_add(&d, one); /* 2^256 - 1 + 1 = 0 (mod 2^256) */
    knit_digest_hex(&d, hex);
    CHECK_STR(hex, "0000000000000000000000000000000000000000000000000000000000000000");
    knit_digest_sub(&d, one);
    knit_digest_hex(&d, hex);
    CHECK_STR(hex, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    knit_digest_zero(&d);
    knit_digest_add(&d, one);
    knit_digest_hex(&d, hex);
    CHECK_STR(hex, "0000000000000000000000000000000000000000000000000000000000000001");
}

/* Any order of adds gives one digest; subtracting in any other order
** returns to zero; a digest with a cell twice differs from once. */
static void order_free(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        uint8_t h[8][32];
        int perm[8], m = 1 + (int)knit_rng_below(&r, 8), k;
        knit_digest_t a, b, z;

        knit_test_case_seed(seed + (uint64_t)i);
        for (k = 0; k < m; k++) {
            int j;
            for (j = 0; j < 32; j++)
                h[k][j] = (uint8_t)(knit_rng_below(&r, 4) ? knit_rng_next(&r) : 0xff);
            perm[k] = k;
        }
        for (k = m - 1; k > 0; k--) {
            int j = (int)knit_rng_below(&r, (uint64_t)k + 1), t = perm[k];
            perm[k] = perm[j], perm[j] = t;
        }
        knit_digest_zero(&a), knit_digest_zero(&b), knit_digest_zero(&z);
        for (k = 0; k < m; k++) {
            knit_digest_add(&a, h[k]);
            knit_digest_add(&b, h[perm[k]]);
        }
        CHECK(knit_digest_equal(&a, &b));
        knit_digest_add(&b, h[0]);
        CHECK(!knit_digest_equal(&a, &b));
        knit_digest_sub(&b, h[0]);
        CHECK(knit_digest_equal(&a, &b));
        for (k = 0; k < m; k++) /* a rotation of the order they went in */
            knit_digest_sub(&b, h[perm[(k + 1) % m]]);
        CHECK(knit_digest_equal(&b, &z));
    }
}

KNIT_TESTS(T(known_vectors), T(fields_matter), T(carry_wraps), T(order_free))
