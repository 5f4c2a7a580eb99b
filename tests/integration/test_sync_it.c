/*
** test_sync_it.c: the sync client end to end: the real sync-relay and
** sync-agent programs on 127.0.0.1 with ephemeral ports, replicas written
** with plain SQLite connections.  Every wait is bounded; every child is
** killed and reaped and the temporary directory removed at exit
** (sync_util.c).  KNIT_KEEP_TMP=1 keeps the directory and its logs.
**
** KNIT_SYNC_SCALE scales the change counts (default 1: 10,000 changes for
** the offline catch-up), e.g. 0.2 under slow sanitizers.
*/
#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "knit.h"
#include "relay_store.h"
#include "sync_util.h"

#define NS "user:alice"
#define SCHEMA                                                                                     \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER,"                              \
    " tags TEXT NOT NULL DEFAULT '[]', batch INTEGER);"

/* One relay, two replicas A and B (one user, two devices) and their agents. */
typedef struct world_s {
    su_relay_t relay;  /* the relay */
    char data[512];    /* its store */
    char secret[512];  /* its JWT secret */
    char token[512];   /* alice's token */
    char a[512];       /* replica A */
    char b[512];       /* replica B */
    char alog[512];    /* agent A's log */
    char blog[512];    /* agent B's log */
    su_proc_t agent_a; /* agent A */
    su_proc_t agent_b; /* agent B */
    sqlite3 *dba;      /* plain connection to A */
    sqlite3 *dbb;      /* plain connection to B */
} world_t;

static const char *const FAST[] = {"--backoff-max", "500", NULL};

static void tail_log(const char *path)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    long sz;
    size_t n;
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s (tail)\n%s\n", path, buf);
}

static void dump_logs(world_t *w)
{
    char p[600];
    tail_log(w->alog);
    tail_log(w->blog);
    snprintf(p, sizeof p, "%s.log", w->data);
    tail_log(p);
}

/* Makes a replica at path with the items table, tracked by `sync-agent
** track` (tags is an OR-set). */
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

static void world_init(world_t *w, const char *const *relay_extra)
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
    CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, relay_extra));
    make_replica(w->a);
    make_replica(w->b);
    w->dba = su_db(w->a);
    w->dbb = su_db(w->b);
    su_exec(w->dba, "PRAGMA synchronous=NORMAL");
    su_exec(w->dbb, "PRAGMA synchronous=NORMAL");
}

static void start_a(world_t *w)
{
    CHECK_OK(su_agent_start(&w->agent_a, w->a, w->relay.port, w->token, w->alog, FAST));
}

static void start_b(world_t *w)
{
    CHECK_OK(su_agent_start(&w->agent_b, w->b, w->relay.port, w->token, w->blog, FAST));
}

