/*
** test_accounts_it.c: one account per replica file, end to end.  The real
** sync-relay and sync-agent on 127.0.0.1 (ephemeral port, HS256 dev
** tokens): alice's token syncs a replica; then bob's token on the same
** file must stop the agent at once with a message naming the account the
** file belongs to, and nothing of alice's may reach bob's namespace.  Every
** wait is bounded; children are killed and the directory removed at exit
** (sync_util.c).
*/
#include "test.h"

#include <signal.h>
#include <sys/wait.h>

#include "knit.h"
#include "sync_util.h"

static const char ZERO_DIGEST[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static void make_replica(const char *path)
{
    char out[1024];
    sqlite3 *db = su_db(path);
    su_exec(db, "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, tags TEXT NOT NULL DEFAULT "
                "'[]')");
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "items", "--orset", "tags", NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

/* Whole file into a malloc'd string ("" when missing). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 20);
    CHECK(buf);
    if (f) {
        size_t n = fread(buf, 1, (1 << 20) - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    return buf;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void write_ns_of(const char *path, char *buf, size_t n)
{
    knit_options_t o;
    knit_t *k = NULL;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    CHECK_OK(knit_open(path, &o, &k));
    CHECK_OK(knit_namespace(k, buf, n));
    knit_close(k);
}

/* One relay, alice's and bob's tokens, and a replica alice has synced, on
** which bob then edits a row of alice's and adds one of his own. */
typedef struct world_s {
    su_relay_t r;     /* the relay */
    char data[512];   /* its store */
    char secret[512]; /* its JWT secret */
    char alice[512];  /* alice's token */
    char bob[512];    /* bob's token */
    char rep[512];    /* the shared replica file */
    char relay[64];   /* 127.0.0.1:port */
    char da[65];      /* digest of user:alice after alice's sync */
} world_t;

static void world_init(world_t *w)
{
    char out[8192], dr[65];
    memset(w, 0, sizeof *w);
    su_path(w->data, sizeof w->data, "relay.db");
    su_path(w->secret, sizeof w->secret, "secret");
    su_path(w->alice, sizeof w->alice, "alice.jwt");
    su_path(w->bob, sizeof w->bob, "bob.jwt");
    su_path(w->rep, sizeof w->rep, "shared.db");
    CHECK_OK(su_write_secret(w->secret));
    CHECK_OK(su_write_token(w->secret, "alice", w->alice));
    CHECK_OK(su_write_token(w->secret, "bob", w->bob));
    CHECK_OK(su_relay_start(&w->r, 0, w->data, w->secret, NULL));
    snprintf(w->relay, sizeof w->relay, "127.0.0.1:%d", w->r.port);
    make_replica(w->rep);

    /* Alice writes and syncs. */
    sqlite3 *db = su_db(w->rep);
    su_exec(db, "INSERT INTO items(id, name, tags) VALUES ('a1', 'alice one', '[\"x\"]'),"
                " ('a2', 'alice two', '[]')");
    sqlite3_close(db);
    const char *as_alice[] = {SYNC_AGENT_PATH, "run",          w->rep,   "--relay",
                              w->relay,        "--token-file", w->alice, "--once",
                              "--timeout",     "30",           NULL};
    int rc = su_run(as_alice, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_replica_digest(w->rep, "user:alice", w->da));
    CHECK_OK(su_relay_digest(w->data, "user:alice", dr));
    CHECK_STR(w->da, dr);
    CHECK(strcmp(w->da, ZERO_DIGEST) != 0);

    /* Alice signs out; Bob signs in on the same file and edits. */
    db = su_db(w->rep);
    su_exec(db, "UPDATE items SET name = 'bob was here' WHERE id = 'a1'");
    su_exec(db, "INSERT INTO items(id, name) VALUES ('b1', 'bob one')");
    sqlite3_close(db);
}

/* Nothing of alice's reached bob's namespace, nor bob's edits alice's, and
** the shared file still belongs to alice. */
static void check_nothing_leaked(world_t *w)
{
    char d[65], ns[128];
    CHECK_OK(su_relay_digest(w->data, "user:bob", d));
    CHECK_STR(d, ZERO_DIGEST);
    CHECK_OK(su_relay_digest(w->data, "user:alice", d));
    CHECK_STR(d, w->da);
    write_ns_of(w->rep, ns, sizeof ns);
    CHECK_STR(ns, "user:alice");
}

/* sync-agent run --once as bob fails at once, saying why. */
static void second_account_refused(void)
{
    world_t w;
    char out[8192], da[65], dbob[65];
    int rc;
    world_init(&w);
    const char *as_bob[] = {SYNC_AGENT_PATH, "run",          w.rep, "--relay",
                            w.relay,         "--token-file", w.bob, "--once",
                            "--timeout",     "60",           NULL};
    uint64_t t0 = su_now_ms();
    rc = su_run(as_bob, 90000, out, sizeof out);
    uint64_t took = su_now_ms() - t0;
    if (rc <= 0 || !strstr(out, "user:alice") || !strstr(out, "one replica file per account") ||
        took > 20000)
        fprintf(stderr, "bob --once: exit %d after %llu ms\n%s\n", rc, (unsigned long long)took,
                out);
    CHECK(rc > 0);       /* a failure exit, not a timeout or a signal */
    CHECK(took < 20000); /* at once, not at --timeout */
    CHECK(strstr(out, "sync-agent: ") != NULL);
    CHECK(strstr(out, "user:alice") != NULL);
    CHECK(strstr(out, "one replica file per account") != NULL);
    check_nothing_leaked(&w);

    /* Bob with a file of his own syncs fine. */
    char bobrep[512];
    su_path(bobrep, sizeof bobrep, "bob.db");
    make_replica(bobrep);
    sqlite3 *db = su_db(bobrep);
    su_exec(db, "INSERT INTO items(id, name) VALUES ('b1', 'bob one')");
    sqlite3_close(db);
    const char *bob_own[] = {SYNC_AGENT_PATH, "run",          bobrep, "--relay",
                             w.relay,         "--token-file", w.bob,  "--once",
                             "--timeout",     "30",           NULL};
    rc = su_run(bob_own, 60000, out, sizeof out);
    if (rc)
        fprintf(stderr, "%s\n", out);
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_replica_digest(bobrep, "user:bob", da));
    CHECK_OK(su_relay_digest(w.data, "user:bob", dbob));
    CHECK_STR(da, dbob); /* bob's own row, nothing of alice's */
    su_kill(&w.r.p, SIGTERM, 10000, NULL);
}

/* A long-running sync-agent run as bob stops too, rather than retrying
** forever. */
static void second_account_run_exits(void)
{
    world_t w;
    char blog[512];
    su_proc_t agent;
    int st;
    world_init(&w);
    su_path(blog, sizeof blog, "agent-bob.log");
    const char *const fast[] = {"--backoff-max", "300", NULL};
    CHECK_OK(su_agent_start(&agent, w.rep, w.r.port, w.bob, blog, fast));
    if (su_wait(&agent, 20000, &st) != 0) {
        char *log = slurp(blog);
        fprintf(stderr,
                "sync-agent run as bob did not exit within 20 s (%d attempts); log:\n"
                "%.2000s\n",
                count_of(log, "cannot start the session"), log);
        free(log);
        su_kill(&agent, SIGKILL, 5000, NULL);
        CHECK(0);
    }
    char *log = slurp(blog);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 0 || !strstr(log, "user:alice"))
        fprintf(stderr, "sync-agent run as bob: status %d; log:\n%.4000s\n", st, log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    CHECK(strstr(log, "sync-agent: ") != NULL);
    CHECK(strstr(log, "one replica file per account") != NULL);
    free(log);
    check_nothing_leaked(&w);
    su_kill(&w.r.p, SIGTERM, 10000, NULL);
}

KNIT_TESTS(T(second_account_refused), T(second_account_run_exits))
