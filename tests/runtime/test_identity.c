/*
** test_identity.c: a replica's identity: copies (byte copies, the SQLite
** backup API, VACUUM INTO) that take a new site and still push what the
** original had not had acknowledged; one account per replica file; and SQL
** built for tables and columns with very long names.
**
** A "hub" replica stands in for the relay: a device pushes
** knit_changes_since(acked, local_only) to it and acknowledges, and pulls
** everything the hub has after its cursor, like the sync client does.
*/
#include <fcntl.h>

#include "rt.h"

#define T_SCHEMA "CREATE TABLE t(id TEXT PRIMARY KEY, v, tags)"

/* How a replica file is copied. */
enum { COPY_BYTES, COPY_BACKUP, COPY_VACUUM, COPY_NMETHODS };
static const char *const copy_names[] = {"byte copy", "backup API", "VACUUM INTO"};

static knit_t *open_tracked(const char *name)
{
    knit_t *k = rt_open(name);
    rt_exec(k, T_SCHEMA);
    CHECK_OK(knit_track(k, "t", "tags:orset"));
    return k;
}

static void copy_bytes(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    CHECK(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof buf)) > 0)
        CHECK(write(out, buf, (size_t)n) == n);
    CHECK(n == 0);
    close(in);
    close(out);
}

/* Copies replica file `from` to `to` (names in the test directory).  *k is
** from's open handle: a byte copy needs no writer active, so it closes it
** first and reopens it after; the backup API and VACUUM INTO copy from a
** plain connection while the replica stays open, as users backing up do. */
static void copy_replica(knit_t **k, const char *from, const char *to, int method)
{
    sqlite3 *src, *dst;
    char *err = NULL;
    switch (method) {
    case COPY_BYTES: {
        char wal_from[600], wal_to[600];
        knit_close(*k);
        copy_bytes(rt_path(from), rt_path(to));
        snprintf(wal_from, sizeof wal_from, "%s-wal", rt_path(from));
        snprintf(wal_to, sizeof wal_to, "%s-wal", rt_path(to));
        if (access(wal_from, F_OK) == 0)
            copy_bytes(wal_from, wal_to);
        *k = rt_open(from);
        break;
    }
    case COPY_BACKUP: {
        src = rt_plain(from);
        CHECK(sqlite3_open(rt_path(to), &dst) == SQLITE_OK);
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        CHECK(b != NULL);
        CHECK(sqlite3_backup_step(b, -1) == SQLITE_DONE);
        CHECK(sqlite3_backup_finish(b) == SQLITE_OK);
        sqlite3_close(dst);
        sqlite3_close(src);
        break;
    }
    case COPY_VACUUM: {
        src = rt_plain(from);
        char *sql = sqlite3_mprintf("VACUUM INTO %Q", rt_path(to));
        if (sqlite3_exec(src, sql, NULL, NULL, &err) != SQLITE_OK) {
            fprintf(stderr, "VACUUM INTO: %s\n", err);
            CHECK(0);
        }
        sqlite3_free(sql);
        sqlite3_close(src);
        break;
    }
    }
}

/* "id,id,..." of the rows b has changes of, each once, in batch order. */
static void batch_rows(const knit_batch_t *b, char *out, size_t n)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *c = &b->changes[i];
        char id[64], probe[70];
        CHECK(c->pk[0].type == KNIT_TEXT);
        snprintf(id, sizeof id, "%.*s", (int)c->pk[0].u.b.n, (const char *)c->pk[0].u.b.p);
        snprintf(probe, sizeof probe, ",%s,", id);
        char *have = sqlite3_mprintf(",%s,", out);
        int dup = strstr(have, probe) != NULL;
        sqlite3_free(have);
        if (!dup)
            off += (size_t)snprintf(out + off, n - off, "%s%s", off ? "," : "", id);
    }
}

