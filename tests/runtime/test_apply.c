/*
** test_apply.c: what knit_apply does with schemas as users write them.
**
** Each row is written once per batch with every cell the batch holds for it
** (NOT NULL columns whose liveness and value travel in different units); a
** row the receiver cannot apply (a stricter schema, a poisoned set) is set
** aside in _knit_aside and never blocks the rest; set-aside changes come
** back when the missing cells arrive or the schema changes; a failed apply
** leaves no stale in-memory site behind.
*/
#include "alloc.h"
#include "faultvfs.h"
#include "orset.h"
#include "rt.h"

static knit_t *A, *B;

static void setup2(const char *ddl_a, const char *ddl_b, const char *table)
{
    rt_init();
    A = rt_open("a.db");
    B = rt_open("b.db");
    rt_exec(A, ddl_a);
    rt_exec(B, ddl_b);
    CHECK_OK(knit_track(A, table, NULL));
    CHECK_OK(knit_track(B, table, NULL));
}

static void teardown(void)
{
    knit_close(A);
    knit_close(B);
    A = B = NULL;
    rt_done();
}

static size_t refused_rows(knit_t *k)
{
    size_t n = 99, w = 99;
    CHECK_OK(knit_aside_count(k, &n, &w));
    return n;
}

static void expect_same_digest(knit_t *a, knit_t *b)
{
    knit_digest_t da, db;
    CHECK_OK(knit_digest(a, NULL, &da));
    CHECK_OK(knit_digest(b, NULL, &db));
    CHECK(memcmp(&da, &db, sizeof da) == 0);
}

/* Applies every unit of a's changes since 0 to b, cut into pages of at most
** max changes, each page its own knit_apply (a catch-up in pages). */
static void send_paged(knit_t *a, knit_t *b, size_t max)
{
    uint64_t since = 0;
    for (;;) {
        knit_batch_t *batch = NULL;
        knit_since_opts_t o = {.max_changes = max};
        CHECK_OK(knit_changes_since(a, since, &o, &batch));
        if (!batch->ntxns) {
            knit_batch_free(batch);
            return;
        }
        int rc = knit_apply(b, batch, NULL);
        if (rc)
            fprintf(stderr, "apply: %s: %s\n", knit_err_name(rc), knit_errmsg(b));
        CHECK_OK(rc);
        since = batch->txns[batch->ntxns - 1].version;
        knit_batch_free(batch);
    }
}

/* Issue 8.1: a NOT NULL column without a default.  Catch-up sends a row's
** liveness in the unit of its insert and its value in the unit of its last
** update; the old apply inserted the key alone and the constraint refused
** the whole batch, forever. */
static void notnull_liveness_and_value_in_different_units(void)
{
    const char *ddl = "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT NOT NULL)";
    setup2(ddl, ddl, "kv");
    rt_exec(A, "INSERT INTO kv VALUES ('a', 'one'), ('b', 'two'), ('c', 'three')");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "UPDATE kv SET v = v || '!'");
    CHECK(knit_stamp(A) > 0);
    knit_batch_t *b = NULL;
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK_EQ_INT(b->ntxns, 2); /* liveness in the insert's unit, values in the update's */
    knit_apply_stats_t st;
    int rc = knit_apply(B, b, &st);
    if (rc)
        fprintf(stderr, "apply: %s\n", knit_errmsg(B));
    CHECK_OK(rc);
    knit_batch_free(b);
    CHECK_EQ_INT(st.aside, 0);
    RT_EXPECT(B, "SELECT * FROM kv ORDER BY k", "'a'|'one!'\n'b'|'two!'\n'c'|'three!'\n");
    expect_same_digest(A, B);
    teardown();
}

