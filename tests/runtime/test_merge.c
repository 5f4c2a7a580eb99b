/*
** test_merge.c: replicas exchanging changes through the API (no network)
** converge: LWW conflicts, equal-HLC ties, deletes against updates,
** resurrection, OR-set concurrent add/remove, composite and BLOB keys, NULL,
** REAL against INTEGER, large values; and a seeded random test of three
** replicas written by plain SQL connections.
*/
#include "rt.h"

#define T_SCHEMA "CREATE TABLE t(id TEXT PRIMARY KEY, a, b, tags)"

/* Two replicas with table t tracked (tags an OR-set), each with its clock. */
static knit_t *A, *B, *C;
static rt_clock_t ca = {1700000000000}, cb = {1700000000000}, cc = {1700000000000};

static void setup(int three)
{
    ca.ms = cb.ms = cc.ms = 1700000000000; /* cases may run in one process */
    rt_init();
    A = rt_open_clock("a.db", &ca);
    B = rt_open_clock("b.db", &cb);
    C = three ? rt_open_clock("c.db", &cc) : NULL;
    knit_t *all[3] = {A, B, C};
    for (int i = 0; i < 3 && all[i]; i++) {
        rt_exec(all[i], T_SCHEMA);
        CHECK_OK(knit_track(all[i], "t", "tags:orset"));
        CHECK_OK(knit_set_namespace(all[i], "test"));
    }
}

static void teardown(void)
{
    knit_close(A);
    knit_close(B);
    knit_close(C);
    A = B = C = NULL;
    rt_done();
}

/* Full exchange until quiet: every replica sends everything to every other. */
static void sync_all(void)
{
    knit_t *all[3] = {A, B, C};
    int n = C ? 3 : 2;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (i != j)
                    rt_send(all[i], all[j], NULL);
}

