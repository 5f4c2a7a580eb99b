/*
** test_check_it.c: the consistency checker end to end (docs/ARCHITECTURE.md,
** "Consistency checker"): the real sync-relay and sync-agent on 127.0.0.1,
** a replica corrupted behind knit's back with plain SQLite connections (a
** cell changed and a row deleted with knit's triggers off, a row the relay
** never got because knit's acknowledged watermark was moved past it), and
** the agent's checker finding, logging, repairing and counting it.  A
** healthy replica, written to meanwhile, finds nothing however often it
** checks.  Every wait is bounded; nothing asserts a timing.
*/
#include "test.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "knit.h"
#include "relay_store.h"
#include "sync_util.h"

#define NS "user:alice"
#define SCHEMA                                                                                     \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER,"                              \
    " tags TEXT NOT NULL DEFAULT '[]');"

typedef struct world_s {
    su_relay_t relay;  /* the relay */
    char data[512];    /* its store */
    char secret[512];  /* its JWT secret */
    char token[512];   /* alice's token */
    char a[512];       /* replica A, the one corrupted */
    char b[512];       /* replica B, another device */
    char alog[512];    /* agent A's log */
    char blog[512];    /* agent B's log */
    su_proc_t agent;   /* agent A */
    su_proc_t agent_b; /* agent B */
    int http_port;     /* the relay's --http-listen (/metrics) */
} world_t;

static const char *const CHECK_FAST[] = {"--backoff-max", "500", "--check-interval", "100", NULL};

static void make_replica(const char *path)
{
    char out[1024];
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "items", "--orset", "tags", NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

static void world_init(world_t *w)
{
    memset(w, 0, sizeof *w);
    su_path(w->data, sizeof w->data, "relay.db");
    su_path(w->secret, sizeof w->secret, "secret");
    su_path(w->token, sizeof w->token, "alice.jwt");
    su_path(w->a, sizeof w->a, "a.db");
    su_path(w->b, sizeof w->b, "b.db");
    su_path(w->alog, sizeof w->alog, "agent-a.log");
    su_path(w->blog, sizeof w->blog, "agent-b.log");
    CHECK_OK(su_write_secret(w->secret));
    CHECK_OK(su_write_token(w->secret, "alice", w->token));
    char hl[64];
    w->http_port = su_free_port();
    CHECK(w->http_port > 0);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", w->http_port);
    const char *extra[] = {"--http-listen", hl, NULL};
    CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, extra));
    make_replica(w->a);
    make_replica(w->b);
}

