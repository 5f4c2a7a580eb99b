/*
** test_inspect_damage.c: sync-inspect against damage and adversity.  Each
** verify/diff case copies the fixture replica, damages the copy with plain
** SQL behind knit's back (a deleted liveness row, an OR-set column changed
** with the capture triggers dropped, orphan metadata, a clock moved back, a
** missing metadata table, a broken index) and checks that the finding names
** the table and the key.  Then: files that are not replicas, files locked by
** another connection (a clear error within the busy timeout, exit 2), a
** writer working on the replica while inspect runs, files left byte for
** byte unchanged, and text output that cannot drive a terminal.
*/
#include "test_inspect_harness.h"

static int fixture_ready;

static void fixture(void)
{
    if (!fixture_ready) {
        h_fixture();
        h_relay_fixture();
        fixture_ready = 1;
    }
}

/* A damaged copy of A: path in a static buffer of the caller's choosing. */
static const char *damaged(const char *name, const char *sql, char buf[192])
{
    fixture();
    snprintf(buf, 192, "%s", h_path(name));
    h_copy(h_fix.a, buf);
    h_plain(buf, sql);
    return buf;
}

/* Runs and checks the status; returns the masked stdout (caller frees). */
static char *expect(int status, const char *const *args)
{
    h_run_t r = h_run(args);
    char *out;
    if (r.status != status) {
        fprintf(stderr, "sync-inspect %s: status %d (want %d)\nstdout:\n%s\nstderr:\n%s\n", args[0],
                r.status, status, r.out, r.err);
        CHECK(0);
    }
    out = h_mask(r.out);
    free(r.err);
    return out;
}