/* A row refused in a later life than B shows (its NOT NULL value of that
** life has not reached B) must not stay visible as the dead earlier life: a
** write there would be stamped in that life and lose, unseen, once the later
** life applies.  B shows the row deleted; B's own insert starts the refused
** life and wins its cells by LWW when the rest arrives. */
static void refused_later_life_then_local_insert_survives(void)
{
    const char *ddl = "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT NOT NULL, w TEXT)";
    setup2(ddl, ddl, "kv");
    rt_exec(A, "INSERT INTO kv VALUES ('a', 'one', 'x')");
    CHECK(knit_stamp(A) > 0);
    knit_batch_t *b = NULL;
    knit_apply_stats_t st;
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK_OK(knit_apply(B, b, &st));
    knit_batch_free(b);
    rt_exec(A, "DELETE FROM kv WHERE k = 'a'");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "INSERT INTO kv VALUES ('a', 'two', 'y')"); /* life 3 */
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "UPDATE kv SET w = 'z'");
    CHECK(knit_stamp(A) > 0);
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK(b->ntxns >= 2);
    uint64_t before_last = b->txns[b->ntxns - 2].version;
    knit_batch_free(b);
    /* Only the last unit: w of life 3, without its liveness and v. */
    CHECK_OK(knit_changes_since(A, before_last, NULL, &b));
    CHECK_OK(knit_apply(B, b, &st));
    knit_batch_free(b);
    CHECK_EQ_INT(refused_rows(B), 1);
    RT_EXPECT(B, "SELECT count(*) FROM kv", "0\n"); /* not the dead life 1 */
    rt_exec(B, "INSERT INTO kv VALUES ('a', 'mine', 'b-w')");
    CHECK(knit_stamp(B) > 0);
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK_OK(knit_apply(B, b, &st));
    knit_batch_free(b);
    CHECK_EQ_INT(refused_rows(B), 0);
    RT_EXPECT(B, "SELECT * FROM kv", "'a'|'mine'|'b-w'\n");
    CHECK_OK(knit_changes_since(B, 0, NULL, &b));
    CHECK_OK(knit_apply(A, b, &st));
    knit_batch_free(b);
    RT_EXPECT(A, "SELECT * FROM kv", "'a'|'mine'|'b-w'\n");
    expect_same_digest(A, B);
    teardown();
}

/* The same rows, caught up one unit per page: the first page holds only
** liveness, which cannot be inserted; it waits aside and the next page
** completes the rows.  Nothing is stuck and nothing stays aside. */
static void notnull_split_across_pages_recovers(void)
{
    const char *ddl = "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT NOT NULL)";
    setup2(ddl, ddl, "kv");
    rt_exec(A, "INSERT INTO kv VALUES ('a', 'one'), ('b', 'two')");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "UPDATE kv SET v = v || '!' WHERE k = 'a'");
    CHECK(knit_stamp(A) > 0);
    knit_batch_t *p1 = NULL, *p2 = NULL;
    knit_since_opts_t o = {.max_changes = 1};
    CHECK_OK(knit_changes_since(A, 0, &o, &p1));
    CHECK_EQ_INT(p1->ntxns, 1);
    knit_apply_stats_t st;
    CHECK_OK(knit_apply(B, p1, &st));
    CHECK_EQ_INT(st.aside, 1); /* a's liveness; b's row is whole in unit 1 */
    CHECK_EQ_INT(refused_rows(B), 1);
    RT_EXPECT(B, "SELECT * FROM kv ORDER BY k", "'b'|'two'\n");
    RT_EXPECT(B,
              "SELECT tbl, key, col, kind, reason LIKE '%NOT NULL constraint failed: kv.v%'"
              " FROM _knit_aside",
              "'kv'|'''a'''|''|'refused'|1\n");
    CHECK_OK(knit_changes_since(A, p1->txns[0].version, &o, &p2));
    CHECK_OK(knit_apply(B, p2, &st));
    CHECK_EQ_INT(st.recovered, 1);
    CHECK_EQ_INT(refused_rows(B), 0);
    RT_EXPECT(B, "SELECT * FROM kv ORDER BY k", "'a'|'one!'\n'b'|'two'\n");
    RT_EXPECT(B, "SELECT count(*) FROM _knit_aside", "0\n");
    expect_same_digest(A, B);
    knit_batch_free(p1);
    knit_batch_free(p2);
    /* Fresh replicas catching up in pages of every size end equal. */
    for (size_t max = 1; max <= 4; max++) {
        char name[16];
        snprintf(name, sizeof name, "c%zu.db", max);
        knit_t *c = rt_open(name);
        rt_exec(c, ddl);
        CHECK_OK(knit_track(c, "kv", NULL));
        send_paged(A, c, max);
        CHECK_EQ_INT(refused_rows(c), 0);
        expect_same_digest(A, c);
        knit_close(c);
    }
    teardown();
}

