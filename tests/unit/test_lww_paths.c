/*
** test_lww_paths.c: one LWW rule, three implementations, one property.
**
** The rule of crdt/lww.h (knit_lww_cmp: causal length, then HLC, then site)
** is also carried out by a replica's apply (runtime/apply.c, in C, row by
** row) and by the relay store (transport/relay/relay_store.c, a guarded
** SQL upsert).  For random histories of one row (lives, deletes, writes
** with colliding stamps from four sites), delivered one change at a time in
** random order with duplicates, both must end where knit_lww_merge says:
** the same winning value, and equal digests (which hash every cell's cl,
** HLC and site).  The seed is printed; KNIT_CASES_SCALE scales the count.
*/
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "knit.h"
#include "lww.h"
#include "relay_store.h"
#include <sqlite3.h>
#include "test.h"

#define NS "user:lww"
#define MAXW 24

typedef struct wr_s {
    uint32_t col; /* 0 = liveness, 1 = column a */
    uint64_t cl;
    uint64_t hlc;
    int site; /* 0..3 */
    int64_t v;
} wr_t;

static knit_site_t site_n(int n)
{
    knit_site_t s;
    memset(&s, 0, sizeof s);
    s.b[0] = (uint8_t)(0x11 * (n + 1));
    s.b[15] = (uint8_t)n;
    return s;
}

/* A batch holding the single change w. */
static knit_batch_t *one(const wr_t *w)
{
    static const char *cols[] = {"a"};
    static const uint8_t orset[] = {0};
    knit_batch_t *b;
    uint32_t idx;
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, NS, &idx));
    knit_site_t s = site_n(w->site);
    CHECK_OK(knit_batch_site(b, &s, &idx));
    CHECK_OK(knit_batch_table(b, "t", 1, 1, cols, orset, &idx));
    CHECK_OK(knit_batch_begin(b, 1));
    knit_value_t pk = {.type = KNIT_INTEGER};
    pk.u.i = 7;
    knit_change_t c;
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.col = w->col;
    c.cl = w->cl;
    c.hlc = w->hlc;
    c.site = 0;
    c.value.type = KNIT_NULL;
    if (w->col) {
        c.value.type = KNIT_INTEGER;
        c.value.u.i = w->v;
    }
    CHECK_OK(knit_batch_add(b, &c));
    return b;
}