#define CHECK_HAS(hay, needle)                                                                     \
    do {                                                                                           \
        if (!strstr((hay), (needle))) {                                                            \
            fprintf(stderr, "%s:%d: missing \"%s\" in:\n%s\n", __FILE__, __LINE__, (needle),       \
                    (hay));                                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void verify_liveness_lost(void)
{
    char p[192];
    damaged("d-live.db", "DELETE FROM _knit_rows_1 WHERE k0 = 'n1'", p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_GOLDEN(out, "notes 'n1': row exists but its metadata says it is missing or deleted "
                      "(liveness lost)\n"
                      "notes 'n1': orphan OR-set state (no row metadata)\n"
                      "2 problems\n");
    free(out);
    out = expect(1, ARGS("verify", "--json", p));
    CHECK(h_json_valid(out));
    CHECK_JSON(out, "$.ok", "0");
    CHECK_JSON(out, "$.problems[0].table", "notes");
    CHECK_JSON(out, "$.problems[0].key", "'n1'");
    free(out);
    /* The same damage seen by diff: a row the copy lacks. */
    out = expect(1, ARGS("diff", h_fix.a, p));
    CHECK_HAS(out, "notes 'n1': only in A: live (cl 1) @ 2023-11-14T22:13:20.000Z#0 by <A>\n");
    CHECK_HAS(out, "1 difference: 1 row, 0 cell, 0 metadata\n");
    free(out);
}

static void verify_orset_behind_back(void)
{
    char p[192];
    damaged("d-set.db",
            "DROP TRIGGER _knit_ins_1; DROP TRIGGER _knit_upd_1; DROP TRIGGER _knit_updk_1;"
            "DROP TRIGGER _knit_del_1;"
            "UPDATE notes SET tags = '[\"x\"]' WHERE id = 'n1'",
            p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_HAS(out, "notes: capture trigger _knit_upd_1 is missing");
    CHECK_HAS(out, "notes 'n1': OR-set column tags holds [\"x\"] but its set state is "
                   "[\"b\",\"c\",\"d\"]\n");
    CHECK_HAS(out, "5 problems\n");
    free(out);
    /* why shows the mismatch next to the dots. */
    out = expect(0, ARGS("why", p, "notes", "'n1'", "tags"));
    CHECK_HAS(out, "  tags = [\"x\"]  (OR-set)\n");
    CHECK_HAS(out, "    warning: the column differs from its set state, which holds "
                   "[\"b\",\"c\",\"d\"] (see verify)\n");
    free(out);
}

static void verify_orphans(void)
{
    char p[192];
    damaged("d-orphan.db",
            "INSERT INTO _knit_sets_1 VALUES ('ghost', 2, X'000000');"
            "CREATE TABLE _knit_rows_9(k0, ns, cl, ver, cells);"
            "UPDATE _knit_rows_2 SET ns = 99",
            p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_GOLDEN(out, "notes 'ghost': orphan OR-set state (no row metadata)\n"
                      "orphan metadata table _knit_rows_9: no tracked table has id 9\n"
                      "pairs 1, 'x': row metadata names namespace #99, which _knit_ns lacks\n"
                      "3 problems\n");
    free(out);
    out = expect(1, ARGS("diff", h_fix.a, p));
    CHECK_HAS(out, "pairs 1, 'x': namespace: user:alice vs (unknown namespace)\n");
    free(out);
}

static void verify_clock_and_sites(void)
{
    char p[192];
    /* The stored clock half an hour back, and B's site forgotten. */
    damaged("d-clock.db",
            "UPDATE _knit_meta SET value = value - 65536 * 1800 WHERE key = 'hlc';"
            "DELETE FROM _knit_sites WHERE idx = 2",
            p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_HAS(out, "notes 'n2': liveness is stamped after the replica's clock\n");
    CHECK_HAS(out, "notes 'n1': title is stamped after the replica's clock\n");
    CHECK_HAS(out, "notes 'n3': liveness names an unknown site\n");
    CHECK_HAS(out, "11 problems\n"); /* n1's tags are A's own (pending) change */
    free(out);
    out = expect(0, ARGS("why", p, "notes", "'n3'", "title"));
    CHECK_HAS(out, "by #2 (unknown site), version 4, received\n");
    free(out);
}

/* A missing metadata table stops knit_verify's own queries: that is part of
** the damage (exit 1), not an unreadable file (exit 2). */
static void verify_missing_tables(void)
{
    char p[192];
    damaged("d-missing.db", "DROP TABLE _knit_sets_1", p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_HAS(out, "notes: metadata table _knit_sets_1 is missing\n");
    CHECK_HAS(out, "further checks could not run on the damaged metadata");
    free(out);
    damaged("d-user.db", "DROP TABLE pairs", p);
    out = expect(1, ARGS("verify", p));
    CHECK_HAS(out, "pairs: the table is tracked but does not exist\n");
    free(out);
}

/* SQLite's integrity_check: an index whose definition no longer matches
** its entries. */
static void verify_integrity(void)
{
    char p[192];
    damaged("d-index.db",
            "PRAGMA writable_schema = ON;"
            "UPDATE sqlite_schema SET sql = 'CREATE INDEX _knit_rows_1_ver ON _knit_rows_1(cl)'"
            " WHERE name = '_knit_rows_1_ver'",
            p);
    char *out = expect(1, ARGS("verify", p));
    CHECK_HAS(out, "missing from index _knit_rows_1_ver\n");
    free(out);
}

static void diff_planted(void)
{
    char p[192];
    /* An LWW value changed behind knit's back: same stamp, other value. */
    damaged("d-lww.db",
            "DROP TRIGGER _knit_upd_1; UPDATE notes SET title = 'tampered' WHERE id = 'n1'", p);
    char *out = expect(1, ARGS("diff", h_fix.a, p));
    CHECK_HAS(out, "notes 'n1': title: 'hello again' @ 2023-11-14T22:13:21.000Z#0 by <A> vs "
                   "'tampered' @ 2023-11-14T22:13:21.000Z#0 by <A>\n");
    CHECK_HAS(out, "1 difference: 0 row, 1 cell, 0 metadata\n");
    free(out);
    /* A stamp rewritten with the same value: a metadata difference. */
    damaged("d-stamp.db",
            "UPDATE _knit_rows_2 SET cells = "
            "X'0202018BCFE568000000010102018BCFE5680000010101'",
            p);
    out = expect(1, ARGS("diff", "--json", h_fix.a, p));
    CHECK(h_json_valid(out));
    CHECK_JSON(out, "$.counts.total", "1");
    CHECK_JSON(out, "$.differences[0].table", "pairs");
    CHECK_JSON(out, "$.differences[0].key", "1, 'x'");
    CHECK_JSON(out, "$.differences[0].kind", "metadata");
    CHECK_JSON(out, "$.differences[0].what", "stamp");
    CHECK_JSON(out, "$.differences[0].column", "v");
    free(out);
    /* A causal length moved: live in one, deleted in the other. */
    damaged("d-cl.db", "UPDATE _knit_rows_1 SET cl = 4 WHERE k0 = 'n2'", p);
    out = expect(1, ARGS("diff", h_fix.a, p));
    CHECK_HAS(out, "notes 'n2': deleted (cl 2) @ 2023-11-14T22:13:22.000Z#0 by <A> vs deleted "
                   "(cl 4) @ 2023-11-14T22:13:22.000Z#0 by <A>\n");
    free(out);
}

/* Tables and columns tracked differently. */
static void diff_schema(void)
{
    h_clock_t c = {FIX_T0};
    char px[192], py[192];
    snprintf(px, sizeof px, "%s", h_path("x.db"));
    snprintf(py, sizeof py, "%s", h_path("y.db"));
    knit_t *x = h_open(px, &c), *y = h_open(py, &c);
    h_sql(x, "CREATE TABLE t(id PRIMARY KEY, a, extra); CREATE TABLE only_x(k PRIMARY KEY);"
             "CREATE TABLE keyed(a, b, PRIMARY KEY(a))");
    h_sql(y, "CREATE TABLE t(id PRIMARY KEY, a, s); CREATE TABLE keyed(a, b, PRIMARY KEY(b))");
    CHECK_OK(knit_track(x, "t", NULL));
    CHECK_OK(knit_track(x, "only_x", NULL));
    CHECK_OK(knit_track(x, "keyed", NULL));
    CHECK_OK(knit_track(y, "t", "a:orset,s:orset"));
    CHECK_OK(knit_track(y, "keyed", NULL));
    knit_close(x);
    knit_close(y);
    char *out = expect(1, ARGS("diff", px, py));
    CHECK_HAS(out, "t: a: kind: lww vs orset\n");
    CHECK_HAS(out, "t: extra: only in A: lww\n");
    CHECK_HAS(out, "t: s: only in B: orset\n");
    CHECK_HAS(out, "only_x: only in A: tracked\n");
    CHECK_HAS(out, "keyed: key columns differ, rows not compared: a vs b\n");
    CHECK_HAS(out, "5 differences: 0 row, 0 cell, 5 metadata\n");
    free(out);
}

static void bad_files(void)
{
    char missing[192], empty[192], garbage[192], plain[192];
    fixture();
    snprintf(missing, sizeof missing, "%s", h_path("missing.db"));
    snprintf(empty, sizeof empty, "%s", h_path("empty.db"));
    snprintf(garbage, sizeof garbage, "%s", h_path("garbage.db"));
    snprintf(plain, sizeof plain, "%s", h_path("plain.db"));
    FILE *f = fopen(empty, "wb");
    CHECK(f && fclose(f) == 0);
    f = fopen(garbage, "wb");
    CHECK(f && fputs("this is not a database, just some text\n", f) >= 0 && fclose(f) == 0);
    h_plain(plain, "CREATE TABLE t(x)");
    const struct {
        const char *path, *err;
    } v[] = {
        {missing, "cannot open '%s': No such file or directory\n"},
        {h_dir, "'%s' is a directory, not a replica or relay store\n"},
        {empty, "'%s' is empty, not a knit replica or relay store\n"},
        {garbage, "'%s' is not an SQLite database, so not a knit replica or relay store\n"},
        {plain, "'%s' is an SQLite database but not a knit replica or relay store (it has no "
                "knit metadata)\n"},
    };
    static const char *const cmds[] = {"info", "pending", "changes", "verify", "digest", "relay"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
            char want[512], fmt[300];
            h_run_t r = h_run(ARGS(cmds[c], v[i].path));
            snprintf(fmt, sizeof fmt, "sync-inspect: %s: %s", cmds[c], v[i].err);
            snprintf(want, sizeof want, fmt, v[i].path);
            CHECK_EQ_INT(r.status, 2);
            CHECK_STR(r.err, want);
            CHECK_STR(r.out, "");
            h_done(&r);
        }
    }
    h_run_t r = h_run(ARGS("why", missing, "notes", "'n1'"));
    CHECK_EQ_INT(r.status, 2);
    h_done(&r);
    r = h_run(ARGS("diff", h_fix.a, garbage));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.out, "");
    h_done(&r);
    /* The wrong kind of knit file. */
    r = h_run(ARGS("info", h_fix.relay));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "is a relay store, not a replica") != NULL);
    h_done(&r);
    r = h_run(ARGS("relay", h_fix.a));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "is a replica, not a relay store") != NULL);
    h_done(&r);
}

/* Runs info while `db` holds its lock; expects a clear error in about the
** 2 s busy timeout. */
static void expect_locked(const char *p)
{
    char want[300];
    h_run_t r = h_run(ARGS("info", p));
    snprintf(want, sizeof want,
             "sync-inspect: info: '%s' is locked by another connection; gave up after 2 s\n", p);
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, want);
    CHECK_STR(r.out, "");
    CHECK(r.secs >= 1.5 && r.secs < 10.0);
    h_done(&r);
}