/* Rows of the local changes a device would push now, sorted. */
static char *pending_rows(knit_t *k)
{
    knit_since_opts_t o = {.local_only = 1};
    knit_batch_t *b = NULL;
    uint64_t acked;
    char rows[4096];
    CHECK_OK(knit_acked(k, &acked));
    CHECK_OK(knit_changes_since(k, acked, &o, &b));
    batch_rows(b, rows, sizeof rows);
    knit_batch_free(b);
    /* Sort the comma list (small). */
    char *items[256];
    size_t n = 0;
    for (char *p = strtok(rows, ","); p && n < 256; p = strtok(NULL, ","))
        items[n++] = p;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char *x = items[j];
            items[j] = items[j - 1];
            items[j - 1] = x;
        }
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (size_t i = 0; i < n; i++)
        sqlite3_str_appendf(s, "%s%s", i ? "," : "", items[i]);
    char *r = sqlite3_str_finish(s);
    return r ? r : sqlite3_mprintf("");
}

#define EXPECT_PENDING(k, want)                                                                    \
    do {                                                                                           \
        char *p_ = pending_rows(k);                                                                \
        if (strcmp(p_, (want)) != 0) {                                                             \
            fprintf(stderr, "%s:%d: pending rows %s, want %s\n", __FILE__, __LINE__, p_, (want));  \
            exit(1);                                                                               \
        }                                                                                          \
        sqlite3_free(p_);                                                                          \
    } while (0)

/* A device syncing with the hub. */
typedef struct device_s {
    knit_t *k;       /* its replica */
    uint64_t cursor; /* hub version pulled up to */
} device_t;

/* Pushes the device's unacknowledged local changes to the hub and
** acknowledges them; returns the number of changes pushed. */
static size_t push(device_t *d, knit_t *hub)
{
    knit_since_opts_t o = {.local_only = 1};
    knit_batch_t *b = NULL;
    uint64_t acked;
    CHECK_OK(knit_acked(d->k, &acked));
    CHECK_OK(knit_changes_since(d->k, acked, &o, &b));
    size_t n = b->nchanges;
    CHECK_OK(knit_apply(hub, b, NULL));
    if (b->ntxns)
        CHECK_OK(knit_ack(d->k, b->txns[b->ntxns - 1].version));
    knit_batch_free(b);
    return n;
}

static void pull(device_t *d, knit_t *hub)
{
    rt_send(hub, d->k, &d->cursor);
}

static void sync_round(device_t *devs, size_t n, knit_t *hub)
{
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < n; i++) {
            push(&devs[i], hub);
            pull(&devs[i], hub);
        }
}

