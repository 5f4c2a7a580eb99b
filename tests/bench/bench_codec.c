/*
** bench_codec.c: speed and size of the wire codec on 100k-change batches.
**
** For five batch shapes it prints encode and decode throughput (changes per
** second, best of several runs) and the protocol's cost per change: the
** frame's bytes minus the bytes of the keys and values as they appear on
** the wire (each key once per row, as sent), divided by the changes.  The
** goal (PROTOCOL.md section 4) is at most 8 bytes per LWW change.
**
**   inserts   20k units, each a new row: liveness + 4 columns (5 changes)
**   updates   100k units, each one column of an existing row
**   catchup   relay catch-up: a unit per sequence holding 1-5 cells of one
**             row, one stamp, one of 5 sites; some sequences skipped
**   mixed     pessimistic: units of 10 cells of 10 rows, 5 sites, stamps up
**             to an hour apart inside a unit
**   bulk      one unit of 20k rows x 5 changes, one stamp
**
** Usage: bench_codec [changes]   (default 100000)
*/
#include <cbor.h>
#include <float.h>
#include <math.h>
#include <time.h>

#include "codec.h"
#include "test.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CBOR head size for an argument v. */
static size_t head(uint64_t v)
{
    return v < 24 ? 1 : v <= 0xFF ? 2 : v <= 0xFFFF ? 3 : v <= 0xFFFFFFFF ? 5 : 9;
}

/* Bytes of v on the wire (PROTOCOL.md section 5). */
static size_t value_size(const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        return head(v->u.i >= 0 ? (uint64_t)v->u.i : ~(uint64_t)v->u.i);
    case KNIT_REAL: {
        double d = v->u.r;
        if (fabs(d) <= FLT_MAX && (double)(float)d == d) {
            /* half if 11 significant bits and the exponent fits */
            int e;
            double m = frexp(d, &e);
            if (d == 0 || isinf(d) || (e >= -13 && e <= 16 && ldexp(m, 11) == floor(ldexp(m, 11))))
                return 3;
            return 5;
        }
        return 9;
    }
    case KNIT_TEXT:
    case KNIT_BLOB:
        return head(v->u.b.n) + v->u.b.n;
    default:
        return 1;
    }
}

typedef struct shape_s {
    const char *name; /* shape name */
    size_t key_bytes; /* bytes of keys as sent (once per row) */
    size_t val_bytes; /* bytes of values as sent */
} shape_t;

static char texts[64][24]; /* value pool for TEXT columns */

static void add_row_cells(knit_batch_t *b, knit_rng_t *r, int64_t id, uint64_t hlc, uint32_t site,
                          const uint32_t *cols, size_t ncols, shape_t *sh, int new_row)
{
    knit_value_t pk = {.type = KNIT_INTEGER};
    pk.u.i = id;
    sh->key_bytes += value_size(&pk);
    for (size_t k = 0; k < ncols; k++) {
        knit_change_t c = {0};
        c.pk = &pk;
        c.col = cols[k];
        c.site = site;
        c.cl = 1;
        c.hlc = hlc;
        switch (c.col) {
        case 0:
            c.value.type = KNIT_NULL;
            break;
        case 1:
        case 4: {
            const char *t = texts[knit_rng_below(r, 64)];
            c.value.type = KNIT_TEXT;
            c.value.u.b.p = t;
            c.value.u.b.n = strlen(t);
            break;
        }
        case 2:
            c.value.type = KNIT_INTEGER;
            c.value.u.i = (int64_t)knit_rng_below(r, 1000);
            break;
        default:
            c.value.type = KNIT_REAL;
            c.value.u.r = (double)knit_rng_below(r, 2000) / 2.0;
        }
        if (c.col)
            sh->val_bytes += value_size(&c.value);
        CHECK_OK(knit_batch_add(b, &c));
    }
    (void)new_row;
}

