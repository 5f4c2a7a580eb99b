/*
** test_capture.c: capture and stamping as users meet them: the time of a
** write decides last-writer-wins even when no agent ran; schema migrations
** (ADD COLUMN, the table rebuild, RENAME COLUMN, DROP COLUMN) keep capture or
** are refused with a message; columns added on a live replica lose to real
** writes; and names of any length and content.  Real SQLite files in /tmp,
** writes through plain sqlite3 connections.
*/
#include <time.h>

#include "replica.h" /* knit__capture_current */
#include "rt.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs sql on a fresh plain connection to file name (no knit loaded). */
static void plain(const char *name, const char *sql)
{
    sqlite3 *db = rt_plain(name);
    rt_plain_ok(db, sql);
    sqlite3_close(db);
}

static int64_t meta_hlc(knit_t *k)
{
    char *s = rt_dump(k, "SELECT value FROM _knit_meta WHERE key = 'hlc'");
    int64_t v = strtoll(s, NULL, 10);
    sqlite3_free(s);
    return v;
}

/* The HLC of cell col (0 = liveness) of the row whose first key is the
** text key, from a full changes_since. */
static uint64_t cell_hlc(knit_t *k, const char *key, uint32_t col)
{
    knit_batch_t *b;
    uint64_t h = 0;
    CHECK_OK(knit_changes_since(k, 0, NULL, &b));
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *c = &b->changes[i];
        if (c->col == col && c->pk[0].type == KNIT_TEXT && c->pk[0].u.b.n == strlen(key) &&
            memcmp(c->pk[0].u.b.p, key, c->pk[0].u.b.n) == 0)
            h = c->hlc;
    }
    knit_batch_free(b);
    return h;
}

static int count_knit_triggers(knit_t *k)
{
    char *s = rt_dump(k, "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND "
                         "name LIKE '\\_knit\\_%' ESCAPE '\\'");
    int n = atoi(s);
    sqlite3_free(s);
    return n;
}

