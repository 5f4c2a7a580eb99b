/*
** bench_crdt.c: throughput of the CRDT core's hot operations.
**
** Each figure runs its operation in a loop for a fixed count, timed with
** CLOCK_MONOTONIC, and prints one line "name: N ops/s".  The shapes are the
** ones the runtime sees: LWW merges of cell stamps, OR-set operations on a
** set of 100 elements, joins of one operation's delta into such a set and of
** two such sets, digest updates of a typical cell, and HLC stamps.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "digest.h"
#include "lww.h"
#include "orset.h"

#define SET_SIZE 100

static volatile uint64_t sink; /* keeps results observable to the compiler */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *name, long ops, double t0)
{
    double dt = now() - t0;

    printf("%-28s %12.0f ops/s  (%ld ops in %.3f s)\n", name, (double)ops / dt, ops, dt);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void die(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "%s: %s\n", what, knit_strerror(rc));
        exit(1);
    }
}

static void bench_lww(void)
{
    enum { N = 4096 };
    static knit_lww_t w[N];
    knit_lww_t acc;
    uint64_t rs = 88172645463325252ULL;
    long i, ops = 50000000;
    double t0;

    for (i = 0; i < N; i++) {
        w[i].cl = 1 + xorshift(&rs) % 3;
        w[i].hlc = xorshift(&rs) % 1000;
        memset(w[i].site.b, 0, 16);
        w[i].site.b[(size_t)i % 16] = (uint8_t)xorshift(&rs);
        w[i].value.type = KNIT_INTEGER;
        w[i].value.u.i = i;
    }
    acc = w[0];
    t0 = now();
    for (i = 0; i < ops; i++)
        sink += (uint64_t)knit_lww_merge(&acc, &w[i & (N - 1)]);
    report("lww merges", ops, t0);
}

static knit_value_t ival(int64_t i)
{
    knit_value_t v;

    v.type = KNIT_INTEGER;
    v.u.i = i;
    return v;
}

static void fill(knit_orset_t *s, uint32_t site, int64_t base)
{
    int64_t i;

    knit_orset_init(s);
    for (i = 0; i < SET_SIZE; i++) {
        knit_value_t v = ival(base + i);
        die(knit_orset_add(s, site, &v, NULL), "add");
    }
}

static void bench_orset(void)
{
    knit_orset_t s, t, d;
    long i, ops = 2000000;
    double t0;

    /* adds re-adding elements of a 100-element set (each a fresh dot) */
    fill(&s, 1, 0);
    t0 = now();
    for (i = 0; i < ops; i++) {
        knit_value_t v = ival(i % SET_SIZE);
        die(knit_orset_add(&s, 1, &v, NULL), "add");
    }
    report("orset adds", ops, t0);

    /* adds that also produce the delta to ship */
    t0 = now();
    for (i = 0; i < ops / 4; i++) {
        knit_value_t v = ival(i % SET_SIZE);
        knit_orset_init(&d);
        die(knit_orset_add(&s, 1, &v, &d), "add");
        knit_orset_free(&d);
    }
    report("orset adds with delta", ops / 4, t0);

    /* removes: empty the set, refill it untimed, repeat */
    t0 = now();
    {
        double untimed = 0;
        long done = 0;
        while (done < ops) {
            double u0;
            for (i = 0; i < SET_SIZE; i++, done++) {
                knit_value_t v = ival(i);
                die(knit_orset_remove(&s, &v, NULL), "remove");
            }
            u0 = now();
            for (i = 0; i < SET_SIZE; i++) {
                knit_value_t v = ival(i);
                die(knit_orset_add(&s, 1, &v, NULL), "add");
            }
            untimed += now() - u0;
        }
        t0 += untimed;
        report("orset removes", done, t0);
    }
    knit_orset_free(&s);

    /* join of one add's delta into a 100-element set */
    fill(&s, 1, 0);
    fill(&t, 2, 50);
    die(knit_orset_join(&s, &t), "join");
    t0 = now();
    for (i = 0; i < ops / 4; i++) {
        knit_value_t v = ival(i % 150);
        knit_orset_init(&d);
        die(knit_orset_add(&t, 2, &v, &d), "add");
        die(knit_orset_join(&s, &d), "join");
        knit_orset_free(&d);
    }
    report("orset delta joins (+add)", ops / 4, t0);

    /* join of two 100-element states, half shared, concurrent dots */
    t0 = now();
    for (i = 0; i < ops / 20; i++) {
        knit_orset_t x;
        die(knit_orset_copy(&x, &s), "copy");
        die(knit_orset_join(&x, &t), "join");
        sink += x.nelems;
        knit_orset_free(&x);
    }
    report("orset state joins (+copy)", ops / 20, t0);
    knit_orset_free(&s);
    knit_orset_free(&t);
}

static void bench_digest(void)
{
    knit_value_t key = ival(123456), val;
    uint8_t pk[16], vb[64], h[32];
    knit_digest_t dg;
    knit_cell_t c;
    long i, ops = 500000;
    double t0;

    val.type = KNIT_TEXT;
    val.u.b.p = "buy milk and bread on the way home";
    val.u.b.n = strlen(val.u.b.p);
    memset(&c, 0, sizeof c);
    c.ns = "user:alice";
    c.table = "todos";
    c.pk = pk;
    c.pk_len = knit_value_encode(&key, pk);
    c.column = "title";
    c.val = vb;
    c.val_len = knit_value_encode(&val, vb);
    c.cl = 1;
    knit_digest_zero(&dg);
    t0 = now();
    for (i = 0; i < ops; i++) {
        /* one change: the old cell out, the new one in */
        c.hlc = (uint64_t)i;
        knit_cell_hash(&c, h);
        knit_digest_sub(&dg, h);
        c.hlc++;
        knit_cell_hash(&c, h);
        knit_digest_add(&dg, h);
    }
    sink += dg.b[0];
    report("digest updates (2 hashes)", ops, t0);
}

static void bench_hlc(void)
{
    uint64_t clock = 0, h = 0, wall = 1700000000000ULL;
    long i, ops = 100000000;
    double t0 = now();

    for (i = 0; i < ops; i++) {
        die(knit_hlc_tick(&clock, wall + (uint64_t)(i >> 10), &h), "tick");
        sink += h;
    }
    report("hlc stamps", ops, t0);
}

int main(void)
{
    bench_lww();
    bench_orset();
    bench_digest();
    bench_hlc();
    return 0;
}
