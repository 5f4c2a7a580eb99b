/*
** test_org_it.c: organization namespaces with roles, end to end.  The real
** sync-relay (keys from --jwks-file, Clerk-style tokens minted by Debian's
** python3-jwt through jwt_mint.py, organizationMembership webhooks signed
** as Svix signs them) and real sync-agent replicas whose table names the
** column that selects a row's namespace (sync-agent track --ns org_id).
**
**   viewer_rolled_back  a member and a viewer of acme (the token's "o"
**                       claim): the member's org rows reach the viewer and
**                       its own rows do not; the viewer's offline writes to
**                       acme are refused, rolled back (the insert is gone,
**                       the update reverts, _knit_rejected says why) and
**                       not retried, while its own row is kept; digests of
**                       org:acme agree on both replicas and the relay
**   move_between        a row moved by its org_id (private -> acme -> beta
**                       -> private) appears and disappears on the other
**                       members' replicas, with its values
**   webhook_grants      a non-member's write to acme is refused and rolled
**                       back; a member by webhook alone (token without an
**                       organization) gets and writes acme's rows; a live
**                       agent whose membership is deleted is disconnected,
**                       reconnects, and its replica drops acme's rows and
**                       keeps its own
*/
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "knit.h"
#include "idp_util.h"
#include "sync_util.h"

#define SCHEMA "CREATE TABLE docs(id TEXT PRIMARY KEY, title TEXT NOT NULL, org_id TEXT);"

static char g_keys[600];
static su_relay_t relay;
static int http_port;
static char store_path[600];

static void mint(const char *sub, const char *claims, const char *path)
{
    idp_mint(g_keys, sub, claims, path);
}

static void start(void)
{
    su_path(store_path, sizeof store_path, "relay.db");
    idp_relay_start(&relay, g_keys, sizeof g_keys, store_path, 1, &http_port);
}

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
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "docs", "--ns", "org_id", NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "track: %s\n", out);
    CHECK_EQ_INT(rc, 0);
}

static int run_once(const char *path, const char *token, char *out, size_t n)
{
    char url[64], buf[16384];
    if (!out) {
        out = buf;
        n = sizeof buf;
    }
    snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "15",      NULL};
    int rc = su_run(run, 40000, out, n);
    if (rc != 0)
        fprintf(stderr, "sync-agent run --once (%d): %s\n", rc, out);
    return rc;
}

static int deliver(const char *id, const char *body)
{
    char out[1024];
    return idp_deliver(http_port, id, body, out, sizeof out);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* organizationMembership.<what> for user in org with role, updated now
** (after the tokens were minted, so it is the newer word). */
static int membership(const char *id, const char *what, const char *user, const char *org,
                      const char *role)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"type\":\"organizationMembership.%s\",\"object\":\"event\",\"data\":{"
             "\"id\":\"orgmem_%s_%s\",\"object\":\"organization_membership\",\"role\":\"%s\","
             "\"organization\":{\"id\":\"%s\",\"name\":\"%s\"},"
             "\"public_user_data\":{\"user_id\":\"%s\"},"
             "\"created_at\":1700000000000,\"updated_at\":%llu}}",
             what, user, org, role, org, org, user, (unsigned long long)wall_ms() + 1000);
    return deliver(id, body);
}

static int64_t rep_int(const char *path, const char *sql)
{
    sqlite3 *db = su_db(path);
    int64_t v = su_int(db, "%s", sql);
    sqlite3_close(db);
    return v;
}

static void rep_exec(const char *path, const char *sql)
{
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", sql);
    sqlite3_close(db);
}

static int has(const char *path, const char *id)
{
    sqlite3 *db = su_db(path);
    int64_t v = su_int(db, "SELECT count(*) FROM docs WHERE id = '%s'", id);
    sqlite3_close(db);
    return (int)v;
}

static int64_t pending_of(const char *path)
{
    knit_t *k = NULL;
    uint64_t n = 0;
    CHECK_OK(knit_open(path, NULL, &k));
    CHECK_OK(knit_pending(k, &n));
    knit_close(k);
    if (n)
        fprintf(stderr, "%s: %llu pending\n", path, (unsigned long long)n);
    return (int64_t)n;
}

