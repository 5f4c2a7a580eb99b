/*
** test_identity_it.c: one account per person, profile and activity rows,
** end to end: the real sync-relay (keys from --jwks-file, tokens minted
** by Debian's python3-jwt through jwt_mint.py, webhooks signed with
** Python's own hmac as Svix signs Clerk's) and real sync-agent replicas
** that track knit_profile and knit_activity and read them with plain SQL.
**
**   profile_without_webhooks  sign-in alone writes the profile (upsert on
**                             sign-in) and one activity row per sign-in
**   sign_in_then_webhooks     a sign-in, then user.created for its id, then
**                             user.created for a new id with the same email
**                             (deleted and recreated): one account, the new
**                             id signs in to the old data
**   webhook_then_sign_in      user.created first, then a sign-in by another
**                             id with that email (provider switch); and a
**                             sign-in without email, then its user.created
**   concurrent                sign-in and webhook fired at the same moment
**   profile_updates           user.updated reaches an online device live; a
**                             stale (older updated_at) delivery does not;
**                             the primary email is the one named by
**                             primary_email_address_id
**   activity_live             session.created and a sign-in on a third device
**                             appear on an online device; latency measured
**   memberships               organizationMembership.created / .deleted are
**                             stored, a reordered .created ignored
*/
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "relay_store.h"
#include "idp_util.h"
#include "sync_util.h"

#define SCHEMA                                                                                     \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"                                          \
    "CREATE TABLE knit_profile(user_id TEXT PRIMARY KEY, email TEXT, first_name TEXT,"             \
    " last_name TEXT, image_url TEXT, updated_at INTEGER);"                                        \
    "CREATE TABLE knit_activity(id TEXT PRIMARY KEY, user TEXT, action TEXT, at INTEGER,"          \
    " source TEXT);"

static long wait_row(const char *path, const char *sql, int timeout_ms);

static char g_keys[600];
static su_relay_t relay;
static int http_port;
static char store_path[600];

static void mint(const char *sub, const char *claims, const char *path)
{
    idp_mint(g_keys, sub, claims, path);
}

/* Keys, JWKS, webhook secret; the relay (with webhooks when asked). */
static void start(int webhooks)
{
    su_path(store_path, sizeof store_path, "relay.db");
    idp_relay_start(&relay, g_keys, sizeof g_keys, store_path, webhooks, &http_port);
}

