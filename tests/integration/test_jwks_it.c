/*
** test_jwks_it.c: provider tokens end to end.  Keys and tokens come from
** Debian's python3-jwt (jwt_mint.py), a library no one here wrote; the
** real sync-relay reads the keys from --jwks-file and checks --issuer and
** --authorized-party; the real sync-agent signs in with the token.  Cases:
** RS256 and ES256 tokens sync, a wrong issuer, party or expired token is
** refused with its reason, and a rotated key (a kid the relay has not
** seen) is found by reading the file again.
**
** The same from --jwks-url: the keys are served by a loopback HTTP server
** (jwks_server.py) that logs every request and can stall.  Cases: tokens
** accepted from the URL; a rotated key found by a refetch; a provider that
** is down, or accepts and never answers, refuses the waiting token with
** the reason while the relay goes on serving other clients at once (its
** loop is not blocked); one fetch in flight however many tokens wait; the
** cooldown between fetches, counted in the server's request log.
*/
#include "test.h"

#include <stdlib.h>
#include <time.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sync_util.h"
#include "wire_client.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"
#define ISS "https://clerk.knit.test"
#define AZP "https://app.knit.test"

static char keys[512]; /* the keys' directory */
static su_relay_t relay;

static void mint_run(const char *const *args, char *out, size_t n)
{
    const char *argv[12];
    int k = 0, rc;
    argv[k++] = "/usr/bin/python3";
    argv[k++] = JWT_MINT_PATH;
    for (int i = 0; args[i] && k < 11; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    rc = su_run(argv, 60000, out, n);
    if (rc != 0)
        fprintf(stderr, "jwt_mint.py %s (%d): %s\n", args[0], rc, out);
    CHECK_EQ_INT(rc, 0);
}

static void make_key(const char *kid, const char *kind)
{
    char out[1024];
    const char *a[] = {"key", keys, kid, kind, NULL};
    mint_run(a, out, sizeof out);
}

static void write_jwks(const char *kid1, const char *kid2)
{
    char out[1024];
    const char *a[] = {"jwks", keys, kid1, kid2, NULL};
    mint_run(a, out, sizeof out);
}

/* A token of kid for sub into a file; its path into path. */
static void token_file(const char *kid, const char *sub, const char *iss, const char *azp,
                       const char *ttl, char *path, size_t n)
{
    static int seq;
    char out[4096];
    FILE *f;
    const char *a[] = {"token", keys, kid, sub, iss, azp, ttl, NULL};
    mint_run(a, out, sizeof out);
    snprintf(path, n, "%s/token-%d.jwt", su_tmpdir(), seq++);
    CHECK((f = fopen(path, "w")) != NULL);
    fputs(out, f);
    fclose(f);
}

static void start(void)
{
    char data[600], jwks[600];
    su_path(keys, sizeof keys, "keys");
    CHECK_OK(mkdir(keys, 0700));
    make_key("rsa-1", "rsa");
    make_key("ec-1", "ec");
    write_jwks("rsa-1", "ec-1");
    su_path(data, sizeof data, "relay.db");
    snprintf(jwks, sizeof jwks, "%s/jwks.json", keys);
    const char *extra[] = {"--jwks-file",     jwks,  "--issuer", ISS, "--authorized-party", AZP,
                           "--jwks-cooldown", "200", NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, NULL, extra));
}

/* `sync-agent run --once` of a new replica with one row, signed in with
** token: its exit code and output. */
static int agent_once(const char *tag, const char *token, char *out, size_t n)
{
    char path[600], url[64];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/%s.db", su_tmpdir(), tag);
    db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *track[] = {SYNC_AGENT_PATH, "track", path, "items", NULL};
    CHECK_EQ_INT(su_run(track, 20000, out, n), 0);
    db = su_db(path);
    su_exec(db, "INSERT INTO items VALUES('%s', 'row')", tag);
    sqlite3_close(db);
    snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "15",      NULL};
    return su_run(run, 40000, out, n);
}

static void expect_synced(const char *tag, const char *token)
{
    char out[8192];
    int rc = agent_once(tag, token, out, sizeof out);
    if (rc != 0 || !strstr(out, "synced"))
        fprintf(stderr, "agent %s (%d): %s\n", tag, rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "as user:alice") != NULL || strstr(out, "user:alice") != NULL);
}

