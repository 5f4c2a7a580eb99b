/*
** test_robust_it.c: robustness end to end, with the real sync-relay,
** sync-agent and sync-inspect on 127.0.0.1 (ephemeral ports), replicas
** written with plain SQLite connections and the sqlite3 shell.  Every wait
** is bounded; children and the temporary directory are cleaned up at exit
** (sync_util.c; KNIT_KEEP_TMP=1 keeps them).
*/
#include "test.h"

#include <signal.h>
#include <sys/wait.h>

#include "alloc.h"
#include "knit.h"
#include "orset.h"
#include "relay_store.h"
#include "sync_util.h"
#include "wire_client.h"

#ifndef SYNC_INSPECT_PATH
#define SYNC_INSPECT_PATH "sync-inspect"
#endif

#define NS "user:alice"

static char g_data[512], g_secret[512], g_token[512];
static su_relay_t g_relay;

static void relay_up(const char *const *extra)
{
    su_path(g_data, sizeof g_data, "relay.db");
    su_path(g_secret, sizeof g_secret, "secret");
    su_path(g_token, sizeof g_token, "alice.jwt");
    CHECK_OK(su_write_secret(g_secret));
    CHECK_OK(su_write_token(g_secret, "alice", g_token));
    CHECK_OK(su_relay_start(&g_relay, 0, g_data, g_secret, extra));
}

static void relay_down(void)
{
    int st;
    CHECK_OK(su_kill(&g_relay.p, SIGTERM, 10000, &st));
}