/* Issue 8.4: a device whose schema is stricter than the writer's.  The rows
** it cannot hold are set aside with SQLite's message; every other row
** applies; a later valid write of the same row brings it back. */
static void stricter_schema_sets_rows_aside(void)
{
    setup2("CREATE TABLE t(id TEXT PRIMARY KEY, n INT, note TEXT)",
           "CREATE TABLE t(id TEXT PRIMARY KEY, n INT CHECK (n > 0), note TEXT NOT NULL)", "t");
    rt_exec(A, "INSERT INTO t VALUES ('r1', -1, 'neg'), ('r2', 2, 'ok'), ('r3', 3, NULL),"
               " ('r4', 4, 'ok')");
    knit_apply_stats_t st = rt_send(A, B, NULL);
    CHECK_EQ_INT(st.aside, 6); /* r1 and r3: liveness and two columns each */
    CHECK_EQ_INT(refused_rows(B), 2);
    RT_EXPECT(B, "SELECT * FROM t ORDER BY id", "'r2'|2|'ok'\n'r4'|4|'ok'\n");
    RT_EXPECT(B, "SELECT DISTINCT key, reason FROM _knit_aside ORDER BY key",
              "'''r1'''|'inserting a row: CHECK constraint failed: n > 0'\n"
              "'''r3'''|'inserting a row: NOT NULL constraint failed: t.note'\n");
    /* More writes keep flowing: one bad row never stops the table. */
    rt_exec(A, "INSERT INTO t VALUES ('r5', 5, 'later'); UPDATE t SET n = 7 WHERE id = 'r1'");
    st = rt_send(A, B, NULL);
    CHECK_EQ_INT(st.recovered, 3); /* r1's set-aside cells merged with its new n */
    RT_EXPECT(B, "SELECT * FROM t ORDER BY id",
              "'r1'|7|'neg'\n'r2'|2|'ok'\n'r4'|4|'ok'\n'r5'|5|'later'\n");
    CHECK_EQ_INT(refused_rows(B), 1);
    /* B's app migrates to the writer's schema: the rest comes back by itself
    ** on the next apply, even one that brings nothing new. */
    rt_exec(B, "CREATE TABLE t2(id TEXT PRIMARY KEY, n INT CHECK (n > 0), note TEXT);"
               "INSERT INTO t2 SELECT * FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t");
    CHECK_OK(knit_aside_retry(B, &st));
    CHECK_EQ_INT(st.recovered, 3);
    CHECK_EQ_INT(refused_rows(B), 0);
    RT_EXPECT(B, "SELECT * FROM t WHERE id = 'r3'", "'r3'|3|NULL\n");
    teardown();
}