static void expect_equal(const char *sql)
{
    char *a = rt_dump(A, sql), *b = rt_dump(B, sql);
    if (strcmp(a, b) != 0) {
        fprintf(stderr, "replicas differ on %s\nA:\n%sB:\n%s", sql, a, b);
        CHECK(0);
    }
    if (C) {
        char *c = rt_dump(C, sql);
        if (strcmp(a, c) != 0) {
            fprintf(stderr, "replicas differ on %s\nA:\n%sC:\n%s", sql, a, c);
            CHECK(0);
        }
        sqlite3_free(c);
    }
    sqlite3_free(a);
    sqlite3_free(b);
    knit_digest_t da, db, dc;
    CHECK_OK(knit_digest(A, NULL, &da));
    CHECK_OK(knit_digest(B, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
    if (C) {
        CHECK_OK(knit_digest(C, NULL, &dc));
        if (!knit_digest_equal(&da, &dc)) {
            const char *m =
                "SELECT r.k0, r.cl, hex(r.cells), s.col, hex(s.state) FROM _knit_rows_1 r "
                "LEFT JOIN _knit_sets_1 s ON s.k0 = r.k0 ORDER BY 1, 4";
            char *x = rt_dump(A, m), *y = rt_dump(C, m), *z = rt_dump(B, m);
            fprintf(stderr, "A:\n%sB:\n%sC:\n%s", x, z, y);
            fprintf(stderr, "sites A:\n%s", rt_dump(A, "SELECT idx, hex(site) FROM _knit_sites"));
            fprintf(stderr, "sites C:\n%s", rt_dump(C, "SELECT idx, hex(site) FROM _knit_sites"));
        }
        CHECK(knit_digest_equal(&da, &dc));
    }
    knit_t *all[3] = {A, B, C};
    for (int i = 0; i < 3 && all[i]; i++)
        CHECK_EQ_INT(knit_verify(all[i], NULL, NULL), 0);
}

static void lww_later_write_wins(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, 'x', '[]')");
    sync_all();
    ca.ms += 10;
    rt_exec(A, "UPDATE t SET a = 2");
    CHECK(knit_stamp(A) == 1);
    cb.ms += 20; /* B writes later in time, and also a different column */
    rt_exec(B, "UPDATE t SET a = 3, b = 'y'");
    CHECK(knit_stamp(B) == 1);
    ca.ms += 30;
    rt_exec(A, "UPDATE t SET b = 'z'"); /* latest for b */
    sync_all();
    RT_EXPECT(A, "SELECT id, a, b FROM t", "'r'|3|'z'\n");
    expect_equal("SELECT * FROM t");
    /* Applying the same batch again changes nothing. */
    knit_batch_t *b;
    knit_apply_stats_t st;
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK_OK(knit_apply(B, b, &st));
    CHECK_EQ_INT(st.applied, 0);
    CHECK(st.known > 0);
    knit_batch_free(b);
    teardown();
}

/* Equal HLCs: the larger site id wins, on both sides, whatever the values. */
static void lww_tie_breaks_on_site(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('r', 0, NULL, NULL)");
    sync_all();
    ca.ms = cb.ms = 1800000000000; /* same millisecond, fresh counters */
    rt_exec(A, "UPDATE t SET a = 'from A'");
    rt_exec(B, "UPDATE t SET a = 'from B'");
    CHECK(knit_stamp(A) == 1);
    CHECK(knit_stamp(B) == 1);
    knit_site_t sa, sb;
    knit_site(A, &sa);
    knit_site(B, &sb);
    sync_all();
    const char *want = knit_site_cmp(&sa, &sb) > 0 ? "'from A'\n" : "'from B'\n";
    RT_EXPECT(A, "SELECT a FROM t", want);
    RT_EXPECT(B, "SELECT a FROM t", want);
    expect_equal("SELECT * FROM t");
    teardown();
}

/* A delete wins over a concurrent update that did not see it; an insert
** after the delete resurrects the row with the new values. */
static void delete_beats_concurrent_update_then_resurrect(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, 'x', '[\"t\"]')");
    sync_all();
    ca.ms += 5;
    rt_exec(A, "DELETE FROM t");
    cb.ms += 500; /* later in time, but did not see the delete */
    rt_exec(B, "UPDATE t SET a = 99, tags = '[\"t\",\"u\"]'");
    sync_all();
    RT_EXPECT(A, "SELECT count(*) FROM t", "0\n");
    RT_EXPECT(B, "SELECT count(*) FROM t", "0\n");
    expect_equal("SELECT * FROM t");
    ca.ms += 1000;
    rt_exec(A, "INSERT INTO t VALUES ('r', 2, 'again', '[\"n\"]')");
    sync_all();
    RT_EXPECT(B, "SELECT id, a, b, tags FROM t", "'r'|2|'again'|'[\"n\"]'\n");
    RT_EXPECT(B, "SELECT cl FROM _knit_rows_1", "3\n");
    expect_equal("SELECT * FROM t");
    /* Concurrent delete on both sides: still deleted, one causal length. */
    rt_exec(A, "DELETE FROM t");
    rt_exec(B, "DELETE FROM t");
    sync_all();
    RT_EXPECT(A, "SELECT count(*), (SELECT cl FROM _knit_rows_1) FROM t", "0|4\n");
    expect_equal("SELECT * FROM t");
    teardown();
}

/* Add-wins: concurrent add and remove of one element keeps it; concurrent
** removes of different elements both happen; adds from both sides union. */
static void orset_concurrent_add_remove(void)
{
    setup(1);
    rt_exec(A, "INSERT INTO t VALUES ('r', 0, NULL, '[\"keep\",\"x\",\"y\"]')");
    sync_all();
    rt_exec(A, "UPDATE t SET tags = '[\"keep\",\"y\",\"a1\"]'");         /* remove x, add a1 */
    rt_exec(B, "UPDATE t SET tags = '[\"keep\",\"x\",\"b1\"]'");         /* remove y, add b1 */
    rt_exec(C, "UPDATE t SET tags = '[\"x\",\"y\",\"keep\",\"keep\"]'"); /* same set, reordered */
    sync_all();
    RT_EXPECT(A, "SELECT tags FROM t", "'[\"a1\",\"b1\",\"keep\"]'\n");
    expect_equal("SELECT * FROM t");
    /* A removes keep while B re-adds it concurrently: add wins. */
    rt_exec(A, "UPDATE t SET tags = '[\"a1\",\"b1\"]'");
    rt_exec(B, "UPDATE t SET tags = '[\"a1\",\"b1\"]'");
    CHECK(knit_stamp(B) == 1);
    rt_exec(B, "UPDATE t SET tags = '[\"a1\",\"b1\",\"keep\"]'");
    sync_all();
    RT_EXPECT(C, "SELECT tags FROM t", "'[\"a1\",\"b1\",\"keep\"]'\n");
    RT_EXPECT(C, "SELECT value FROM t, json_each(t.tags) ORDER BY value", "'a1'\n'b1'\n'keep'\n");
    expect_equal("SELECT * FROM t");
    teardown();
}

