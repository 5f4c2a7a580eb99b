/*
** test_orset_sync.c: OR-set columns across stamping, knit_changes_since and
** knit_apply: one regression case per defect the model-based test
** (tests/model/) found in the add-wins observed-remove semantics.
*/
#include "rt.h"

#define T_SCHEMA "CREATE TABLE t(id TEXT PRIMARY KEY, a, tags)"

static knit_t *A, *B;
static rt_clock_t ca, cb;

static void setup(void)
{
    ca.ms = cb.ms = 1700000000000;
    rt_init();
    A = rt_open_clock("a.db", &ca);
    B = rt_open_clock("b.db", &cb);
    knit_t *all[2] = {A, B};
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], T_SCHEMA);
        CHECK_OK(knit_track(all[i], "t", "tags:orset"));
        CHECK_OK(knit_set_namespace(all[i], "test"));
    }
}

static void teardown(void)
{
    knit_close(A);
    knit_close(B);
    A = B = NULL;
    rt_done();
}

/* Sends from's changes after *since, at most max changes (whole units; 0 =
** all), and moves *since to the last unit sent. */
static void send_some(knit_t *from, knit_t *to, uint64_t *since, size_t max)
{
    knit_since_opts_t o = {0};
    knit_batch_t *b = NULL;
    knit_apply_stats_t st;
    o.max_changes = max;
    CHECK_OK(knit_changes_since(from, *since, &o, &b));
    CHECK_OK(knit_apply(to, b, &st));
    if (b->ntxns)
        *since = b->txns[b->ntxns - 1].version;
    knit_batch_free(b);
}

static void verify_clean(knit_t *k)
{
    CHECK_EQ_INT(knit_verify(k, NULL, NULL), 0);
}

/* apply.c row_apply: a row that enters a later life through an apply must
** not keep the earlier life's set states.  Here B learns of A's re-insert
** from its liveness alone (the set cell travels in the unit of a later
** update, and a page ends between them); B's own edit of the column then
** starts from the empty set.  Before the fix B diffed against life 1's
** state, so its state carried life 1's context: A's life-3 add of "x"
** (dot A:1, which life 1 had seen and removed) was dropped on both sides. */
static void new_life_forgets_earlier_life_state(void)
{
    setup();
    uint64_t since = 0;
    rt_exec(A, "INSERT INTO t VALUES ('r', 0, '[\"a\",\"b\"]')");
    send_some(A, B, &since, 0);
    RT_EXPECT(B, "SELECT tags FROM t", "'[\"a\",\"b\"]'\n");
    ca.ms += 10;
    rt_exec(A, "DELETE FROM t");
    CHECK(knit_stamp(A) == 1);
    ca.ms += 10;
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, '[]')");
    CHECK(knit_stamp(A) == 1);
    ca.ms += 10;
    rt_exec(A, "UPDATE t SET tags = '[\"x\"]'");
    CHECK(knit_stamp(A) == 1);
    /* One unit: the re-insert's liveness and column a, not yet the set. */
    send_some(A, B, &since, 1);
    RT_EXPECT(B, "SELECT a, tags FROM t", "1|NULL\n");
    RT_EXPECT(B, "SELECT cl FROM _knit_rows_1", "3\n");
    verify_clean(B); /* the column (empty) agrees with the state (none) */
    cb.ms += 100;
    rt_exec(B, "UPDATE t SET tags = '[\"c\"]'");
    CHECK(knit_stamp(B) == 1);
    send_some(A, B, &since, 0);
    uint64_t back = 0;
    send_some(B, A, &back, 0);
    RT_EXPECT(A, "SELECT a, tags FROM t", "1|'[\"c\",\"x\"]'\n");
    RT_EXPECT(B, "SELECT a, tags FROM t", "1|'[\"c\",\"x\"]'\n");
    knit_digest_t da, db;
    CHECK_OK(knit_digest(A, NULL, &da));
    CHECK_OK(knit_digest(B, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
    verify_clean(A);
    verify_clean(B);
    teardown();
}

KNIT_TESTS(T(new_life_forgets_earlier_life_state))