/* Stops the relay gracefully: it must exit 0 (under ASan, that means it
** leaked nothing and met no error on the paths the test drove). */
static void stop(void)
{
    int st = -1;
    CHECK_OK(su_kill(&relay.p, SIGTERM, 15000, &st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        su_print_file(relay.p.log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void replica(const char *path)
{
    char out[2048];
    su_make_replica(path, SCHEMA, "items");
    const char *t1[] = {SYNC_AGENT_PATH, "track", path, "knit_profile", NULL};
    const char *t2[] = {SYNC_AGENT_PATH, "track", path, "knit_activity", NULL};
    CHECK_EQ_INT(su_run(t1, 20000, out, sizeof out), 0);
    CHECK_EQ_INT(su_run(t2, 20000, out, sizeof out), 0);
}

static int run_once(const char *path, const char *token)
{
    char url[64], out[8192];
    snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "15",      NULL};
    int rc = su_run(run, 40000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "sync-agent run --once (%d): %s\n", rc, out);
    return rc;
}

static void deliver_cmd(const char *id, const char *body, char *cmd, size_t n, char *outf,
                        size_t outn)
{
    idp_deliver_cmd(http_port, id, body, cmd, n, outf, outn);
}

static int deliver(const char *id, const char *body, char *out, size_t n)
{
    return idp_deliver(http_port, id, body, out, n);
}

/* Reads of the relay's store (read-only, while it runs). */
static int64_t store_int(const char *fmt, const char *arg)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    CHECK(sqlite3_open_v2(store_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    CHECK(sqlite3_prepare_v2(db, fmt, -1, &st, NULL) == SQLITE_OK);
    if (arg)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void account_of(const char *id, char *out, size_t n)
{
    knit_relay_store_t *s;
    char acc[KNIT_IDENT_NS_MAX];
    CHECK_OK(knit_relay_store_open(store_path, KNIT_RELAY_STORE_READONLY, &s));
    CHECK_OK(knit_relay_store_ident_get(s, id, NULL, acc));
    knit_relay_store_close(s);
    snprintf(out, n, "%s", acc);
}

static int64_t accounts_with(const char *email)
{
    return store_int("SELECT count(*) FROM ident WHERE email = ?1", email);
}

static int64_t rep_int(const char *path, const char *sql)
{
    sqlite3 *db = su_db(path);
    int64_t v = su_int(db, "%s", sql);
    sqlite3_close(db);
    return v;
}

/* ---------------------------------------------------------------------- */

static void profile_without_webhooks(void)
{
    char tok[700], a[700], b[700];
    start(0);
    su_path(tok, sizeof tok, "pat.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    mint("user_pat",
         "{\"email\":\"  Pat@Example.COM \",\"first_name\":\"Pat\",\"last_name\":\"Lee\","
         "\"image_url\":\"https://img.test/pat.png\"}",
         tok);
    replica(a);
    CHECK_EQ_INT(run_once(a, tok), 0);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_profile"), 1);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_profile WHERE user_id = 'user_pat' AND"
                            " email = 'pat@example.com' AND first_name = 'Pat' AND"
                            " last_name = 'Lee' AND image_url = 'https://img.test/pat.png'"
                            " AND updated_at > 1700000000000"),
                 1);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_activity WHERE user = 'user_pat' AND"
                            " action = 'sign_in' AND source = 'knit' AND at > 1700000000000"),
                 1);
    /* Signing in again: the same profile row (an upsert), another login. */
    CHECK_EQ_INT(run_once(a, tok), 0);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_profile"), 1);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_activity"), 2);
    /* Another device of Pat reads it all with plain SQL. */
    replica(b);
    CHECK_EQ_INT(run_once(b, tok), 0);
    CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM knit_profile WHERE email = 'pat@example.com'"),
                 1);
    CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM knit_activity"), 3);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), 1);
    stop();
}

static void sign_in_then_webhooks(void)
{
    char tok1[700], tok2[700], a[700], c[700], body[2048], out[1024], acc[KNIT_IDENT_NS_MAX];
    sqlite3 *db;
    start(1);
    su_path(tok1, sizeof tok1, "a1.jwt");
    su_path(tok2, sizeof tok2, "a2.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(c, sizeof c, "c.db");
    mint("user_a1", "{\"email\":\"alice@x.test\"}", tok1);
    mint("user_a2", "{\"email\":\"Alice@X.test\"}", tok2);
    replica(a);
    db = su_db(a);
    su_exec(db, "INSERT INTO items VALUES('k1', 'alice data')");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, tok1), 0);
    /* The provider's user.created for the id that signed in: the same account. */
    idp_user_body(body, sizeof body, "user.created", "user_a1", "ALICE@x.test", "Alice",
                  1700000000001);
    CHECK_EQ_INT(deliver("msg_a1", body, out, sizeof out), 200);
    CHECK(strstr(out, "user:user_a1") != NULL);
    CHECK_EQ_INT(accounts_with("alice@x.test"), 1);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), 1);
    /* Deleted at the provider without a webhook, and created again: a new
    ** id with the same email is relinked, not a second user. */
    idp_user_body(body, sizeof body, "user.created", "user_a2", "alice@x.test", "Alice",
                  1700000000002);
    CHECK_EQ_INT(deliver("msg_a2", body, out, sizeof out), 200);
    CHECK(strstr(out, "relinked") != NULL);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), 1);
    account_of("user_a2", acc, sizeof acc);
    CHECK(strcmp(acc, "user:user_a1") == 0);
    /* The new id signs in to the account, and its data stayed. */
    replica(c);
    CHECK_EQ_INT(run_once(c, tok2), 0);
    CHECK_EQ_INT(rep_int(c, "SELECT count(*) FROM items WHERE name = 'alice data'"), 1);
    CHECK_EQ_INT(rep_int(c, "SELECT count(*) FROM knit_profile"), 1);
    CHECK_EQ_INT(rep_int(c, "SELECT count(*) FROM knit_profile WHERE user_id = 'user_a1' AND"
                            " email = 'alice@x.test'"),
                 1);
    CHECK_EQ_INT(rep_int(c, "SELECT count(*) FROM knit_activity WHERE user = 'user_a2'"), 1);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ns WHERE name LIKE 'user:%'", NULL), 1);
    stop();
}