/* Issue 8.4: an OR-set state with an element no replica can show (a BLOB):
** the cell is set aside, the row and every other row apply. */
static void poisoned_set_state_set_aside_alone(void)
{
    const char *ddl = "CREATE TABLE s(id TEXT PRIMARY KEY, name TEXT, tags TEXT)";
    rt_init();
    A = rt_open("a.db");
    B = rt_open("b.db");
    rt_exec(A, ddl);
    rt_exec(B, ddl);
    CHECK_OK(knit_track(A, "s", "tags:orset"));
    CHECK_OK(knit_track(B, "s", "tags:orset"));
    rt_exec(A, "INSERT INTO s VALUES ('x', 'good', '[\"a\"]'), ('y', 'also', '[\"b\"]')");
    knit_batch_t *b = NULL;
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    /* Rewrite x's set state to hold a BLOB element, as a hostile peer would. */
    knit_orset_t bad;
    knit_orset_init(&bad);
    knit_value_t blob = {.type = KNIT_BLOB};
    blob.u.b.p = "\x01\x02";
    blob.u.b.n = 2;
    CHECK_OK(knit_orset_add(&bad, 0, &blob, NULL));
    uint8_t *enc = NULL;
    size_t n = 0;
    CHECK_OK(knit_orset_encode(&bad, &enc, &n));
    int found = 0;
    for (size_t i = 0; i < b->nchanges; i++) {
        knit_change_t *c = &b->changes[i];
        if (c->col == 2 && c->pk[0].u.b.n == 1 && ((const char *)c->pk[0].u.b.p)[0] == 'x') {
            c->value.u.b.p = enc; /* the batch's own bytes stay owned by it */
            c->value.u.b.n = n;
            found = 1;
        }
    }
    CHECK(found);
    knit_apply_stats_t st;
    CHECK_OK(knit_apply(B, b, &st));
    CHECK_EQ_INT(st.aside, 1);
    /* The same batch again (a replayed page) keeps one copy, not two. */
    CHECK_OK(knit_apply(B, b, &st));
    CHECK_OK(knit_apply(B, b, &st));
    RT_EXPECT(B, "SELECT count(*) FROM _knit_aside", "1\n");
    RT_EXPECT(B, "SELECT id, name, tags FROM s ORDER BY id",
              "'x'|'good'|NULL\n'y'|'also'|'[\"b\"]'\n");
    RT_EXPECT(B, "SELECT col, kind, reason FROM _knit_aside",
              "'tags'|'refused'|'s key (''x''): tags: OR-set element 1 is a BLOB, which has no"
              " JSON form'\n");
    for (size_t i = 0; i < b->nchanges; i++)
        if (b->changes[i].value.u.b.p == enc)
            b->changes[i].value.type = KNIT_NULL; /* don't let the batch free our buffer */
    knit__free(enc);
    knit_orset_free(&bad);
    knit_batch_free(b);
    teardown();
}

/* Issue 15.1 / 15.4: cells of a column the receiver does not have yet are
** kept, and applied when it adds and tracks the column. */
static void cells_of_unknown_columns_wait_for_migration(void)
{
    setup2("CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, c INT)",
           "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT)", "t");
    rt_exec(A, "INSERT INTO t VALUES ('r1', 'x', 5), ('r2', 'y', 7)");
    knit_apply_stats_t st = rt_send(A, B, NULL);
    CHECK_EQ_INT(st.skipped, 2);
    size_t refused, waiting;
    CHECK_OK(knit_aside_count(B, &refused, &waiting));
    CHECK_EQ_INT(refused, 0);
    CHECK_EQ_INT(waiting, 2);
    RT_EXPECT(B, "SELECT * FROM t ORDER BY id", "'r1'|'x'\n'r2'|'y'\n");
    rt_exec(B, "ALTER TABLE t ADD COLUMN c INT DEFAULT 0");
    CHECK_OK(knit_track(B, "t", NULL)); /* applies what waited for the column */
    RT_EXPECT(B, "SELECT * FROM t ORDER BY id", "'r1'|'x'|5\n'r2'|'y'|7\n");
    CHECK_OK(knit_aside_retry(B, &st));
    CHECK_EQ_INT(st.recovered, 0);
    CHECK_OK(knit_aside_count(B, &refused, &waiting));
    CHECK_EQ_INT(waiting, 0);
    /* A table B does not track at all waits too. */
    rt_exec(A, "CREATE TABLE later(k TEXT PRIMARY KEY, v)");
    CHECK_OK(knit_track(A, "later", NULL));
    rt_exec(A, "INSERT INTO later VALUES ('k', 1)");
    st = rt_send(A, B, NULL);
    CHECK_EQ_INT(st.skipped, 2);
    teardown();
}

