/*
** digest.c: additive multiset hash of cells (format in digest.h).
**
** Summing hashes modulo 2^256 rather than XOR-ing them keeps a cell that is
** present twice from cancelling out, and subtraction undoes an add exactly,
** so a replica updates its digest per change instead of rehashing its state.
**
** The cell bytes hashed, every string and byte run prefixed by its length
** as a varint (the domain tag too, so the tag is "\x0bknit.cell.1"):
**
**   varint(11) "knit.cell.1"
**   varint(len) ns   varint(len) table   varint(len) pk   varint(len) column
**   varint(len) value   varint(cl)   hlc (8 bytes, big-endian)   site (16 bytes)
*/
#include "digest.h"

#include <bearssl.h>
#include <string.h>

#include "value.h"

#define CELL_TAG "knit.cell.1"

static void put_bytes(br_sha256_context *h, const void *p, size_t n)
{
    uint8_t len[KNIT_VARINT_MAX];

    br_sha256_update(h, len, knit_varint_put(len, n));
    if (n)
        br_sha256_update(h, p, n);
}

static void put_str(br_sha256_context *h, const char *s)
{
    /* A NULL name hashes like "", the liveness column's name. */
    put_bytes(h, s ? s : "", s ? strlen(s) : 0);
}

void knit_cell_hash(const knit_cell_t *c, uint8_t h[32]) /* see digest.h */
{
    br_sha256_context ctx;
    uint8_t tail[KNIT_VARINT_MAX + 8 + 16];
    size_t k;
    int i;

    br_sha256_init(&ctx);
    put_bytes(&ctx, CELL_TAG, sizeof CELL_TAG - 1);
    put_str(&ctx, c->ns);
    put_str(&ctx, c->table);
    put_bytes(&ctx, c->pk, c->pk_len);
    put_str(&ctx, c->column);
    put_bytes(&ctx, c->val, c->val_len);
    k = knit_varint_put(tail, c->cl);
    for (i = 7; i >= 0; i--)
        tail[k++] = (uint8_t)(c->hlc >> (8 * i));
    memcpy(tail + k, c->site.b, 16);
    k += 16;
    br_sha256_update(&ctx, tail, k);
    br_sha256_out(&ctx, h);
}

void knit_digest_zero(knit_digest_t *d) /* see digest.h */
{
    memset(d->b, 0, sizeof d->b);
}

/* The hash is read as a little-endian number, like the sum it joins. */
void knit_digest_add(knit_digest_t *d, const uint8_t h[32]) /* see digest.h */
{
    unsigned carry = 0;
    int i;

    for (i = 0; i < 32; i++) {
        unsigned s = (unsigned)d->b[i] + h[i] + carry;
        d->b[i] = (uint8_t)s;
        carry = s >> 8;
    }
}

void knit_digest_sub(knit_digest_t *d, const uint8_t h[32]) /* see digest.h */
{
    unsigned borrow = 0;
    int i;

    for (i = 0; i < 32; i++) {
        unsigned s = (unsigned)d->b[i] - h[i] - borrow;
        d->b[i] = (uint8_t)s;
        borrow = (s >> 8) & 1;
    }
}

int knit_digest_equal(const knit_digest_t *a, const knit_digest_t *b) /* see digest.h */
{
    return memcmp(a->b, b->b, sizeof a->b) == 0;
}

void knit_digest_hex(const knit_digest_t *d, char out[65]) /* see digest.h */
{
    static const char hex[] = "0123456789abcdef";
    int i;

    for (i = 0; i < 32; i++) {
        out[2 * i] = hex[d->b[31 - i] >> 4];
        out[2 * i + 1] = hex[d->b[31 - i] & 15];
    }
    out[64] = '\0';
}