static void locked_rollback(void)
{
    char p[192];
    sqlite3 *db = NULL;
    damaged("locked.db", "PRAGMA journal_mode = DELETE", p);
    CHECK(sqlite3_open(p, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK);
    expect_locked(p);
    CHECK(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    char *out = expect(0, ARGS("info", p));
    free(out);
}

static void locked_wal_exclusive(void)
{
    char p[192];
    sqlite3 *db = NULL;
    damaged("locked-wal.db", "PRAGMA journal_mode = WAL", p);
    CHECK(sqlite3_open(p, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "PRAGMA locking_mode = EXCLUSIVE; BEGIN IMMEDIATE;"
                       "UPDATE _knit_meta SET value = value WHERE key = 'hlc'; COMMIT",
                       NULL, NULL, NULL) == SQLITE_OK);
    expect_locked(p);
    sqlite3_close(db);
    char *out = expect(0, ARGS("verify", p));
    free(out);
}

/* A writer (a child process, like an agent) keeps writing and stamping the
** replica while every command runs against it; each must succeed, and
** verify must find nothing (unstamped writes are not damage). */
static void concurrent_writer(void)
{
    char p[192], stop[192];
    int fds[2];
    pid_t pid;
    fixture();
    snprintf(p, sizeof p, "%s", h_path("busy.db"));
    snprintf(stop, sizeof stop, "%s", h_path("stop"));
    h_copy(h_fix.a, p);
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        h_clock_t c = {FIX_T0 + 10000};
        knit_t *k = h_open(p, &c);
        char sql[256];
        close(fds[0]);
        for (int i = 0; i < 200000 && access(stop, F_OK) != 0; i++) {
            c.ms += 3;
            snprintf(sql, sizeof sql,
                     "BEGIN; INSERT INTO notes VALUES ('w%d', 'x%d', %d, '[\"t%d\"]');"
                     "UPDATE notes SET n = n + 1 WHERE id = 'n1';"
                     "DELETE FROM notes WHERE id = 'w%d'; COMMIT",
                     i, i, i, i % 7, i - 5);
            h_sql(k, sql);
            if (i % 3 == 0 && knit_stamp(k) < 0)
                _exit(3);
            if (i == 0 && write(fds[1], "x", 1) != 1)
                _exit(4);
        }
        knit_close(k);
        _exit(0);
    }
    close(fds[1]);
    char go;
    CHECK(read(fds[0], &go, 1) == 1); /* the writer has started */
    close(fds[0]);
    int rounds = 0;
    double t0 = h_now();
    while (rounds < 3 || h_now() - t0 < 1.0) {
        const char *const *runs[] = {
            ARGS("info", p),
            ARGS("verify", p),
            ARGS("digest", p),
            ARGS("pending", "--json", p),
            ARGS("changes", "--limit", "20", p),
            ARGS("why", p, "notes", "'n1'"),
            ARGS("diff", p, h_fix.a),
        };
        for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
            h_run_t r = h_run(runs[i]);
            /* diff differs from A, of course: 1; everything else 0. */
            int want = strcmp(runs[i][0], "diff") == 0 ? 1 : 0;
            if (r.status != want) {
                fprintf(stderr, "%s under a writer: status %d\n%s%s", runs[i][0], r.status, r.out,
                        r.err);
                CHECK(0);
            }
            h_done(&r);
        }
        rounds++;
        CHECK(waitpid(pid, NULL, WNOHANG) == 0); /* still writing all along */
    }
    FILE *f = fopen(stop, "w");
    CHECK(f && fclose(f) == 0);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *out = expect(0, ARGS("verify", p));
    free(out);
    /* The writer really was writing: many stamps past the fixture's 4. */
    out = expect(0, ARGS("info", "--json", p));
    char *v = h_json_get(out, "$.version");
    CHECK(atoi(v) > 4 + 10);
    free(v);
    free(out);
}