/* SIGTERM both agents: they must finish and exit 0. */
static void stop_agents(world_t *w)
{
    int st;
    if (w->agent_a.pid) {
        CHECK_OK(su_kill(&w->agent_a, SIGTERM, 10000, &st));
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (w->agent_b.pid) {
        CHECK_OK(su_kill(&w->agent_b, SIGTERM, 10000, &st));
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

static void world_done(world_t *w)
{
    stop_agents(w);
    sqlite3_close(w->dba);
    sqlite3_close(w->dbb);
    su_kill(&w->relay.p, SIGTERM, 10000, NULL);
}

/* Waiting for a query on a replica to give a value. */
typedef struct wait_q_s {
    sqlite3 *db;     /* where */
    const char *sql; /* what */
    int64_t want;    /* the value awaited */
} wait_q_t;

static int q_pred(void *arg)
{
    wait_q_t *q = arg;
    return su_int(q->db, "%s", q->sql) == q->want;
}

static void wait_value(world_t *w, sqlite3 *db, const char *sql, int64_t want, int timeout_ms)
{
    wait_q_t q = {db, sql, want};
    if (!su_wait_until(q_pred, &q, timeout_ms)) {
        fprintf(stderr, "timed out waiting for %s == %lld (is %lld)\n", sql, (long long)want,
                (long long)su_int(db, "%s", sql));
        dump_logs(w);
        CHECK(0);
    }
}

typedef struct wait_eq_s {
    world_t *w; /* the world */
} wait_eq_t;

static int eq_pred(void *arg)
{
    wait_eq_t *e = arg;
    char *da = su_dump(e->w->dba, "items", "id"), *db = su_dump(e->w->dbb, "items", "id");
    int eq = strcmp(da, db) == 0;
    free(da);
    free(db);
    return eq;
}

/* Waits until A and B hold the same rows; then their digests of NS and the
** relay's must agree too (checked when the agents are quiet). */
static void wait_converged(world_t *w, int timeout_ms)
{
    wait_eq_t e = {w};
    if (!su_wait_until(eq_pred, &e, timeout_ms)) {
        char *da = su_dump(w->dba, "items", "id"), *db = su_dump(w->dbb, "items", "id");
        fprintf(stderr, "replicas differ after %d ms\nA:\n%.2000s\nB:\n%.2000s\n", timeout_ms, da,
                db);
        free(da);
        free(db);
        dump_logs(w);
        CHECK(0);
    }
}

static void check_digests(world_t *w)
{
    char da[65], db[65], dr[65];
    CHECK_OK(su_replica_digest(w->a, NS, da));
    CHECK_OK(su_replica_digest(w->b, NS, db));
    CHECK_OK(su_relay_digest(w->data, NS, dr));
    if (strcmp(da, db) != 0 || strcmp(da, dr) != 0) {
        fprintf(stderr, "digests differ: A %s B %s relay %s\n", da, db, dr);
        dump_logs(w);
    }
    CHECK_STR(da, db);
    CHECK_STR(da, dr);
}

/* ---------------------------------------------------------------------- */
/* 1. Live: two agents and a relay                                          */

static void live_two_agents(void)
{
    world_t w;
    world_init(&w, NULL);
    /* Rows written before either replica ever synced. */
    su_exec(w.dba,
            "INSERT INTO items(id, name, qty, tags) VALUES ('pre-a', 'offline A', 1, '[\"x\"]')");
    su_exec(w.dbb, "INSERT INTO items(id, name, qty) VALUES ('pre-b', 'offline B', 2)");
    start_a(&w);
    start_b(&w);
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'pre-a' AND tags = '[\"x\"]'", 1,
               20000);
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'pre-b'", 1, 20000);

    /* Writes on either side appear on the other, one at a time. */
    for (int i = 0; i < 20; i++) {
        sqlite3 *src = i % 2 ? w.dbb : w.dba, *dst = i % 2 ? w.dba : w.dbb;
        char sql[200];
        su_exec(src, "INSERT INTO items(id, name, qty) VALUES ('live-%d', 'n%d', %d)", i, i, i);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE id = 'live-%d' AND qty = %d", i,
                 i);
        wait_value(&w, dst, sql, 1, 10000);
    }
    /* An update, a delete, and the resurrection of the deleted row from
    ** the other side. */
    su_exec(w.dba, "UPDATE items SET name = 'renamed' WHERE id = 'live-3'");
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'live-3' AND name = 'renamed'", 1,
               10000);
    su_exec(w.dbb, "DELETE FROM items WHERE id = 'live-4'");
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'live-4'", 0, 10000);
    su_exec(w.dba, "INSERT INTO items(id, name, qty) VALUES ('live-4', 'back', 40)");
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'live-4' AND name = 'back'", 1,
               10000);
    /* Set edits: B adds, A removes another element. */
    su_exec(w.dba, "UPDATE items SET tags = '[\"p\",\"q\"]' WHERE id = 'live-5'");
    wait_value(&w, w.dbb,
               "SELECT count(*) FROM items WHERE id = 'live-5' AND tags = '[\"p\",\"q\"]'", 1,
               10000);
    su_exec(w.dbb, "UPDATE items SET tags = '[\"p\",\"q\",\"r\"]' WHERE id = 'live-5'");
    su_exec(w.dba, "UPDATE items SET tags = '[\"q\"]' WHERE id = 'live-5'");
    wait_converged(&w, 15000);
    stop_agents(&w);
    wait_converged(&w, 1000);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items"), 22);
    check_digests(&w);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* 1b. Concurrent conflicts converge                                        */

/* Stamps the replica's captured writes, as its agent would. */
static void stamp_replica(const char *path)
{
    knit_t *k = NULL;
    CHECK_OK(knit_open(path, NULL, &k));
    CHECK(knit_stamp(k) > 0);
    knit_close(k);
}

static void conflicts_converge(void)
{
    world_t w;
    world_init(&w, NULL);
    su_exec(w.dba, "INSERT INTO items(id, name, qty, tags) VALUES"
                   " ('c1', 'base', 0, '[]'), ('c2', 'doomed', 0, '[]'),"
                   " ('c3', 'set', 0, '[\"a\",\"b\",\"x\"]'), ('c4', 'gone', 0, '[]')");
    start_a(&w);
    start_b(&w);
    wait_value(&w, w.dbb, "SELECT count(*) FROM items", 4, 20000);

    /* Both agents stop (cleanly: freezing one could hold the replica's
    ** write lock), so the writes below are concurrent. */
    stop_agents(&w);
    /* LWW: the same cell written on both sides. */
    su_exec(w.dba, "UPDATE items SET name = 'from A', qty = 1 WHERE id = 'c1'");
    su_exec(w.dbb, "UPDATE items SET name = 'from B' WHERE id = 'c1'");
    /* A delete against a concurrent update: the delete wins. */
    su_exec(w.dba, "DELETE FROM items WHERE id = 'c2'");
    su_exec(w.dbb, "UPDATE items SET name = 'edited', qty = 9 WHERE id = 'c2'");
    /* Sets: A removes a and x, adds c; B removes b, removes x and adds it
    ** back (a new add A did not observe: add wins), adds d.  Expected:
    ** a gone (A removed the only add of it), b gone, c, d, x. */
    su_exec(w.dba, "UPDATE items SET tags = '[\"b\",\"c\"]' WHERE id = 'c3'");
    su_exec(w.dbb, "UPDATE items SET tags = '[\"a\"]' WHERE id = 'c3'");
    stamp_replica(w.b); /* B's agent would have stamped the removal by now */
    su_exec(w.dbb, "UPDATE items SET tags = '[\"a\",\"d\",\"x\"]' WHERE id = 'c3'");
    /* Delete on A, resurrection on B after B saw the delete (below). */
    su_exec(w.dba, "DELETE FROM items WHERE id = 'c4'");
    start_a(&w);
    start_b(&w);

    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'c4'", 0, 15000);
    su_exec(w.dbb, "INSERT INTO items(id, name, qty) VALUES ('c4', 'resurrected', 4)");
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'c4' AND name = 'resurrected'", 1,
               15000);
    wait_converged(&w, 15000);
    stop_agents(&w);
    wait_converged(&w, 1000);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'c2'"), 0);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'c3' AND"
                               " tags = '[\"c\",\"d\",\"x\"]'"),
                 1);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'c1' AND"
                               " name IN ('from A', 'from B')"),
                 1);
    check_digests(&w);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* 1c. Transaction units arrive together                                    */

