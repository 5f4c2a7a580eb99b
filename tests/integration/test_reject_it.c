/*
** test_reject_it.c: rejected writes roll back, end to end (runtime/reject.c,
** PROTOCOL.md REJECT).  A real sync-relay and two sync-agents on 127.0.0.1:
** replica A makes writes stamped an hour ahead (a device clock set ahead),
** the relay refuses them (clock skew, terminal), and A rolls them back: the
** inserted row disappears, the updated cell reverts, _knit_rejected holds
** each refusal, the agent logs one line per refused change, A's digest is
** B's (B never made the writes) and the relay's, and the writes behind the
** refused ones, and later ones, sync.
*/
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "knit.h"
#include "sync_util.h"
#include "test.h"

#define NS "user:alice"
#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER);"

static const char *const FAST[] = {"--backoff-max", "500", NULL};

typedef struct world_s {
    su_relay_t relay;  /* the relay */
    char data[512];    /* its store */
    char secret[512];  /* its JWT secret */
    char token[512];   /* alice's token */
    char a[512];       /* replica A, the writer */
    char b[512];       /* replica B, never makes the refused writes */
    char alog[512];    /* agent A's log */
    char blog[512];    /* agent B's log */
    su_proc_t agent_a; /* agent A */
    su_proc_t agent_b; /* agent B */
    sqlite3 *dba;      /* plain connection to A */
    sqlite3 *dbb;      /* plain connection to B */
} world_t;