static void same_digest(const char *ns, const char *a, const char *b)
{
    char da[65], db[65], dr[65];
    CHECK_OK(su_replica_digest(a, ns, da));
    CHECK_OK(su_replica_digest(b, ns, db));
    CHECK_OK(su_relay_digest(store_path, ns, dr));
    if (strcmp(da, dr) != 0 || strcmp(db, dr) != 0)
        fprintf(stderr, "digests of %s: %s %s relay %s\n", ns, da, db, dr);
    CHECK_STR(da, dr);
    CHECK_STR(db, dr);
}

/* ---------------------------------------------------------------------- */

static void viewer_rolled_back(void)
{
    char tm[700], tv[700], rm[700], rv[700], out[16384];
    start();
    su_path(tm, sizeof tm, "member.jwt");
    su_path(tv, sizeof tv, "viewer.jwt");
    mint("user_m", "{\"o\":{\"id\":\"acme\",\"rol\":\"member\"}}", tm);
    mint("user_v", "{\"o\":{\"id\":\"acme\",\"rol\":\"viewer\"}}", tv);
    su_path(rm, sizeof rm, "member.db");
    su_path(rv, sizeof rv, "viewer.db");
    replica(rm);
    replica(rv);

    rep_exec(rm, "INSERT INTO docs VALUES ('d1', 'plan', 'acme'), ('d2', 'budget', 'acme'),"
                 " ('p1', 'private notes', NULL)");
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_OK(run_once(rv, tv, NULL, 0));
    CHECK_EQ_INT(has(rv, "d1"), 1);
    CHECK_EQ_INT(has(rv, "d2"), 1);
    CHECK_EQ_INT(has(rv, "p1"), 0); /* the member's own namespace */

    /* Offline, the viewer writes acme's rows and one of its own. */
    rep_exec(rv, "INSERT INTO docs VALUES ('v1', 'viewer wrote', 'acme');"
                 "UPDATE docs SET title = 'hacked' WHERE id = 'd1';"
                 "DELETE FROM docs WHERE id = 'd2';"
                 "INSERT INTO docs VALUES ('vp', 'mine', NULL);");
    CHECK_OK(run_once(rv, tv, out, sizeof out));
    CHECK(strstr(out, "read-only") != NULL); /* sync-agent logs the refusal */
    CHECK_EQ_INT(has(rv, "v1"), 0);          /* the refused insert is gone */
    CHECK_EQ_INT(rep_int(rv, "SELECT count(*) FROM docs WHERE id = 'd1' AND title = 'plan'"), 1);
    CHECK_EQ_INT(has(rv, "d2"), 1); /* the refused delete is undone */
    CHECK_EQ_INT(has(rv, "vp"), 1); /* its own write is kept */
    CHECK(rep_int(rv, "SELECT count(*) FROM _knit_rejected WHERE ns = 'org:acme' AND tbl = 'docs'"
                      " AND reason LIKE '%read-only%' AND rolled_back = 1") >= 3);
    CHECK_EQ_INT(rep_int(rv, "SELECT count(*) FROM _knit_rejected WHERE key LIKE '%vp%'"), 0);
    /* Not retried: nothing is pending, and a second run refuses nothing more. */
    int64_t refusals = rep_int(rv, "SELECT count(*) FROM _knit_rejected");
    CHECK_OK(run_once(rv, tv, out, sizeof out));
    CHECK_EQ_INT(rep_int(rv, "SELECT count(*) FROM _knit_rejected"), refusals);

    /* The member's replica never saw the viewer's writes. */
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_EQ_INT(has(rm, "v1"), 0);
    CHECK_EQ_INT(has(rm, "vp"), 0);
    CHECK_EQ_INT(rep_int(rm, "SELECT count(*) FROM docs WHERE id = 'd1' AND title = 'plan'"), 1);
    CHECK_EQ_INT(has(rm, "d2"), 1);
    /* The member's writes are kept and reach the viewer. */
    rep_exec(rm, "UPDATE docs SET title = 'plan v2' WHERE id = 'd1'");
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_OK(run_once(rv, tv, NULL, 0));
    CHECK_EQ_INT(rep_int(rv, "SELECT count(*) FROM docs WHERE id = 'd1' AND title = 'plan v2'"), 1);
    same_digest("org:acme", rm, rv);
    stop();
}