typedef struct watcher_s {
    const char *path;  /* replica B */
    int rows;          /* rows per transaction */
    volatile int stop; /* set by the test */
    long torn;         /* reads that saw part of a transaction */
    long reads;        /* reads made */
    int max_batch;     /* the highest complete batch seen */
} watcher_t;

static void *watch_units(void *arg)
{
    watcher_t *wt = arg;
    sqlite3 *db = su_db(wt->path);
    while (!wt->stop) {
        /* One snapshot: the count of every batch, each must be 0 or all. */
        sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(db,
                           "SELECT batch, count(*) FROM items WHERE batch IS NOT NULL"
                           " GROUP BY batch",
                           -1, &st, NULL);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int b = sqlite3_column_int(st, 0), n = sqlite3_column_int(st, 1);
            if (n != wt->rows)
                wt->torn++;
            else if (b > wt->max_batch)
                wt->max_batch = b;
        }
        sqlite3_finalize(st);
        wt->reads++;
    }
    sqlite3_close(db);
    return NULL;
}

static void transaction_units(void)
{
    world_t w;
    watcher_t wt;
    pthread_t th;
    const int rows = 200, batches = 15;
    world_init(&w, NULL);
    start_a(&w);
    start_b(&w);
    memset(&wt, 0, sizeof wt);
    wt.path = w.b;
    wt.rows = rows;
    CHECK_OK(pthread_create(&th, NULL, watch_units, &wt));
    for (int b = 1; b <= batches; b++) {
        su_exec(w.dba, "BEGIN");
        for (int i = 0; i < rows; i++)
            su_exec(w.dba, "INSERT INTO items(id, name, qty, batch) VALUES ('u%d-%d', 'x', %d, %d)",
                    b, i, i, b);
        su_exec(w.dba, "COMMIT");
        su_sleep_ms(b % 3 ? 5 : 40);
    }
    wait_value(&w, w.dbb, "SELECT count(*) FROM items", rows * batches, 20000);
    wt.stop = 1;
    pthread_join(th, NULL);
    printf("transaction units: %ld reads of B, %ld torn\n", wt.reads, wt.torn);
    CHECK(wt.reads > 10);
    CHECK_EQ_INT(wt.torn, 0);
    wait_converged(&w, 10000);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* 2. B offline while A makes 10,000 changes                                */

typedef struct acked_s {
    const char *path; /* replica */
    uint64_t want;    /* version awaited */
} acked_t;

static int acked_pred(void *arg)
{
    acked_t *a = arg;
    knit_options_t o;
    knit_t *k = NULL;
    uint64_t v = 0;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    if (knit_open(a->path, &o, &k) != 0)
        return 0;
    knit_acked(k, &v);
    knit_close(k);
    return v >= a->want;
}

static uint64_t replica_version(const char *path)
{
    knit_t *k = NULL;
    uint64_t v = 0;
    CHECK_OK(knit_open(path, NULL, &k));
    CHECK(knit_stamp(k) >= 0);
    CHECK_OK(knit_version(k, &v));
    knit_close(k);
    return v;
}

static void offline_catch_up(void)
{
    world_t w;
    const long changes = su_scale(10000);
    long made = 0;
    int rounds = 0;
    char out[2048], relay[64];
    uint64_t t0;
    world_init(&w, NULL);
    start_a(&w);
    /* B is offline (its agent not running) while A changes things:
    ** inserts of 4 cells + liveness, updates of 1 and 2 cells, deletes. */
    while (made < changes) {
        su_exec(w.dba, "BEGIN");
        for (int i = 0; i < 100 && made < changes; i++, made += 5)
            su_exec(w.dba,
                    "INSERT INTO items(id, name, qty, tags, batch) VALUES"
                    " ('o%d-%d', 'n', %d, '[\"t%d\"]', %d)",
                    rounds, i, i, i % 7, rounds);
        if (rounds > 0) {
            su_exec(w.dba, "UPDATE items SET qty = qty + 1 WHERE batch = %d", rounds - 1);
            made += 100;
            su_exec(w.dba, "DELETE FROM items WHERE batch = %d AND qty %% 10 = 3", rounds - 1);
            made += 10;
        }
        su_exec(w.dba, "COMMIT");
        rounds++;
    }
    /* Wait until A's agent has everything acknowledged. */
    acked_t a = {w.a, replica_version(w.a)};
    if (!su_wait_until(acked_pred, &a, 60000)) {
        dump_logs(&w);
        CHECK(0);
    }
    /* B comes online once: it must catch up and exit 0. */
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w.relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",    w.b,         "--relay", relay, "--token-file",
                          w.token,         "--once", "--timeout", "60",      NULL};
    t0 = su_now_ms();
    int rc = su_run(argv, 90000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "sync-agent --once: %d\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    printf("offline catch-up of %ld changes: %llu ms (%s)\n", made,
           (unsigned long long)(su_now_ms() - t0), out);
    {
        char *da = su_dump(w.dba, "items", "id"), *db = su_dump(w.dbb, "items", "id");
        CHECK(strlen(da) > 1000);
        CHECK(strcmp(da, db) == 0);
        free(da);
        free(db);
    }
    stop_agents(&w);
    check_digests(&w);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* 3. The relay is killed in the middle of a push stream                    */

/* Keys of A's local rows that A's replica says are acknowledged. */
static char **acked_keys(const char *path, size_t *n)
{
    knit_options_t o;
    knit_t *k = NULL;
    knit_batch_t *b = NULL;
    knit_since_opts_t so;
    uint64_t acked = 0;
    char **keys;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    CHECK_OK(knit_open(path, &o, &k));
    CHECK_OK(knit_acked(k, &acked));
    memset(&so, 0, sizeof so);
    so.local_only = 1;
    CHECK_OK(knit_changes_since(k, 0, &so, &b));
    keys = calloc(b->nchanges + 1, sizeof *keys);
    *n = 0;
    for (size_t u = 0; u < b->ntxns; u++) {
        if (b->txns[u].version > acked)
            continue;
        for (size_t i = b->txns[u].first; i < b->txns[u].first + b->txns[u].count; i++) {
            const knit_change_t *c = &b->changes[i];
            if (c->col != 0)
                continue;
            keys[(*n)++] = strndup((const char *)c->pk[0].u.b.p, c->pk[0].u.b.n);
        }
    }
    knit_batch_free(b);
    knit_close(k);
    return keys;
}

/* Does the relay store hold a live row with this key in NS? */
static int relay_has(const knit_batch_t *all, const char *key)
{
    for (size_t i = 0; i < all->nchanges; i++) {
        const knit_change_t *c = &all->changes[i];
        if (c->col == 0 && (c->cl & 1) && c->pk[0].u.b.n == strlen(key) &&
            memcmp(c->pk[0].u.b.p, key, c->pk[0].u.b.n) == 0)
            return 1;
    }
    return 0;
}

typedef struct writer_s {
    const char *path;  /* replica A */
    volatile int stop; /* set by the test */
    int written;       /* rows committed */
} writer_t;

static void *write_stream(void *arg)
{
    writer_t *wr = arg;
    sqlite3 *db = su_db(wr->path);
    su_exec(db, "PRAGMA synchronous=NORMAL");
    while (!wr->stop) {
        su_exec(db, "BEGIN");
        for (int i = 0; i < 5; i++)
            su_exec(db, "INSERT INTO items(id, name, qty) VALUES ('s%06d', 'stream', %d)",
                    wr->written + i, wr->written + i);
        su_exec(db, "COMMIT");
        wr->written += 5;
        su_sleep_ms(1);
    }
    sqlite3_close(db);
    return NULL;
}

static void relay_sigkill(void)
{
    world_t w;
    knit_rng_t rng = {knit_test_seed()};
    char port[16];
    const char *const same_port[] = {NULL};
    world_init(&w, NULL);
    start_a(&w);
    start_b(&w);
    wait_value(&w, w.dbb, "SELECT 1", 1, 1000);
    for (int round = 0; round < 3; round++) {
        writer_t wr = {w.a, 0, 0};
        pthread_t th;
        size_t nkeys = 0;
        char **keys;
        knit_batch_t *all = NULL;
        int missing = 0;
        unsigned delay = 100 + (unsigned)knit_rng_below(&rng, 700);

        wr.written = round * 100000;
        CHECK_OK(pthread_create(&th, NULL, write_stream, &wr));
        su_sleep_ms(delay);
        /* Killed mid-stream: no clean shutdown, no last ACKs. */
        CHECK_OK(su_kill(&w.relay.p, SIGKILL, 5000, NULL));
        su_sleep_ms(50);
        /* Every change A recorded as acknowledged is in the relay. */
        keys = acked_keys(w.a, &nkeys);
        CHECK_OK(su_relay_catch_up(w.data, NS, &all));
        for (size_t i = 0; i < nkeys; i++) {
            if (!relay_has(all, keys[i])) {
                if (missing++ < 5)
                    fprintf(stderr, "acknowledged row %s is not in the relay\n", keys[i]);
            }
            free(keys[i]);
        }
        free(keys);
        knit_batch_free(all);
        printf("round %d: killed after %u ms; %zu acknowledged rows checked, %d missing\n", round,
               delay, nkeys, missing);
        CHECK_EQ_INT(missing, 0);
        /* Restart on the same port; the agents reconnect on their own. */
        su_sleep_ms((unsigned)knit_rng_below(&rng, 300));
        snprintf(port, sizeof port, "%d", w.relay.port);
        {
            /* The port may be briefly held by another test's client socket. */
            int started = -1;
            for (int t = 0; t < 20 && started != 0; t++) {
                if ((started = su_relay_start(&w.relay, atoi(port), w.data, w.secret, same_port)) !=
                    0)
                    su_sleep_ms(250);
            }
            CHECK_OK(started);
        }
        su_sleep_ms(100 + (unsigned)knit_rng_below(&rng, 200));
        wr.stop = 1;
        pthread_join(th, NULL);
        wait_converged(&w, 30000);
    }
    stop_agents(&w);
    check_digests(&w);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* 4. An agent killed while applying                                        */

static uint64_t cursor_of(const char *path)
{
    knit_options_t o;
    knit_t *k = NULL;
    uint64_t c = 0;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    if (knit_open(path, &o, &k) != 0)
        return 0;
    knit_cursor(k, NS, &c);
    knit_close(k);
    return c;
}

static void agent_sigkill_applying(void)
{
    world_t w;
    knit_rng_t rng = {knit_test_seed() ^ 0x5a5a};
    /* Small catch-up pages, so B applies many transactions. */
    const char *const relay_extra[] = {"--max-changes", "1000", NULL};
    const long rows = su_scale(12000);
    uint64_t seq;
    int mid = 0;
    char relay[64], out[1024];
    world_init(&w, relay_extra);
    for (long r = 0; r < rows; r += 500) {
        su_exec(w.dba, "BEGIN");
        for (long i = r; i < r + 500 && i < rows; i++)
            su_exec(w.dba,
                    "INSERT INTO items(id, name, qty, tags) VALUES ('k%06ld', 'v', %ld,"
                    " '[\"a%ld\",\"b\"]')",
                    i, i, i % 5);
        su_exec(w.dba, "COMMIT");
    }
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w.relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",    w.a,         "--relay", relay, "--token-file",
                          w.token,         "--once", "--timeout", "60",      NULL};
    CHECK_EQ_INT(su_run(argv, 90000, out, sizeof out), 0);
    CHECK_OK(su_relay_seq(w.data, NS, &seq));
    CHECK(seq > 0);
    /* Kill B's agent at random moments while it catches up.  The delay
    ** adapts to the machine: longer after a kill that came before any
    ** progress, shorter (on a fresh B) after one that came too late. */
    unsigned delay = 60;
    for (int i = 0; i < 16 && mid < 3; i++) {
        uint64_t before = cursor_of(w.b), after;
        unsigned d = delay / 2 + (unsigned)knit_rng_below(&rng, delay);
        start_b(&w);
        su_sleep_ms(d);
        CHECK_OK(su_kill(&w.agent_b, SIGKILL, 5000, NULL));
        after = cursor_of(w.b);
        printf("kill %d after %u ms: cursor %llu -> %llu of %llu\n", i, d,
               (unsigned long long)before, (unsigned long long)after, (unsigned long long)seq);
        if (after > before && after < seq)
            mid++;
        if (after == before && delay < 4000)
            delay *= 2;
        if (after >= seq) {
            /* Too late: start B over from an empty replica. */
            sqlite3_close(w.dbb);
            char p2[600];
            unlink(w.b);
            snprintf(p2, sizeof p2, "%s-wal", w.b);
            unlink(p2);
            snprintf(p2, sizeof p2, "%s-shm", w.b);
            unlink(p2);
            make_replica(w.b);
            w.dbb = su_db(w.b);
            delay = delay > 20 ? delay / 2 : 10;
        }
    }
    CHECK(mid > 0); /* at least one kill landed in the middle */
    /* Restarted, it converges; nothing is duplicated. */
    start_b(&w);
    wait_converged(&w, 60000);
    stop_agents(&w);
    CHECK_EQ_INT(su_int(w.dbb, "SELECT count(*) FROM items"), rows);
    CHECK_EQ_INT(su_int(w.dbb, "SELECT count(*) FROM items, json_each(items.tags)"
                               " GROUP BY items.id, json_each.value HAVING count(*) > 1"),
                 -1);
    check_digests(&w);
    CHECK_EQ_INT(cursor_of(w.b), seq);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* Home namespace with an anonymous credential                              */

static void anonymous_home(void)
{
    world_t w;
    char relay[64], out[2048], *cred1 = NULL, *cred2 = NULL, ns[256], dig_a[65], dig_r[65];
    knit_t *k = NULL;
    world_init(&w, NULL);
    /* A replica created and written before it ever synced. */
    su_exec(w.dba, "INSERT INTO items(id, name, qty) VALUES ('mine', 'before sync', 1)");
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w.relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",    w.a,         "--relay", relay,
                          "--anonymous",   "--once", "--timeout", "30",      NULL};
    int rc = su_run(argv, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(knit_open(w.a, NULL, &k));
    CHECK_OK(knit_setting_get(k, "sync.anon", &cred1));
    CHECK(cred1 != NULL);
    CHECK_OK(knit_namespace(k, ns, sizeof ns));
    knit_close(k);
    CHECK(strncmp(ns, "anon:", 5) == 0);
    CHECK(strncmp(cred1, ns + 5, strlen(ns + 5)) == 0 && cred1[strlen(ns + 5)] == ':');
    /* The row went to that namespace. */
    CHECK_OK(su_replica_digest(w.a, ns, dig_a));
    CHECK_OK(su_relay_digest(w.data, ns, dig_r));
    CHECK_STR(dig_a, dig_r);
    CHECK(strcmp(dig_r, "0000000000000000000000000000000000000000000000000000000000000000") != 0);
    /* A later write and run use the same credential. */
    su_exec(w.dba, "INSERT INTO items(id, name, qty) VALUES ('mine2', 'later', 2)");
    CHECK_EQ_INT(su_run(argv, 60000, out, sizeof out), 0);
    CHECK_OK(knit_open(w.a, NULL, &k));
    CHECK_OK(knit_setting_get(k, "sync.anon", &cred2));
    knit_close(k);
    CHECK_STR(cred1, cred2);
    CHECK_OK(su_replica_digest(w.a, ns, dig_a));
    CHECK_OK(su_relay_digest(w.data, ns, dig_r));
    CHECK_STR(dig_a, dig_r);
    /* alice's namespace saw none of it. */
    CHECK_OK(su_relay_digest(w.data, NS, dig_r));
    CHECK_STR(dig_r, "0000000000000000000000000000000000000000000000000000000000000000");
    knit_free(cred1);
    knit_free(cred2);
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* --once failures say what failed                                          */

static void once_failures(void)
{
    world_t w;
    char relay[64], out[8192], bad[512], other[512], missing[512];
    int rc;
    world_init(&w, NULL);
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w.relay.port);

    /* Nothing listens there. */
    {
        const char *argv[] = {
            SYNC_AGENT_PATH, "run",    w.a,         "--relay", "127.0.0.1:1", "--token-file",
            w.token,         "--once", "--timeout", "2",       NULL};
        rc = su_run(argv, 20000, out, sizeof out);
        CHECK_EQ_INT(rc, 1);
        CHECK(strstr(out, "not synced") && strstr(out, "cannot connect"));
    }
    /* A token signed with another key. */
    su_path(other, sizeof other, "other-secret");
    su_path(bad, sizeof bad, "bad.jwt");
    CHECK_OK(su_write_secret(other));
    CHECK_OK(su_write_token(other, "alice", bad));
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run", w.a,      "--relay", relay,
                              "--token-file",  bad,   "--once", NULL};
        rc = su_run(argv, 20000, out, sizeof out);
        CHECK_EQ_INT(rc, 4);
        CHECK(strstr(out, "authentication failed"));
    }
    /* No such replica. */
    su_path(missing, sizeof missing, "missing.db");
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run",   missing,  "--relay", relay,
                              "--token-file",  w.token, "--once", NULL};
        CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 3);
        CHECK(strstr(out, "missing.db"));
    }
    /* Usage errors. */
    {
        const char *a1[] = {SYNC_AGENT_PATH, "run", w.a, "--relay", relay, NULL};
        const char *a2[] = {SYNC_AGENT_PATH, "run", w.a, "--token-file", w.token, NULL};
        const char *a3[] = {SYNC_AGENT_PATH, "frobnicate", NULL};
        const char *a4[] = {SYNC_AGENT_PATH, "track", w.a, NULL};
        CHECK_EQ_INT(su_run(a1, 20000, out, sizeof out), 2);
        CHECK(strstr(out, "--anonymous"));
        CHECK_EQ_INT(su_run(a2, 20000, out, sizeof out), 2);
        CHECK_EQ_INT(su_run(a3, 20000, out, sizeof out), 2);
        CHECK_EQ_INT(su_run(a4, 20000, out, sizeof out), 2);
    }
    /* Tracking a table that is not there. */
    {
        const char *argv[] = {SYNC_AGENT_PATH, "track", w.a, "nosuch", NULL};
        CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 3);
        CHECK(strstr(out, "nosuch"));
    }
    /* --help names every flag with its default; --version. */
    {
        const char *argv[] = {SYNC_AGENT_PATH, "--help", NULL};
        static const char *flags[] = {"--orset",        "--relay",       "--token-file",
                                      "--anonymous",    "--no-claim",    "--once",
                                      "--timeout",      "--backoff-max", "--poll-ms",
                                      "--max-inflight", "--log-level",   "--version"};
        CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 0);
        for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
            CHECK(strstr(out, flags[i]));
        const char *v[] = {SYNC_AGENT_PATH, "--version", NULL};
        CHECK_EQ_INT(su_run(v, 20000, out, sizeof out), 0);
        CHECK(strstr(out, KNIT_VERSION_STRING));
    }
    world_done(&w);
}