static void expect_same(knit_t *a, knit_t *b, const char *what)
{
    const char *sql = "SELECT * FROM t ORDER BY id";
    char *x = rt_dump(a, sql), *y = rt_dump(b, sql);
    if (strcmp(x, y) != 0) {
        fprintf(stderr, "%s: replicas differ\n%s---\n%s", what, x, y);
        CHECK(0);
    }
    sqlite3_free(x);
    sqlite3_free(y);
    knit_digest_t da, db;
    CHECK_OK(knit_digest(a, NULL, &da));
    CHECK_OK(knit_digest(b, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
}

static void expect_new_site(knit_t *orig, knit_t *copy)
{
    knit_site_t s1, s2;
    CHECK_OK(knit_site(orig, &s1));
    CHECK_OK(knit_site(copy, &s2));
    CHECK(knit_site_cmp(&s1, &s2) != 0);
}

/* (a) A replica copied before its first sync pushes everything. */
static void copy_before_sync_pushes_all(void)
{
    for (int m = 0; m < COPY_NMETHODS; m++) {
        fprintf(stderr, "  %s\n", copy_names[m]);
        rt_init();
        knit_t *A = open_tracked("a.db");
        rt_exec(A, "INSERT INTO t VALUES ('r1', 1, '[\"x\"]'), ('r2', 2, '[]');"
                   "INSERT INTO t VALUES ('r3', 3, '[\"y\",\"z\"]');"
                   "INSERT INTO t VALUES ('r4', 4, '[]'), ('r5', 5, '[]')");
        CHECK(knit_stamp(A) >= 0);
        copy_replica(&A, "a.db", "c.db", m);
        knit_t *C = rt_open("c.db");
        expect_new_site(A, C);
        EXPECT_PENDING(C, "r1,r2,r3,r4,r5");
        /* The original is lost; the copy's push is all a new device gets. */
        knit_close(A);
        knit_t *D = open_tracked("d.db");
        device_t dc = {C, 0};
        CHECK(push(&dc, D) > 0); /* C's local changes, applied to D */
        RT_EXPECT(D, "SELECT * FROM t ORDER BY id",
                  "'r1'|1|'[\"x\"]'\n'r2'|2|'[]'\n'r3'|3|'[\"y\",\"z\"]'\n'r4'|4|'[]'\n"
                  "'r5'|5|'[]'\n");
        expect_same(C, D, "copy and new device");
        EXPECT_PENDING(C, ""); /* acknowledged now */
        /* The copy's own writes are local too, and the copy reopens as
        ** itself (no second takeover). */
        knit_site_t s1, s2;
        knit_site(C, &s1);
        knit_close(C);
        C = rt_open("c.db");
        knit_site(C, &s2);
        CHECK(knit_site_cmp(&s1, &s2) == 0);
        rt_exec(C, "UPDATE t SET v = 30 WHERE id = 'r3'");
        EXPECT_PENDING(C, "r3");
        CHECK_EQ_INT(knit_verify(C, NULL, NULL), 0);
        knit_close(C);
        knit_close(D);
        rt_done();
    }
}

/* (b) A copy made after a sync pushes exactly what was not acknowledged. */
static void copy_pushes_only_unacked(void)
{
    for (int m = 0; m < COPY_NMETHODS; m++) {
        fprintf(stderr, "  %s\n", copy_names[m]);
        rt_init();
        knit_t *A = open_tracked("a.db"), *H = open_tracked("h.db");
        CHECK_OK(knit_set_namespace(A, "user:alice"));
        rt_exec(A, "INSERT INTO t VALUES ('r1', 1, '[]'), ('r2', 2, '[]')");
        device_t da = {A, 0};
        CHECK(push(&da, H) > 0);
        rt_exec(A, "INSERT INTO t VALUES ('r3', 3, '[]')");
        CHECK(knit_stamp(A) >= 0);
        rt_exec(A, "INSERT INTO t VALUES ('r4', 4, '[\"a\"]')");
        CHECK(knit_stamp(A) >= 0);
        rt_exec(A, "INSERT INTO t VALUES ('r5', 5, '[]')");
        EXPECT_PENDING(A, "r3,r4,r5");
        copy_replica(&A, "a.db", "c.db", m);
        knit_t *C = rt_open("c.db");
        expect_new_site(A, C);
        EXPECT_PENDING(C, "r3,r4,r5");
        knit_close(A);
        device_t dc = {C, 0};
        push(&dc, H);
        RT_EXPECT(H, "SELECT id FROM t ORDER BY id", "'r1'\n'r2'\n'r3'\n'r4'\n'r5'\n");
        EXPECT_PENDING(C, "");
        knit_close(C);
        knit_close(H);
        rt_done();
    }
}

/* (c) The original and its copy both keep writing and syncing through a
** hub: everyone converges, and what the copy receives from the original
** later is not taken for its own. */
static void original_and_copy_converge(void)
{
    for (int m = 0; m < COPY_NMETHODS; m++) {
        fprintf(stderr, "  %s\n", copy_names[m]);
        rt_init();
        knit_t *A = open_tracked("a.db"), *H = open_tracked("h.db");
        CHECK_OK(knit_set_namespace(A, "user:alice"));
        rt_exec(A, "INSERT INTO t VALUES ('r1', 1, '[\"a\"]'), ('r2', 2, '[\"a\",\"b\"]')");
        device_t da = {A, 0};
        push(&da, H);
        pull(&da, H);
        rt_exec(A, "INSERT INTO t VALUES ('r3', 3, '[\"k\"]'), ('r4', 4, '[]')");
        CHECK(knit_stamp(A) >= 0);
        copy_replica(&A, "a.db", "c.db", m);
        da.k = A;
        knit_t *C = rt_open("c.db");
        expect_new_site(A, C);
        EXPECT_PENDING(C, "r3,r4");
        /* Concurrent work on both. */
        rt_exec(A, "UPDATE t SET v = 'A' WHERE id = 'r1';"
                   "UPDATE t SET tags = '[\"k\",\"fromA\"]' WHERE id = 'r3';"
                   "INSERT INTO t VALUES ('a1', 'A only', '[]')");
        rt_exec(C, "UPDATE t SET v = 'C' WHERE id = 'r1';"
                   "UPDATE t SET tags = '[\"k\",\"fromC\"]' WHERE id = 'r3';"
                   "UPDATE t SET tags = '[\"b\"]' WHERE id = 'r2';"
                   "DELETE FROM t WHERE id = 'r4';"
                   "INSERT INTO t VALUES ('c1', 'C only', '[\"c\"]')");
        knit_t *D = open_tracked("d.db");
        device_t devs[3] = {da, {C, da.cursor}, {D, 0}};
        sync_round(devs, 3, H);
        expect_same(A, C, "original and copy");
        expect_same(A, D, "original and new device");
        expect_same(A, H, "original and hub");
        RT_EXPECT(C, "SELECT id, tags FROM t WHERE id IN ('r2', 'r3') ORDER BY id",
                  "'r2'|'[\"b\"]'\n'r3'|'[\"fromA\",\"fromC\",\"k\"]'\n");
        RT_EXPECT(C, "SELECT count(*) FROM t WHERE id IN ('a1', 'c1', 'r4')", "2\n");
        EXPECT_PENDING(A, "");
        EXPECT_PENDING(C, "");
        /* More writes by the original reach the copy as remote changes. */
        rt_exec(A, "UPDATE t SET v = 'later' WHERE id = 'r3'");
        push(&devs[0], H);
        pull(&devs[1], H);
        RT_EXPECT(C, "SELECT v FROM t WHERE id = 'r3'", "'later'\n");
        EXPECT_PENDING(C, "");
        rt_exec(C, "UPDATE t SET v = 'copy' WHERE id = 'a1'");
        EXPECT_PENDING(C, "a1");
        sync_round(devs, 3, H);
        expect_same(A, C, "after more writes");
        expect_same(D, C, "after more writes");
        knit_close(A);
        knit_close(C);
        knit_close(D);
        knit_close(H);
        rt_done();
    }
}

/* (d) A copy of a copy pushes the unacknowledged work of both ancestors,
** but not what its parent received from the original after the takeover. */
static void copy_of_copy(void)
{
    for (int m = 0; m < COPY_NMETHODS; m++) {
        fprintf(stderr, "  %s\n", copy_names[m]);
        rt_init();
        knit_t *A = open_tracked("a.db"), *H = open_tracked("h.db");
        rt_exec(A, "INSERT INTO t VALUES ('a1', 1, '[\"x\"]'), ('a2', 2, '[]');"
                   "INSERT INTO t VALUES ('a3', 3, '[]')");
        CHECK(knit_stamp(A) >= 0);
        copy_replica(&A, "a.db", "c.db", m);
        knit_t *C = rt_open("c.db");
        rt_exec(C, "INSERT INTO t VALUES ('c1', 10, '[]'), ('c2', 20, '[\"y\"]')");
        CHECK(knit_stamp(C) >= 0);
        /* The original syncs one more row; the copy pulls everything. */
        rt_exec(A, "INSERT INTO t VALUES ('a4', 4, '[]')");
        device_t da = {A, 0}, dc = {C, 0};
        push(&da, H);
        pull(&dc, H);
        RT_EXPECT(C, "SELECT count(*) FROM t", "6\n");
        EXPECT_PENDING(C, "a1,a2,a3,c1,c2");
        copy_replica(&C, "c.db", "e.db", m);
        knit_t *E = rt_open("e.db");
        expect_new_site(C, E);
        expect_new_site(A, E);
        EXPECT_PENDING(E, "a1,a2,a3,c1,c2");
        /* Only E survives: a new device gets all of it from E. */
        knit_close(A);
        knit_close(C);
        knit_t *H2 = open_tracked("h2.db"), *D = open_tracked("d.db");
        device_t de = {E, 0}, dd = {D, 0};
        push(&de, H2);
        pull(&dd, H2);
        RT_EXPECT(D, "SELECT id FROM t ORDER BY id", "'a1'\n'a2'\n'a3'\n'c1'\n'c2'\n");
        /* And a copy of E made now has nothing of the ancestors' to push. */
        copy_replica(&E, "e.db", "f.db", m);
        knit_t *F = rt_open("f.db");
        EXPECT_PENDING(F, "");
        rt_exec(F, "UPDATE t SET v = 99 WHERE id = 'a4'");
        EXPECT_PENDING(F, "a4");
        knit_close(E);
        knit_close(F);
        knit_close(D);
        knit_close(H);
        knit_close(H2);
        rt_done();
    }
}

/* An OR-set column edited on the original and on its copy converges: the
** copy adds with dots of its own site, never reusing the original's. */
static void copy_orset_converges(void)
{
    for (int m = 0; m < COPY_NMETHODS; m++) {
        fprintf(stderr, "  %s\n", copy_names[m]);
        rt_init();
        knit_t *A = open_tracked("a.db"), *H = open_tracked("h.db");
        rt_exec(A, "INSERT INTO t VALUES ('s', 0, '[\"a\"]')");
        CHECK(knit_stamp(A) >= 0);
        copy_replica(&A, "a.db", "c.db", m);
        knit_t *C = rt_open("c.db");
        rt_exec(A, "UPDATE t SET tags = '[\"a\",\"b\"]'");
        rt_exec(C, "UPDATE t SET tags = '[\"a\",\"c\"]'");
        device_t devs[2] = {{A, 0}, {C, 0}};
        sync_round(devs, 2, H);
        RT_EXPECT(A, "SELECT tags FROM t", "'[\"a\",\"b\",\"c\"]'\n");
        expect_same(A, C, "sets");
        expect_same(A, H, "sets");
        /* The copy removes what it saw while the original adds: add wins
        ** only for the new element. */
        rt_exec(C, "UPDATE t SET tags = '[\"b\",\"c\"]'");
        rt_exec(A, "UPDATE t SET tags = '[\"a\",\"b\",\"c\",\"d\"]'");
        rt_exec(C, "UPDATE t SET tags = '[\"b\",\"c\",\"e\"]'");
        sync_round(devs, 2, H);
        RT_EXPECT(C, "SELECT tags FROM t", "'[\"b\",\"c\",\"d\",\"e\"]'\n");
        expect_same(A, C, "sets after removes");
        expect_same(A, H, "sets after removes");
        knit_close(A);
        knit_close(C);
        knit_close(H);
        rt_done();
    }
}

/* One account per replica file. */
static void account_refuses_other_user(void)
{
    char ns[128];
    rt_init();
    knit_t *k = open_tracked("a.db");
    CHECK_OK(knit_set_namespace(k, "user:alice"));
    rt_exec(k, "INSERT INTO t VALUES ('r1', 'alice', '[]')");
    CHECK(knit_stamp(k) == 1);
    CHECK_OK(knit_set_namespace(k, "user:alice")); /* the same account again */
    CHECK_EQ_INT(knit_set_namespace(k, "user:bob"), KNIT_EACCOUNT);
    CHECK(strstr(knit_errmsg(k), "user:alice") != NULL);
    CHECK(strstr(knit_errmsg(k), "one replica file per account") != NULL);
    CHECK_OK(knit_namespace(k, ns, sizeof ns));
    CHECK_STR(ns, "user:alice");
    /* Moving rows into another account is refused too. */
    CHECK_EQ_INT(knit_move_namespace(k, "user:alice", "user:bob"), KNIT_EACCOUNT);
    CHECK_EQ_INT(knit_move_namespace(k, "anon:x", "user:bob"), KNIT_EACCOUNT);
    RT_EXPECT(k, "SELECT n.name FROM _knit_rows_1 r JOIN _knit_ns n ON n.idx = r.ns",
              "'user:alice'\n");
    /* It holds across reopening, and for replicas that never stored the
    ** account (older files): their home namespace says it. */
    knit_close(k);
    k = rt_open("a.db");
    CHECK_EQ_INT(knit_set_namespace(k, "user:bob"), KNIT_EACCOUNT);
    rt_exec(k, "DELETE FROM _knit_meta WHERE key = 'account'");
    CHECK_EQ_INT(knit_set_namespace(k, "user:bob"), KNIT_EACCOUNT);
    /* Other namespaces stay allowed. */
    CHECK_OK(knit_set_namespace(k, "anon:someone"));
    CHECK_OK(knit_set_namespace(k, "user:alice"));
    knit_close(k);
    rt_done();
}

/* Signing in (anon -> user) is allowed; signing out and in as someone
** else is not, even after the namespace went back to anonymous. */
static void account_sign_in_then_other_user(void)
{
    char ns[128];
    rt_init();
    knit_t *k = open_tracked("a.db");
    CHECK_OK(knit_set_namespace(k, "anon:one"));
    rt_exec(k, "INSERT INTO t VALUES ('r1', 'anon', '[]')");
    CHECK_EQ_INT(knit_move_namespace(k, "anon:one", "user:alice"), 1);
    CHECK_OK(knit_namespace(k, ns, sizeof ns));
    CHECK_STR(ns, "user:alice");
    /* Alice signs out; the app runs anonymously for a while. */
    CHECK_OK(knit_set_namespace(k, "anon:two"));
    rt_exec(k, "INSERT INTO t VALUES ('r2', 'anon again', '[]')");
    /* Bob cannot use this file; Alice can come back. */
    CHECK_EQ_INT(knit_set_namespace(k, "user:bob"), KNIT_EACCOUNT);
    CHECK(strstr(knit_errmsg(k), "user:alice") != NULL);
    CHECK_EQ_INT(knit_move_namespace(k, "anon:two", "user:bob"), KNIT_EACCOUNT);
    CHECK_OK(knit_namespace(k, ns, sizeof ns));
    CHECK_STR(ns, "anon:two");
    CHECK_EQ_INT(knit_move_namespace(k, "anon:two", "user:alice"), 1);
    /* A fresh replica signs straight in as Bob. */
    knit_t *b = open_tracked("b.db");
    CHECK_OK(knit_set_namespace(b, "user:bob"));
    knit_close(b);
    knit_close(k);
    rt_done();
}

/* The relay erased the account (KNIT_EERASED): its rows leave the replica
** with their metadata, nothing is captured as a local delete to push, other
** namespaces' rows stay, and the file can serve another account. */
static void erase_account_removes_rows(void)
{
    knit_batch_t *b = NULL;
    rt_init();
    knit_t *k = open_tracked("a.db");
    CHECK_EQ_INT(knit_erase_account(k), 0); /* no account yet: nothing */
    CHECK_OK(knit_set_namespace(k, "anon:kept"));
    rt_exec(k, "INSERT INTO t VALUES ('a1', 'anonymous', '[\"x\"]')");
    CHECK(knit_stamp(k) == 1);
    CHECK_OK(knit_set_namespace(k, "user:alice"));
    rt_exec(k, "INSERT INTO t VALUES ('r1', 'alice', '[\"t\"]'), ('r2', 'alice', '[]')");
    CHECK(knit_stamp(k) == 2);
    rt_exec(k, "UPDATE t SET v = 'unstamped' WHERE id = 'r2'"); /* not stamped yet */
    uint64_t v0;
    CHECK_OK(knit_version(k, &v0));
    CHECK_EQ_INT(knit_erase_account(k), 2);
    RT_EXPECT(k, "SELECT id FROM t", "'a1'\n");
    RT_EXPECT(k, "SELECT count(*) FROM _knit_rows_1", "1\n");
    RT_EXPECT(k, "SELECT count(*) FROM _knit_sets_1", "1\n");
    RT_EXPECT(k, "SELECT count(*) FROM _knit_log_1", "0\n");
    CHECK(knit_stamp(k) == 0);
    knit_since_opts_t o = {1, 0, NULL};
    CHECK_OK(knit_changes_since(k, v0, &o, &b));
    CHECK_EQ_INT(b->nchanges, 0); /* no local delete to push */
    knit_batch_free(b);
    CHECK_EQ_INT(knit_verify(k, NULL, NULL), 0);
    CHECK_OK(knit_set_namespace(k, "user:bob")); /* the file is free */
    knit_close(k);
    rt_done();
}

/* changes_since and knit_digest on a 300-byte table name and a 900-byte
** column name (quotes included): SQL text is never cut to a buffer. */
static void long_identifiers(void)
{
    char tname[301], cname[901], kname[201];
    memset(tname, 't', 300);
    tname[300] = 0;
    tname[150] = '"';
    memset(cname, 'c', 900);
    cname[900] = 0;
    cname[10] = '"';
    cname[500] = ' ';
    memset(kname, 'k', 200);
    kname[200] = 0;
    kname[3] = '"';
    rt_init();
    knit_t *A = rt_open("a.db"), *B = rt_open("b.db");
    char *ddl = sqlite3_mprintf("CREATE TABLE \"%w\"(\"%w\" TEXT PRIMARY KEY, \"%w\", x)", tname,
                                kname, cname);
    char *ins = sqlite3_mprintf("INSERT INTO \"%w\" VALUES ('row', 'long column', 1)", tname);
    knit_t *both[2] = {A, B};
    for (int i = 0; i < 2; i++) {
        rt_exec(both[i], ddl);
        int rc = knit_track(both[i], tname, NULL);
        if (rc)
            fprintf(stderr, "track: %s\n", knit_errmsg(both[i]));
        CHECK_OK(rc);
    }
    rt_exec(A, ins);
    knit_batch_t *b = NULL;
    int rc = knit_changes_since(A, 0, NULL, &b);
    if (rc)
        fprintf(stderr, "changes_since: %s\n", knit_errmsg(A));
    CHECK_OK(rc);
    CHECK_EQ_INT(b->ntables, 1);
    CHECK_STR(b->tables[0].name, tname);
    CHECK_STR(b->tables[0].cols[0], cname);
    CHECK_EQ_INT(b->nchanges, 3);
    int seen = 0;
    for (size_t i = 0; i < b->nchanges; i++)
        if (b->changes[i].col == 1) {
            CHECK_EQ_INT(b->changes[i].value.type, KNIT_TEXT);
            CHECK(b->changes[i].value.u.b.n == 11 &&
                  memcmp(b->changes[i].value.u.b.p, "long column", 11) == 0);
            seen = 1;
        }
    CHECK(seen);
    knit_since_opts_t lo = {.local_only = 1};
    knit_batch_t *b2 = NULL;
    CHECK_OK(knit_changes_since(A, 0, &lo, &b2));
    CHECK_EQ_INT(b2->nchanges, 3);
    knit_batch_free(b2);
    CHECK_OK(knit_apply(B, b, NULL));
    knit_batch_free(b);
    knit_digest_t da, db, zero;
    knit_digest_zero(&zero);
    rc = knit_digest(A, NULL, &da);
    if (rc)
        fprintf(stderr, "digest: %s\n", knit_errmsg(A));
    CHECK_OK(rc);
    CHECK_OK(knit_digest(B, NULL, &db));
    CHECK(!knit_digest_equal(&da, &zero));
    CHECK(knit_digest_equal(&da, &db));
    CHECK_OK(knit_digest(A, "", &da)); /* one namespace (home) */
    CHECK(knit_digest_equal(&da, &db));
    sqlite3_free(ddl);
    sqlite3_free(ins);
    knit_close(A);
    knit_close(B);
    rt_done();
}

KNIT_TESTS(T(copy_before_sync_pushes_all), T(copy_pushes_only_unacked),
           T(original_and_copy_converge), T(copy_of_copy), T(copy_orset_converges),
           T(account_refuses_other_user), T(account_sign_in_then_other_user),
           T(erase_account_removes_rows), T(long_identifiers))