static void make_replica(const char *path)
{
    char out[1024];
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "items", NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

static void dump_logs(world_t *w)
{
    char p[600];
    su_print_file(w->alog);
    su_print_file(w->blog);
    snprintf(p, sizeof p, "%s.log", w->data);
    su_print_file(p);
}

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

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t hour_ahead(void *data)
{
    (void)data;
    return wall_ms() + 3600 * 1000;
}

static void stop(su_proc_t *p)
{
    int st;
    if (!p->pid)
        return;
    CHECK_OK(su_kill(p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    p->pid = 0;
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

static int watching(void *arg)
{
    return su_file_has(arg, "watching");
}

static int watch_told(void *arg)
{
    return su_count_in_file(arg, "\"rolled_back\":true") >= 2;
}

static void clock_skew_rolled_back(void)
{
    world_t w;
    knit_t *k = NULL;
    knit_options_t o = {0};
    memset(&w, 0, sizeof w);
    su_path(w.data, sizeof w.data, "relay.db");
    su_path(w.secret, sizeof w.secret, "secret");
    su_path(w.token, sizeof w.token, "alice.jwt");
    su_path(w.a, sizeof w.a, "a.db");
    su_path(w.b, sizeof w.b, "b.db");
    su_path(w.alog, sizeof w.alog, "agent-a.log");
    su_path(w.blog, sizeof w.blog, "agent-b.log");
    CHECK_OK(su_write_secret(w.secret));
    CHECK_OK(su_write_token(w.secret, "alice", w.token));
    CHECK_OK(su_relay_start(&w.relay, 0, w.data, w.secret, NULL));
    make_replica(w.a);
    make_replica(w.b);
    w.dba = su_db(w.a);
    w.dbb = su_db(w.b);

    /* A row both replicas hold. */
    su_exec(w.dba, "INSERT INTO items VALUES ('base', 'base-name', 1)");
    CHECK_OK(su_agent_start(&w.agent_a, w.a, w.relay.port, w.token, w.alog, FAST));
    CHECK_OK(su_agent_start(&w.agent_b, w.b, w.relay.port, w.token, w.blog, FAST));
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'base'", 1, 20000);
    stop(&w.agent_a);

    /* Offline, A's clock an hour ahead: an insert and an update. */
    o.clock = hour_ahead;
    CHECK_OK(knit_open(w.a, &o, &k));
    sqlite3 *adb = knit_db(k);
    CHECK(adb != NULL);
    CHECK_EQ_INT(sqlite3_exec(adb,
                              "INSERT INTO items VALUES ('skewed', 'future', 2);"
                              "UPDATE items SET name = 'future-edit' WHERE id = 'base';",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK(knit_stamp(k) > 0);
    knit_close(k);
    /* The clock is set right again.  knit's stored HLC stays an hour ahead
    ** (it never goes back), but that does not hold later writes back: each
    ** is stamped with its own wall time, raised only above the cells of its
    ** own row (stamp.c design note 1), and the refused cells are rolled
    ** back, so nothing ahead is left for them to be raised above. */
    /* A write behind the refused ones, in the same push. */
    su_exec(w.dba, "INSERT INTO items VALUES ('after', 'normal', 3)");

    /* Another process on A's replica: it learns of the rollback from the
    ** file (reject.c note 7), as every follower does. */
    su_proc_t wp;
    char wlog[512];
    memset(&wp, 0, sizeof wp);
    su_path(wlog, sizeof wlog, "watch.log");
    const char *wargv[] = {SYNC_AGENT_PATH, "watch", w.a, "--json", NULL};
    CHECK_OK(su_spawn(&wp, wargv, wlog, NULL));
    CHECK(su_wait_until(watching, wlog, 10000));

    CHECK_OK(su_agent_start(&w.agent_a, w.a, w.relay.port, w.token, w.alog, FAST));
    wait_value(&w, w.dbb, "SELECT count(*) FROM items WHERE id = 'after'", 1, 20000);
    wait_value(&w, w.dba, "SELECT count(*) FROM _knit_rejected WHERE rolled_back = 1", 4, 20000);
    /* The insert disappeared; the update reverted to the relay's value. */
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'skewed'"), 0);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM items WHERE id = 'base' AND name = "
                               "'base-name'"),
                 1);
    CHECK_EQ_INT(su_int(w.dbb, "SELECT count(*) FROM items WHERE id = 'skewed'"), 0);
    /* Each refusal by plain SQL: table, key, column, value, reason, time. */
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM _knit_rejected WHERE tbl = 'items' AND"
                               " key = '''skewed''' AND col = '' AND code_name = "
                               "'KNIT_ECLOCKSKEW' AND reason LIKE '%%ahead%%' AND at > 0"),
                 1);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM _knit_rejected WHERE key = '''base''' AND"
                               " col = 'name' AND value = 'future-edit'"),
                 1);
    /* One log line per refused change. */
    CHECK(su_file_has(w.alog, "rejected write rolled back: table items key ('skewed') column "
                              "(row): KNIT_ECLOCKSKEW"));
    CHECK(su_file_has(w.alog, "rejected write rolled back: table items key ('base') column "
                              "name: KNIT_ECLOCKSKEW"));
    /* The watch named both rows as rolled back: the insert gone, the
    ** update reverted; once each, and 'after' never. */
    CHECK(su_wait_until(watch_told, wlog, 10000));
    CHECK_EQ_INT(su_count_in_file(wlog, "[\"skewed\"],\"origin\":\"local\",\"deleted\":true,"
                                        "\"rolled_back\":true}"),
                 1);
    CHECK_EQ_INT(su_count_in_file(wlog, "[\"base\"],\"origin\":\"local\",\"deleted\":false,"
                                        "\"rolled_back\":true}"),
                 1);
    CHECK_EQ_INT(su_count_in_file(wlog, "[\"after\"],\"origin\":\"local\",\"deleted\":false,"
                                        "\"rolled_back\":true}"),
                 0);
    CHECK_OK(su_kill(&wp, SIGTERM, 5000, NULL));
    /* Later writes sync (both ways). */
    su_exec(w.dba, "UPDATE items SET qty = 9 WHERE id = 'base'");
    wait_value(&w, w.dbb, "SELECT qty FROM items WHERE id = 'base'", 9, 20000);
    su_exec(w.dbb, "INSERT INTO items VALUES ('from-b', 'b', 4)");
    wait_value(&w, w.dba, "SELECT count(*) FROM items WHERE id = 'from-b'", 1, 20000);
    /* A row refused is not pushed again, and nothing is left pending. */
    su_sleep_ms(300);
    stop(&w.agent_a);
    stop(&w.agent_b);
    CHECK_EQ_INT(su_int(w.dba, "SELECT count(*) FROM _knit_rejected"), 4);
    check_digests(&w);
    /* sync-inspect lists them (exit 1: a finding); B has none (exit 0). */
    {
        char out[8192];
        const char *ia[] = {SYNC_INSPECT_PATH, "rejected", w.a, NULL};
        const char *ij[] = {SYNC_INSPECT_PATH, "rejected", "--json", w.a, NULL};
        const char *ib[] = {SYNC_INSPECT_PATH, "rejected", w.b, NULL};
        CHECK_EQ_INT(su_run(ia, 20000, out, sizeof out), 1);
        fprintf(stderr, "%s", out);
        CHECK(strstr(out, "KNIT_ECLOCKSKEW") != NULL);
        CHECK(strstr(out, "'base'") != NULL);
        CHECK(strstr(out, "4 writes refused by the relay") != NULL);
        CHECK_EQ_INT(su_run(ij, 20000, out, sizeof out), 1);
        CHECK(strstr(out, "\"rolled_back\": true") != NULL);
        CHECK_EQ_INT(su_run(ib, 20000, out, sizeof out), 0);
        CHECK(strstr(out, "no write was refused") != NULL);
    }
    sqlite3_close(w.dba);
    sqlite3_close(w.dbb);
    su_kill(&w.relay.p, SIGTERM, 10000, NULL);
}

KNIT_TESTS(T(clock_skew_rolled_back))