static void expect_refused(const char *tag, const char *token, const char *reason)
{
    char out[8192];
    int rc = agent_once(tag, token, out, sizeof out);
    if (rc != 4 || !strstr(out, reason))
        fprintf(stderr, "agent %s (%d), wanted \"%s\": %s\n", tag, rc, reason, out);
    CHECK_EQ_INT(rc, 4);
    CHECK(strstr(out, reason) != NULL);
    CHECK(strstr(out, "synced with") == NULL);
}

static void rs256_and_es256_sync(void)
{
    char t[600];
    start();
    token_file("rsa-1", "alice", ISS, AZP, "600", t, sizeof t);
    expect_synced("rs", t);
    token_file("ec-1", "alice", ISS, AZP, "600", t, sizeof t);
    expect_synced("es", t);
}

static void claims_refused(void)
{
    char t[600];
    start();
    token_file("rsa-1", "alice", "https://evil.test", AZP, "600", t, sizeof t);
    expect_refused("iss", t, "issuer");
    token_file("ec-1", "alice", ISS, "https://evil.test", "600", t, sizeof t);
    expect_refused("azp", t, "azp");
    token_file("ec-1", "alice", ISS, AZP, "-300", t, sizeof t);
    expect_refused("exp", t, "expired");
}

/* The provider rotates: a new key, listed in the file after the relay
** started.  A token of the new kid makes the relay read the file again. */
static void rotation_reloads(void)
{
    char t[600], log[700];
    start();
    make_key("rsa-2", "rsa");
    token_file("rsa-2", "alice", ISS, AZP, "600", t, sizeof t);
    expect_refused("early", t, "kid"); /* not in the file yet */
    write_jwks("rsa-2", "ec-1");
    su_sleep_ms(300); /* past --jwks-cooldown */
    expect_synced("rotated", t);
    snprintf(log, sizeof log, "%s.log", relay.data);
    {
        char buf[65536];
        FILE *f = fopen(log, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        if (!strstr(buf, "provider keys: reloaded"))
            fprintf(stderr, "relay log (%zu bytes):\n%s\n", n, buf);
        CHECK(strstr(buf, "provider keys: reloaded") != NULL);
    }
}

/* ---------------------------------------------------------------------- */
/* --jwks-url                                                               */

static char served[512]; /* the HTTP server's directory (keys dir) */
static su_proc_t server;
static int server_port;

/* Starts jwks_server.py on the keys directory; waits for its port. */
static void serve(void)
{
    char portf[600], log[600], buf[32];
    uint64_t end = su_now_ms() + 20000;
    FILE *f;
    snprintf(served, sizeof served, "%s", keys);
    snprintf(portf, sizeof portf, "%s/port", served);
    snprintf(log, sizeof log, "%s/server.log", served);
    const char *argv[] = {"/usr/bin/python3", JWKS_SERVER_PATH, served, NULL};
    CHECK_OK(su_spawn(&server, argv, log, NULL));
    server_port = 0;
    while (su_now_ms() < end && !server_port) {
        if ((f = fopen(portf, "r")) != NULL) {
            if (fgets(buf, sizeof buf, f))
                server_port = atoi(buf);
            fclose(f);
        }
        if (!server_port)
            su_sleep_ms(20);
    }
    CHECK(server_port > 0);
}

/* Requests the server has seen. */
static int fetches(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/requests.log", served);
    return su_count_in_file(path, "/jwks.json");
}

static void stall(int on)
{
    char path[600];
    snprintf(path, sizeof path, "%s/stall", served);
    if (on) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        fclose(f);
    } else {
        CHECK_OK(unlink(path));
    }
}

/* Keys rsa-1, ec-1 and rsa-9 (never served); serves rsa-1 and ec-1 when
** serving is set, else points the relay at a port where nothing listens. */
static void start_url(int serving, const char *cooldown, const char *timeout)
{
    char data[600], url[200];
    su_path(keys, sizeof keys, "keys");
    CHECK_OK(mkdir(keys, 0700));
    make_key("rsa-1", "rsa");
    make_key("ec-1", "ec");
    make_key("rsa-9", "rsa");
    write_jwks("rsa-1", "ec-1");
    if (serving)
        serve();
    else
        snprintf(served, sizeof served, "%s", keys);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json",
             serving ? server_port : su_free_port());
    su_path(data, sizeof data, "relay.db");
    const char *extra[] = {"--jwks-url",
                           url,
                           "--issuer",
                           ISS,
                           "--authorized-party",
                           AZP,
                           "--jwks-cooldown",
                           cooldown,
                           "--jwks-timeout",
                           timeout,
                           "--log-level",
                           "debug",
                           NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, NULL, extra));
}