static void expect_converged(knit_t *a, knit_t *b, const char *sql)
{
    char *x = rt_dump(a, sql), *y = rt_dump(b, sql);
    if (strcmp(x, y) != 0) {
        fprintf(stderr, "replicas differ on %s\nA:\n%sB:\n%s", sql, x, y);
        CHECK(0);
    }
    sqlite3_free(x);
    sqlite3_free(y);
    knit_digest_t da, db;
    CHECK_OK(knit_digest(a, NULL, &da));
    CHECK_OK(knit_digest(b, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
    CHECK_EQ_INT(knit_verify(a, NULL, NULL), 0);
    CHECK_EQ_INT(knit_verify(b, NULL, NULL), 0);
}

/* ---------------------------------------------------------------------- */
/* Item 1: last writer wins by the time of the write                      */

/* B writes k1, 1.5 s later A writes k1; B's agent only runs (stamps) after
** A's write.  A's write is the later one and wins on both. */
static void lww_time_of_write_wins(void)
{
    rt_init();
    knit_t *A = rt_open("a.db"), *B = rt_open("b.db");
    knit_t *all[2] = {A, B};
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
        CHECK_OK(knit_track(all[i], "t", NULL));
    }
    rt_exec(A, "INSERT INTO t VALUES ('k1', 'base')");
    rt_send(A, B, NULL);
    plain("b.db", "UPDATE t SET v = 'from B' WHERE k = 'k1'");
    usleep(1500 * 1000);
    plain("a.db", "UPDATE t SET v = 'from A' WHERE k = 'k1'");
    CHECK_EQ_INT(knit_stamp(A), 1);
    usleep(20 * 1000);
    CHECK_EQ_INT(knit_stamp(B), 1); /* no agent ran on B until now */
    /* Each write kept its own time: B's more than a second before A's. */
    uint64_t ha = cell_hlc(A, "k1", 1), hb = cell_hlc(B, "k1", 1);
    CHECK(ha > hb && (ha >> 16) - (hb >> 16) >= 1000);
    rt_send(A, B, NULL);
    rt_send(B, A, NULL);
    RT_EXPECT(A, "SELECT k, v FROM t", "'k1'|'from A'\n");
    RT_EXPECT(B, "SELECT k, v FROM t", "'k1'|'from A'\n");
    expect_converged(A, B, "SELECT * FROM t");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* A write made after seeing a remote stamp beats it even when the local
** wall clock is behind that stamp (the logged HLC + 1). */
static void lww_write_after_seen_stamp_wins(void)
{
    rt_init();
    rt_clock_t ca = {now_ms() + 120000}; /* A's clock runs 2 minutes ahead */
    knit_t *A = rt_open_clock("a.db", &ca), *B = rt_open("b.db");
    knit_t *all[2] = {A, B};
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
        CHECK_OK(knit_track(all[i], "t", NULL));
    }
    rt_exec(A, "INSERT INTO t VALUES ('k1', 'a0')");
    CHECK_EQ_INT(knit_stamp(A), 1);                        /* A's HLC is now 2 minutes ahead */
    plain("a.db", "UPDATE t SET v = 'a1' WHERE k = 'k1'"); /* logs that HLC */
    CHECK_EQ_INT(knit_stamp(A), 1);
    uint64_t ha = cell_hlc(A, "k1", 1);
    CHECK((ha >> 16) > now_ms() + 60000); /* stamped after the HLC it saw */
    rt_send(A, B, NULL);
    plain("b.db", "UPDATE t SET v = 'b' WHERE k = 'k1'"); /* B's wall is behind ha */
    CHECK_EQ_INT(knit_stamp(B), 1);
    CHECK(cell_hlc(B, "k1", 1) > ha);
    rt_send(B, A, NULL);
    rt_send(A, B, NULL);
    RT_EXPECT(A, "SELECT v FROM t", "'b'\n");
    expect_converged(A, B, "SELECT * FROM t");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* On the OS clock a write keeps its own time (below the tick); a replica on
** a clock of its own (a test clock, behind or ahead) stamps with the tick,
** since the triggers' times come from another clock. */
static void stamp_between_write_time_and_tick(void)
{
    rt_init();
    rt_clock_t behind = {1700000000000}, ahead = {now_ms() + 60000};
    knit_t *A = rt_open("a.db"), *B = rt_open_clock("b.db", &behind),
           *C = rt_open_clock("c.db", &ahead);
    knit_t *all[3] = {A, B, C};
    for (int i = 0; i < 3; i++) {
        rt_exec(all[i], "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
        CHECK_OK(knit_track(all[i], "t", NULL));
    }
    uint64_t t0 = now_ms();
    plain("a.db", "INSERT INTO t VALUES ('x', 1)");
    plain("b.db", "INSERT INTO t VALUES ('x', 1)");
    plain("c.db", "INSERT INTO t VALUES ('x', 1)");
    uint64_t t1 = now_ms();
    usleep(30 * 1000);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(knit_stamp(all[i]), 1);
    uint64_t ha = cell_hlc(A, "x", 1);
    CHECK((ha >> 16) + 1 >= t0 && (ha >> 16) <= t1 + 1); /* the time of the write */
    CHECK((int64_t)ha < meta_hlc(A));                    /* below the tick, 30 ms later */
    CHECK_EQ_INT((int64_t)cell_hlc(B, "x", 1), meta_hlc(B));
    CHECK_EQ_INT((int64_t)cell_hlc(C, "x", 1), meta_hlc(C));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(knit_verify(all[i], NULL, NULL), 0);
        knit_close(all[i]);
    }
    rt_done();
}

/* ---------------------------------------------------------------------- */
/* Item 2: migrations                                                      */

#define T3 "CREATE TABLE t(k TEXT PRIMARY KEY, v, w)"
#define REBUILD(cols, newdef)                                                                      \
    "BEGIN; CREATE TABLE t_new(" newdef "); INSERT INTO t_new SELECT " cols " FROM t;"             \
    " DROP TABLE t; ALTER TABLE t_new RENAME TO t; COMMIT"

static void two_tracked(knit_t **A, knit_t **B)
{
    rt_init();
    *A = rt_open("a.db");
    *B = rt_open("b.db");
    knit_t *all[2] = {*A, *B};
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], T3);
        CHECK_OK(knit_track(all[i], "t", NULL));
    }
    rt_exec(*A, "INSERT INTO t VALUES ('r1', 1, 'a'), ('r2', 2, 'b'), ('r3', 3, 'c')");
    rt_send(*A, *B, NULL);
}