static void webhook_then_sign_in(void)
{
    char tok[700], tok1[700], tokc[700], a[700], b[700], c[700], body[2048], out[1024];
    char acc[KNIT_IDENT_NS_MAX];
    sqlite3 *db;
    start(1);
    su_path(tok, sizeof tok, "b2.jwt");
    su_path(tok1, sizeof tok1, "b1.jwt");
    su_path(tokc, sizeof tokc, "c1.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(c, sizeof c, "c.db");
    idp_user_body(body, sizeof body, "user.created", "user_b1", "bob@x.test", "Bob", 1700000000001);
    CHECK_EQ_INT(deliver("msg_b1", body, out, sizeof out), 200);
    /* Another id with Bob's email signs in (a provider switch). */
    mint("user_b2", "{\"email\":\" BOB@x.test\"}", tok);
    replica(a);
    db = su_db(a);
    su_exec(db, "INSERT INTO items VALUES('k1', 'bob data')");
    sqlite3_close(db);
    CHECK_EQ_INT(run_once(a, tok), 0);
    CHECK_EQ_INT(accounts_with("bob@x.test"), 1);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), 1);
    account_of("user_b2", acc, sizeof acc);
    CHECK(strcmp(acc, "user:user_b1") == 0);
    /* The webhook's profile, and the data, reach Bob's first id. */
    mint("user_b1", NULL, tok1);
    replica(b);
    CHECK_EQ_INT(run_once(b, tok1), 0);
    CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM items WHERE name = 'bob data'"), 1);
    CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM knit_profile WHERE first_name = 'Bob' AND"
                            " email = 'bob@x.test'"),
                 1);
    /* A token without email first, then its user.created: one account. */
    mint("user_c1", NULL, tokc);
    replica(c);
    CHECK_EQ_INT(run_once(c, tokc), 0);
    idp_user_body(body, sizeof body, "user.created", "user_c1", "carol@x.test", "Carol",
                  1700000000003);
    CHECK_EQ_INT(deliver("msg_c1", body, out, sizeof out), 200);
    CHECK_EQ_INT(accounts_with("carol@x.test"), 1);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), 2);
    account_of("user_c1", acc, sizeof acc);
    CHECK(strcmp(acc, "user:user_c1") == 0);
    CHECK_EQ_INT(run_once(c, tokc), 0);
    CHECK_EQ_INT(rep_int(c, "SELECT count(*) FROM knit_profile WHERE first_name = 'Carol'"), 1);
    /* Bob again, under a third id, signs in with a token without email and
    ** writes a row; then the provider's user.updated gives that id Bob's
    ** email: the id moves to Bob's account, and the row comes along, live
    ** on Bob's online device. */
    {
        char tok3[700], d[700], blog[700];
        su_proc_t pb;
        int st;
        su_path(tok3, sizeof tok3, "b3.jwt");
        su_path(d, sizeof d, "d.db");
        snprintf(blog, sizeof blog, "%s/bob.log", su_tmpdir());
        mint("user_b3", NULL, tok3);
        replica(d);
        db = su_db(d);
        su_exec(db, "INSERT INTO items VALUES('k3', 'written before the email was known')");
        sqlite3_close(db);
        CHECK_EQ_INT(run_once(d, tok3), 0);
        account_of("user_b3", acc, sizeof acc);
        CHECK(strcmp(acc, "user:user_b3") == 0);
        CHECK_OK(su_agent_start(&pb, b, relay.port, tok1, blog, NULL));
        su_sleep_ms(300);
        idp_user_body(body, sizeof body, "user.updated", "user_b3", "bob@x.test", "Bob",
                      1700000000009);
        CHECK_EQ_INT(deliver("msg_b3", body, out, sizeof out), 200);
        CHECK(strstr(out, "relinked") != NULL);
        account_of("user_b3", acc, sizeof acc);
        CHECK(strcmp(acc, "user:user_b1") == 0);
        CHECK_EQ_INT(accounts_with("bob@x.test"), 1);
        CHECK(wait_row(b, "SELECT count(*) FROM items WHERE id = 'k3'", 5000) >= 0);
        CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM knit_profile"), 1);
        CHECK_OK(su_kill(&pb, SIGTERM, 10000, &st));
        /* The id now signs in to Bob's account (on a new replica file: the
        ** one that synced as the provisional account is bound to it, a rule
        ** of the replica, docs/sync-relay.md). */
        char e[700];
        su_path(e, sizeof e, "e.db");
        replica(e);
        CHECK_EQ_INT(run_once(e, tok3), 0);
        CHECK_EQ_INT(rep_int(e, "SELECT count(*) FROM items WHERE name = 'bob data'"), 1);
        CHECK_EQ_INT(rep_int(e, "SELECT count(*) FROM items WHERE id = 'k3'"), 1);
    }
    stop();
}