static int relay_log_has(const char *needle)
{
    char log[700];
    snprintf(log, sizeof log, "%s.log", relay.data);
    return su_file_has(log, needle);
}

static int second_fetch(void *arg)
{
    (void)arg;
    return fetches() == 2;
}

static int first_fetch_done(void *arg)
{
    (void)arg;
    return relay_log_has("provider keys: fetched");
}

/* A token of kid for alice, as a wire credential (the string is static,
** one of four). */
static knit_cred_t wire_token(const char *kid)
{
    static char tok[4][4096];
    static int slot;
    char *t = tok[slot++ % 4];
    knit_cred_t c;
    const char *a[] = {"token", keys, kid, "alice", ISS, AZP, "600", NULL};
    mint_run(a, t, sizeof tok[0]);
    t[strcspn(t, "\r\n")] = '\0';
    memset(&c, 0, sizeof c);
    c.kind = KNIT_CRED_JWT;
    c.token = t;
    return c;
}

/* Sends a HELLO of cred without waiting for the answer. */
static void hello_only(wc_t *w, const knit_cred_t *cred)
{
    knit_msg_t m;
    knit_sub_t sub;
    CHECK_OK(wc_connect(w, relay.port, 0));
    wc_hello_msg(&m, &sub, cred, "user:alice", 0, "test_jwks_it");
    CHECK_OK(wc_send(w, &m));
}

/* The answer to a HELLO: WELCOME (1) or ERROR (0, message into why). */
static int answer_of(wc_t *w, int timeout_ms, char *why, size_t n)
{
    knit_msg_t m;
    int ok;
    CHECK_OK(wc_recv(w, timeout_ms, &m));
    ok = m.type == KNIT_MSG_WELCOME;
    if (!ok) {
        CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
        snprintf(why, n, "%s", m.u.error.message ? m.u.error.message : "");
    }
    knit_msg_free(&m);
    return ok;
}