/* Issue 8.3: the disk fails at every write point of an apply from a site the
** receiver has never seen.  The failed transaction interned that site; its
** in-memory copy must go with the rollback, or later rows are credited to
** whichever site takes the same index next and digests differ forever. */
static void rollback_forgets_interned_sites(void)
{
    fault_vfs_install();
    rt_init();
    const char *ddl = "CREATE TABLE t(id TEXT PRIMARY KEY, v INT, tags TEXT)";
    knit_t *x = rt_open("x.db"), *y = rt_open("y.db");
    rt_exec(x, ddl);
    rt_exec(y, ddl);
    CHECK_OK(knit_track(x, "t", "tags:orset"));
    CHECK_OK(knit_track(y, "t", "tags:orset"));
    rt_exec(x, "INSERT INTO t VALUES ('a', 1, '[\"p\"]'), ('b', 2, NULL)");
    rt_exec(y, "INSERT INTO t VALUES ('a', 10, '[\"q\"]'), ('c', 3, '[]')");
    knit_batch_t *bx = NULL, *by = NULL;
    CHECK_OK(knit_changes_since(x, 0, NULL, &bx));
    CHECK_OK(knit_changes_since(y, 0, NULL, &by));
    /* The reference: a replica that applied both without trouble. */
    knit_t *ref = rt_open("ref.db");
    rt_exec(ref, ddl);
    CHECK_OK(knit_track(ref, "t", "tags:orset"));
    CHECK_OK(knit_apply(ref, bx, NULL));
    CHECK_OK(knit_apply(ref, by, NULL));
    knit_digest_t want, got;
    CHECK_OK(knit_digest(ref, NULL, &want));
    int failures = 0, clean = 0;
    for (long nth = 1; nth < 200 && !clean; nth++) {
        char name[32];
        snprintf(name, sizeof name, "b%ld.db", nth);
        knit_t *b = rt_open(name);
        rt_exec(b, ddl);
        CHECK_OK(knit_track(b, "t", "tags:orset"));
        fault_arm(nth, 0);
        int rc = knit_apply(b, bx, NULL);
        long writes = fault_arm(0, 0);
        if (rc) {
            CHECK_EQ_INT(rc, KNIT_EIO);
            failures++;
        } else if (writes < nth) {
            clean = 1;
        }
        /* x's batch again (its site must be interned anew), then another
        ** new site, which takes the next free index in the file. */
        CHECK_OK(knit_apply(b, bx, NULL));
        CHECK_OK(knit_apply(b, by, NULL));
        CHECK_OK(knit_digest(b, NULL, &got));
        if (memcmp(&got, &want, sizeof got) != 0)
            fprintf(stderr, "digest differs after a failure at write %ld\n", nth);
        CHECK(memcmp(&got, &want, sizeof got) == 0);
        CHECK_EQ_INT(knit_verify(b, NULL, NULL), 0);
        knit_close(b);
    }
    CHECK(failures > 3);
    CHECK(clean);
    knit_batch_free(bx);
    knit_batch_free(by);
    knit_close(ref);
    knit_close(x);
    knit_close(y);
    rt_done();
}