/* ---------------------------------------------------------------------- */
/* Signing in keeps what was written anonymously                            */

/* Occurrences of needle in the file at path. */
static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        for (const char *p = line; (p = strstr(p, needle)) != NULL; p += strlen(needle))
            n++;
    fclose(f);
    return n;
}

/* knit_open() reads the file header with open() and close(), and POSIX
** drops every lock a process holds on a file when any descriptor of it is
** closed, including the locks of this process's plain connections.  An
** agent that exits after that believes it is the last user of the file and
** deletes the WAL under them, losing their later writes.  So the plain
** connections are reopened after knit_open() calls on their files, before
** an agent starts or stops. */
static void reopen_plain(world_t *w)
{
    sqlite3_close(w->dba);
    sqlite3_close(w->dbb);
    w->dba = su_db(w->a);
    w->dbb = su_db(w->b);
    su_exec(w->dba, "PRAGMA synchronous=NORMAL");
    su_exec(w->dbb, "PRAGMA synchronous=NORMAL");
}

static const char ZERO_DIGEST[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* The replica's setting key, or "" (into buf). */
static char *setting_of(const char *path, const char *key, char *buf, size_t n)
{
    knit_options_t o;
    knit_t *k = NULL;
    char *v = NULL;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    CHECK_OK(knit_open(path, &o, &k));
    CHECK_OK(knit_setting_get(k, key, &v));
    snprintf(buf, n, "%s", v ? v : "");
    knit_free(v);
    knit_close(k);
    return buf;
}

static void sign_in_claims_anonymous(void)
{
    world_t w;
    char relay[64], out[4096], anon_ns[128], id[96], buf[256], relay_log[600];
    char da[65], dr[65], before[65];
    int rc, st;
    world_init(&w, NULL);
    snprintf(relay, sizeof relay, "127.0.0.1:%d", w.relay.port);
    snprintf(relay_log, sizeof relay_log, "%s.log", w.data);

    /* A runs anonymously: one row from before its first sync, two written
    ** while online, all acknowledged by the relay. */
    su_exec(w.dba, "INSERT INTO items(id, name, qty, tags) VALUES ('a1', 'before sync', 1,"
                   " '[\"x\"]')");
    CHECK_OK(su_agent_start(&w.agent_a, w.a, w.relay.port, NULL, w.alog, FAST));
    su_exec(w.dba,
            "INSERT INTO items(id, name, qty) VALUES ('a2', 'online', 2), ('a3', 'doomed', 3)");
    acked_t ak = {w.a, replica_version(w.a)};
    if (!su_wait_until(acked_pred, &ak, 20000)) {
        dump_logs(&w);
        CHECK(0);
    }
    reopen_plain(&w);
    CHECK_OK(su_kill(&w.agent_a, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    setting_of(w.a, "sync.anon", buf, sizeof buf);
    CHECK(strchr(buf, ':') != NULL);
    snprintf(id, sizeof id, "%.*s", (int)(strchr(buf, ':') - buf), buf);
    snprintf(anon_ns, sizeof anon_ns, "anon:%s", id);
    CHECK_OK(su_replica_digest(w.a, anon_ns, da));
    CHECK_OK(su_relay_digest(w.data, anon_ns, dr));
    CHECK_STR(da, dr);
    reopen_plain(&w);

    /* Offline, still anonymous: new rows, an update, a delete. */
    su_exec(w.dba, "INSERT INTO items(id, name, qty, tags) VALUES ('a4', 'offline', 4, '[]'),"
                   " ('a5', 'offline set', 5, '[\"p\"]')");
    su_exec(w.dba, "UPDATE items SET name = 'renamed offline' WHERE id = 'a2'");
    su_exec(w.dba, "DELETE FROM items WHERE id = 'a3'");

    /* B is alice's other device; it has seen none of it. */
    su_exec(w.dbb, "INSERT INTO items(id, name, qty) VALUES ('b1', 'from B', 10)");
    start_b(&w);
    acked_t bk = {w.b, replica_version(w.b)};
    if (!su_wait_until(acked_pred, &bk, 20000)) {
        dump_logs(&w);
        CHECK(0);
    }
    reopen_plain(&w);
    CHECK_EQ_INT(su_int(w.dbb, "SELECT count(*) FROM items"), 1);

    /* A signs in as alice: the relay merges anon:<id>, A's rows move, and
    ** what A wrote offline is pushed to the account. */
    start_a(&w);
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id IN ('a1', 'a2', 'a4', 'a5')", 4,
               20000);
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'a2' AND name = 'renamed offline'",
               1, 10000);
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'a3'", 0, 10000);
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'b1'", 1, 10000);
    wait_converged(&w, 10000);
    CHECK_EQ_INT(count_in_file(relay_log, "claim: merged"), 1);

    /* A's later edits of those rows reach B live, and B's reach A. */
    su_exec(w.dba, "UPDATE items SET qty = 100 WHERE id = 'a1'");
    wait_value(&w, w.dbb, "SELECT qty FROM items WHERE id = 'a1'", 100, 10000);
    su_exec(w.dba, "DELETE FROM items WHERE id = 'a4'");
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'a4'", 0, 10000);
    su_exec(w.dba, "UPDATE items SET tags = '[\"p\",\"q\"]' WHERE id = 'a5'");
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'a5' AND tags = '[\"p\",\"q\"]'",
               1, 10000);
    su_exec(w.dbb, "UPDATE items SET name = 'edited on B' WHERE id = 'a1'");
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'a1' AND name = 'edited on B'", 1,
               10000);
    wait_converged(&w, 10000);
    stop_agents(&w);
    wait_converged(&w, 1000);
    check_digests(&w); /* A, B and the relay's user:alice */
    CHECK_OK(su_replica_digest(w.a, anon_ns, da));
    CHECK_STR(da, ZERO_DIGEST); /* no row of A is left in anon:<id> */
    CHECK_STR(setting_of(w.a, "sync.claimed", buf, sizeof buf), id);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items"), 4);
    reopen_plain(&w);

    /* A second sign-in does not claim again. */
    const char *jwt_once[] = {SYNC_AGENT_PATH, "run",          w.a,     "--relay",
                              relay,           "--token-file", w.token, "--once",
                              "--timeout",     "30",           NULL};
    rc = su_run(jwt_once, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(count_in_file(relay_log, "claim: merged"), 1);
    CHECK(strstr(out, "claimed") == NULL);

    /* The claim sealed anon:<id> (docs/PROTOCOL.md §7) and the replica
    ** retired it: signed out, A runs anonymously under a fresh id, and the
    ** next sign-in claims that one too, with its row. */
    CHECK_STR(setting_of(w.a, "sync.anon", buf, sizeof buf), "");
    const char *anon_once[] = {SYNC_AGENT_PATH, "run",    w.a,         "--relay", relay,
                               "--anonymous",   "--once", "--timeout", "30",      NULL};
    rc = su_run(anon_once, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    {
        char v2[300];
        CHECK(setting_of(w.a, "sync.anon", v2, sizeof v2)[0] != 0);
        CHECK(strncmp(v2, id, strlen(id)) != 0); /* a new anonymous id */
    }
    su_exec(w.dba, "INSERT INTO items(id, name, qty) VALUES ('a9', 'anonymous again', 9)");
    rc = su_run(anon_once, 60000, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    rc = su_run(jwt_once, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(count_in_file(relay_log, "claim: merged"), 2);
    CHECK(strstr(out, "claimed") != NULL);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'a9'"), 1);

    /* A claim the relay refuses (the right id, a wrong secret): exit 4, a
    ** message naming the claim, nothing moved, nothing merged. */
    {
        char c[512];
        knit_t *k = NULL;
        su_path(c, sizeof c, "c.db");
        make_replica(c);
        sqlite3 *dbc = su_db(c);
        su_exec(dbc, "INSERT INTO items(id, name, qty) VALUES ('c1', 'not yours', 1)");
        sqlite3_close(dbc);
        CHECK_OK(knit_open(c, NULL, &k));
        snprintf(buf, sizeof buf, "%s:%s", id, "a-wrong-secret-of-enough-length");
        CHECK_OK(knit_setting_set(k, "sync.anon", buf));
        CHECK_OK(knit_set_namespace(k, anon_ns)); /* names home: c1 is in anon:<id> */
        CHECK(knit_stamp(k) > 0);
        knit_close(k);
        CHECK_OK(su_relay_digest(w.data, NS, before));
        const char *argv[] = {SYNC_AGENT_PATH, "run",          c,       "--relay",
                              relay,           "--token-file", w.token, "--once",
                              "--timeout",     "30",           NULL};
        rc = su_run(argv, 60000, out, sizeof out);
        if (rc != 4)
            fprintf(stderr, "%s\n", out);
        CHECK_EQ_INT(rc, 4);
        CHECK(strstr(out, "claim refused") != NULL);
        CHECK(strstr(out, "--no-claim") != NULL);
        CHECK_OK(su_replica_digest(c, anon_ns, da));
        CHECK(strcmp(da, ZERO_DIGEST) != 0); /* still there */
        CHECK_OK(su_replica_digest(c, NS, da));
        CHECK_STR(da, ZERO_DIGEST);
        CHECK_OK(su_relay_digest(w.data, NS, dr));
        CHECK_STR(dr, before);
        CHECK_EQ_INT(count_in_file(relay_log, "claim: merged"), 2);
        /* --no-claim signs in and leaves the anonymous rows where they are. */
        const char *noclaim[] = {SYNC_AGENT_PATH, "run",          c,       "--relay",
                                 relay,           "--token-file", w.token, "--no-claim",
                                 "--once",        "--timeout",    "30",    NULL};
        rc = su_run(noclaim, 60000, out, sizeof out);
        if (rc)
            fprintf(stderr, "%s\n", out);
        CHECK_EQ_INT(rc, 0);
        CHECK_OK(su_replica_digest(c, anon_ns, da));
        CHECK(strcmp(da, ZERO_DIGEST) != 0);
        CHECK_STR(setting_of(c, "sync.claimed", buf, sizeof buf), "");
        CHECK_OK(su_relay_digest(w.data, NS, dr));
        CHECK_STR(dr, before);
    }
    world_done(&w);
}

KNIT_TESTS(T(live_two_agents), T(conflicts_converge), T(transaction_units), T(offline_catch_up),
           T(relay_sigkill), T(agent_sigkill_applying), T(anonymous_home), T(once_failures),
           T(sign_in_claims_anonymous))
