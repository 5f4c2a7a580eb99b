/*
** test_buckets.c: the consistency checker's bucket engine
** (transport/wire/buckets.h) on its own, against real replicas.
**
** Each case builds a replica with random inserts, updates, deletes and
** re-inserts of a table with a composite key (TEXT, BLOB) and an OR-set
** column, then feeds the engine the replica's state as the relay would
** (catch-up pages: knit_changes_since with a small max_changes, in a random
** order), and checks:
**   matches_replica  the engine's total equals knit_digest of the
**                    namespace, and the buckets sum to the total, whatever
**                    the page size and order;
**   one_row_one_bucket  a second replica given the same state, then one
**                    more write of one row: exactly that row's bucket
**                    differs (knit__check_bucket names it), all others and
**                    the row lists of the others are equal;
**   only_filter      adding with only[] set for some buckets keeps exactly
**                    the rows of those buckets, with the digests of the
**                    full run.
** The seed is printed; KNIT_CASES_SCALE scales the count.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buckets.h"
#include "knit.h"
#include <sqlite3.h>
#include "test.h"

#define NS "user:u"
#define NB 16 /* few buckets, so several rows share one */

typedef struct world_s {
    char dir[64];
    knit_t *a, *b;
} world_t;

static knit_t *open_rep(world_t *w, const char *name)
{
    char path[128];
    knit_t *k = NULL;
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    CHECK_OK(knit_open(path, NULL, &k));
    CHECK_EQ_INT(sqlite3_exec(knit_db(k),
                              "CREATE TABLE \"doc s\"(name TEXT NOT NULL, tag BLOB NOT NULL,"
                              " title TEXT NOT NULL, tags TEXT,"
                              " PRIMARY KEY(name, tag)) WITHOUT ROWID",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK_OK(knit_track(k, "doc s", "tags:orset"));
    CHECK_OK(knit_set_namespace(k, NS));
    return k;
}

static void exec(knit_t *k, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(knit_db(k), sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
        CHECK(0);
    }
    CHECK(knit_stamp(k) >= 0);
}

/* One random write of key i (0..11). */
static void write_one(knit_rng_t *g, knit_t *k, int i)
{
    char sql[512];
    const char *name = i % 3 == 0 ? "it's" : i % 3 == 1 ? "a\"b" : "plain";
    int op = (int)knit_rng_below(g, 4);
    unsigned v = (unsigned)knit_rng_below(g, 1000);
    if (op == 0)
        sqlite3_snprintf(sizeof sql, sql,
                         "INSERT INTO \"doc s\" VALUES (%Q, X'%02x00', 't%u', '[\"x%u\"]')"
                         " ON CONFLICT DO UPDATE SET title = excluded.title",
                         name, i, v, v % 5);
    else if (op == 1)
        sqlite3_snprintf(sizeof sql, sql,
                         "UPDATE \"doc s\" SET title = 'u%u' WHERE name = %Q AND tag = X'%02x00'",
                         v, name, i);
    else if (op == 2)
        sqlite3_snprintf(sizeof sql, sql,
                         "UPDATE \"doc s\" SET tags = json_insert(coalesce(tags, '[]'), '$[#]',"
                         " 'e%u') WHERE name = %Q AND tag = X'%02x00'",
                         v % 7, name, i);
    else
        sqlite3_snprintf(sizeof sql, sql,
                         "DELETE FROM \"doc s\" WHERE name = %Q AND tag = X'%02x00'", name, i);
    exec(k, sql);
}

static void world_init(world_t *w, knit_rng_t *g, int nwrites)
{
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/knit-buckets-XXXXXX");
    CHECK(mkdtemp(w->dir) != NULL);
    w->a = open_rep(w, "a.db");
    for (int n = 0; n < nwrites; n++)
        write_one(g, w->a, (int)knit_rng_below(g, 12));
}

static void world_done(world_t *w)
{
    char cmd[128];
    knit_close(w->a);
    if (w->b)
        knit_close(w->b);
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->dir);
    CHECK_EQ_INT(system(cmd), 0);
}

/* The replica's state as catch-up pages of at most page changes. */
static size_t pages(knit_t *k, size_t page, knit_batch_t **out, size_t max)
{
    size_t n = 0;
    uint64_t since = 0;
    for (;;) {
        knit_since_opts_t o = {.max_changes = page, .ns = NS};
        knit_batch_t *b = NULL;
        CHECK_OK(knit_changes_since(k, since, &o, &b));
        if (!b->nchanges) {
            knit_batch_free(b);
            return n;
        }
        CHECK(n < max);
        out[n++] = b;
        since = b->txns[b->ntxns - 1].version;
    }
}

/* An engine run: the accumulator and the pages its rows point into. */
typedef struct run_s {
    knit_check_t *c;
    knit_batch_t *p[4096];
    size_t n;
} run_t;

static void run_free(run_t *r)
{
    knit__check_free(r->c);
    for (size_t i = 0; i < r->n; i++)
        knit_batch_free(r->p[i]);
    free(r);
}

/* Total and buckets of k's state, its pages fed in a random order; only
** as for knit__check_add. */
static run_t *engine(knit_rng_t *g, knit_t *k, const uint8_t *only, knit_digest_t *total,
                     knit_digest_t *buckets)
{
    run_t *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    r->n = pages(k, 1 + (size_t)knit_rng_below(g, 40), r->p, 4096);
    for (size_t i = r->n; i > 1; i--) { /* shuffle */
        size_t j = (size_t)knit_rng_below(g, i);
        knit_batch_t *t = r->p[i - 1];
        r->p[i - 1] = r->p[j];
        r->p[j] = t;
    }
    CHECK_OK(knit__check_new(NS, NB, &r->c));
    for (size_t i = 0; i < r->n; i++)
        CHECK_OK(knit__check_add(r->c, r->p[i], only));
    CHECK_OK(knit__check_finish(r->c, total, buckets));
    return r;
}

static void matches_replica(void)
{
    uint64_t base = knit_test_seed();
    long cases = knit_test_cases(20);
    for (long n = 0; n < cases; n++) {
        knit_rng_t g = {base + (uint64_t)n * 104729};
        knit_test_case_seed(g.s);
        world_t w;
        world_init(&w, &g, 5 + (int)knit_rng_below(&g, 80));
        knit_digest_t want, t1, t2, b1[NB], b2[NB], sum;
        CHECK_OK(knit_digest(w.a, NS, &want));
        run_free(engine(&g, w.a, NULL, &t1, b1));
        run_free(engine(&g, w.a, NULL, &t2, b2)); /* another page size and order */
        CHECK(knit_digest_equal(&t1, &want));
        CHECK(knit_digest_equal(&t2, &want));
        knit_digest_zero(&sum);
        for (int i = 0; i < NB; i++) {
            CHECK(knit_digest_equal(&b1[i], &b2[i]));
            knit_digest_add(&sum, b1[i].b);
        }
        CHECK(knit_digest_equal(&sum, &t1));
        world_done(&w);
    }
}

/* The bucket of key i's row, from a one-row batch of k. */
static uint32_t bucket_of(knit_t *k, int i)
{
    knit_batch_t *b = NULL;
    uint32_t bk = UINT32_MAX;
    CHECK_OK(knit_changes_since(k, 0, NULL, &b));
    for (size_t c = 0; c < b->nchanges; c++) {
        const knit_change_t *ch = &b->changes[c];
        if (ch->pk[1].type == KNIT_BLOB && ch->pk[1].u.b.n == 2 &&
            ((const uint8_t *)ch->pk[1].u.b.p)[0] == i)
            bk = knit__check_bucket(b, ch, NB);
    }
    knit_batch_free(b);
    return bk;
}

static void one_row_one_bucket(void)
{
    uint64_t base = knit_test_seed();
    long cases = knit_test_cases(20);
    for (long n = 0; n < cases; n++) {
        knit_rng_t g = {base + (uint64_t)n * 7907 + 1};
        knit_test_case_seed(g.s);
        world_t w;
        world_init(&w, &g, 10 + (int)knit_rng_below(&g, 60));
        w.b = open_rep(&w, "b.db");
        knit_batch_t *all = NULL;
        CHECK_OK(knit_changes_since(w.a, 0, NULL, &all));
        CHECK_OK(knit_apply(w.b, all, NULL));
        knit_batch_free(all);
        knit_digest_t ta, tb, ba[NB], bb[NB];
        run_free(engine(&g, w.a, NULL, &ta, ba));
        run_free(engine(&g, w.b, NULL, &tb, bb));
        CHECK(knit_digest_equal(&ta, &tb));
        /* One more write of one row on B (an insert if the row is gone). */
        int i = (int)knit_rng_below(&g, 12);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"doc s\" VALUES ('%s', X'%02x00', 'changed', NULL) ON CONFLICT"
                 " DO UPDATE SET title = 'changed ' || title",
                 i % 3 == 0   ? "it''s"
                 : i % 3 == 1 ? "a\"b"
                              : "plain",
                 i);
        exec(w.b, sql);
        run_free(engine(&g, w.b, NULL, &tb, bb));
        uint32_t bk = bucket_of(w.b, i);
        CHECK(bk < NB);
        /* The 12 rows spread over the buckets (a constant bucket would make
        ** every difference look local). */
        uint8_t used[NB] = {0};
        int distinct = 0, rows = 0;
        for (int j = 0; j < 12; j++) {
            uint32_t x = bucket_of(w.b, j);
            rows += x < NB;
            if (x < NB && !used[x]++)
                distinct++;
        }
        CHECK(rows < 6 || distinct >= 3);
        CHECK(!knit_digest_equal(&ta, &tb));
        for (uint32_t j = 0; j < NB; j++) {
            if (j == bk)
                CHECK(!knit_digest_equal(&ba[j], &bb[j]));
            else
                CHECK(knit_digest_equal(&ba[j], &bb[j]));
        }
        world_done(&w);
    }
}