/* Memory runs out at every allocation of an apply that sets an OR-set state
** aside (the row's NOT NULL value comes in the next page).  The state must
** reach _knit_aside in the replica's own site numbering or the apply must
** fail (note 9): kept in the batch's numbering, its dots were later read as
** local ones, as no site's, and the replica never converged (model seed
** 1883446324526222). */
static void set_aside_orset_state_under_oom(void)
{
    const char *ddl = "CREATE TABLE s(id TEXT PRIMARY KEY, v TEXT NOT NULL, tags TEXT)";
    rt_init();
    A = rt_open("a.db");
    rt_exec(A, ddl);
    CHECK_OK(knit_track(A, "s", "tags:orset"));
    rt_exec(A, "INSERT INTO s VALUES ('x', 'one', '[\"a\",\"b\"]')");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "UPDATE s SET v = 'two'");
    CHECK(knit_stamp(A) > 0);
    knit_batch_t *p1 = NULL, *p2 = NULL;
    knit_since_opts_t o = {.max_changes = 1};
    CHECK_OK(knit_changes_since(A, 0, &o, &p1));
    CHECK_EQ_INT(p1->ntxns, 1); /* liveness and tags, without v */
    CHECK_OK(knit_changes_since(A, p1->txns[0].version, &o, &p2));
    int failures = 0, clean = 0;
    for (long nth = 1; nth < 400 && !clean; nth++) {
        char name[32];
        snprintf(name, sizeof name, "b%ld.db", nth);
        knit_t *b = rt_open(name);
        rt_exec(b, ddl);
        CHECK_OK(knit_track(b, "s", "tags:orset"));
        knit__alloc_fail_at(nth, 0);
        int rc = knit_apply(b, p1, NULL);
        long used = knit__alloc_fail_at(0, 0);
        if (rc) {
            CHECK_EQ_INT(rc, KNIT_ENOMEM);
            failures++;
            CHECK_OK(knit_apply(b, p1, NULL));
        } else if (used < nth) {
            clean = 1;
        }
        CHECK_EQ_INT(refused_rows(b), 1);
        CHECK_OK(knit_apply(b, p2, NULL));
        CHECK_EQ_INT(refused_rows(b), 0);
        RT_EXPECT(b, "SELECT * FROM s", "'x'|'two'|'[\"a\",\"b\"]'\n");
        knit_digest_t da, db;
        CHECK_OK(knit_digest(A, NULL, &da));
        CHECK_OK(knit_digest(b, NULL, &db));
        if (memcmp(&da, &db, sizeof da) != 0)
            fprintf(stderr, "digest differs after a failure at allocation %ld\n", nth);
        CHECK(memcmp(&da, &db, sizeof da) == 0);
        CHECK_EQ_INT(knit_verify(b, NULL, NULL), 0);
        knit_close(b);
    }
    CHECK(failures > 3);
    CHECK(clean);
    knit_batch_free(p1);
    knit_batch_free(p2);
    knit_close(A);
    A = NULL;
    rt_done();
}

/* Issue 8.9: identifiers of any length and shape in every statement apply
** builds (found overflowing the heap under ASan with a 900-byte name). */
static void long_and_quoted_identifiers(void)
{
    char col[901], tbl[301], ddl[2048];
    memset(col, 'c', 900);
    col[900] = 0;
    memset(tbl, 't', 300);
    tbl[300] = 0;
    snprintf(ddl, sizeof ddl,
             "CREATE TABLE \"%s\"(\"key \"\"one\"\".x\" BLOB, n INTEGER, \"%s\" TEXT NOT NULL,"
             " PRIMARY KEY (\"key \"\"one\"\".x\", n))",
             tbl, col);
    setup2(ddl, ddl, tbl);
    char sql[4096];
    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s\" VALUES (X'00ff', 1, 'v1'), (X'00ff', 2, 'v2');"
             "UPDATE \"%s\" SET \"%s\" = 'w1' WHERE n = 1;"
             "DELETE FROM \"%s\" WHERE n = 2",
             tbl, tbl, col, tbl);
    rt_exec(A, sql);
    rt_send(A, B, NULL);
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY n", tbl);
    RT_EXPECT(B, sql, "X'00FF'|1|'w1'\n");
    expect_same_digest(A, B);
    teardown();
}

