/*
** test_erase_it.c: `sync-relay erase --user` against a relay that is
** running: the account's values were pushed by a real sync-agent, the
** erase removes them, and their bytes are in neither the store file nor
** its WAL afterwards; the account's tokens are refused afterwards (the
** tombstone) until `erase --undo`, and then a new device of the account
** gets nothing; a second erase says there is nothing to erase.  And the
** same through Clerk's signed user.deleted webhook, with a device online:
** its session is ended with an ERROR saying the account was erased, it
** cannot sign in again, and a user.created webhook lets the user back.
*/
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sync_util.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"
#define PLANTED "PLANTED-b71c-erase-me"

static int file_holds(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    size_t n = strlen(needle), have = 0;
    static char buf[16 << 20];
    int found = 0;
    if (!f)
        return 0;
    have = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + n <= have && !found; i++)
        found = memcmp(buf + i, needle, n) == 0;
    return found;
}

static int store_holds(const char *data, const char *needle)
{
    char wal[700];
    snprintf(wal, sizeof wal, "%s-wal", data);
    return file_holds(data, needle) || file_holds(wal, needle);
}

static void replica(const char *path, const char *value)
{
    sqlite3 *db;
    su_make_replica(path, SCHEMA, "items");
    if (value) {
        db = su_db(path);
        su_exec(db, "INSERT INTO items VALUES('k1', '%s')", value);
        sqlite3_close(db);
    }
}

static int run_once(const su_relay_t *r, const char *path, const char *token, char *out, size_t n)
{
    char url[64];
    snprintf(url, sizeof url, "127.0.0.1:%d", r->port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "15",      NULL};
    return su_run(run, 40000, out, n);
}

static void erase_while_serving(void)
{
    su_relay_t r;
    char data[600], secret[600], token[600], a[600], c[600], out[8192];
    sqlite3 *db;
    su_path(data, sizeof data, "relay.db");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(c, sizeof c, "c.db");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    CHECK_OK(su_relay_start(&r, 0, data, secret, NULL));
    replica(a, PLANTED);
    /* The device stays online through the erase. */
    su_proc_t agent;
    char alog[700];
    int status = -1;
    snprintf(alog, sizeof alog, "%s/agent.log", su_tmpdir());
    CHECK_OK(su_agent_start(&agent, a, r.port, token, alog, NULL));
    for (int i = 0; i < 200 && !store_holds(data, PLANTED); i++)
        su_sleep_ms(50);
    CHECK(store_holds(data, PLANTED)); /* the check below can see it */

    const char *erase[] = {SYNC_RELAY_PATH, "erase", "--data", data, "--user", "alice", NULL};
    uint64_t t_erase = su_now_ms();
    int rc = su_run(erase, 30000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "erase (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    fprintf(stderr, "sync-relay erase took %llu ms\n", (unsigned long long)(su_now_ms() - t_erase));
    CHECK(strstr(out, "erased user:alice") != NULL);
    CHECK(!store_holds(data, PLANTED));
    /* The relay notices the tombstone within its 2 s check and ends the
    ** session; the agent cannot sign in again and stops. */
    CHECK_OK(su_wait(&agent, 15000, &status));
    fprintf(stderr, "online agent stopped %llu ms after sync-relay erase began\n",
            (unsigned long long)(su_now_ms() - t_erase));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 4);
    if (getenv("KNIT_TEST_VERBOSE") || !su_file_has(alog, "account erased"))
        su_print_file(alog);
    CHECK(su_file_has(alog, "account erased"));
    CHECK(!store_holds(data, PLANTED));

    /* Alice's tokens are refused now (the tombstone). */
    replica(c, NULL);
    rc = run_once(&r, c, token, out, sizeof out);
    if (rc != 4 || !strstr(out, "account was erased"))
        fprintf(stderr, "agent after erase (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 4);
    CHECK(strstr(out, "account was erased") != NULL);
    const char *undo[] = {SYNC_RELAY_PATH, "erase", "--undo", "--data", data,
                          "--user",        "alice", NULL};
    CHECK_EQ_INT(su_run(undo, 30000, out, sizeof out), 0);
    CHECK(strstr(out, "tombstone removed") != NULL);

    /* Then a new device of alice gets nothing back. */
    CHECK_EQ_INT(run_once(&r, c, token, out, sizeof out), 0);
    db = su_db(c);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 0);
    sqlite3_close(db);
    CHECK(!store_holds(data, PLANTED));

    CHECK_EQ_INT(su_run(erase, 30000, out, sizeof out), 3); /* nothing left */
}