/* Pushes one row to user:alice as push `id` and waits for its ACK. */
static void push_row(wc_t *w, uint64_t id)
{
    static const char *cols[] = {"name"};
    static const uint8_t kinds[] = {0};
    knit_batch_t *b;
    knit_msg_t m;
    knit_value_t pk = {KNIT_INTEGER, {.i = (int64_t)id}};
    knit_change_t c;
    knit_site_t site;
    uint32_t idx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(site.b, 9, sizeof site.b);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, "user:alice", &idx));
    CHECK_OK(knit_batch_site(b, &site, &idx));
    CHECK_OK(knit_batch_table(b, "items", 1, 1, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(b, id));
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = knit_hlc_make((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, 0);
    c.value.type = KNIT_NULL;
    CHECK_OK(knit_batch_add(b, &c));
    c.col = 1;
    c.value.type = KNIT_TEXT;
    c.value.u.b.p = "row";
    c.value.u.b.n = 3;
    CHECK_OK(knit_batch_add(b, &c));
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = id;
    m.u.push.ns = "user:alice";
    m.u.push.batch = b;
    CHECK_OK(wc_send(w, &m));
    knit_batch_free(b);
    CHECK_OK(wc_recv_type(w, 5000, KNIT_MSG_ACK, &m));
    CHECK_EQ_INT(m.u.ack.id, id);
    knit_msg_free(&m);
}

/* HELLO with cred is welcomed as user:alice and a push is acknowledged. */
static void expect_welcome_push(const knit_cred_t *cred, uint64_t id, int timeout_ms)
{
    wc_t w;
    char why[600] = "";
    hello_only(&w, cred);
    if (!answer_of(&w, timeout_ms, why, sizeof why))
        fprintf(stderr, "refused: %s\n", why);
    CHECK(why[0] == '\0');
    push_row(&w, id);
    wc_close(&w);
}

static void url_accepted(void)
{
    start_url(1, "30000", "5000");
    knit_cred_t rs = wire_token("rsa-1"), es = wire_token("ec-1");
    expect_welcome_push(&rs, 1, 10000); /* may wait for the first fetch */
    expect_welcome_push(&es, 2, 10000);
    CHECK(relay_log_has("provider keys: fetched 2 from http://127.0.0.1"));
    CHECK_EQ_INT(fetches(), 1); /* both kids known: no refetch */
}

/* The provider rotates: a kid the relay lacks makes it fetch again. */
static void url_rotation(void)
{
    wc_t w;
    char why[600];
    start_url(1, "200", "5000");
    knit_cred_t before = wire_token("rsa-1");
    expect_welcome_push(&before, 1, 10000);
    CHECK_EQ_INT(fetches(), 1);
    make_key("rsa-2", "rsa");
    knit_cred_t rotated = wire_token("rsa-2");
    su_sleep_ms(300); /* past --jwks-cooldown */
    hello_only(&w, &rotated);
    CHECK_EQ_INT(answer_of(&w, 10000, why, sizeof why), 0); /* fetched again: not served yet */
    CHECK(strstr(why, "kid") != NULL);
    wc_close(&w);
    CHECK_EQ_INT(fetches(), 2);
    write_jwks("rsa-2", "ec-1");
    su_sleep_ms(300);
    expect_welcome_push(&rotated, 2, 10000);
    CHECK_EQ_INT(fetches(), 3);
}

/* Nothing listens at the URL: a clear refusal, and other clients are
** served all the same. */
static void url_down(void)
{
    wc_t w, a;
    knit_msg_t m;
    knit_cred_t an = wc_anon("down-anon", "down-anon-secret-0123456789");
    char why[600];
    start_url(0, "0", "2000");
    knit_cred_t tok = wire_token("rsa-1");
    hello_only(&w, &tok);
    CHECK_EQ_INT(answer_of(&w, 10000, why, sizeof why), 0);
    fprintf(stderr, "refusal: %s\n", why);
    CHECK(strstr(why, "kid is not among the provider's keys") != NULL);
    CHECK(strstr(why, "could not be fetched") != NULL);
    CHECK(strstr(why, "127.0.0.1") != NULL);
    wc_close(&w);
    CHECK_OK(wc_connect(&a, relay.port, 0));
    CHECK_OK(wc_hello(&a, &an, "anon:down-anon", 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    wc_close(&a);
    CHECK(relay_log_has("keeping the 0 keys held"));
}

/* The provider accepts and never answers.  The tokens that wait for it
** share one fetch; meanwhile a token of a known key, an anonymous client
** and a real agent are served at once; the waiting tokens are refused
** when the fetch times out. */
static void url_stalled(void)
{
    enum { WAITERS = 5 };
    wc_t w[WAITERS], k;
    knit_msg_t m;
    char why[600];
    uint64_t t0, took;
    start_url(1, "0", "6000"); /* a fetch may hang 6 s */
    knit_cred_t unknown = wire_token("rsa-9"), known = wire_token("rsa-1");
    CHECK(su_wait_until(first_fetch_done, NULL, 10000));
    CHECK_EQ_INT(fetches(), 1);
    stall(1);
    t0 = su_now_ms();
    for (int i = 0; i < WAITERS; i++)
        hello_only(&w[i], &unknown);
    CHECK(su_wait_until(second_fetch, NULL, 2000)); /* the fetch has started and hangs */

    /* The loop is free: a known key's HELLO and a PING answer at once. */
    uint64_t s0 = su_now_ms();
    hello_only(&k, &known);
    CHECK_EQ_INT(answer_of(&k, 1000, why, sizeof why), 1);
    CHECK_OK(wc_recv_type(&k, 1000, KNIT_MSG_DELTAS, &m)); /* its catch-up */
    knit_msg_free(&m);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PING;
    m.u.ping.nonce = 7;
    CHECK_OK(wc_send(&k, &m));
    CHECK_OK(wc_recv_type(&k, 1000, KNIT_MSG_PONG, &m));
    knit_msg_free(&m);
    push_row(&k, 1); /* and a push is committed and acknowledged */
    took = su_now_ms() - s0;
    fprintf(stderr, "known key while the fetch hangs: WELCOME, PONG and ACK in %llu ms\n",
            (unsigned long long)took);
    /* Well inside the 6 s the fetch hangs (a blocked loop would answer
    ** after it); the waiters, still unanswered below, prove the order. */
    CHECK(took < 2500);
    wc_close(&k);
    /* An anonymous client too. */
    {
        wc_t a;
        knit_cred_t an = wc_anon("stall-anon", "stall-anon-secret-0123456789");
        s0 = su_now_ms();
        CHECK_OK(wc_connect(&a, relay.port, 0));
        CHECK_OK(wc_hello(&a, &an, "anon:stall-anon", 0, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
        knit_msg_free(&m);
        wc_close(&a);
        CHECK(su_now_ms() - s0 < 2500);
    }
    CHECK_EQ_INT(fetches(), 2); /* still the one fetch */
    /* And no waiting token was answered yet. */
    for (int i = 0; i < WAITERS; i++)
        CHECK_EQ_INT(wc_recv(&w[i], 0, &m), KNIT_ETIMEDOUT);

    /* The waiting tokens: refused once the fetch times out. */
    for (int i = 0; i < WAITERS; i++) {
        CHECK_EQ_INT(answer_of(&w[i], 10000, why, sizeof why), 0);
        CHECK(strstr(why, "could not be fetched") != NULL);
        CHECK(strstr(why, "no answer within 6000 ms") != NULL);
        wc_close(&w[i]);
    }
    took = su_now_ms() - t0;
    fprintf(stderr, "waiting tokens refused after %llu ms\n", (unsigned long long)took);
    CHECK(took >= 5800 && took < 15000);
    CHECK_EQ_INT(fetches(), 2);
    stall(0);
    CHECK(relay_log_has("keeping the 2 keys held"));
}

/* Unknown kids within the cooldown do not fetch; after it, one does. */
static void url_cooldown(void)
{
    wc_t w;
    char why[600];
    uint64_t t0;
    start_url(1, "3000", "5000");
    knit_cred_t unknown = wire_token("rsa-9");
    CHECK(su_wait_until(first_fetch_done, NULL, 10000));
    t0 = su_now_ms();
    for (int i = 0; i < 5; i++) {
        hello_only(&w, &unknown);
        CHECK_EQ_INT(answer_of(&w, 2000, why, sizeof why), 0);
        CHECK(strstr(why, "kid is not among the provider's keys") != NULL);
        wc_close(&w);
    }
    CHECK(su_now_ms() - t0 < 2500); /* refused at once, not after a fetch */
    CHECK_EQ_INT(fetches(), 1);
    su_sleep_ms(3200);
    hello_only(&w, &unknown);
    CHECK_EQ_INT(answer_of(&w, 5000, why, sizeof why), 0);
    wc_close(&w);
    CHECK_EQ_INT(fetches(), 2);
    hello_only(&w, &unknown);
    CHECK_EQ_INT(answer_of(&w, 2000, why, sizeof why), 0);
    wc_close(&w);
    CHECK_EQ_INT(fetches(), 2);
}

/* SIGTERM while tokens wait for a hung fetch: they are answered, the
** fetch is abandoned and the relay exits 0 at once. */
static void url_shutdown_waiting(void)
{
    wc_t w;
    knit_msg_t m;
    int status = -1;
    uint64_t t0;
    start_url(1, "0", "9000");
    knit_cred_t unknown = wire_token("rsa-9");
    CHECK(su_wait_until(first_fetch_done, NULL, 10000));
    stall(1);
    hello_only(&w, &unknown);
    su_sleep_ms(200);
    CHECK_EQ_INT(fetches(), 2);
    t0 = su_now_ms();
    CHECK_OK(su_kill(&relay.p, SIGTERM, 10000, &status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(su_now_ms() - t0 < 3000);
    CHECK_OK(wc_recv(&w, 2000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_ECLOSED);
    knit_msg_free(&m);
    wc_close(&w);
    stall(0);
}

KNIT_TESTS(T(rs256_and_es256_sync), T(claims_refused), T(rotation_reloads), T(url_accepted),
           T(url_rotation), T(url_down), T(url_stalled), T(url_cooldown), T(url_shutdown_waiting))