/* A sign-in and the provider's webhook about the same person at the same
** moment, with the same id and with different ids: one account each time. */
static void concurrent(void)
{
    enum { ROUNDS = 6 };
    char tok[ROUNDS][700], rep[ROUNDS][700];
    start(1);
    for (int i = 0; i < ROUNDS; i++) {
        char sub[64], claims[128], name[64];
        snprintf(sub, sizeof sub, "user_rs%d", i);
        snprintf(claims, sizeof claims, "{\"email\":\"r%d@x.test\"}", i);
        snprintf(name, sizeof name, "r%d.jwt", i);
        su_path(tok[i], sizeof tok[i], name);
        mint(sub, claims, tok[i]);
        snprintf(name, sizeof name, "r%d.db", i);
        su_path(rep[i], sizeof rep[i], name);
        replica(rep[i]);
    }
    for (int i = 0; i < ROUNDS; i++) {
        char id[64], wid[64], email[64], body[2048], cmd[4096], outf[700], url[64], log[700];
        char acc1[KNIT_IDENT_NS_MAX], acc2[KNIT_IDENT_NS_MAX];
        su_proc_t agent, post;
        int st1 = -1, st2 = -1;
        /* Even rounds: the same id; odd: the webhook names another id. */
        snprintf(id, sizeof id, "user_rs%d", i);
        snprintf(wid, sizeof wid, i % 2 ? "user_rw%d" : "user_rs%d", i);
        snprintf(email, sizeof email, "R%d@x.test", i);
        idp_user_body(body, sizeof body, "user.created", wid, email, "Race", 1700000000000 + i);
        snprintf(url, sizeof url, "msg_race_%d", i);
        deliver_cmd(url, body, cmd, sizeof cmd, outf, sizeof outf);
        snprintf(log, sizeof log, "%s/race-%d.log", su_tmpdir(), i);
        snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
        const char *run[] = {SYNC_AGENT_PATH, "run",    rep[i],      "--relay", url, "--token-file",
                             tok[i],          "--once", "--timeout", "15",      NULL};
        const char *sh[] = {"/bin/sh", "-c", cmd, NULL};
        CHECK_OK(su_spawn(&post, sh, log, NULL));
        CHECK_OK(su_spawn(&agent, run, log, NULL));
        CHECK_OK(su_wait(&post, 30000, &st1));
        CHECK_OK(su_wait(&agent, 30000, &st2));
        CHECK(WIFEXITED(st2) && WEXITSTATUS(st2) == 0);
        snprintf(email, sizeof email, "r%d@x.test", i);
        CHECK_EQ_INT(accounts_with(email), 1);
        account_of(id, acc1, sizeof acc1);
        account_of(wid, acc2, sizeof acc2);
        CHECK(acc1[0] && strcmp(acc1, acc2) == 0);
    }
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident", NULL), ROUNDS);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM ident_id", NULL), ROUNDS + ROUNDS / 2);
    stop();
}