/* The rebuild, done while no knit had the file open, is repaired when knit
** opens it: triggers back, inserts and deletes made meanwhile found. */
static void rebuild_repaired_at_open(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    knit_close(A);
    plain("a.db", REBUILD("k, v, w", "k TEXT PRIMARY KEY, v, w"));
    plain("a.db", "INSERT INTO t VALUES ('r4', 4, 'd'); DELETE FROM t WHERE k = 'r2';"
                  "UPDATE t SET v = 33 WHERE k = 'r3'");
    A = rt_open("a.db");
    CHECK_EQ_INT(count_knit_triggers(A), 4);
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    rt_send(A, B, NULL);
    /* The update made while capture was missing is not found (documented). */
    RT_EXPECT(B, "SELECT * FROM t ORDER BY k", "'r1'|1|'a'\n'r3'|3|'c'\n'r4'|4|'d'\n");
    /* Writes after the repair are captured as ever. */
    plain("a.db", "UPDATE t SET v = 11 WHERE k = 'r1'");
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT v FROM t WHERE k = 'r1'", "11\n");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* The rebuild while knit runs: a read-only handle sees capture missing
** (knit__capture_current refuses, verify reports); the next stamp repairs. */
static void rebuild_repaired_by_stamp(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    plain("a.db", REBUILD("k, v, w", "k TEXT PRIMARY KEY, v, w"));
    plain("a.db", "INSERT INTO t VALUES ('r9', 9, 'z'); DELETE FROM t WHERE k = 'r1'");
    knit_options_t o = {0};
    o.readonly = 1;
    knit_t *R = NULL;
    CHECK_OK(knit_open(rt_path("a.db"), &o, &R));
    CHECK_EQ_INT(knit__capture_current(R), KNIT_ESCHEMA);
    CHECK(strstr(knit_errmsg(R), "t are missing") != NULL);
    CHECK(knit_verify(R, NULL, NULL) > 0);
    CHECK_EQ_INT(knit_stamp(A), 2); /* r9 inserted, r1 deleted */
    CHECK_EQ_INT(count_knit_triggers(A), 4);
    CHECK_OK(knit__capture_current(A));
    CHECK_OK(knit__capture_current(R));
    CHECK_EQ_INT(knit_verify(R, NULL, NULL), 0);
    knit_close(R);
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT k FROM t ORDER BY k", "'r2'\n'r3'\n'r9'\n");
    expect_converged(A, B, "SELECT * FROM t ORDER BY k");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* The rebuild noticed by knit_poll (what sync-agent runs): repaired, the
** missed insert reported as a local change. */
static int ev_count, ev_remote;
static void on_change(knit_t *k, const knit_event_t *ev, void *data)
{
    (void)k;
    (void)data;
    ev_count++;
    ev_remote = ev->remote;
}

static void rebuild_repaired_by_poll(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    CHECK_OK(knit_on_change(A, on_change, NULL));
    CHECK_EQ_INT(knit_poll(A), 0);
    plain("a.db", REBUILD("k, v, w", "k TEXT PRIMARY KEY, v, w"));
    plain("a.db", "INSERT INTO t VALUES ('r7', 7, 'g')");
    ev_count = 0;
    CHECK_EQ_INT(knit_poll(A), 1);
    CHECK_EQ_INT(ev_count, 1);
    CHECK_EQ_INT(ev_remote, 0);
    CHECK_OK(knit__capture_current(A));
    uint64_t acked = 0;
    knit_batch_t *b;
    knit_since_opts_t o = {0};
    o.local_only = 1;
    CHECK_OK(knit_changes_since(A, acked, &o, &b));
    CHECK(b->nchanges >= 4); /* r7: liveness + v + w, with the first rows */
    knit_batch_free(b);
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT k FROM t ORDER BY k", "'r1'\n'r2'\n'r3'\n'r7'\n");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* knit_track on a rebuilt table reinstalls capture too, and picks up a
** column the rebuild added. */
static void rebuild_repaired_by_track(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    plain("a.db", REBUILD("k, v, w, 0", "k TEXT PRIMARY KEY, v, w, x DEFAULT 0"));
    plain("a.db", "INSERT INTO t VALUES ('r5', 5, 'e', 50)");
    CHECK_OK(knit_track(A, "t", NULL));
    CHECK_EQ_INT(count_knit_triggers(A), 4);
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    plain("b.db", "ALTER TABLE t ADD COLUMN x DEFAULT 0");
    CHECK_OK(knit_track(B, "t", NULL));
    rt_send(A, B, NULL);
    rt_send(B, A, NULL);
    RT_EXPECT(B, "SELECT * FROM t ORDER BY k",
              "'r1'|1|'a'|0\n'r2'|2|'b'|0\n'r3'|3|'c'|0\n'r5'|5|'e'|50\n");
    expect_converged(A, B, "SELECT * FROM t ORDER BY k");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* A replica whose triggers and log an older knit made (no wall time, no
** HLC): reinstalled at open; what the old triggers logged is stamped with
** the tick, later writes with their own time. */
static void old_capture_upgraded(void)
{
    rt_init();
    knit_t *A = rt_open("a.db");
    rt_exec(A, "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
    CHECK_OK(knit_track(A, "t", NULL));
    knit_close(A);
    plain(
        "a.db",
        "DROP TRIGGER _knit_ins_1; DROP TRIGGER _knit_upd_1; DROP TRIGGER _knit_updk_1;"
        "DROP TRIGGER _knit_del_1; DROP TABLE _knit_log_1;"
        "CREATE TABLE _knit_log_1(seq INTEGER PRIMARY KEY, op INTEGER, mask INTEGER,"
        " k0 CONSTRAINT \"knit: primary key column t.k must not be NULL\" CHECK (k0 IS NOT NULL));"
        "CREATE TRIGGER _knit_ins_1 AFTER INSERT ON \"t\" BEGIN INSERT INTO _knit_log_1(op,"
        " mask, k0) VALUES (1, -1, NEW.\"k\"); END;"
        "INSERT INTO t VALUES ('old', 1)");
    A = rt_open("a.db");
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(count_knit_triggers(A), 4);
    RT_EXPECT(A, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%knit capture 3%'", "4\n");
    RT_EXPECT(A,
              "SELECT count(*) FROM pragma_table_info('_knit_log_1') WHERE name IN "
              "('at', 'hlc')",
              "2\n");
    /* Logged without a time: the tick of the stamp that repaired capture. */
    uint64_t h_old = cell_hlc(A, "old", 0);
    CHECK_EQ_INT((int64_t)h_old, meta_hlc(A));
    /* A write now logs its time and the HLC it saw: after h_old. */
    uint64_t t0 = now_ms();
    plain("a.db", "INSERT INTO t VALUES ('new', 2)");
    uint64_t t1 = now_ms();
    usleep(20 * 1000);
    CHECK_EQ_INT(knit_stamp(A), 1);
    uint64_t h_new = cell_hlc(A, "new", 0);
    CHECK(h_new > h_old && (int64_t)h_new < meta_hlc(A));
    CHECK(h_new == h_old + 1 || ((h_new >> 16) + 1 >= t0 && (h_new >> 16) <= t1 + 1));
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    knit_close(A);
    rt_done();
}

/* Capture version 2 logged the wall time in ms (and the HLC it saw); a
** replica upgraded with such rows still in its log stamps them by that
** time, while version 3's julianday() rows get their own, to the ms. */
static void v2_log_rows_keep_their_time(void)
{
    rt_init();
    knit_t *A = rt_open("a.db");
    rt_exec(A, "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
    CHECK_OK(knit_track(A, "t", NULL));
    uint64_t past = now_ms() - 5000; /* a write made 5 s ago, no agent running */
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO t VALUES ('v2', 1); UPDATE _knit_log_1 SET at = %llu, hlc = NULL"
             " WHERE k0 = 'v2'",
             (unsigned long long)past);
    plain("a.db", sql);
    uint64_t t0 = now_ms();
    plain("a.db", "INSERT INTO t VALUES ('v3', 1)");
    uint64_t t1 = now_ms();
    RT_EXPECT(A, "SELECT k0, typeof(at) FROM _knit_log_1 ORDER BY seq",
              "'v2'|'integer'\n'v3'|'real'\n");
    CHECK_EQ_INT(knit_stamp(A), 2);
    CHECK_EQ_INT((int64_t)(cell_hlc(A, "v2", 0) >> 16), (int64_t)past);
    uint64_t h3 = cell_hlc(A, "v3", 0) >> 16;
    CHECK(h3 >= t0 && h3 <= t1);
    knit_close(A);
    rt_done();
}

/* An UPDATE that keeps the key runs one capture trigger, not two: the
** key-change trigger names the key columns (UPDATE OF).  A key change is
** still logged as a delete and an insert, an upsert as an update. */
static void update_of_key_columns(void)
{
    rt_init();
    knit_t *A = rt_open("a.db");
    rt_exec(A, "CREATE TABLE t(k TEXT PRIMARY KEY, v)");
    CHECK_OK(knit_track(A, "t", NULL));
    RT_EXPECT(A,
              "SELECT count(*) FROM sqlite_schema WHERE name = '_knit_updk_1' AND sql LIKE "
              "'%AFTER UPDATE OF \"k\" ON%'",
              "1\n");
    plain("a.db", "INSERT INTO t VALUES ('a', 1); DELETE FROM _knit_log_1;"
                  "INSERT INTO t VALUES ('a', 2) ON CONFLICT(k) DO UPDATE SET v = excluded.v;"
                  "UPDATE t SET k = 'b' WHERE k = 'a'; UPDATE t SET k = 'b', v = 3;");
    RT_EXPECT(A, "SELECT op, mask, k0 FROM _knit_log_1 ORDER BY seq",
              "2|1|'a'\n3|0|'a'\n1|-1|'b'\n2|1|'b'\n");
    CHECK(knit_stamp(A) > 0);
    RT_EXPECT(A, "SELECT * FROM t", "'b'|3\n");
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    knit_close(A);
    rt_done();
}

/* ALTER TABLE ADD COLUMN keeps capture of the tracked columns; knit_track
** syncs the new one. */
static void add_column_keeps_capture(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    plain("a.db", "ALTER TABLE t ADD COLUMN x TEXT");
    CHECK_OK(knit__capture_current(A));
    plain("a.db", "UPDATE t SET v = 10, x = 'ignored until tracked' WHERE k = 'r1'");
    CHECK_EQ_INT(knit_stamp(A), 1);
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT v FROM t WHERE k = 'r1'", "10\n");
    CHECK_OK(knit_track(A, "t", NULL));
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* RENAME COLUMN: refused (stamp, track and the capture check say what to
** do) until the column is renamed back; writes made meanwhile are kept. */
static void rename_column_refused(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    plain("a.db", "ALTER TABLE t RENAME COLUMN v TO v2");
    CHECK_EQ_INT(knit_stamp(A), KNIT_ESCHEMA);
    CHECK(strstr(knit_errmsg(A), "t.v is tracked and no longer exists") != NULL);
    CHECK(strstr(knit_errmsg(A), "rename it back") != NULL);
    CHECK_EQ_INT(knit_track(A, "t", NULL), KNIT_ESCHEMA);
    CHECK(strstr(knit_errmsg(A), "t.v") != NULL);
    CHECK_EQ_INT(knit__capture_current(A), KNIT_ESCHEMA);
    CHECK(knit_verify(A, NULL, NULL) > 0);
    plain("a.db", "UPDATE t SET v2 = 20 WHERE k = 'r2'");
    plain("a.db", "ALTER TABLE t RENAME COLUMN v2 TO v");
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(knit_stamp(A), 1);
    rt_send(A, B, NULL);
    RT_EXPECT(B, "SELECT v FROM t WHERE k = 'r2'", "20\n");
    expect_converged(A, B, "SELECT * FROM t ORDER BY k");
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* DROP COLUMN: SQLite itself refuses while the capture triggers use the
** column; done by a rebuild, knit refuses until the column is back. */
static void drop_column_refused(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    sqlite3 *db = rt_plain("a.db");
    char *err = NULL;
    CHECK(rt_plain_exec(db, "ALTER TABLE t DROP COLUMN w", &err) != SQLITE_OK);
    CHECK(err && strstr(err, "_knit_") != NULL);
    sqlite3_free(err);
    sqlite3_close(db);
    plain("a.db", REBUILD("k, v", "k TEXT PRIMARY KEY, v"));
    CHECK_EQ_INT(knit_stamp(A), KNIT_ESCHEMA);
    CHECK(strstr(knit_errmsg(A), "t.w is tracked and no longer exists") != NULL);
    CHECK_EQ_INT(knit_track(A, "t", NULL), KNIT_ESCHEMA);
    CHECK_EQ_INT(knit__capture_current(A), KNIT_ESCHEMA);
    /* The column back (its values were lost by the rebuild): repaired. */
    plain("a.db", "ALTER TABLE t ADD COLUMN w");
    CHECK_EQ_INT(knit_stamp(A), 0);
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(count_knit_triggers(A), 4);
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* A tracked table renamed away (or dropped) is refused by name. */
static void rename_table_refused(void)
{
    knit_t *A, *B;
    two_tracked(&A, &B);
    plain("a.db", "ALTER TABLE t RENAME TO t2");
    CHECK_EQ_INT(knit_stamp(A), KNIT_ESCHEMA);
    CHECK(strstr(knit_errmsg(A), "tracked table t no longer exists") != NULL);
    CHECK(knit_verify(A, NULL, NULL) > 0);
    plain("a.db", "ALTER TABLE t2 RENAME TO t");
    CHECK_OK(knit__capture_current(A));
    CHECK_EQ_INT(knit_stamp(A), 0);
    CHECK_EQ_INT(knit_verify(A, NULL, NULL), 0);
    knit_close(A);
    knit_close(B);
    rt_done();
}

/* ---------------------------------------------------------------------- */
/* Item 3: default backfill loses to real writes                           */

static void backfill_case(int a_first, int b_got_a_first)
{
    rt_init();
    knit_t *A = rt_open("a.db"), *B = rt_open("b.db");
    knit_t *all[2] = {A, B};
    uint64_t sa = 0, sb = 0; /* what each has sent, as a sync client keeps it */
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], "CREATE TABLE t(k INT PRIMARY KEY, s TEXT)");
        CHECK_OK(knit_track(all[i], "t", NULL));
    }
    rt_exec(A, "INSERT INTO t VALUES (1, 'x')");
    rt_send(A, B, &sa);
    plain("a.db", "ALTER TABLE t ADD COLUMN c DEFAULT 0");
    CHECK_OK(knit_track(A, "t", NULL));
    plain("a.db", "UPDATE t SET c = 5 WHERE k = 1; INSERT INTO t VALUES (2, 'y', 7)");
    if (b_got_a_first)
        rt_send(A, B, &sa); /* B receives c before it has the column */
    usleep(5 * 1000);
    plain("b.db", "ALTER TABLE t ADD COLUMN c DEFAULT 0");
    CHECK_OK(knit_track(B, "t", NULL));
    if (a_first) {
        rt_send(A, B, &sa);
        rt_send(B, A, &sb);
    } else {
        rt_send(B, A, &sb);
        rt_send(A, B, &sa);
    }
    RT_EXPECT(A, "SELECT * FROM t ORDER BY k", "1|'x'|5\n2|'y'|7\n");
    RT_EXPECT(B, "SELECT * FROM t ORDER BY k", "1|'x'|5\n2|'y'|7\n");
    expect_converged(A, B, "SELECT * FROM t ORDER BY k");
    knit_close(A);
    knit_close(B);
    rt_done();
}

static void backfill_loses_to_real_writes(void)
{
    backfill_case(1, 0);
    backfill_case(0, 0);
}

/* B received A's cells of c before it had the column: they wait (apply.c's
** set-aside changes) and win once B tracks c. */
static void backfill_after_receiving_early(void)
{
    backfill_case(1, 1);
    backfill_case(0, 1);
}

/* ---------------------------------------------------------------------- */
/* Item 4: identifiers of any length                                       */

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    CHECK(s);
    memset(s, c, n);
    s[n] = 0;
    return s;
}

static void identifiers_any_length(void)
{
    rt_init();
    char *col900 = repeat('c', 900), *tbl300 = repeat('t', 300);
    const char *weird = "we \"ird\". col 'x'";
    const char *wtbl = "my \"tbl\". 'two'";
    /* One table with a 300-byte name, a 900-byte column and a quoted one;
    ** another with a quoted name and a BLOB + INTEGER key, whose 900-byte
    ** column is an OR-set. */
    char *ddl =
        sqlite3_mprintf("CREATE TABLE \"%w\"(id TEXT PRIMARY KEY, \"%w\", \"%w\" INT);"
                        "CREATE TABLE \"%w\"(b BLOB, i INTEGER, \"%w\", \"%w\", PRIMARY KEY(b, i))",
                        tbl300, col900, weird, wtbl, weird, col900);
    char *spec = sqlite3_mprintf("%s:orset", col900);
    knit_t *A = rt_open("a.db"), *B = rt_open("b.db");
    knit_t *all[2] = {A, B};
    for (int i = 0; i < 2; i++) {
        rt_exec(all[i], ddl);
        CHECK_OK(knit_track(all[i], tbl300, NULL));
        int rc = knit_track(all[i], wtbl, spec);
        if (rc)
            fprintf(stderr, "track: %s\n", knit_errmsg(all[i]));
        CHECK_OK(rc);
        CHECK_OK(knit__capture_current(all[i]));
    }
    char *w1 = sqlite3_mprintf(
        "INSERT INTO \"%w\" VALUES ('r1', 'long', 1), ('r2', 'gone', 2);"
        "UPDATE \"%w\" SET \"%w\" = 'longer', \"%w\" = 10 WHERE id = 'r1';"
        "DELETE FROM \"%w\" WHERE id = 'r2';"
        "INSERT INTO \"%w\" VALUES (X'00ff', 1, 'v1', '[\"a\",\"b\"]'), (X'00ff', 2, 'v2', NULL);"
        "UPDATE \"%w\" SET \"%w\" = '[\"b\",\"c\"]' WHERE b = X'00ff' AND i = 1;"
        "UPDATE \"%w\" SET i = 3 WHERE i = 2",
        tbl300, tbl300, col900, weird, tbl300, wtbl, wtbl, col900, wtbl);
    plain("a.db", w1);
    CHECK_EQ_INT(knit_stamp(A), 9); /* log rows folded */
    rt_send(A, B, NULL);
    char *w2 = sqlite3_mprintf("UPDATE \"%w\" SET \"%w\" = 'from B' WHERE id = 'r1';"
                               "UPDATE \"%w\" SET \"%w\" = '[\"b\",\"c\",\"d\"]' WHERE i = 3",
                               tbl300, weird, wtbl, col900);
    plain("b.db", w2);
    rt_send(B, A, NULL);
    char *q1 = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY 1", tbl300);
    char *q2 = sqlite3_mprintf("SELECT hex(b), i, \"%w\", \"%w\" FROM \"%w\" ORDER BY 1, 2", weird,
                               col900, wtbl);
    RT_EXPECT(A, q1, "'r1'|'longer'|'from B'\n");
    RT_EXPECT(A, q2, "'00FF'|1|'v1'|'[\"b\",\"c\"]'\n'00FF'|3|'v2'|'[\"b\",\"c\",\"d\"]'\n");
    expect_converged(A, B, q1);
    expect_converged(A, B, q2);
    /* A rebuild of the long-named table is detected and repaired too. */
    char *rb = sqlite3_mprintf("BEGIN; CREATE TABLE tmp_rebuild(id TEXT PRIMARY KEY, \"%w\", "
                               "\"%w\" INT); INSERT INTO tmp_rebuild SELECT * FROM \"%w\"; "
                               "DROP TABLE \"%w\"; ALTER TABLE tmp_rebuild RENAME TO \"%w\"; "
                               "INSERT INTO \"%w\" VALUES ('r3', 'new', 3); COMMIT",
                               col900, weird, tbl300, tbl300, tbl300, tbl300);
    plain("a.db", rb);
    CHECK_EQ_INT(knit_stamp(A), 1);
    rt_send(A, B, NULL);
    expect_converged(A, B, q1);
    sqlite3_free(rb);
    sqlite3_free(q1);
    sqlite3_free(q2);
    sqlite3_free(w1);
    sqlite3_free(w2);
    sqlite3_free(spec);
    sqlite3_free(ddl);
    free(col900);
    free(tbl300);
    knit_close(A);
    knit_close(B);
    rt_done();
}

KNIT_TESTS(T(lww_time_of_write_wins), T(lww_write_after_seen_stamp_wins),
           T(stamp_between_write_time_and_tick), T(rebuild_repaired_at_open),
           T(rebuild_repaired_by_stamp), T(rebuild_repaired_by_poll), T(rebuild_repaired_by_track),
           T(old_capture_upgraded), T(v2_log_rows_keep_their_time), T(update_of_key_columns),
           T(add_column_keeps_capture), T(rename_column_refused), T(drop_column_refused),
           T(rename_table_refused), T(backfill_loses_to_real_writes),
           T(backfill_after_receiving_early), T(identifiers_any_length))