/* Composite and BLOB keys, NULLs, REAL against INTEGER, large values. */
static void keys_and_value_types(void)
{
    ca.ms = cb.ms = 1700000000000;
    rt_init();
    A = rt_open_clock("a.db", &ca);
    B = rt_open_clock("b.db", &cb);
    const char *ddl = "CREATE TABLE m(k1 BLOB, k2 INT, k3 TEXT, v, w REAL, x NUMERIC, "
                      "PRIMARY KEY(k1, k2, k3)) WITHOUT ROWID";
    rt_exec(A, ddl);
    rt_exec(B, ddl);
    CHECK_OK(knit_track(A, "m", NULL));
    CHECK_OK(knit_track(B, "m", NULL));
    rt_exec(A, "INSERT INTO m VALUES (X'00FF00', 1, 'a', NULL, 1, 2.0),"
               " (X'', -9223372036854775808, '', 1.0, 2.5, '3'),"
               " (X'01', 9223372036854775807, 'ü', 1, -0.0, 1e300),"
               " (zeroblob(0), 0, 'big', randomblob(300000), NULL, NULL),"
               " (X'02', 2, 'text', printf('%.*c', 200000, 'q'), 1e-300, -1)");
    rt_send(A, B, NULL);
    const char *q = "SELECT hex(k1), k2, k3, typeof(v), quote(v), typeof(w), w, typeof(x), x "
                    "FROM m ORDER BY k1, k2, k3";
    expect_equal(q);
    expect_equal("SELECT hex(k1), k2, k3, hex(v) FROM m ORDER BY 1, 2, 3");
    RT_EXPECT(B, "SELECT typeof(v) FROM m WHERE k3 = ''", "'real'\n");
    RT_EXPECT(B, "SELECT typeof(v) FROM m WHERE k3 = 'ü'", "'integer'\n");
    /* Updating 1.0 -> 1 (same number, other type) in a no-affinity column is
    ** a change and travels. */
    rt_exec(A, "UPDATE m SET v = 1 WHERE k3 = ''");
    rt_exec(A, "UPDATE m SET v = NULL WHERE k3 = 'ü'");
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT typeof(v) FROM m WHERE k3 = ''", "'integer'\n");
    RT_EXPECT(B, "SELECT typeof(v) FROM m WHERE k3 = 'ü'", "'null'\n");
    expect_equal(q);
    knit_close(A);
    knit_close(B);
    A = B = NULL;
    rt_done();
}

/* A batch from a clock far in the future is refused whole. */
static void refuses_future_stamps(void)
{
    setup(0);
    ca.ms = cb.ms + 60ull * 60 * 1000; /* A's clock is an hour ahead */
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, NULL, NULL)");
    knit_batch_t *b;
    CHECK_OK(knit_changes_since(A, 0, NULL, &b));
    CHECK_EQ_INT(knit_apply(B, b, NULL), KNIT_ECLOCKSKEW);
    CHECK(strstr(knit_errmsg(B), "future") != NULL);
    RT_EXPECT(B, "SELECT count(*) FROM t", "0\n");
    knit_batch_free(b);
    ca.ms = cb.ms;
    teardown();
}

/* Applied changes are not captured as local writes. */
static void applied_changes_not_captured(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, 'x', '[\"a\"]')");
    rt_send(A, B, NULL);
    knit_batch_t *b;
    knit_since_opts_t o = {.local_only = 1};
    CHECK_OK(knit_changes_since(B, 0, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0);
    knit_batch_free(b);
    RT_EXPECT(B, "SELECT count(*) FROM _knit_log_1", "0\n");
    teardown();
}