/* Polls the replica until sql counts at least one row, up to timeout_ms:
** the ms it took, or -1. */
static long wait_row(const char *path, const char *sql, int timeout_ms)
{
    sqlite3 *db = su_db(path);
    uint64_t t0 = su_now_ms();
    long took = -1;
    while (su_now_ms() - t0 < (uint64_t)timeout_ms) {
        if (su_int(db, "%s", sql) > 0) {
            took = (long)(su_now_ms() - t0);
            break;
        }
        su_sleep_ms(1);
    }
    sqlite3_close(db);
    return took;
}

static void profile_updates(void)
{
    char tok[700], a[700], alog[700], body[2048], out[1024];
    su_proc_t agent;
    int status;
    start(1);
    su_path(tok, sizeof tok, "u.jwt");
    su_path(a, sizeof a, "a.db");
    snprintf(alog, sizeof alog, "%s/agent.log", su_tmpdir());
    mint("user_u", "{\"email\":\"u@x.test\",\"first_name\":\"FromToken\"}", tok);
    replica(a);
    CHECK_OK(su_agent_start(&agent, a, relay.port, tok, alog, NULL));
    CHECK(wait_row(a, "SELECT count(*) FROM knit_profile WHERE first_name = 'FromToken'", 10000) >=
          0);
    idp_user_body(body, sizeof body, "user.updated", "user_u", "u.new@x.test", "New",
                  1700000002000);
    CHECK_EQ_INT(deliver("msg_u2", body, out, sizeof out), 200);
    CHECK(wait_row(a,
                   "SELECT count(*) FROM knit_profile WHERE first_name = 'New' AND"
                   " email = 'u.new@x.test' AND last_name = 'Doe' AND"
                   " updated_at = 1700000002000",
                   5000) >= 0);
    /* An earlier update delivered late changes nothing. */
    idp_user_body(body, sizeof body, "user.updated", "user_u", "u.old@x.test", "Old",
                  1700000001000);
    CHECK_EQ_INT(deliver("msg_u1", body, out, sizeof out), 200);
    CHECK(strstr(out, "stale") != NULL);
    su_sleep_ms(500);
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM knit_profile WHERE first_name = 'New' AND"
                            " email = 'u.new@x.test'"),
                 1);
    /* And a sign-in with an older token does not undo the webhook's value. */
    {
        char b[700];
        su_path(b, sizeof b, "b.db");
        replica(b);
        CHECK_EQ_INT(run_once(b, tok), 0);
        CHECK_EQ_INT(rep_int(b, "SELECT count(*) FROM knit_profile WHERE first_name = 'New'"), 1);
    }
    CHECK_EQ_INT(accounts_with("u.new@x.test"), 1);
    CHECK_EQ_INT(accounts_with("u@x.test"), 0);
    CHECK_OK(su_kill(&agent, SIGTERM, 10000, &status));
    stop();
}

static int cmp_long(const void *x, const void *y)
{
    long a = *(const long *)x, b = *(const long *)y;
    return a < b ? -1 : a > b;
}

