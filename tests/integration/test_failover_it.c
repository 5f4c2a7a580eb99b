/*
** test_failover_it.c: the sync client fails over between several relays
** (transport/client/client.c note 10): sync-agent given a first address
** that refuses connections and a second that works still syncs with
** --once, logs the failover with its reason, and another agent on the
** working relay receives every row, once.  Real sync-relay and sync-agent
** processes on 127.0.0.1 ephemeral ports; every wait is bounded.
*/
#include "test.h"

#include <signal.h>
#include <string.h>

#include "knit.h"
#include "sync_util.h"
#ifdef KNIT_FAILOVER_PG
#include "pg_fixture.h"
#endif

#define NS "user:alice"
#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER);"
#define NROWS 200

/* A first relay address that refuses connections, a second that works. */
static void refused_then_next(void)
{
    su_relay_t relay;
    char data[512], secret[512], token[512], a[512], b[512], alog[512], blog[512], bad[64],
        good[64], both[160], out[8192], da[65], db_[65];
    uint64_t t0, ms;
    int rc, closed;
    sqlite3 *dba, *dbb;

    su_tmpdir();
    su_path(data, sizeof data, "relay.db");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "a.log");
    su_path(blog, sizeof blog, "b.log");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    CHECK_OK(su_relay_start(&relay, 0, data, secret, NULL));
    closed = su_free_port(); /* bound, then released: nothing listens there */
    snprintf(bad, sizeof bad, "127.0.0.1:%d", closed);
    snprintf(good, sizeof good, "127.0.0.1:%d", relay.port);
    snprintf(both, sizeof both, "knit://%s,knit://%s", bad, good);
    su_make_replica(a, SCHEMA, "items");
    su_make_replica(b, SCHEMA, "items");
    dba = su_db(a);
    for (int i = 0; i < NROWS; i++)
        su_exec(dba, "INSERT INTO items VALUES('r%04d', 'row %d', %d)", i, i, i);

    /* A: the closed port first (as a comma-separated list). */
    t0 = su_now_ms();
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run", a,        "--relay",   both,
                              "--token-file",  token, "--once", "--timeout", "20",
                              "--backoff-max", "500", NULL};
        FILE *f;
        rc = su_run(argv, 40000, out, sizeof out);
        f = fopen(alog, "w");
        if (f) {
            fputs(out, f);
            fclose(f);
        }
    }
    ms = su_now_ms() - t0;
    if (rc != 0)
        su_print_file(alog);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "synced with"));
    CHECK(su_file_has(alog, "failing over from relay"));
    CHECK(su_file_has(alog, bad));
    CHECK(su_file_has(alog, "online with knit://") && su_file_has(alog, good));
    fprintf(stderr, "failover: --once synced through the second relay in %llu ms\n",
            (unsigned long long)ms);

    /* B, on the working relay only (one address). */
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run", b,        "--relay", good,
                              "--token-file",  token, "--once", NULL};
        rc = su_run(argv, 40000, out, sizeof out);
        if (rc != 0)
            fprintf(stderr, "%s\n", out);
        CHECK_EQ_INT(rc, 0);
        (void)blog;
    }
    dbb = su_db(b);
    CHECK_EQ_INT(su_int(dbb, "SELECT count(*) FROM items"), NROWS);
    CHECK_EQ_INT(su_int(dbb, "SELECT count(DISTINCT id) FROM items"), NROWS);
    for (int i = 0; i < NROWS; i += 37)
        CHECK_EQ_INT(
            su_int(dbb, "SELECT qty FROM items WHERE id = 'r%04d' AND name = 'row %d'", i, i), i);
    CHECK_EQ_INT(su_int(dbb, "SELECT sum(qty) FROM items"), NROWS * (NROWS - 1) / 2);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_replica_digest(a, NS, da));
    CHECK_OK(su_replica_digest(b, NS, db_));
    CHECK_STR(da, db_);
    su_kill(&relay.p, SIGTERM, 5000, NULL);
}

/* Usage: several relays must share the first one's scheme. */
static void relay_list_usage(void)
{
    char out[4096], a[512];
    su_tmpdir();
    su_path(a, sizeof a, "a.db");
    su_make_replica(a, SCHEMA, "items");
    {
        const char *argv[] = {
            SYNC_AGENT_PATH, "run",    a,   "--relay", "knit://127.0.0.1:1,ws://127.0.0.1:2",
            "--anonymous",   "--once", NULL};
        CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 2);
        CHECK(strstr(out, "scheme"));
    }
    {
        const char *argv[] = {SYNC_AGENT_PATH,       "run",         a,        "--relay",
                              "knit://127.0.0.1:1,", "--anonymous", "--once", NULL};
        CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 2);
    }
}

#ifdef KNIT_FAILOVER_PG
#define PG_ROWS 3000
#define PG_TXN 10 /* rows per transaction */

typedef struct count_s {
    sqlite3 *db; /* the replica */
    int64_t n;   /* rows wanted */
} count_t;