static void world_done(world_t *w)
{
    int st;
    if (w->agent.pid) {
        CHECK_OK(su_kill(&w->agent, SIGTERM, 10000, &st));
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (w->agent_b.pid) {
        CHECK_OK(su_kill(&w->agent_b, SIGTERM, 10000, &st));
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    su_kill(&w->relay.p, SIGTERM, 10000, NULL);
}

/* `sync-agent run PATH --once`, which must report synced. */
static void run_once(world_t *w, const char *path)
{
    char relay[64], out[4096];
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w->relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",    path,     "--relay",    relay,
                          "--token-file",  w->token, "--once", "--no-check", NULL};
    int rc = su_run(argv, 60000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "run --once failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

/* The number after "KEY: " in `sync-agent status PATH`, or -1. */
static long status_count(const char *path, const char *key)
{
    char out[8192], want[128];
    const char *argv[] = {SYNC_AGENT_PATH, "status", path, NULL};
    su_run(argv, 10000, out, sizeof out);
    snprintf(want, sizeof want, "\n%s: ", key);
    const char *p = strstr(out, want);
    return p ? strtol(p + strlen(want), NULL, 10) : -1;
}

/* A sample of the relay's /metrics (NAME with its labels), read with curl;
** -1 when absent. */
static long relay_metric(world_t *w, const char *name)
{
    char url[128], out[65536], want[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", w->http_port);
    const char *argv[] = {"/usr/bin/curl", "-sS", "--max-time", "10", url, NULL};
    CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 0);
    snprintf(want, sizeof want, "\n%s ", name);
    const char *p = strstr(out, want);
    return p ? strtol(p + strlen(want), NULL, 10) : -1;
}

/* knit_relay_consistency_checks_total{result="RESULT"}. */
static long relay_checks(world_t *w, const char *result)
{
    char name[128];
    snprintf(name, sizeof name, "knit_relay_consistency_checks_total{result=\"%s\"}", result);
    return relay_metric(w, name);
}

typedef struct repaired_s {
    world_t *w;  /* the world */
    long wanted; /* inconsistencies repaired awaited */
} repaired_t;

/* The agent counted the repair and A's digest equals the relay's again. */
static int repaired(void *arg)
{
    repaired_t *r = arg;
    char da[65], dr[65];
    if (status_count(r->w->a, "inconsistencies repaired") < r->wanted)
        return 0;
    if (su_replica_digest(r->w->a, NS, da) || su_relay_digest(r->w->data, NS, dr))
        return 0;
    return strcmp(da, dr) == 0;
}

/* Plain SQL with knit's triggers off on this connection: nothing is
** captured, so knit's metadata still says what the relay holds. */
static sqlite3 *behind_knits_back(const char *path)
{
    sqlite3 *db = su_db(path);
    int on = 1;
    CHECK_EQ_INT(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, &on), SQLITE_OK);
    CHECK_EQ_INT(on, 0);
    return db;
}

static void dump(world_t *w)
{
    su_print_file(w->alog);
    su_print_file(w->blog);
}

/* Starts agent A with a fast checker and waits for its first repair. */
static void await_repair(world_t *w, const char *what)
{
    CHECK_OK(su_agent_start(&w->agent, w->a, w->relay.port, w->token, w->alog, CHECK_FAST));
    repaired_t r = {w, 1};
    if (!su_wait_until(repaired, &r, 60000)) {
        dump(w);
        fprintf(stderr, "%s\n", what);
        CHECK(!"the checker did not repair the replica");
    }
}

/* ---------------------------------------------------------------------- */

/* A changed cell, a deleted row and a row the relay never got: the
** checker finds the difference (logged, counted), restores the first two
** from the relay's state and pushes the third again, and the replica's
** digest equals the relay's; another device sees the relay's state. */
static void repairs_corruption(void)
{
    world_t w;
    char da[65], dr[65];
    world_init(&w);
    sqlite3 *db = su_db(w.a);
    for (int i = 0; i < 50; i++)
        su_exec(db, "INSERT INTO items(id, name, qty, tags) VALUES ('r%d', 'name %d', %d, '%s')", i,
                i, i, i % 5 ? "[]" : "[\"x\",\"y\"]");
    sqlite3_close(db);
    run_once(&w, w.a);
    CHECK_OK(su_replica_digest(w.a, NS, da));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK_STR(da, dr);

    /* 1. A row the relay never got: written and stamped, then knit's
    **    acknowledged watermark moved past it by hand (as if the relay had
    **    been restored from a backup older than its ACK). */
    knit_t *k = NULL;
    uint64_t ver = 0;
    db = su_db(w.a);
    su_exec(db, "INSERT INTO items(id, name, qty) VALUES ('extra', 'only here', 7)");
    sqlite3_close(db);
    CHECK_OK(knit_open(w.a, NULL, &k));
    CHECK(knit_stamp(k) >= 0);
    CHECK_OK(knit_version(k, &ver));
    knit_close(k);
    db = su_db(w.a);
    su_exec(db, "UPDATE _knit_meta SET value = %llu WHERE key = 'acked'", (unsigned long long)ver);
    sqlite3_close(db);
    /* 2. A cell changed and 3. a row deleted, with the triggers off. */
    db = behind_knits_back(w.a);
    su_exec(db, "UPDATE items SET name = 'corrupted' WHERE id = 'r7'");
    su_exec(db, "DELETE FROM items WHERE id = 'r12'");
    su_exec(db, "UPDATE items SET qty = 999 WHERE id = 'r10'"); /* r10 has a set, too */
    sqlite3_close(db);
    CHECK_OK(su_replica_digest(w.a, NS, da));
    CHECK(strcmp(da, dr) != 0);

    await_repair(&w, "the checker did not repair the replica");
    /* The relay counted the check that differed and the fetch. */
    CHECK(relay_checks(&w, "differ") >= 1);
    CHECK(relay_checks(&w, "fetch") >= 1);
    CHECK_EQ_INT(relay_checks(&w, "error"), 0);
    db = su_db(w.a);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'r7' AND name = 'name 7'"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'r12' AND qty = 12"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT qty FROM items WHERE id = 'r10'"), 10);
    CHECK_EQ_INT(
        su_int(db, "SELECT count(*) FROM items WHERE id = 'r10' AND tags = '[\"x\",\"y\"]'"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'extra'"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 51);
    sqlite3_close(db);
    CHECK(status_count(w.a, "inconsistencies found") >= 1);
    CHECK(status_count(w.a, "rows repaired") >= 4);
    CHECK(su_file_has(w.alog, "consistency check: user:alice differs from the relay"));
    CHECK(su_file_has(w.alog, "consistency check: repaired user:alice"));

    /* The repaired replica checks clean from then on: the count of
    ** inconsistencies found stays where it is while checks go on. */
    long found = status_count(w.a, "inconsistencies found");
    long checks = status_count(w.a, "consistency checks");
    for (int i = 0; i < 600 && status_count(w.a, "consistency checks") < checks + 3; i++)
        su_sleep_ms(50);
    CHECK(status_count(w.a, "consistency checks") >= checks + 3);
    CHECK_EQ_INT(status_count(w.a, "inconsistencies found"), found);

    /* Another device gets the relay's state, the pushed-again row included. */
    run_once(&w, w.b);
    db = su_db(w.b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'extra' AND qty = 7"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'r7' AND name = 'name 7'"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 51);
    sqlite3_close(db);
    CHECK_OK(su_replica_digest(w.b, NS, da));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK_STR(da, dr);
    world_done(&w);
}

/* Knit's own table edited: a row's metadata removed, so the replica holds
** a user row knit does not count and lacks the relay's cells of it; the
** checker restores them. */
static void repairs_metadata(void)
{
    world_t w;
    char da[65], dr[65];
    world_init(&w);
    sqlite3 *db = su_db(w.a);
    for (int i = 0; i < 20; i++)
        su_exec(db, "INSERT INTO items(id, name, qty) VALUES ('m%d', 'n%d', %d)", i, i, i);
    sqlite3_close(db);
    run_once(&w, w.a);
    db = behind_knits_back(w.a);
    int64_t id = su_int(db, "SELECT id FROM _knit_tables WHERE name = 'items'");
    CHECK(id > 0);
    su_exec(db, "DELETE FROM _knit_rows_%lld WHERE k0 = 'm3'", (long long)id);
    sqlite3_close(db);
    CHECK_OK(su_replica_digest(w.a, NS, da));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK(strcmp(da, dr) != 0);
    await_repair(&w, "the checker did not repair the replica's metadata");
    db = su_db(w.a);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'm3' AND qty = 3"), 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM _knit_rows_%lld WHERE k0 = 'm3'", (long long)id),
                 1);
    sqlite3_close(db);
    world_done(&w);
}

typedef struct checks_s {
    const char *path; /* the replica */
    long wanted;      /* checks awaited */
} checks_t;

static int checked(void *arg)
{
    checks_t *c = arg;
    return status_count(c->path, "consistency checks") >= c->wanted;
}

/* Two healthy devices writing all the while: every check that compares
** finds the digests equal, however many run. */
static void healthy_zero_mismatches(void)
{
    world_t w;
    char da[65], db_[65], dr[65];
    world_init(&w);
    CHECK_OK(su_agent_start(&w.agent, w.a, w.relay.port, w.token, w.alog, CHECK_FAST));
    CHECK_OK(su_agent_start(&w.agent_b, w.b, w.relay.port, w.token, w.blog, CHECK_FAST));
    sqlite3 *a = su_db(w.a), *b = su_db(w.b);
    for (int i = 0; i < 40; i++) {
        su_exec(i % 2 ? b : a,
                "INSERT INTO items(id, name, qty, tags) VALUES ('h%d', 'n', %d, '[1]')", i, i);
        su_exec(i % 2 ? a : b, "UPDATE items SET qty = qty + 1, tags = '[1,%d]' WHERE id = 'h%d'",
                i, i / 2);
        su_sleep_ms(20);
    }
    checks_t ca = {w.a, 5}, cb = {w.b, 5};
    if (!su_wait_until(checked, &ca, 60000) || !su_wait_until(checked, &cb, 60000)) {
        dump(&w);
        CHECK(!"too few consistency checks ran");
    }
    CHECK_EQ_INT(status_count(w.a, "inconsistencies found"), 0);
    CHECK_EQ_INT(status_count(w.b, "inconsistencies found"), 0);
    CHECK_EQ_INT(status_count(w.a, "inconsistencies repaired"), 0);
    CHECK(!su_file_has(w.alog, "differs from the relay"));
    CHECK(!su_file_has(w.blog, "differs from the relay"));
    CHECK(relay_checks(&w, "equal") >= 10);
    /* "differ" may count checks that writes overtook (the client drops an
    ** answer at another sequence than its cursor); a fetch would mean the
    ** client acted on one. */
    CHECK_EQ_INT(relay_checks(&w, "fetch"), 0);
    /* Live agents announce KNIT_HELLO_NO_ECHO: their own units are not
    ** sent back to them (proto_server.c note 18); the other agent gets
    ** them, and the digests below agree. */
    CHECK(relay_metric(&w, "knit_relay_echoes_skipped_total") >= 2);
    CHECK(relay_metric(&w, "knit_relay_fanout_deltas_total") >= 2);
    sqlite3_close(a);
    sqlite3_close(b);
    world_done(&w);
    CHECK_OK(su_replica_digest(w.a, NS, da));
    CHECK_OK(su_replica_digest(w.b, NS, db_));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK_STR(da, dr);
    CHECK_STR(db_, dr);
}

/* Stops the relay (SIGTERM: it commits and closes its store). */
static void relay_stop(world_t *w)
{
    int st;
    CHECK_OK(su_kill(&w->relay.p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* The relay restored from a backup older than another device's write, and
** that device gone: replica A is the only place its rows survive.  A's
** checker finds the relay's state behind, keeps B's cells and its own
** that the relay lacks, and pushes both again (check_rt.c note 4), so a
** new device gets everything. */
static void relay_restored_backup(void)
{
    world_t w;
    char backup[512], c[512], da[65], dr[65];
    world_init(&w);
    su_path(backup, sizeof backup, "relay-backup.db");
    su_path(c, sizeof c, "c.db");
    sqlite3 *db = su_db(w.a);
    for (int i = 0; i < 10; i++)
        su_exec(db, "INSERT INTO items(id, name, qty) VALUES ('old%d', 'n', %d)", i, i);
    sqlite3_close(db);
    run_once(&w, w.a);
    run_once(&w, w.b);
    /* The backup, taken while the relay is stopped. */
    int port = w.relay.port;
    relay_stop(&w);
    db = su_db(w.data);
    su_exec(db, "VACUUM INTO '%s'", backup);
    sqlite3_close(db);
    CHECK_OK(su_relay_start(&w.relay, port, w.data, w.secret, NULL));
    /* After it: B's rows and an update of an old row, then A's, all
    ** acknowledged and synced to A. */
    db = su_db(w.b);
    su_exec(db, "INSERT INTO items(id, name, qty, tags) VALUES ('fromb', 'b wrote', 1, '[\"t\"]')");
    su_exec(db, "UPDATE items SET name = 'b edited' WHERE id = 'old3'");
    sqlite3_close(db);
    run_once(&w, w.b);
    db = su_db(w.a);
    su_exec(db, "INSERT INTO items(id, name, qty) VALUES ('froma', 'a wrote', 2)");
    sqlite3_close(db);
    run_once(&w, w.a);
    db = su_db(w.a);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'fromb'"), 1);
    sqlite3_close(db);
    /* The relay goes back to the backup; B is never seen again. */
    relay_stop(&w);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -f '%s-wal' '%s-shm' && cp '%s' '%s'", w.data, w.data, backup,
             w.data);
    CHECK_EQ_INT(system(cmd), 0);
    CHECK_OK(su_relay_start(&w.relay, port, w.data, w.secret, NULL));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK_OK(su_replica_digest(w.a, NS, da));
    CHECK(strcmp(da, dr) != 0);

    await_repair(&w, "the checker did not bring the restored relay back to A's state");
    CHECK_OK(su_kill(&w.agent, SIGTERM, 10000, NULL));
    w.agent.pid = 0;
    /* A new device gets every row, B's included. */
    make_replica(c);
    run_once(&w, c);
    db = su_db(c);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 12);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'fromb' AND name = 'b wrote'"
                            " AND tags = '[\"t\"]'"),
                 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'old3' AND name = 'b edited'"),
                 1);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id = 'froma'"), 1);
    sqlite3_close(db);
    /* Nothing is left marked as re-pushed once the relay acknowledged it. */
    db = su_db(w.a);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM _knit_meta WHERE key GLOB 'repush:*'"), 0);
    sqlite3_close(db);
    CHECK_OK(su_replica_digest(c, NS, da));
    CHECK_OK(su_relay_digest(w.data, NS, dr));
    CHECK_STR(da, dr);
    world_done(&w);
}

KNIT_TESTS(T(repairs_corruption), T(repairs_metadata), T(healthy_zero_mismatches),
           T(relay_restored_backup))