static void move_between(void)
{
    char ta[700], tb[700], ra[700], rb[700];
    start();
    su_path(ta, sizeof ta, "a.jwt");
    su_path(tb, sizeof tb, "b.jwt");
    /* a: admin of acme by token and member of beta by webhook; b: member
    ** of acme by token and of beta by webhook. */
    mint("user_a", "{\"o\":{\"id\":\"acme\",\"rol\":\"org:admin\"}}", ta);
    mint("user_b", "{\"org_id\":\"acme\",\"org_role\":\"org:member\"}", tb);
    CHECK_EQ_INT(membership("m_a_beta", "created", "user_a", "beta", "org:member"), 200);
    CHECK_EQ_INT(membership("m_b_beta", "created", "user_b", "beta", "org:member"), 200);
    su_path(ra, sizeof ra, "a.db");
    su_path(rb, sizeof rb, "b.db");
    replica(ra);
    replica(rb);
    rep_exec(ra, "INSERT INTO docs VALUES ('x', 'draft', NULL)");
    CHECK_OK(run_once(ra, ta, NULL, 0));
    CHECK_OK(run_once(rb, tb, NULL, 0));
    CHECK_EQ_INT(has(rb, "x"), 0);
    static const char *path[] = {"'acme'", "'beta'", "NULL", "'beta'"};
    for (int i = 0; i < 4; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "UPDATE docs SET org_id = %s, title = 'draft %d' WHERE id = 'x'",
                 path[i], i);
        rep_exec(ra, sql);
        CHECK_OK(run_once(ra, ta, NULL, 0));
        CHECK_OK(run_once(rb, tb, NULL, 0));
        int shared = strcmp(path[i], "NULL") != 0;
        CHECK_EQ_INT(has(rb, "x"), shared);
        if (shared) {
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM docs WHERE id = 'x' AND title = 'draft %d' AND"
                     " org_id = %s",
                     i, path[i]);
            CHECK_EQ_INT(rep_int(rb, sql), 1);
        }
        CHECK_EQ_INT(rep_int(ra, "SELECT count(*) FROM docs WHERE id = 'x'"), 1);
        same_digest("org:acme", ra, rb);
        same_digest("org:beta", ra, rb);
    }
    /* b edits it in beta, then moves it back to acme: a follows. */
    rep_exec(rb, "UPDATE docs SET title = 'by b' WHERE id = 'x'");
    CHECK_OK(run_once(rb, tb, NULL, 0));
    rep_exec(rb, "UPDATE docs SET org_id = 'acme' WHERE id = 'x'");
    CHECK_OK(run_once(rb, tb, NULL, 0));
    CHECK_OK(run_once(ra, ta, NULL, 0));
    CHECK_EQ_INT(
        rep_int(ra,
                "SELECT count(*) FROM docs WHERE id = 'x' AND title = 'by b' AND org_id = 'acme'"),
        1);
    same_digest("org:acme", ra, rb);
    same_digest("org:beta", ra, rb);
    CHECK_EQ_INT(pending_of(ra), 0);
    CHECK_EQ_INT(pending_of(rb), 0);
    stop();
}

typedef struct gone_s {
    const char *path;
    const char *id;
} gone_t;

static int row_gone(void *arg)
{
    gone_t *g = arg;
    return has(g->path, g->id) == 0;
}