static void only_filter(void)
{
    uint64_t base = knit_test_seed();
    long cases = knit_test_cases(15);
    for (long n = 0; n < cases; n++) {
        knit_rng_t g = {base + (uint64_t)n * 6007 + 2};
        knit_test_case_seed(g.s);
        world_t w;
        world_init(&w, &g, 20 + (int)knit_rng_below(&g, 60));
        uint8_t only[NB];
        for (int i = 0; i < NB; i++)
            only[i] = knit_rng_below(&g, 3) == 0;
        knit_digest_t tf, tp, bf[NB], bp[NB], sum;
        run_t *full = engine(&g, w.a, NULL, &tf, bf), *part = engine(&g, w.a, only, &tp, bp);
        knit_digest_zero(&sum);
        for (int i = 0; i < NB; i++) {
            if (only[i]) {
                CHECK(knit_digest_equal(&bp[i], &bf[i]));
                knit_digest_add(&sum, bf[i].b);
            } else {
                knit_digest_t z;
                knit_digest_zero(&z);
                CHECK(knit_digest_equal(&bp[i], &z));
            }
        }
        CHECK(knit_digest_equal(&tp, &sum));
        /* The filtered rows are exactly the full run's rows in those buckets. */
        size_t nf, np, k = 0;
        const knit_check_row_t *rf = knit__check_rows(full->c, &nf),
                               *rp = knit__check_rows(part->c, &np);
        for (size_t i = 0; i < nf; i++) {
            if (!only[rf[i].bucket])
                continue;
            CHECK(k < np);
            CHECK_EQ_INT(rp[k].bucket, rf[i].bucket);
            CHECK(knit_digest_equal(&rp[k].digest, &rf[i].digest));
            k++;
        }
        CHECK_EQ_INT(k, np);
        run_free(full);
        run_free(part);
        world_done(&w);
    }
}

KNIT_TESTS(T(matches_replica), T(one_row_one_bucket), T(only_filter))