static knit_batch_t *make(const char *shape, size_t nchanges, shape_t *sh)
{
    knit_rng_t r = {12345};
    knit_batch_t *b;
    uint32_t idx, sites[5];
    const char *cols[] = {"name", "qty", "price", "note"};
    uint8_t kinds[] = {0, 0, 0, 0};
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, "user:alice", &idx));
    for (int i = 0; i < 5; i++) {
        knit_site_t s;
        memset(s.b, i + 1, 16);
        CHECK_OK(knit_batch_site(b, &s, &sites[i]));
    }
    CHECK_OK(knit_batch_table(b, "items", 1, 4, cols, kinds, &idx));
    memset(sh, 0, sizeof *sh);
    sh->name = shape;
    uint64_t hlc = UINT64_C(1763700000000) << 16, version = 1000;
    size_t n = 0;
    if (!strcmp(shape, "inserts")) {
        static const uint32_t all[] = {0, 1, 2, 3, 4};
        for (int64_t id = 1; n < nchanges; id++, n += 5) {
            hlc += (1 + knit_rng_below(&r, 5000)) << 16;
            CHECK_OK(knit_batch_begin(b, ++version));
            add_row_cells(b, &r, id * 7919, hlc, sites[0], all, 5, sh, 1);
        }
    } else if (!strcmp(shape, "updates")) {
        for (; n < nchanges; n++) {
            uint32_t col = 1 + (uint32_t)knit_rng_below(&r, 4);
            hlc += (100 + knit_rng_below(&r, 60000)) << 16;
            CHECK_OK(knit_batch_begin(b, ++version));
            add_row_cells(b, &r, (int64_t)knit_rng_below(&r, 1000000), hlc, sites[0], &col, 1, sh,
                          0);
        }
    } else if (!strcmp(shape, "catchup")) {
        /* Relay sequences: each unit is what survives of one pushed unit:
        ** one row, 1-5 of its cells, one stamp, one of 5 sites; some
        ** sequences were superseded entirely and are skipped. */
        static const uint32_t all[] = {0, 1, 2, 3, 4};
        for (; n < nchanges;) {
            version += knit_rng_below(&r, 4) ? 1 : 2 + knit_rng_below(&r, 5);
            hlc += (1 + knit_rng_below(&r, 30000)) << 16;
            CHECK_OK(knit_batch_begin(b, version));
            size_t k = 1 + knit_rng_below(&r, 5);
            if (k > nchanges - n)
                k = nchanges - n;
            add_row_cells(b, &r, (int64_t)knit_rng_below(&r, 1000000), hlc,
                          sites[knit_rng_below(&r, 5)], all + 5 - k, k, sh, 0);
            n += k;
        }
    } else if (!strcmp(shape, "mixed")) {
        /* Pessimistic: units of 10 cells of different rows, 5 sites, and
        ** stamps up to an hour apart inside a unit (counter 0 or small). */
        for (; n < nchanges;) {
            CHECK_OK(knit_batch_begin(b, ++version));
            for (int k = 0; k < 10 && n < nchanges; k++, n++) {
                uint32_t col = (uint32_t)knit_rng_below(&r, 5);
                uint64_t h = hlc - (knit_rng_below(&r, 3600000) << 16);
                if (knit_rng_below(&r, 10) == 0)
                    h += 1 + knit_rng_below(&r, 3);
                add_row_cells(b, &r, (int64_t)knit_rng_below(&r, 1000000), h,
                              sites[knit_rng_below(&r, 5)], &col, 1, sh, 0);
            }
            hlc += 1000 << 16;
        }
    } else {
        static const uint32_t all[] = {0, 1, 2, 3, 4};
        CHECK_OK(knit_batch_begin(b, ++version));
        for (int64_t id = 1; n < nchanges; id++, n += 5)
            add_row_cells(b, &r, id, hlc, sites[0], all, 5, sh, 1);
    }
    return b;
}

int main(int argc, char **argv)
{
    size_t nchanges = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 100000;
    static const char *shapes[] = {"inserts", "updates", "catchup", "mixed", "bulk"};
    knit_rng_t r = {9};
    for (int i = 0; i < 64; i++) {
        size_t len = 3 + knit_rng_below(&r, 18);
        for (size_t k = 0; k < len; k++)
            texts[i][k] = (char)('a' + knit_rng_below(&r, 26));
        texts[i][len] = 0;
    }
    printf("%-8s %8s %10s %10s %10s %9s %12s %12s\n", "shape", "changes", "frame B", "keys B",
           "values B", "B/change", "enc chg/s", "dec chg/s");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        shape_t sh;
        knit_batch_t *b = make(shapes[s], nchanges, &sh);
        knit_msg_t m = {.type = KNIT_MSG_PUSH};
        m.u.push.id = 1;
        m.u.push.ns = "user:alice";
        m.u.push.batch = b;
        knit_buf_t buf = {0};
        double enc_best = 1e30, dec_best = 1e30;
        for (int run = 0; run < 7; run++) {
            buf.len = 0;
            double t0 = now_ms();
            CHECK_OK(knit_msg_encode(&m, NULL, &buf));
            double t1 = now_ms();
            knit_msg_t d;
            CHECK_OK(knit_msg_decode(buf.p + 4, buf.len - 4, NULL, &d, NULL));
            double t2 = now_ms();
            CHECK_EQ_INT(d.u.push.batch->nchanges, b->nchanges);
            knit_msg_free(&d);
            if (t1 - t0 < enc_best)
                enc_best = t1 - t0;
            if (t2 - t1 < dec_best)
                dec_best = t2 - t1;
        }
        double per =
            ((double)buf.len - (double)sh.key_bytes - (double)sh.val_bytes) / (double)b->nchanges;
        printf("%-8s %8zu %10zu %10zu %10zu %9.2f %12.0f %12.0f   (enc %.1f ms, dec %.1f ms)\n",
               sh.name, b->nchanges, buf.len, sh.key_bytes, sh.val_bytes, per,
               b->nchanges / enc_best * 1e3, b->nchanges / dec_best * 1e3, enc_best, dec_best);
        knit_buf_free(&buf);
        knit_batch_free(b);
    }
    return 0;
}