/* Every command leaves the file byte for byte as it was, in WAL and in
** rollback-journal mode; in rollback mode it leaves no new file at all. */
static void never_modified(void)
{
    char wal[192], del[192];
    fixture();
    snprintf(wal, sizeof wal, "%s", h_path("ro-wal.db"));
    h_copy(h_fix.a, wal);
    damaged("ro-del.db", "PRAGMA journal_mode = DELETE", del);
    const char *paths[2] = {wal, del};
    for (int i = 0; i < 2; i++) {
        const char *p = paths[i];
        size_t n0, n1;
        struct stat s0, s1;
        char *before = h_slurp(p, &n0), *after, *out;
        char extra[200];
        CHECK(stat(p, &s0) == 0);
        free(expect(0, ARGS("info", p)));
        free(expect(0, ARGS("why", p, "notes", "'n1'")));
        free(expect(1, ARGS("why", p, "notes", "'nope'")));
        free(expect(0, ARGS("pending", p)));
        free(expect(0, ARGS("changes", p)));
        free(expect(0, ARGS("verify", p)));
        free(expect(0, ARGS("digest", "--ns", "user:alice", p)));
        free(expect(1, ARGS("diff", p, h_fix.b)));
        out = expect(0, ARGS("info", "--json", p));
        free(out);
        CHECK(stat(p, &s1) == 0);
        after = h_slurp(p, &n1);
        CHECK(n0 == n1 && memcmp(before, after, n0) == 0);
        CHECK(s0.st_mtim.tv_sec == s1.st_mtim.tv_sec && s0.st_mtim.tv_nsec == s1.st_mtim.tv_nsec);
        free(before);
        free(after);
        snprintf(extra, sizeof extra, "%s-journal", p);
        CHECK(access(extra, F_OK) != 0);
        if (i == 1) {
            snprintf(extra, sizeof extra, "%s-wal", p);
            CHECK(access(extra, F_OK) != 0);
        }
    }
}