static void lww_paths_agree(void)
{
    knit_rng_t rng = {knit_test_seed()};
    char dir[] = "/tmp/knit-lww-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    long cases = knit_test_cases(600);
    for (long n = 0; n < cases; n++) {
        wr_t w[MAXW];
        size_t nw = 0;
        uint64_t lives = 1 + knit_rng_below(&rng, 4); /* final causal length */
        uint64_t base = UINT64_C(1700000000000) << 16;
        for (uint64_t l = 1; l <= lives; l++) {
            /* Each life starts (odd) or ends (even) with a liveness change,
            ** sometimes from two sites at once. */
            int k = 1 + (int)knit_rng_below(&rng, 2);
            for (int i = 0; i < k && nw < MAXW; i++)
                w[nw++] =
                    (wr_t){0, l, base + knit_rng_below(&rng, 6), (int)knit_rng_below(&rng, 4), 0};
            if (l & 1) {
                int m = (int)knit_rng_below(&rng, 5);
                for (int i = 0; i < m && nw < MAXW; i++)
                    w[nw++] =
                        (wr_t){1, l, base + knit_rng_below(&rng, 6), (int)knit_rng_below(&rng, 4),
                               (int64_t)knit_rng_below(&rng, 1000)};
            }
        }
        /* A site never issues one stamp twice: drop generated repeats. */
        size_t keep = 0;
        for (size_t i = 0; i < nw; i++) {
            int dup = 0;
            for (size_t j = 0; j < keep && !dup; j++)
                dup = w[j].col == w[i].col && w[j].cl == w[i].cl && w[j].hlc == w[i].hlc &&
                      w[j].site == w[i].site;
            if (!dup)
                w[keep++] = w[i];
        }
        nw = keep;
        /* The reference: knit_lww_merge over the writes of the last life. */
        knit_lww_t live = {0}, val = {0};
        int have_val = 0;
        for (size_t i = 0; i < nw; i++) {
            knit_lww_t x = {w[i].cl, w[i].hlc, site_n(w[i].site), {.type = KNIT_INTEGER}};
            x.value.u.i = w[i].v;
            if (w[i].cl != lives)
                continue;
            if (w[i].col == 0)
                knit_lww_merge(&live, &x);
            else
                have_val |= knit_lww_merge(&val, &x) || have_val;
        }
        (void)live;

        /* Deliver in a random order, each change once or twice. */
        size_t order[2 * MAXW], no = 0;
        for (size_t i = 0; i < nw; i++) {
            order[no++] = i;
            if (knit_rng_below(&rng, 3) == 0)
                order[no++] = i;
        }
        for (size_t i = no; i > 1; i--) {
            size_t j = (size_t)knit_rng_below(&rng, i);
            size_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        char rpath[300], spath[300];
        snprintf(rpath, sizeof rpath, "%s/r%ld.db", dir, n);
        snprintf(spath, sizeof spath, "%s/s%ld.db", dir, n);
        knit_t *k = NULL;
        knit_relay_store_t *s = NULL;
        CHECK_OK(knit_open(rpath, NULL, &k));
        CHECK_OK(
            sqlite3_exec(knit_db(k), "CREATE TABLE t(id INT PRIMARY KEY, a)", NULL, NULL, NULL));
        CHECK_OK(knit_track(k, "t", NULL));
        CHECK_OK(knit_set_namespace(k, NS));
        CHECK_OK(knit_relay_store_open(spath, 0, &s));
        for (size_t i = 0; i < no; i++) {
            knit_batch_t *b = one(&w[order[i]]);
            knit_relay_applied_t out;
            CHECK_OK(knit_relay_store_begin(s));
            int arc = knit_relay_store_apply(s, NS, b, &out);
            if (arc)
                fprintf(stderr, "store: %s\n", knit_relay_store_errmsg(s));
            CHECK_OK(arc);
            knit_batch_free(out.fanout);
            CHECK_OK(knit_relay_store_commit(s));
            CHECK_OK(knit_apply(k, b, NULL));
            knit_batch_free(b);
        }
        knit_digest_t dr, ds;
        CHECK_OK(knit_digest(k, NS, &dr));
        CHECK_OK(knit_relay_store_digest(s, NS, &ds));
        if (memcmp(&dr, &ds, sizeof dr) != 0)
            fprintf(stderr, "case %ld: the replica and the relay store disagree\n", n);
        CHECK(memcmp(&dr, &ds, sizeof dr) == 0);
        /* The replica's row is what the reference says. */
        sqlite3_stmt *st = NULL;
        CHECK_OK(sqlite3_prepare_v2(knit_db(k), "SELECT a FROM t WHERE id = 7", -1, &st, NULL));
        int rc = sqlite3_step(st);
        if (!(lives & 1)) {
            CHECK_EQ_INT(rc, SQLITE_DONE); /* deleted */
        } else {
            CHECK_EQ_INT(rc, SQLITE_ROW);
            if (have_val)
                CHECK_EQ_INT(sqlite3_column_int64(st, 0), val.value.u.i);
            else
                CHECK_EQ_INT(sqlite3_column_type(st, 0), SQLITE_NULL);
        }
        sqlite3_finalize(st);
        knit_relay_store_close(s);
        knit_close(k);
        unlink(rpath);
        unlink(spath);
        char side[320];
        snprintf(side, sizeof side, "%s-wal", rpath);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", rpath);
        unlink(side);
        snprintf(side, sizeof side, "%s-wal", spath);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", spath);
        unlink(side);
    }
    rmdir(dir);
}

KNIT_TESTS(T(lww_paths_agree))