static void activity_live(void)
{
    enum { N = 20 };
    char tok[700], a[700], b[700], c[700], alog[700], blog[700];
    long lat[N], answer_ms[N];
    su_proc_t pa, pb;
    int status;
    start(1);
    su_path(tok, sizeof tok, "l.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(c, sizeof c, "c.db");
    snprintf(alog, sizeof alog, "%s/a.log", su_tmpdir());
    snprintf(blog, sizeof blog, "%s/b.log", su_tmpdir());
    mint("user_l", "{\"email\":\"l@x.test\"}", tok);
    replica(a);
    replica(b);
    CHECK_OK(su_agent_start(&pa, a, relay.port, tok, alog, NULL));
    CHECK_OK(su_agent_start(&pb, b, relay.port, tok, blog, NULL));
    /* Both online: each sees the other's sign-in. */
    CHECK(wait_row(a, "SELECT count(*) >= 2 FROM knit_activity", 10000) >= 0);
    CHECK(wait_row(b, "SELECT count(*) >= 2 FROM knit_activity", 10000) >= 0);
    su_sleep_ms(300);
    for (int i = 0; i < N; i++) {
        char id[64], body[512], cmd[4096], outf[700], sql[256], res[64];
        su_proc_t post;
        int st = -1, pfd = -1;
        snprintf(id, sizeof id, "msg_sess_%d", i);
        snprintf(body, sizeof body,
                 "{\"type\":\"session.created\",\"object\":\"event\",\"data\":{\"id\":"
                 "\"sess_%d\",\"object\":\"session\",\"user_id\":\"user_l\",\"status\":"
                 "\"active\",\"created_at\":%llu}}",
                 i, (unsigned long long)(1760000000000ull + (uint64_t)i));
        deliver_cmd(id, body, cmd, sizeof cmd, outf, sizeof outf);
        /* Signed first; the clock starts when curl is started. */
        char *curl = strstr(cmd, "curl ");
        char pre[4096];
        snprintf(pre, sizeof pre, "%.*s echo \"$sig $ts\"", (int)(curl - cmd), cmd);
        const char *sign[] = {"/bin/sh", "-c", pre, NULL};
        CHECK_EQ_INT(su_run(sign, 30000, res, sizeof res), 0);
        char sig[128], ts[32];
        CHECK(sscanf(res, "%127s %31s", sig, ts) == 2);
        char post_cmd[4096];
        snprintf(post_cmd, sizeof post_cmd,
                 "exec curl -s --max-time 10 -o '%s' -w '%%{http_code} %%{time_total}' -X POST "
                 "-H 'content-type: application/json' -H 'svix-id: %s' -H 'svix-timestamp: %s' "
                 "-H 'svix-signature: %s' --data-binary @'%s/wh-%s.json' "
                 "'http://127.0.0.1:%d/v1/webhooks/clerk'",
                 outf, id, ts, sig, su_tmpdir(), id, http_port);
        const char *sh[] = {"/bin/sh", "-c", post_cmd, NULL};
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM knit_activity WHERE id = 'sess_%d' AND"
                 " action = 'session.created' AND source = 'clerk' AND user = 'user_l'",
                 i);
        CHECK_OK(su_spawn(&post, sh, outf, &pfd));
        lat[i] = wait_row(b, sql, 5000);
        CHECK_OK(su_wait(&post, 15000, &st));
        char w[64] = "";
        ssize_t k = read(pfd, w, sizeof w - 1);
        close(pfd);
        w[k > 0 ? k : 0] = '\0';
        double secs = 0;
        int code = 0;
        CHECK(sscanf(w, "%d %lf", &code, &secs) == 2);
        CHECK_EQ_INT(code, 200);
        answer_ms[i] = (long)(secs * 1000.0 + 0.5);
        CHECK(lat[i] >= 0);
        /* On device A too. */
        CHECK(wait_row(a, sql, 5000) >= 0);
    }
    qsort(lat, N, sizeof lat[0], cmp_long);
    qsort(answer_ms, N, sizeof answer_ms[0], cmp_long);
    fprintf(stderr,
            "session.created webhook -> row in another device's replica (from curl's start, %d "
            "runs): min %ld ms, median %ld ms, max %ld ms; POST answered in median %ld ms\n",
            N, lat[0], lat[N / 2], lat[N - 1], answer_ms[N / 2]);
    /* Printed, not asserted (speed is measured, not asserted): the goal is
    ** < 100 ms; every row arriving (wait_row above) is what must hold. */
    /* A sign-in on a third device shows on B at once. */
    replica(c);
    uint64_t t0 = su_now_ms();
    CHECK_EQ_INT(run_once(c, tok), 0);
    long seen = wait_row(b, "SELECT count(*) >= 3 FROM knit_activity WHERE source = 'knit'", 5000);
    CHECK(seen >= 0);
    fprintf(stderr,
            "sign-in on a third device -> its activity row on device B: %ld ms after "
            "its sync-agent --once ended (%llu ms from its start)\n",
            seen, (unsigned long long)(su_now_ms() - t0));
    /* printed, not asserted: the row is there (seen >= 0), which is what must hold */
    CHECK_OK(su_kill(&pa, SIGTERM, 10000, &status));
    CHECK_OK(su_kill(&pb, SIGTERM, 10000, &status));
    stop();
}