/* A replica at dir/name with table sql, tracked (extra: sync-agent track
** arguments after the table). */
static void make_replica(char *path, size_t n, const char *name, const char *sql, const char *table,
                         const char *orset)
{
    char out[1024];
    sqlite3 *db;
    su_path(path, n, name);
    db = su_db(path);
    su_exec(db, "%s", sql);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH,          "track", path, table,
                          orset ? "--orset" : NULL, orset,   NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

/* sync-agent run REPLICA --once; returns the exit code, output in out. */
static int run_once(const char *replica, char *out, size_t n)
{
    char relay[64];
    snprintf(relay, sizeof relay, "127.0.0.1:%d", g_relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",   replica,  "--relay",   relay,
                          "--token-file",  g_token, "--once", "--timeout", "20",
                          "--backoff-max", "300",   NULL};
    int rc = su_run(argv, 40000, out, n);
    fprintf(stderr, "[run --once %s] exit %d:\n%s\n", replica, rc, out);
    return rc;
}

static int inspect(const char *cmd, const char *replica, char *out, size_t n)
{
    const char *argv[] = {SYNC_INSPECT_PATH, cmd, replica, NULL};
    return su_run(argv, 20000, out, n);
}

static char *read_file(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t k = 0;
    buf[0] = '\0';
    if (f) {
        k = fread(buf, 1, n - 1, f);
        fclose(f);
    }
    buf[k] = '\0';
    return buf;
}

static uint64_t replica_cursor(const char *path)
{
    knit_options_t o;
    knit_t *k = NULL;
    uint64_t c = 0;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    CHECK_OK(knit_open(path, &o, &k));
    CHECK_OK(knit_cursor(k, NS, &c));
    knit_close(k);
    return c;
}

static uint64_t relay_seq(void)
{
    knit_relay_store_t *s = NULL;
    uint64_t seq = 0;
    CHECK_OK(knit_relay_store_open(g_data, KNIT_RELAY_STORE_READONLY, &s));
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    knit_relay_store_close(s);
    return seq;
}

/* ---------------------------------------------------------------------- */

#define ITEMS "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, tags TEXT NOT NULL DEFAULT '[]');"

/* A PUSH whose OR-set state holds a BLOB element is refused, naming the
** change; nothing is stored; normal replicas go on syncing. */
static void blob_element_refused(void)
{
    char tok[2048], a[512], b[512], out[8192];
    wc_t w;
    knit_msg_t m;
    knit_cred_t cred;
    knit_batch_t *bt = NULL;
    knit_orset_t set;
    knit_value_t pk, blob, name;
    knit_change_t c;
    uint8_t *enc = NULL;
    size_t nenc = 0, tl;
    uint32_t idx;
    const char *cols[2] = {"name", "tags"};
    uint8_t kinds[2] = {0, 1};
    struct timespec ts;
    uint64_t hlc;

    relay_up(NULL);
    read_file(g_token, tok, sizeof tok);
    tl = strlen(tok);
    while (tl && (tok[tl - 1] == '\n' || tok[tl - 1] == '\r'))
        tok[--tl] = '\0';
    memset(&cred, 0, sizeof cred);
    cred.kind = KNIT_CRED_JWT;
    cred.token = tok;
    CHECK_OK(wc_connect(&w, g_relay.port, 0));
    CHECK_OK(wc_hello(&w, &cred, NULL, 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);

    clock_gettime(CLOCK_REALTIME, &ts);
    hlc = knit_hlc_make((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, 0);
    CHECK_OK(knit_batch_new(&bt));
    CHECK_OK(knit_batch_ns(bt, NS, &idx));
    CHECK_OK(knit_batch_site(bt, &(knit_site_t){{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}},
                             &idx));
    CHECK_OK(knit_batch_table(bt, "items", 1, 2, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(bt, 1));
    pk.type = KNIT_TEXT;
    pk.u.b.p = "evil";
    pk.u.b.n = 4;
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = hlc;
    c.value.type = KNIT_NULL;
    CHECK_OK(knit_batch_add(bt, &c)); /* liveness: fine */
    name.type = KNIT_TEXT;
    name.u.b.p = "ok";
    name.u.b.n = 2;
    c.col = 1;
    c.value = name;
    CHECK_OK(knit_batch_add(bt, &c)); /* a name: fine */
    blob.type = KNIT_BLOB;
    blob.u.b.p = "\xde\xad";
    blob.u.b.n = 2;
    knit_orset_init(&set);
    CHECK_OK(knit_orset_add(&set, 0, &blob, NULL));
    CHECK_OK(knit_orset_encode(&set, &enc, &nenc));
    knit_orset_free(&set);
    c.col = 2;
    c.value.type = KNIT_BLOB;
    c.value.u.b.p = enc;
    c.value.u.b.n = nenc;
    CHECK_OK(knit_batch_add(bt, &c)); /* tags holding a BLOB: no JSON form */
    knit__free(enc);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = 1;
    m.u.push.ns = NS;
    m.u.push.batch = bt;
    CHECK_OK(wc_send(&w, &m));
    knit_batch_free(bt);
    CHECK_OK(wc_recv_type(&w, 10000, KNIT_MSG_REJECT, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 1);
    CHECK_EQ_INT(m.u.reject.nreasons, 1);
    CHECK_EQ_INT(m.u.reject.reasons[0].change, 2);
    CHECK_EQ_INT(m.u.reject.reasons[0].code, KNIT_EINVAL);
    fprintf(stderr, "reason: %s\n", m.u.reject.reasons[0].message);
    CHECK(strstr(m.u.reject.reasons[0].message, "items") != NULL);
    CHECK(strstr(m.u.reject.reasons[0].message, "'evil'") != NULL);
    CHECK(strstr(m.u.reject.reasons[0].message, "tags") != NULL);
    CHECK(strstr(m.u.reject.reasons[0].message, "BLOB") != NULL);
    knit_msg_free(&m);
    wc_close(&w);
    CHECK_EQ_INT(relay_seq(), 0); /* nothing stored */

    /* Two ordinary replicas of alice still sync through it. */
    make_replica(a, sizeof a, "a.db", ITEMS, "items", "tags");
    make_replica(b, sizeof b, "b.db", ITEMS, "items", "tags");
    sqlite3 *db = su_db(a);
    su_exec(db, "INSERT INTO items(id, name, tags) VALUES('fine', 'x', '[\"red\"]')");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    CHECK_EQ_INT(run_once(b, out, sizeof out), 0);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'fine' AND tags = '[\"red\"]'"),
                 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'evil'"), 0);
    sqlite3_close(db);
    relay_down();
}

/* run --once twice on a replica that pushed 100 rows: the second run
** downloads nothing, the cursor is at the relay's head, and the counts say
** what happened. */
static void once_twice_no_echo(void)
{
    char a[512], out[8192];
    sqlite3 *db;
    relay_up(NULL);
    make_replica(a, sizeof a, "a.db", ITEMS, "items", "tags");
    db = su_db(a);
    su_exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)"
                " INSERT INTO items(id, name) SELECT 'row' || i, 'name ' || i FROM n");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    CHECK(strstr(out, " synced with ") != NULL);
    CHECK(strstr(out, "pushed 300 changes") != NULL); /* liveness, name, tags per row */
    CHECK(strstr(out, "applied 0") != NULL);          /* nothing came from elsewhere */
    CHECK_EQ_INT(replica_cursor(a), relay_seq());
    CHECK(relay_seq() > 0);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    CHECK(strstr(out, "pushed 0 changes, received 0, applied 0") != NULL);
    CHECK_EQ_INT(replica_cursor(a), relay_seq());
    relay_down();
}

/* sync-inspect pending lists writes made with the sqlite3 shell that knit
** has not stamped yet, and does not open with "nothing pending". */
static void pending_lists_unstamped(void)
{
    char a[512], out[8192], first[512];
    make_replica(a, sizeof a, "p.db", ITEMS, "items", "tags");
    const char *sh[] = {"/usr/bin/sqlite3", a,
                        "INSERT INTO items(id, name) VALUES('new1', 'x'), ('new2', 'y');"
                        " DELETE FROM items WHERE id = 'new2';",
                        NULL};
    CHECK_EQ_INT(su_run(sh, 20000, out, sizeof out), 0);
    CHECK_EQ_INT(inspect("pending", a, out, sizeof out), 0);
    fprintf(stderr, "%s\n", out);
    snprintf(first, sizeof first, "%.*s", (int)strcspn(out, "\n"), out);
    CHECK(strstr(first, "nothing pending") == NULL);
    CHECK(strstr(first, "3 captured writes pending") != NULL);
    CHECK(strstr(out, "items insert ('new1')") != NULL);
    CHECK(strstr(out, "items insert ('new2')") != NULL);
    CHECK(strstr(out, "items delete ('new2')") != NULL);
}

/* Damage SQLite sees stops the relay at start (unless --serve-damaged); one
** undecodable stored cell is skipped in catch-up, logged with its
** namespace, table, key and column, and the rest arrives. */
static void damaged_store(void)
{
    char a[512], b[512], out[8192], log[600], text[65536];
    sqlite3 *db;
    relay_up(NULL);
    make_replica(a, sizeof a, "a.db", ITEMS, "items", "tags");
    make_replica(b, sizeof b, "b.db", ITEMS, "items", "tags");
    db = su_db(a);
    su_exec(db, "INSERT INTO items(id, name) VALUES('one', 'first'), ('two', 'second')");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    relay_down();

    /* Plant one bad cell: row 'two''s name no longer decodes. */
    db = su_db(g_data);
    su_exec(db, "UPDATE cell SET value = X'09' WHERE kind = 1 AND pk = X'030374776F'"
                " AND cid = (SELECT id FROM col WHERE name = 'name')");
    CHECK_EQ_INT(sqlite3_changes(db), 1);
    sqlite3_close(db);
    CHECK_OK(su_relay_start(&g_relay, 0, g_data, g_secret, NULL));
    CHECK_EQ_INT(run_once(b, out, sizeof out), 0);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'one' AND name = 'first'"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'two' AND name IS NULL"), 1);
    sqlite3_close(db);
    snprintf(log, sizeof log, "%s.log", g_data);
    read_file(log, text, sizeof text);
    CHECK(strstr(text, "catch-up skipped a stored cell") != NULL);
    CHECK(strstr(text, "namespace user:alice, table items, key ('two'), column name") != NULL);
    relay_down();

    /* Page-level damage: quick_check refuses the file at start. */
    {
        int64_t root, psize;
        FILE *f;
        char junk[4096];
        db = su_db(g_data);
        root = su_int(db, "SELECT rootpage FROM sqlite_schema WHERE name = 'cell_seq'");
        psize = su_int(db, "PRAGMA page_size");
        sqlite3_close(db);
        CHECK(root > 1 && psize <= (int64_t)sizeof junk);
        memset(junk, 0x5a, sizeof junk);
        CHECK((f = fopen(g_data, "r+b")) != NULL);
        fseek(f, (long)((root - 1) * psize), SEEK_SET);
        fwrite(junk + 0, 1, (size_t)psize, f);
        fclose(f);
        const char *argv[] = {SYNC_RELAY_PATH, "--listen", "127.0.0.1:0", "--data", g_data, NULL};
        int rc = su_run(argv, 20000, out, sizeof out);
        fprintf(stderr, "relay on a damaged file: %d: %s\n", rc, out);
        CHECK_EQ_INT(rc, 1);
        CHECK(strstr(out, g_data) != NULL);
        CHECK(strstr(out, "quick_check") != NULL);
        CHECK(strstr(out, "--serve-damaged") != NULL);
        const char *const extra[] = {"--serve-damaged", NULL};
        CHECK_OK(su_relay_start(&g_relay, 0, g_data, g_secret, extra));
        relay_down();
    }
}

/* A row the replica cannot apply (NOT NULL here, not on the writer) is set
** aside, the rest applies, --once says so instead of "synced", sync-inspect
** aside lists it with SQLite's own message, and the message stays the same
** across retries. */
static void aside_reported(void)
{
    char a[512], b[512], out[8192], reason[3][8192];
    sqlite3 *db;
    relay_up(NULL);
    make_replica(a, sizeof a, "a.db",
                 "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT, tags TEXT NOT NULL DEFAULT "
                 "'[]');",
                 "notes", NULL);
    make_replica(b, sizeof b, "b.db",
                 "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT NOT NULL, tags TEXT NOT "
                 "NULL DEFAULT '[]');",
                 "notes", NULL);
    db = su_db(a);
    su_exec(db, "INSERT INTO notes(id, body) VALUES('good', 'text'), ('bad', NULL)");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    for (int i = 0; i < 3; i++) {
        int rc = run_once(b, out, sizeof out);
        CHECK(strstr(out, " synced with ") == NULL || strstr(out, "except") != NULL);
        CHECK(strstr(out, "except 1 row set aside") != NULL);
        CHECK(strstr(out, "sync-inspect aside") != NULL);
        CHECK_EQ_INT(rc, 5);
        CHECK_EQ_INT(inspect("aside", b, out, sizeof out), 1);
        fprintf(stderr, "%s\n", out);
        CHECK(strstr(out, "NOT NULL constraint failed: notes.body") != NULL);
        CHECK(strstr(out, "'bad'") != NULL);
        {
            sqlite3 *rb = su_db(b);
            sqlite3_stmt *st = NULL;
            CHECK_EQ_INT(sqlite3_prepare_v2(rb,
                                            "SELECT group_concat(reason, '|') FROM (SELECT reason"
                                            " FROM _knit_aside ORDER BY id)",
                                            -1, &st, NULL),
                         SQLITE_OK);
            CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
            snprintf(reason[i], sizeof reason[i], "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
            sqlite3_close(rb);
        }
        /* A real retry of the set-aside row fails again the same way. */
        {
            knit_t *k = NULL;
            knit_apply_stats_t st;
            CHECK_OK(knit_open(b, NULL, &k));
            CHECK_OK(knit_aside_retry(k, &st));
            CHECK_EQ_INT(st.recovered, 0);
            knit_close(k);
        }
    }
    CHECK_STR(reason[1], reason[0]);
    CHECK_STR(reason[2], reason[0]);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM notes WHERE id = 'good'"), 1);
    sqlite3_close(db);
    relay_down();
}

KNIT_TESTS(T(blob_element_refused), T(once_twice_no_echo), T(pending_lists_unstamped),
           T(damaged_store), T(aside_reported))