static int has_count(void *arg)
{
    count_t *c = arg;
    return su_int(c->db, "SELECT count(*) FROM items") >= c->n;
}

/* Two relays on one PostgreSQL; A is given r1 then r2, B only r2.  r1 is
** killed (SIGKILL) while A pushes a stream of rows: A fails over to r2 and
** B receives every row A wrote, once. */
static void relay_killed_pg(void)
{
    pgfx_t f;
    su_relay_t r1, r2;
    su_proc_t ag_a, ag_b;
    char d1[512], d2[512], secret[512], token[512], a[512], b[512], alog[512], blog[512],
        r2addr[64], both[160], da[65], db_[65];
    uint64_t t_kill, t_all;
    int st;

    pgfx_start(&f);
    su_path(d1, sizeof d1, "relay1");
    su_path(d2, sizeof d2, "relay2");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *rextra[] = {"--store", f.uri, NULL};
    CHECK_OK(su_relay_start(&r1, 0, d1, secret, rextra));
    CHECK_OK(su_relay_start(&r2, 0, d2, secret, rextra));
    snprintf(r2addr, sizeof r2addr, "127.0.0.1:%d", r2.port);
    su_make_replica(a, SCHEMA, "items");
    su_make_replica(b, SCHEMA, "items");
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    /* r1 first, then r2 (this --relay replaces su_agent_start's). */
    snprintf(both, sizeof both, "127.0.0.1:%d,%s", r1.port, r2addr);
    const char *aextra[] = {"--relay", both, "--backoff-max", "500", NULL};
    const char *bextra[] = {"--backoff-max", "500", NULL};
    CHECK_OK(su_agent_start(&ag_a, a, r1.port, token, alog, aextra));
    CHECK_OK(su_agent_start(&ag_b, b, r2.port, token, blog, bextra));
    su_exec(dba, "INSERT INTO items VALUES('first', 'x', 0)");
    count_t c0 = {dbb, 1};
    if (!su_wait_until(has_count, &c0, 15000)) {
        su_print_file(alog);
        su_print_file(blog);
        CHECK(0);
    }
    CHECK(su_file_has(alog, "online with 127.0.0.1:") || su_file_has(alog, "online with"));
    t_kill = 0;
    for (int i = 0; i < PG_ROWS; i += PG_TXN) {
        su_exec(dba, "BEGIN");
        for (int j = i; j < i + PG_TXN; j++)
            su_exec(dba, "INSERT INTO items VALUES('r%05d', 'row %d', %d)", j, j, j);
        su_exec(dba, "COMMIT");
        if (i == PG_ROWS / 3) {
            CHECK_OK(su_kill(&r1.p, SIGKILL, 5000, &st)); /* mid-push */
            t_kill = su_now_ms();
        }
        if (i % 100 == 0)
            su_sleep_ms(2); /* a stream, not one burst */
    }
    count_t c1 = {dbb, PG_ROWS + 1};
    if (!su_wait_until(has_count, &c1, 60000)) {
        su_print_file(alog);
        su_print_file(blog);
        fprintf(stderr, "B has %lld rows of %d\n",
                (long long)su_int(dbb, "SELECT count(*) FROM items"), PG_ROWS + 1);
        CHECK(0);
    }
    t_all = su_now_ms();
    fprintf(stderr, "failover: every row at B %llu ms after relay 1 was killed\n",
            (unsigned long long)(t_all - t_kill));
    CHECK(su_file_has(alog, "failing over from relay"));
    CHECK(su_file_has(alog, r2addr));
    CHECK_OK(su_kill(&ag_a, SIGTERM, 15000, &st));
    CHECK_OK(su_kill(&ag_b, SIGTERM, 15000, &st));
    /* Every row written, once, with what was written. */
    CHECK_EQ_INT(su_int(dbb, "SELECT count(*) FROM items"), PG_ROWS + 1);
    CHECK_EQ_INT(su_int(dbb, "SELECT count(DISTINCT id) FROM items"), PG_ROWS + 1);
    CHECK_EQ_INT(su_int(dbb, "SELECT count(*) FROM items WHERE id LIKE 'r%%' AND"
                             " name = 'row ' || qty AND id = printf('r%%05d', qty)"),
                 PG_ROWS);
    CHECK_EQ_INT(su_int(dbb, "SELECT sum(qty) FROM items"), (int64_t)PG_ROWS * (PG_ROWS - 1) / 2);
    CHECK_EQ_INT(su_int(dba, "SELECT count(*) FROM items"), PG_ROWS + 1);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_replica_digest(a, NS, da));
    CHECK_OK(su_replica_digest(b, NS, db_));
    CHECK_STR(da, db_);
    CHECK_OK(su_kill(&r2.p, SIGTERM, 10000, &st));
    pgfx_stop(&f);
}
#define PG_CASES , T(relay_killed_pg)
#else
#define PG_CASES
#endif

KNIT_TESTS(T(refused_then_next), T(relay_list_usage) PG_CASES)