static void memberships(void)
{
    char out[1024], role[64];
    knit_relay_store_t *s;
    int present;
    start(1);
    static const char created[] =
        "{\"type\":\"organizationMembership.created\",\"data\":{\"id\":\"orgmem_1\","
        "\"object\":\"organization_membership\",\"role\":\"org:admin\",\"organization\":{"
        "\"id\":\"org_123\",\"name\":\"Acme\"},\"public_user_data\":{\"user_id\":\"user_m\"},"
        "\"created_at\":1700000000000,\"updated_at\":1700000001000}}";
    static const char deleted[] =
        "{\"type\":\"organizationMembership.deleted\",\"data\":{\"id\":\"orgmem_1\","
        "\"object\":\"organization_membership\",\"role\":\"org:admin\",\"organization\":{"
        "\"id\":\"org_123\"},\"public_user_data\":{\"user_id\":\"user_m\"},"
        "\"updated_at\":1700000003000}}";
    static const char late[] =
        "{\"type\":\"organizationMembership.created\",\"data\":{\"role\":\"org:member\","
        "\"organization\":{\"id\":\"org_123\"},\"public_user_data\":{\"user_id\":\"user_m\"},"
        "\"updated_at\":1700000002000}}";
    CHECK_EQ_INT(deliver("msg_m1", created, out, sizeof out), 200);
    CHECK_OK(knit_relay_store_open(store_path, KNIT_RELAY_STORE_READONLY, &s));
    CHECK_OK(knit_relay_store_member(s, "org_123", "user_m", &present, role, sizeof role));
    CHECK_EQ_INT(present, 1);
    CHECK(strcmp(role, "org:admin") == 0);
    knit_relay_store_close(s);
    CHECK_EQ_INT(deliver("msg_m2", deleted, out, sizeof out), 200);
    CHECK_EQ_INT(deliver("msg_m3", late, out, sizeof out), 200);
    CHECK(strstr(out, "stale") != NULL);
    CHECK_OK(knit_relay_store_open(store_path, KNIT_RELAY_STORE_READONLY, &s));
    CHECK_OK(knit_relay_store_member(s, "org_123", "user_m", &present, role, sizeof role));
    CHECK_EQ_INT(present, -1);
    knit_relay_store_close(s);
    CHECK_EQ_INT(store_int("SELECT count(*) FROM membership WHERE account = 'user:user_m'", NULL),
                 1);
    stop();
}

KNIT_TESTS(T(profile_without_webhooks), T(sign_in_then_webhooks), T(webhook_then_sign_in),
           T(concurrent), T(profile_updates), T(activity_live), T(memberships))