/* ---------------------------------------------------------------------- */
/* Signed webhooks (Clerk through Svix)                                     */

#define WHSEC "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static char g_dir[600];

/* POSTs body to /v1/webhooks/clerk with svix headers signed by Python's
** own hmac (not knit's), timestamp now + skew_s, or with a wrong key when
** forge; the status code, the answer's body into out. */
static int deliver(int port, const char *id, const char *body, long skew_s, int forge, char *out,
                   size_t n)
{
    char bodyf[700], cmd[4096], outf[700];
    FILE *f;
    snprintf(bodyf, sizeof bodyf, "%s/wh-body.json", g_dir);
    snprintf(outf, sizeof outf, "%s/wh-out.txt", g_dir);
    CHECK((f = fopen(bodyf, "w")) != NULL);
    fputs(body, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "ts=$(/usr/bin/python3 -c 'import time; print(int(time.time()) + %ld)') && "
             "sig=$(/usr/bin/python3 -c 'import base64, hashlib, hmac, sys\n"
             "key = base64.b64decode(sys.argv[1].split(\"_\", 1)[1])\n"
             "msg = (sys.argv[2] + \".\" + sys.argv[3] + \".\").encode() + "
             "open(sys.argv[4], \"rb\").read()\n"
             "print(\"v1,\" + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest())"
             ".decode())' '%s' '%s' \"$ts\" '%s') && "
             "curl -s --max-time 10 -o '%s' -w '%%{http_code}' -X POST "
             "-H 'content-type: application/json' -H 'svix-id: %s' -H \"svix-timestamp: $ts\" "
             "-H \"svix-signature: $sig\" --data-binary @'%s' "
             "'http://127.0.0.1:%d/v1/webhooks/clerk'",
             skew_s, forge ? "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==" : WHSEC, id, bodyf, outf, id,
             bodyf, port);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    char code[64];
    CHECK_EQ_INT(su_run(argv, 30000, code, sizeof code), 0);
    f = fopen(outf, "r");
    size_t k = f ? fread(out, 1, n - 1, f) : 0;
    out[k] = '\0';
    if (f)
        fclose(f);
    return atoi(code);
}