/* Values, names and namespaces that hold terminal controls are shown
** escaped in text and exactly in JSON. */
static void text_is_safe(void)
{
    h_clock_t c = {FIX_T0};
    char p[192];
    snprintf(p, sizeof p, "%s", h_path("evil.db"));
    knit_t *k = h_open(p, &c);
    h_sql(k, "CREATE TABLE \"t\x1b[2J\"(id TEXT PRIMARY KEY, v);"
             "INSERT INTO \"t\x1b[2J\" VALUES ('k\x1b]0;x\x07', 'red\x1b[31m\xe2\x80\xae!')");
    CHECK_OK(knit_track(k, "t\x1b[2J", NULL));
    CHECK_OK(knit_set_namespace(k, "ns\x1b[0m"));
    knit_close(k);
    static const char *const cmds[] = {"info", "changes", "pending", "verify"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        h_run_t r = h_run(ARGS(cmds[i], p));
        CHECK_EQ_INT(r.status, 0);
        CHECK(!strchr(r.out, 0x1b) && !strchr(r.out, 0x07) && !strstr(r.out, "\xe2\x80\xae"));
        h_done(&r);
    }
    h_run_t r = h_run(ARGS("changes", p));
    CHECK(strstr(r.out, "  t\\x1b[2J CAST(X'6B1B5D303B7807' AS TEXT): v = "
                        "CAST(X'7265641B5B33316DE280AE21' AS TEXT)  @ ") != NULL);
    CHECK(strstr(r.out, " in ns\\x1b[0m\n") != NULL);
    h_done(&r);
    /* why takes the key back in its SQL form. */
    r = h_run(ARGS("why", p, "t\x1b[2J", "CAST(X'6B1B5D303B7807' AS TEXT)"));
    CHECK_EQ_INT(r.status, 2); /* a CAST is not a literal */
    h_done(&r);
    r = h_run(ARGS("why", "--json", p, "t\x1b[2J", "'k\x1b]0;x\x07'"));
    CHECK_EQ_INT(r.status, 0);
    CHECK(h_json_valid(r.out));
    CHECK(!strchr(r.out, 0x1b) && !strchr(r.out, 0x07));
    CHECK_JSON(r.out, "$.key", "'k\x1b]0;x\x07'");
    CHECK_JSON(r.out, "$.columns[0].value", "red\x1b[31m\xe2\x80\xae!");
    CHECK_JSON(r.out, "$.namespace", "ns\x1b[0m");
    h_done(&r);
}

KNIT_TESTS(T(verify_liveness_lost), T(verify_orset_behind_back), T(verify_orphans),
           T(verify_clock_and_sites), T(verify_missing_tables), T(verify_integrity),
           T(diff_planted), T(diff_schema), T(bad_files), T(locked_rollback),
           T(locked_wal_exclusive), T(concurrent_writer), T(never_modified), T(text_is_safe))