/* Issue 15.2: app triggers that write tracked tables.  foo's AFTER INSERT
** trigger writes an audit row (tracked) keyed by the foo row, bumps a
** per-device counter (untracked) and feeds an FTS index.  Applying A's foo
** row on B fires the same triggers; A's own audit row then arrives on the
** same key, and the two copies merge into one row, in whichever order the
** tables come.  B never stalls, and both converge. */
static void app_triggers_writing_tracked_tables(void)
{
    const char *ddl = "CREATE TABLE foo(id TEXT PRIMARY KEY, body TEXT NOT NULL);"
                      "CREATE TABLE audit(id TEXT PRIMARY KEY, what TEXT NOT NULL, ref TEXT);"
                      "CREATE TABLE counts(k TEXT PRIMARY KEY, n INT NOT NULL);"
                      "INSERT INTO counts VALUES ('foo', 0);"
                      "CREATE VIRTUAL TABLE foo_fts USING fts5(body);"
                      "CREATE TRIGGER foo_audit AFTER INSERT ON foo BEGIN"
                      "  INSERT OR REPLACE INTO audit VALUES ('ins:' || NEW.id, 'insert', NEW.id);"
                      "  UPDATE counts SET n = n + 1 WHERE k = 'foo';"
                      "  INSERT INTO foo_fts(rowid, body) VALUES (NEW.rowid, NEW.body); END;";
    for (int order = 0; order < 2; order++) {
        rt_init();
        A = rt_open("a.db");
        B = rt_open("b.db");
        rt_exec(A, ddl);
        rt_exec(B, ddl);
        /* The order tables were tracked in is the order a batch lists them. */
        const char *first = order ? "audit" : "foo", *second = order ? "foo" : "audit";
        CHECK_OK(knit_track(A, first, NULL));
        CHECK_OK(knit_track(A, second, NULL));
        CHECK_OK(knit_track(B, first, NULL));
        CHECK_OK(knit_track(B, second, NULL));
        rt_exec(A, "INSERT INTO foo VALUES ('x', 'hello world'), ('y', 'goodbye')");
        knit_apply_stats_t st = rt_send(A, B, NULL);
        CHECK_EQ_INT(st.aside, 0);
        CHECK_EQ_INT(refused_rows(B), 0);
        RT_EXPECT(B, "SELECT * FROM foo ORDER BY id", "'x'|'hello world'\n'y'|'goodbye'\n");
        RT_EXPECT(B, "SELECT * FROM audit ORDER BY id",
                  "'ins:x'|'insert'|'x'\n'ins:y'|'insert'|'y'\n");
        RT_EXPECT(B, "SELECT n FROM counts", "2\n");
        RT_EXPECT(B, "SELECT count(*) FROM foo_fts WHERE foo_fts MATCH 'hello'", "1\n");
        CHECK_EQ_INT(knit_verify(B, NULL, NULL), 0);
        /* Whatever B's triggers made is B's own; once exchanged, one row each. */
        rt_send(B, A, NULL);
        rt_send(A, B, NULL);
        RT_EXPECT(A, "SELECT * FROM audit ORDER BY id",
                  "'ins:x'|'insert'|'x'\n'ins:y'|'insert'|'y'\n");
        expect_same_digest(A, B);
        /* B writes too: its trigger's audit row reaches A, A's triggers
        ** fire for the foo row there, and the copies merge. */
        rt_exec(B, "INSERT INTO foo VALUES ('z', 'from b')");
        rt_send(B, A, NULL);
        rt_send(A, B, NULL);
        RT_EXPECT(A, "SELECT id FROM audit ORDER BY id", "'ins:x'\n'ins:y'\n'ins:z'\n");
        RT_EXPECT(A, "SELECT count(*) FROM foo_fts WHERE foo_fts MATCH 'from'", "1\n");
        expect_same_digest(A, B);
        CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
        teardown();
    }
}