/* Clerk's user.deleted, signed: the account is erased from the relay
** store, bytes and all; a forged, a stale or a replayed delivery changes
** nothing; user.updated events apply only when newer. */
static void webhook_user_deleted(void)
{
    su_relay_t r;
    char data[600], secret[600], whf[600], token[600], a[600], hl[64], out[4096];
    int hp = su_free_port();
    FILE *f;
    snprintf(g_dir, sizeof g_dir, "%s", su_tmpdir());
    su_path(data, sizeof data, "wh-relay.db");
    su_path(secret, sizeof secret, "wh-secret");
    su_path(whf, sizeof whf, "whsec");
    su_path(token, sizeof token, "clerk-user.jwt");
    su_path(a, sizeof a, "wh-a.db");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", token));
    CHECK((f = fopen(whf, "w")) != NULL);
    fprintf(f, "%s\n", WHSEC);
    fclose(f);
    chmod(whf, 0600);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
    const char *extra[] = {"--http-listen", hl, "--webhook-secret-file", whf, NULL};
    CHECK_OK(su_relay_start(&r, 0, data, secret, extra));
    replica(a, PLANTED);
    /* The device stays online. */
    su_proc_t agent;
    char alog[700];
    int status = -1;
    snprintf(alog, sizeof alog, "%s/wh-agent.log", g_dir);
    CHECK_OK(su_agent_start(&agent, a, r.port, token, alog, NULL));
    for (int i = 0; i < 200 && !store_holds(data, PLANTED); i++)
        su_sleep_ms(50);
    CHECK(store_holds(data, PLANTED));
    /* A second device of the user syncs the row, then goes offline. */
    char c[600];
    su_path(c, sizeof c, "wh-c.db");
    replica(c, NULL);
    CHECK_EQ_INT(run_once(&r, c, token, out, sizeof out), 0);
    {
        sqlite3 *db = su_db(c);
        CHECK(su_int(db, "SELECT count(*) FROM items") > 0);
        sqlite3_close(db);
    }

    static const char deleted[] =
        "{\"data\":{\"deleted\":true,\"id\":\"user_2NNEqL2nrIRdJ194ndJqAHwEfxC\","
        "\"object\":\"user\"},\"object\":\"event\",\"type\":\"user.deleted\"}";
    CHECK_EQ_INT(deliver(hp, "msg_forged", deleted, 0, 1, out, sizeof out), 401);
    CHECK(strstr(out, "signature") != NULL);
    CHECK_EQ_INT(deliver(hp, "msg_stale", deleted, -600, 0, out, sizeof out), 401);
    CHECK(strstr(out, "timestamp") != NULL);
    CHECK(store_holds(data, PLANTED));

    CHECK_EQ_INT(deliver(hp, "msg_del_1", deleted, 0, 0, out, sizeof out), 200);
    uint64_t t_del = su_now_ms();
    CHECK(strstr(out, "erased 1 namespace") != NULL);
    CHECK(!store_holds(data, PLANTED));
    /* The online device was told (KNIT_EERASED, final: no reconnect): it stops. */
    CHECK_OK(su_wait(&agent, 15000, &status));
    fprintf(stderr, "online agent stopped %llu ms after the webhook's answer\n",
            (unsigned long long)(su_now_ms() - t_del));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 4);
    if (!su_file_has(alog, "account erased"))
        su_print_file(alog);
    CHECK(su_file_has(alog, "account erased (the identity provider deleted the user)"));
    CHECK(!store_holds(data, PLANTED)); /* it wrote nothing back */
    /* ... and removed the account's rows from its replica (KNIT_EERASED). */
    CHECK(su_file_has(alog, "the account was erased on the relay"));
    {
        sqlite3 *db = su_db(a);
        CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 0);
        CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM _knit_log_1"), 0); /* not local deletes */
        sqlite3_close(db);
    }
    /* The device that was offline hears it at its next sign-in. */
    CHECK_EQ_INT(run_once(&r, c, token, out, sizeof out), 4);
    CHECK(strstr(out, "this account was erased") != NULL);
    CHECK(strstr(out, "row(s) of it removed from this replica") != NULL);
    {
        sqlite3 *db = su_db(c);
        CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 0);
        sqlite3_close(db);
    }
    /* A new device of the deleted user is refused too. */
    {
        char b[600];
        su_path(b, sizeof b, "wh-b.db");
        replica(b, NULL);
        CHECK_EQ_INT(run_once(&r, b, token, out, sizeof out), 4);
        CHECK(strstr(out, "this account was erased") != NULL);
        /* The provider creates the user again (same id): accepted, empty. */
        static const char created[] =
            "{\"data\":{\"id\":\"user_2NNEqL2nrIRdJ194ndJqAHwEfxC\",\"object\":\"user\","
            "\"updated_at\":1700000000000},\"object\":\"event\",\"type\":\"user.created\"}";
        CHECK_EQ_INT(deliver(hp, "msg_created", created, 0, 0, out, sizeof out), 200);
        CHECK(strstr(out, "may sign in again") != NULL);
        CHECK_EQ_INT(run_once(&r, b, token, out, sizeof out), 0);
        sqlite3 *db = su_db(b);
        CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items"), 0);
        sqlite3_close(db);
    }
    CHECK_EQ_INT(deliver(hp, "msg_del_1", deleted, 0, 0, out, sizeof out), 200); /* a retry */
    CHECK(strstr(out, "duplicate") != NULL);

    /* Out of order: the later update first, then the earlier one. */
    static const char upd2[] = "{\"type\":\"user.updated\",\"data\":{\"id\":\"user_x\","
                               "\"updated_at\":1700000002000}}";
    static const char upd1[] = "{\"type\":\"user.updated\",\"data\":{\"id\":\"user_x\","
                               "\"updated_at\":1700000001000}}";
    CHECK_EQ_INT(deliver(hp, "msg_u2", upd2, 0, 0, out, sizeof out), 200);
    CHECK(strstr(out, "recorded") != NULL);
    CHECK_EQ_INT(deliver(hp, "msg_u1", upd1, 0, 0, out, sizeof out), 200);
    CHECK(strstr(out, "stale") != NULL);
    CHECK_EQ_INT(deliver(hp, "msg_bad", "{\"no\":1}", 0, 0, out, sizeof out), 400);
}

KNIT_TESTS(T(erase_while_serving), T(webhook_user_deleted))
