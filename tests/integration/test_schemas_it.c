/*
** test_schemas_it.c: devices of different app versions syncing through one
** relay, end to end with the real sync-relay, sync-agent and sync-inspect
** on 127.0.0.1 (ephemeral ports).  Every wait is bounded; children and the
** temporary directory are cleaned up at exit (sync_util.c).
**
**   two_schemas_then_one  A has notes.extra, B does not: both sync; the
**                         relay lists two fingerprints with the right
**                         columns and devices; B keeps A's extra cell
**                         waiting and shows it; B migrates (ALTER + track),
**                         syncs again: one fingerprint for both, the cell
**                         applied.
**   bad_schema_refused    a HELLO whose schema does not match its
**                         fingerprint gets ERROR KNIT_EPROTO naming it.
**
** Under KNIT_TEST_STORE=pg (tests/pgsuite.cmake) the relay keeps its store
** in PostgreSQL, and `sync-inspect relay` is given that database's URI.
*/
#include "test.h"

#include <signal.h>

#include "codec.h"
#include "knit.h"
#include "sync_util.h"
#include "wire_client.h"
#ifdef KNIT_TEST_PG
#include "test_store.h"
#endif

#ifndef SYNC_INSPECT_PATH
#define SYNC_INSPECT_PATH "sync-inspect"
#endif

static char g_data[512], g_secret[512], g_token[512];
static const char *g_store; /* what sync-inspect relay reads: g_data or its URI */
static su_relay_t g_relay;

static void relay_up(void)
{
    su_path(g_data, sizeof g_data, "relay.db");
    su_path(g_secret, sizeof g_secret, "secret");
    su_path(g_token, sizeof g_token, "alice.jwt");
    CHECK_OK(su_write_secret(g_secret));
    CHECK_OK(su_write_token(g_secret, "alice", g_token));
    CHECK_OK(su_relay_start(&g_relay, 0, g_data, g_secret, NULL));
    g_store = g_data;
#ifdef KNIT_TEST_PG
    if (ts_pg())
        g_store = ts_store_uri(g_data); /* the database su_relay_start gave it */
#endif
}

static void relay_down(void)
{
    int st;
    CHECK_OK(su_kill(&g_relay.p, SIGTERM, 10000, &st));
}