/* Rows set aside by one apply are not merged again in it (apply.c note 10),
** also when that apply emptied _knit_aside first: there 'a' recovers, which
** frees the only id taken before, and then 'z' is refused in a later life.
** Were 'z' given the freed id, the retry after B's schema change would read
** its liveness alone as an older set-aside change and insert the row of
** the refused life, while its refused value stays aside. */
static void refused_row_not_retried_in_same_apply(void)
{
    setup2("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)",
           "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT CHECK (v IS NOT 'bad'))", "kv");
    uint64_t since = 0;
    rt_exec(A, "INSERT INTO kv VALUES ('a', '1'), ('z', '2')");
    rt_send(A, B, &since);
    rt_exec(A, "DELETE FROM kv WHERE k = 'z'");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "UPDATE kv SET v = 'bad' WHERE k = 'a'");
    knit_apply_stats_t st = rt_send(A, B, &since);
    CHECK_EQ_INT(st.aside, 1);
    RT_EXPECT(B, "SELECT * FROM kv", "'a'|'1'\n");
    rt_exec(B, "CREATE INDEX kv_v ON kv(v)"); /* the schema changes: retry all */
    rt_exec(A, "UPDATE kv SET v = 'good' WHERE k = 'a'");
    CHECK(knit_stamp(A) > 0);
    rt_exec(A, "INSERT INTO kv VALUES ('z', 'bad')"); /* life 3 */
    st = rt_send(A, B, &since);
    RT_EXPECT(B, "SELECT * FROM kv ORDER BY k", "'a'|'good'\n"); /* no 'z' of life 3 */
    CHECK_EQ_INT(st.recovered, 1);
    CHECK_EQ_INT(refused_rows(B), 1);
    RT_EXPECT(B, "SELECT key, col FROM _knit_aside ORDER BY id", "'''z'''|''\n'''z'''|'v'\n");
    CHECK_EQ_INT(knit_verify(B, NULL, NULL), 0);
    teardown();
}

/* The same for changes set aside before: merged with a batch's and refused
** again, they count as set aside by this apply.  B's trigger refused 'z';
** B drops it, which would let the old changes apply alone, but not with
** the value that came since: the retry must not insert 'z' without it. */
static void refused_again_not_retried_in_same_apply(void)
{
    setup2("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT, w TEXT)",
           "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT, w TEXT CHECK (w IS NOT 'bad'));"
           "CREATE TRIGGER no_z BEFORE INSERT ON kv WHEN NEW.k = 'z'"
           " BEGIN SELECT RAISE(ABORT, 'no z'); END",
           "kv");
    uint64_t since = 0;
    rt_exec(A, "INSERT INTO kv VALUES ('z', '1', NULL)");
    knit_apply_stats_t st = rt_send(A, B, &since);
    CHECK_EQ_INT(refused_rows(B), 1);
    rt_exec(B, "DROP TRIGGER no_z"); /* the schema changes: retry all */
    rt_exec(A, "UPDATE kv SET w = 'bad'");
    st = rt_send(A, B, &since);
    RT_EXPECT(B, "SELECT count(*) FROM kv", "0\n");
    CHECK_EQ_INT(st.recovered, 0);
    CHECK_EQ_INT(refused_rows(B), 1);
    RT_EXPECT(B, "SELECT col, kind FROM _knit_aside ORDER BY col",
              "''|'refused'\n'v'|'refused'\n'w'|'refused'\n");
    CHECK_EQ_INT(knit_verify(B, NULL, NULL), 0);
    teardown();
}

KNIT_TESTS(T(notnull_liveness_and_value_in_different_units), T(notnull_split_across_pages_recovers),
           T(refused_later_life_then_local_insert_survives), T(stricter_schema_sets_rows_aside),
           T(poisoned_set_state_set_aside_alone), T(cells_of_unknown_columns_wait_for_migration),
           T(rollback_forgets_interned_sites), T(set_aside_orset_state_under_oom),
           T(long_and_quoted_identifiers), T(app_triggers_writing_tracked_tables),
           T(refused_row_not_retried_in_same_apply), T(refused_again_not_retried_in_same_apply))