/* Sends only the sender's own changes newer than what it had acknowledged,
** and acknowledges them: what the sync client does through a relay. */
static void push_local(knit_t *from, knit_t *to)
{
    knit_since_opts_t o = {.local_only = 1};
    knit_batch_t *b;
    uint64_t acked;
    CHECK_OK(knit_acked(from, &acked));
    CHECK_OK(knit_changes_since(from, acked, &o, &b));
    CHECK_OK(knit_apply(to, b, NULL));
    if (b->ntxns)
        CHECK_OK(knit_ack(from, b->txns[b->ntxns - 1].version));
    knit_batch_free(b);
}

/* A set with unpushed local operations that receives a remote state keeps
** its local operations pending: pushing only local changes converges. */
static void orset_local_ops_survive_remote_merge(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('n1', 0, NULL, '[\"a\",\"b\"]')");
    push_local(A, B);
    rt_exec(A, "UPDATE t SET tags = '[\"b\",\"c\"]'"); /* remove a, add c: not pushed */
    CHECK(knit_stamp(A) == 1);
    cb.ms += 100; /* B's write is later in time than A's unpushed one */
    rt_exec(B, "UPDATE t SET tags = '[\"a\",\"b\",\"d\"]'");
    push_local(B, A); /* B's state arrives before A pushed */
    push_local(A, B);
    push_local(B, A);
    RT_EXPECT(A, "SELECT tags FROM t", "'[\"b\",\"c\",\"d\"]'\n");
    expect_equal("SELECT * FROM t");
    /* Once both sides agree, nothing more is pending on either. */
    knit_since_opts_t o = {.local_only = 1};
    knit_batch_t *b;
    uint64_t acked;
    push_local(A, B);
    push_local(B, A);
    CHECK_OK(knit_acked(A, &acked));
    CHECK_OK(knit_changes_since(A, acked, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0);
    knit_batch_free(b);
    teardown();
}

/* Signing in: rows written anonymously move to the account's namespace,
** unpushed changes go with them, and new rows follow. */
static void move_namespace_on_sign_in(void)
{
    setup(0);
    knit_t *anon = rt_open_clock("anon.db", &cc);
    rt_exec(anon, T_SCHEMA);
    CHECK_OK(knit_track(anon, "t", "tags:orset"));
    rt_exec(anon, "INSERT INTO t VALUES ('early', 1, NULL, '[]')"); /* before any sync */
    CHECK_OK(knit_set_namespace(anon, "anon:dev1"));
    rt_exec(anon, "INSERT INTO t VALUES ('pushed', 2, NULL, '[]')");
    push_local(anon, B); /* acknowledged under anon:dev1 */
    rt_exec(anon, "INSERT INTO t VALUES ('pending', 3, NULL, '[\"p\"]')");
    CHECK_EQ_INT(knit_move_namespace(anon, "anon:dev1", "user:alice"), 3);
    CHECK_EQ_INT(knit_move_namespace(anon, "anon:dev1", "user:alice"), 0); /* idempotent */
    char ns[64];
    CHECK_OK(knit_namespace(anon, ns, sizeof ns));
    CHECK_STR(ns, "user:alice");
    rt_exec(anon, "INSERT INTO t VALUES ('after', 4, NULL, '[]')");
    knit_batch_t *b;
    knit_since_opts_t o = {.local_only = 1, .ns = "user:alice"};
    uint64_t acked;
    CHECK_OK(knit_acked(anon, &acked));
    CHECK_OK(knit_changes_since(anon, acked, &o, &b));
    /* pending (liveness + 3 cells) and after (liveness + 3 cells) */
    CHECK_EQ_INT(b->nchanges, 8);
    CHECK_EQ_INT(b->nns, 1);
    CHECK_STR(b->ns[0], "user:alice");
    knit_batch_free(b);
    o.ns = "anon:dev1";
    CHECK_OK(knit_changes_since(anon, 0, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0); /* nothing is left behind */
    knit_batch_free(b);
    CHECK_EQ_INT(knit_verify(anon, NULL, NULL), 0);
    knit_close(anon);
    teardown();
}

/* The application's own triggers on a tracked table (an audit log here, an
** FTS index in real apps) fire on applied changes too, and knit's writes
** are still not captured as local ones. */
static void app_triggers_fire_on_apply(void)
{
    setup(0);
    rt_exec(B, "CREATE TABLE audit(id TEXT, what TEXT);"
               "CREATE TRIGGER app_ins AFTER INSERT ON t BEGIN"
               " INSERT INTO audit VALUES (NEW.id, 'insert'); END;"
               "CREATE TRIGGER app_upd AFTER UPDATE ON t BEGIN"
               " INSERT INTO audit VALUES (NEW.id, 'update'); END;");
    rt_exec(A, "INSERT INTO t VALUES ('r', 1, 'x', '[]')");
    rt_send(A, B, NULL);
    rt_exec(A, "UPDATE t SET a = 2");
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT id, what FROM audit ORDER BY rowid", "'r'|'insert'\n'r'|'update'\n");
    knit_since_opts_t o = {.local_only = 1};
    knit_batch_t *b;
    CHECK_OK(knit_changes_since(B, 0, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0);
    knit_batch_free(b);
    RT_EXPECT(B, "SELECT count(*) FROM _knit_log_1", "0\n");
    /* Once the app's triggers are gone, applies skip triggers altogether. */
    rt_exec(B, "DROP TRIGGER app_ins; DROP TRIGGER app_upd");
    rt_exec(A, "UPDATE t SET a = 3");
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT count(*), (SELECT a FROM t) FROM audit", "2|3\n");
    CHECK_OK(knit_changes_since(B, 0, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0);
    knit_batch_free(b);
    teardown();
}

/* Failing the Nth allocation inside changes_since or apply returns an error
** and leaves both replicas usable: a later exchange converges. */
#include "alloc.h"
static void allocation_failures(void)
{
    setup(0);
    rt_exec(A, "INSERT INTO t VALUES ('r1', 1, 'x', '[\"a\",\"b\"]'), ('r2', 2, X'00', NULL)");
    rt_exec(A, "DELETE FROM t WHERE id = 'r2'");
    int failures = 0;
    for (long nth = 1; nth < 400; nth++) {
        knit_batch_t *b = NULL;
        knit__alloc_fail_at(nth, 0);
        int rc = knit_changes_since(A, 0, NULL, &b);
        if (rc == 0)
            rc = knit_apply(B, b, NULL);
        long used = knit__alloc_fail_at(0, 0);
        knit_batch_free(b);
        if (rc) {
            if (rc != KNIT_ENOMEM && rc != KNIT_EDB)
                fprintf(stderr, "nth %ld: %s (%s)\n", nth, knit_err_name(rc), knit_errmsg(B));
            CHECK(rc == KNIT_ENOMEM || rc == KNIT_EDB);
            failures++;
            CHECK_EQ_INT(knit_verify(B, NULL, NULL), 0);
        }
        if (used < nth)
            break; /* the whole exchange ran without reaching the nth allocation */
    }
    CHECK(failures > 10);
    sync_all();
    expect_equal("SELECT * FROM t ORDER BY id");
    teardown();
}

/* One random write on a plain connection (statement chosen by r). */
static void random_write(knit_rng_t *r, sqlite3 *db)
{
    static const char *vals[] = {"NULL", "0",   "1",   "1.0",   "-7",
                                 "2.5",  "'a'", "'b'", "X'00'", "'longer text value'"};
    static const char *sets[] = {"'[]'",        "'[\"x\"]'", "'[\"y\"]'", "'[\"x\",\"y\"]'",
                                 "'[1,\"x\"]'", "NULL"};
    char sql[512];
    int key = (int)knit_rng_below(r, 6);
    switch (knit_rng_below(r, 5)) {
    case 0:
    case 1:
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO t VALUES ('k%d', %s, %s, %s)", key,
                 vals[knit_rng_below(r, 10)], vals[knit_rng_below(r, 10)],
                 sets[knit_rng_below(r, 6)]);
        break;
    case 2:
        snprintf(sql, sizeof sql, "UPDATE t SET a = %s WHERE id = 'k%d'",
                 vals[knit_rng_below(r, 10)], key);
        break;
    case 3:
        snprintf(sql, sizeof sql, "UPDATE t SET tags = %s, b = %s WHERE id = 'k%d'",
                 sets[knit_rng_below(r, 6)], vals[knit_rng_below(r, 10)], key);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM t WHERE id = 'k%d'", key);
        break;
    }
    rt_plain_ok(db, sql);
}

/* Random writes from plain connections on three replicas, random exchanges;
** at the end every table is identical everywhere. */
static void random_three_replicas(void)
{
    uint64_t seed = knit_test_seed();
    long cases = knit_test_cases(30);
    for (long n = 0; n < cases; n++) {
        knit_test_case_seed(seed + (uint64_t)n);
        knit_rng_t r = {seed + (uint64_t)n};
        setup(1);
        knit_t *all[3] = {A, B, C};
        rt_clock_t *clk[3] = {&ca, &cb, &cc};
        sqlite3 *plain[3];
        const char *names[3] = {"a.db", "b.db", "c.db"};
        uint64_t sent[3][3] = {{0}};
        for (int i = 0; i < 3; i++)
            plain[i] = rt_plain(names[i]);
        for (int step = 0; step < 60; step++) {
            int i = (int)knit_rng_below(&r, 3);
            clk[i]->ms += knit_rng_below(&r, 3); /* often equal milliseconds */
            if (knit_rng_below(&r, 6) == 0) {
                /* exchange: one direction, possibly stale (from 0) */
                int j = (int)knit_rng_below(&r, 3);
                if (j != i) {
                    uint64_t since = knit_rng_below(&r, 4) == 0 ? 0 : sent[i][j];
                    rt_send(all[i], all[j], &since);
                    if (since > sent[i][j])
                        sent[i][j] = since;
                }
                continue;
            }
            random_write(&r, plain[i]);
            if (knit_rng_below(&r, 3) == 0)
                CHECK(knit_stamp(all[i]) >= 0);
        }
        for (int i = 0; i < 3; i++)
            sqlite3_close(plain[i]);
        sync_all();
        expect_equal("SELECT * FROM t ORDER BY id");
        teardown();
    }
}

/* knit_batch_coalesce, as the sync client sends a push: A's state, many
** stamps of random plain writes (and B's cells merged in), merged into one
** unit, brings a fresh C to exactly A's state; the unit holds every change
** once, in row order, with the last unit's version. */
static void coalesced_units(void)
{
    uint64_t seed = knit_test_seed();
    long cases = knit_test_cases(30);
    for (long n = 0; n < cases; n++) {
        knit_test_case_seed(seed + (uint64_t)n);
        knit_rng_t r = {seed + (uint64_t)n};
        setup(1);
        sqlite3 *pa = rt_plain("a.db"), *pb = rt_plain("b.db");
        for (int step = 0; step < 40; step++) {
            random_write(&r, knit_rng_below(&r, 4) ? pa : pb);
            ca.ms += knit_rng_below(&r, 3);
            cb.ms += knit_rng_below(&r, 3);
            if (knit_rng_below(&r, 3) == 0) {
                CHECK(knit_stamp(A) >= 0);
                CHECK(knit_stamp(B) >= 0);
            }
            if (knit_rng_below(&r, 8) == 0)
                rt_send(B, A, NULL);
        }
        sqlite3_close(pa);
        sqlite3_close(pb);
        CHECK(knit_stamp(A) >= 0);
        knit_batch_t *u = NULL, *b = NULL;
        CHECK_OK(knit_changes_since(A, 0, NULL, &u));
        CHECK_OK(knit_changes_since(A, 0, NULL, &b));
        CHECK_OK(knit_batch_coalesce(b));
        CHECK_EQ_INT(b->nchanges, u->nchanges);
        if (u->ntxns) {
            CHECK_EQ_INT(b->ntxns, 1);
            CHECK(b->txns[0].version == u->txns[u->ntxns - 1].version);
            CHECK_EQ_INT(b->txns[0].first, 0);
            CHECK_EQ_INT(b->txns[0].count, b->nchanges);
        }
        for (size_t i = 1; i < b->nchanges; i++) {
            const knit_change_t *x = &b->changes[i - 1], *y = &b->changes[i];
            int c = x->table < y->table ? -1 : x->table > y->table;
            for (uint32_t k = 0; !c && k < b->tables[x->table].npk; k++)
                c = knit_value_cmp(&x->pk[k], &y->pk[k]);
            CHECK(c < 0 || (c == 0 && (x->cl < y->cl || (x->cl == y->cl && x->col < y->col))));
        }
        knit_apply_stats_t st = {0};
        CHECK_OK(knit_apply(C, b, &st));
        CHECK_EQ_INT(st.aside, 0);
        knit_batch_free(u);
        knit_batch_free(b);
        knit_digest_t da, dc;
        CHECK_OK(knit_digest(A, NULL, &da));
        CHECK_OK(knit_digest(C, NULL, &dc));
        CHECK(knit_digest_equal(&da, &dc));
        char *ta = rt_dump(A, "SELECT * FROM t ORDER BY id"),
             *tc = rt_dump(C, "SELECT * FROM t ORDER BY id");
        CHECK_STR(ta, tc);
        sqlite3_free(ta);
        sqlite3_free(tc);
        teardown();
    }
}

/* Applies everything the hub has after *cursor, like a relay's DELTAS. */
static void pull(knit_t *hub, knit_t *to, uint64_t *cursor)
{
    knit_batch_t *b;
    CHECK_OK(knit_changes_since(hub, *cursor, NULL, &b));
    CHECK_OK(knit_apply(to, b, NULL));
    if (b->ntxns)
        *cursor = b->txns[b->ntxns - 1].version;
    knit_batch_free(b);
}

/* Random writes on three replicas syncing the way the relay makes them:
** each pushes only its own unacknowledged changes to a hub, and the hub
** sends each replica everything newer than that replica's cursor.  Pushes
** and pulls interleave with writes at random. */
static void random_through_hub(void)
{
    uint64_t seed = knit_test_seed();
    long cases = knit_test_cases(30);
    for (long n = 0; n < cases; n++) {
        knit_test_case_seed(seed + (uint64_t)n);
        knit_rng_t r = {seed + (uint64_t)n};
        setup(1);
        rt_clock_t ch = {1700000000000};
        knit_t *hub = rt_open_clock("hub.db", &ch);
        rt_exec(hub, T_SCHEMA);
        CHECK_OK(knit_track(hub, "t", "tags:orset"));
        knit_t *all[3] = {A, B, C};
        rt_clock_t *clk[3] = {&ca, &cb, &cc};
        const char *names[3] = {"a.db", "b.db", "c.db"};
        sqlite3 *plain[3];
        uint64_t cursor[3] = {0};
        for (int i = 0; i < 3; i++)
            plain[i] = rt_plain(names[i]);
        for (int step = 0; step < 80; step++) {
            int i = (int)knit_rng_below(&r, 3);
            clk[i]->ms += knit_rng_below(&r, 3);
            ch.ms = clk[i]->ms > ch.ms ? clk[i]->ms : ch.ms;
            switch (knit_rng_below(&r, 4)) {
            case 0:
                push_local(all[i], hub);
                break;
            case 1:
                pull(hub, all[i], &cursor[i]);
                break;
            default:
                random_write(&r, plain[i]);
            }
        }
        /* Drain: push and pull until every replica equals the hub. */
        for (int round = 0; round < 3; round++)
            for (int i = 0; i < 3; i++) {
                push_local(all[i], hub);
                for (int j = 0; j < 3; j++)
                    pull(hub, all[j], &cursor[j]);
            }
        for (int i = 0; i < 3; i++)
            sqlite3_close(plain[i]);
        expect_equal("SELECT * FROM t ORDER BY id");
        char *h = rt_dump(hub, "SELECT * FROM t ORDER BY id"),
             *a = rt_dump(A, "SELECT * FROM t ORDER BY id");
        CHECK_STR(h, a);
        sqlite3_free(h);
        sqlite3_free(a);
        knit_close(hub);
        teardown();
    }
}

KNIT_TESTS(T(lww_later_write_wins), T(lww_tie_breaks_on_site),
           T(delete_beats_concurrent_update_then_resurrect), T(orset_concurrent_add_remove),
           T(keys_and_value_types), T(refuses_future_stamps), T(applied_changes_not_captured),
           T(orset_local_ops_survive_remote_merge), T(move_namespace_on_sign_in),
           T(app_triggers_fire_on_apply), T(allocation_failures), T(random_three_replicas),
           T(coalesced_units), T(random_through_hub))