static void track(const char *path, const char *table)
{
    char out[2048];
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, table, NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

static void make_replica(char *path, size_t n, const char *name, const char *sql)
{
    sqlite3 *db;
    su_path(path, n, name);
    db = su_db(path);
    su_exec(db, "%s", sql);
    sqlite3_close(db);
    track(path, "notes");
}

/* sync-agent run REPLICA --once; the exit code, output in out. */
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

static int inspect(const char *const *args, char *out, size_t n)
{
    const char *argv[8] = {SYNC_INSPECT_PATH};
    int i = 0;
    while (args[i] && i < 6) {
        argv[i + 1] = args[i];
        i++;
    }
    argv[i + 1] = NULL;
    int rc = su_run(argv, 20000, out, n);
    fprintf(stderr, "[sync-inspect %s %s%s%s] exit %d:\n%s\n", args[0], args[1] ? args[1] : "",
            args[1] && args[2] ? " " : "", args[1] && args[2] ? args[2] : "", rc, out);
    return rc;
}

/* The string value of "key": "..." in a JSON document (first one). */
static void json_str(const char *doc, const char *key, char *out, size_t n)
{
    char pat[64];
    const char *p, *e;
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    p = strstr(doc, pat);
    CHECK(p != NULL);
    p += strlen(pat);
    e = strchr(p, '"');
    CHECK(e != NULL && (size_t)(e - p) < n);
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
}

/* The part of `schemas` text output that belongs to fingerprint fp (up to
** the next "schema " line); "" when fp is not listed. */
static void section(const char *text, const char *fp, char *out, size_t n)
{
    char head[64];
    const char *p, *e;
    snprintf(head, sizeof head, "schema %s ", fp);
    out[0] = '\0';
    if (!(p = strstr(text, head)))
        return;
    e = strstr(p + 1, "\nschema ");
    if (!e)
        e = p + strlen(p);
    CHECK((size_t)(e - p) < n);
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void fingerprint_of(const char *replica, char fp[17], char site[33])
{
    char out[16384];
    const char *args[] = {"schema", "--json", replica, NULL};
    const char *iargs[] = {"info", "--json", replica, NULL};
    CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
    json_str(out, "fingerprint", fp, 17);
    CHECK_EQ_INT(inspect(iargs, out, sizeof out), 0);
    json_str(out, "site", site, 33);
}

static void two_schemas_then_one(void)
{
    char a[512], b[512], out[16384], sec[8192], sec2[8192];
    char fpa[17], fpb[17], fpb2[17], sitea[33], siteb[33];
    sqlite3 *db;
    int rc;

    relay_up();
    make_replica(a, sizeof a, "a.db",
                 "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT, extra INTEGER)");
    make_replica(b, sizeof b, "b.db", "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT)");
    fingerprint_of(a, fpa, sitea);
    fingerprint_of(b, fpb, siteb);
    CHECK(strcmp(fpa, fpb) != 0);

    db = su_db(a);
    su_exec(db, "INSERT INTO notes VALUES('n1', 'hello', 5)");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, out, sizeof out), 0);
    rc = run_once(b, out, sizeof out);
    CHECK(rc == 0 || rc == 5);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM notes WHERE id = 'n1' AND body = 'hello'"), 1);
    sqlite3_close(db);

    /* The operator's view: two fingerprints, each with its columns and its
    ** device. */
    {
        const char *args[] = {"relay", g_store, "schemas", NULL};
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK_EQ_INT(count_of(out, "\nschema "), 2);
        section(out, fpa, sec, sizeof sec);
        section(out, fpb, sec2, sizeof sec2);
        CHECK(strstr(sec, "notes: key id; columns body lww, extra lww") != NULL);
        CHECK(strstr(sec, sitea) != NULL && strstr(sec, siteb) == NULL);
        CHECK(strstr(sec, "user:alice site ") != NULL);
        CHECK(strstr(sec, "1 device)") != NULL);
        CHECK(strstr(sec2, "notes: key id; columns body lww\n") != NULL);
        CHECK(strstr(sec2, siteb) != NULL && strstr(sec2, sitea) == NULL);
    }
    {
        const char *args[] = {"relay", "--json", g_store, "schemas", NULL};
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK_EQ_INT(count_of(out, "\"fingerprint\": \""), 2);
        CHECK_EQ_INT(count_of(out, "\"principal\": \"user:alice\""), 2);
        CHECK(strstr(out, "{\"name\": \"extra\", \"kind\": \"lww\"}") != NULL);
    }

    /* The older replica's view: A's extra cell waits for its column. */
    {
        const char *args[] = {"schema", b, NULL};
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK(strstr(out, fpb) != NULL);
        CHECK(strstr(out, "notes.extra: 1 cell in 1 row (column not tracked here)") != NULL);
        const char *jargs[] = {"schema", "--json", b, NULL};
        CHECK_EQ_INT(inspect(jargs, out, sizeof out), 0);
        CHECK(strstr(out, "\"waiting_cells\": 1") != NULL);
        CHECK(strstr(out, "{\"table\": \"notes\", \"column\": \"extra\", \"cells\": 1, \"rows\": 1,"
                          " \"table_tracked\": true, \"tracked\": false}") != NULL);
        const char *iargs[] = {"info", b, NULL};
        CHECK_EQ_INT(inspect(iargs, out, sizeof out), 0);
        CHECK(strstr(out, "waiting     1 cell of columns or tables not tracked here yet") != NULL);
    }

    /* B migrates, then reconnects: one fingerprint for both devices. */
    db = su_db(b);
    su_exec(db, "ALTER TABLE notes ADD COLUMN extra INTEGER");
    sqlite3_close(db);
    track(b, "notes");
    fingerprint_of(b, fpb2, siteb);
    CHECK_STR(fpb2, fpa);
    rc = run_once(b, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    {
        const char *args[] = {"relay", g_store, "schemas", NULL};
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK_EQ_INT(count_of(out, "\nschema "), 1);
        section(out, fpa, sec, sizeof sec);
        CHECK(strstr(sec, "2 devices)") != NULL);
        CHECK(strstr(sec, sitea) != NULL && strstr(sec, siteb) != NULL);
        CHECK(strstr(out, fpb) == NULL);
    }
    {
        const char *args[] = {"schema", b, NULL};
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK(strstr(out, "waiting     none") != NULL);
    }
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT extra FROM notes WHERE id = 'n1'"), 5);
    sqlite3_close(db);
    relay_down();
}

/* A hand-made HELLO whose schema lies about its fingerprint. */
static void bad_schema_refused(void)
{
    char token[4096];
    FILE *f;
    size_t n;
    wc_t w;
    knit_msg_t m, reply;
    knit_buf_t buf = {0};
    static const char *const keys[] = {"id"};
    knit_schema_col_t cols[1] = {{"body", 0}};
    knit_schema_table_t t = {"notes", keys, 1, cols, 1};
    knit_schema_t in = {&t, 1, {0}}, *sc = NULL;

    relay_up();
    f = fopen(g_token, "r");
    CHECK(f != NULL);
    n = fread(token, 1, sizeof token - 1, f);
    fclose(f);
    while (n && (token[n - 1] == '\n' || token[n - 1] == '\r'))
        n--;
    token[n] = '\0';
    CHECK_OK(knit__schema_pack(&in, &sc));

    /* A well-formed one is welcome. */
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = m.u.hello.max_version = 1;
    m.u.hello.site.b[0] = 9;
    m.u.hello.cred.kind = KNIT_CRED_JWT;
    m.u.hello.cred.token = token;
    m.u.hello.schema = sc;
    CHECK_OK(wc_connect(&w, g_relay.port, 0));
    CHECK_OK(wc_send(&w, &m));
    CHECK_OK(wc_recv(&w, 10000, &reply));
    CHECK_EQ_INT(reply.type, KNIT_MSG_WELCOME);
    knit_msg_free(&reply);
    wc_close(&w);

    /* The same with one fingerprint byte flipped: ERROR, connection closed. */
    CHECK_OK(knit_msg_encode(&m, NULL, &buf));
    for (size_t i = 0; i + 8 <= buf.len; i++)
        if (memcmp(buf.p + i, sc->fp, 8) == 0) {
            buf.p[i] ^= 1;
            break;
        }
    CHECK_OK(wc_connect(&w, g_relay.port, 0));
    CHECK_OK(wc_send_raw(&w, buf.p, buf.len));
    CHECK_OK(wc_recv(&w, 10000, &reply));
    CHECK_EQ_INT(reply.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(reply.u.error.code, KNIT_EPROTO);
    fprintf(stderr, "ERROR: %s\n", reply.u.error.message);
    CHECK(strstr(reply.u.error.message, "fingerprint does not match") != NULL);
    knit_msg_free(&reply);
    CHECK(wc_wait_closed(&w, 5000));
    wc_close(&w);
    knit_buf_free(&buf);

    /* The good device is recorded; the refused one is not. */
    {
        char out[8192], fp[17];
        const char *args[] = {"relay", g_store, "schemas", NULL};
        knit__schema_fp_hex(sc->fp, fp);
        CHECK_EQ_INT(inspect(args, out, sizeof out), 0);
        CHECK(strstr(out, fp) != NULL);
        CHECK(strstr(out, "(first seen") != NULL);
        CHECK_EQ_INT(count_of(out, "user:alice site "), 1);
    }
    knit__schema_free(sc);
    relay_down();
}

KNIT_TESTS(T(two_schemas_then_one), T(bad_schema_refused))