static void webhook_grants(void)
{
    char tm[700], tw[700], rm[700], rw[700], log[700];
    start();
    su_path(tm, sizeof tm, "m.jwt");
    su_path(tw, sizeof tw, "w.jwt");
    mint("user_m", "{\"o\":{\"id\":\"acme\",\"rol\":\"admin\"}}", tm);
    mint("user_w", NULL, tw); /* no organization in the token */
    su_path(rm, sizeof rm, "m.db");
    su_path(rw, sizeof rw, "w.db");
    replica(rm);
    replica(rw);
    rep_exec(rm, "INSERT INTO docs VALUES ('a1', 'shared', 'acme')");
    CHECK_OK(run_once(rm, tm, NULL, 0));
    /* Not a member yet: nothing of acme arrives, and a write to acme is
    ** refused and rolled back (without acme's state), not left pending. */
    rep_exec(rw, "INSERT INTO docs VALUES ('w0', 'mine', NULL), ('a1', 'guess', 'acme')");
    CHECK_OK(run_once(rw, tw, NULL, 0));
    CHECK_EQ_INT(has(rw, "a1"), 0);
    CHECK_EQ_INT(has(rw, "w0"), 1);
    CHECK(rep_int(rw, "SELECT count(*) FROM _knit_rejected WHERE ns = 'org:acme' AND"
                      " reason LIKE '%not granted%' AND rolled_back = 1") >= 1);
    CHECK_EQ_INT(pending_of(rw), 0);
    CHECK_EQ_INT(membership("m_w_1", "created", "user_w", "acme", "org:member"), 200);
    CHECK_OK(run_once(rw, tw, NULL, 0));
    CHECK_EQ_INT(has(rw, "a1"), 1);
    rep_exec(rw, "INSERT INTO docs VALUES ('w1', 'from w', 'acme')");
    CHECK_OK(run_once(rw, tw, NULL, 0));
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_EQ_INT(has(rm, "w1"), 1);
    CHECK_EQ_INT(has(rm, "w0"), 0);

    /* Live: w's agent runs; its membership is deleted. */
    su_proc_t pw;
    su_path(log, sizeof log, "w-agent.log");
    const char *extra[] = {"--log-level", "info", NULL};
    CHECK_OK(su_agent_start(&pw, rw, relay.port, tw, log, extra));
    CHECK_EQ_INT(membership("m_w_2", "deleted", "user_w", "acme", "org:member"), 200);
    gone_t g = {rw, "a1"};
    if (!su_wait_until(row_gone, &g, 20000)) {
        su_print_file(log);
        su_print_file(relay.p.log);
        sqlite3 *db = su_db(rw);
        char *d = su_dump(db, "docs", "id");
        fprintf(stderr, "docs of w: %s\n", d ? d : "?");
        free(d);
        sqlite3_close(db);
        CHECK(!"the revoked organization's rows left the replica");
    }
    CHECK_EQ_INT(has(rw, "w1"), 0);
    CHECK_EQ_INT(has(rw, "w0"), 1); /* its own row stays */
    CHECK(su_file_has(log, "no longer granted"));
    /* Online and no longer a member: a write to acme goes to the relay,
    ** which refuses it change by change; the agent rolls it back. */
    rep_exec(rw, "INSERT INTO docs VALUES ('a9', 'too late', 'acme')");
    gone_t g9 = {rw, "a9"};
    CHECK(su_wait_until(row_gone, &g9, 20000));
    CHECK(rep_int(rw, "SELECT count(*) FROM _knit_rejected WHERE key LIKE '%a9%' AND"
                      " reason LIKE '%not a member%' AND rolled_back = 1") >= 1);
    int status;
    CHECK_OK(su_kill(&pw, SIGTERM, 10000, &status));
    /* The relay keeps acme's rows for its members. */
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_EQ_INT(has(rm, "a1"), 1);
    CHECK_EQ_INT(has(rm, "w1"), 1);

    /* Revoked while offline: w's unacknowledged acme write is refused
    ** for good (recorded, gone), not left pending. */
    CHECK_EQ_INT(membership("m_w_3", "created", "user_w", "acme", "org:member"), 200);
    CHECK_OK(run_once(rw, tw, NULL, 0));
    CHECK_EQ_INT(has(rw, "a1"), 1);
    rep_exec(rw, "INSERT INTO docs VALUES ('w2', 'offline', 'acme');"
                 "INSERT INTO docs VALUES ('w3', 'offline, mine', NULL)");
    CHECK_EQ_INT(membership("m_w_4", "deleted", "user_w", "acme", "org:member"), 200);
    char out[16384];
    CHECK_OK(run_once(rw, tw, out, sizeof out));
    CHECK(strstr(out, "no longer granted") != NULL);
    CHECK_EQ_INT(has(rw, "w2"), 0);
    CHECK_EQ_INT(has(rw, "a1"), 0);
    CHECK_EQ_INT(has(rw, "w3"), 1);
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM _knit_rejected WHERE ns = 'org:acme' AND"
                             " key LIKE '%w2%' AND reason LIKE '%not granted%'"),
                 3); /* its liveness and two columns */
    CHECK_EQ_INT(pending_of(rw), 0);
    CHECK_OK(run_once(rm, tm, NULL, 0));
    CHECK_EQ_INT(has(rm, "w2"), 0);
    stop();
}

KNIT_TESTS(T(viewer_rolled_back), T(move_between), T(webhook_grants))
