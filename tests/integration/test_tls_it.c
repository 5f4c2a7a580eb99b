/*
** test_tls_it.c: TLS end to end: the real sync-relay (--tls-cert,
** --tls-key) and sync-agent (knits://) on 127.0.0.1 with ephemeral ports,
** with certificates made at test time by the openssl command-line tool
** (tls_certs.sh): a chain that syncs, each refusal with its own message,
** openssl s_client as a client nobody here wrote, a reload on SIGHUP, the
** cleartext warning.  Every wait is bounded; children and the temporary
** directory are cleaned up at exit (sync_util.c).
*/
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sync_util.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"

/* A relay with TLS, its JWT secret, alice's token and the certificates. */
typedef struct world_s {
    su_relay_t relay; /* the relay */
    char dir[512];    /* the certificates' directory */
    char data[512];   /* relay store */
    char secret[512]; /* its JWT secret */
    char token[512];  /* alice's token */
    char ca[600];     /* the trusted CA */
} world_t;

static char *cert(const world_t *w, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", w->dir, name);
    return buf;
}

/* Makes the certificates and the credentials; no relay yet. */
static void world_init(world_t *w)
{
    char cmd[1200], out[2048];
    memset(w, 0, sizeof *w);
    su_path(w->dir, sizeof w->dir, "certs");
    su_path(w->data, sizeof w->data, "relay.db");
    su_path(w->secret, sizeof w->secret, "secret");
    su_path(w->token, sizeof w->token, "alice.jwt");
    snprintf(w->ca, sizeof w->ca, "%s/ca.pem", w->dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && sh '%s' '%s'", w->dir, TLS_CERTS_SH, w->dir);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = su_run(argv, 60000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "tls_certs.sh failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_write_secret(w->secret));
    CHECK_OK(su_write_token(w->secret, "alice", w->token));
}

static void relay_start(world_t *w, const char *certfile, const char *keyfile)
{
    const char *extra[] = {"--tls-cert", certfile, "--tls-key", keyfile, NULL};
    CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, extra));
}

static void relay_log(const world_t *w, char *buf, size_t n)
{
    snprintf(buf, n, "%s.log", w->data);
}

/* `sync-agent run replica --relay knits://127.0.0.1:PORT --once` with
** trust in ca (NULL: the system's): its exit code and output. */
static int agent_once(const world_t *w, const char *replica, const char *ca, char *out, size_t n)
{
    char relay[64];
    const char *argv[16];
    int ac = 0;
    snprintf(relay, sizeof relay, "knits://127.0.0.1:%d", w->relay.port);
    argv[ac++] = SYNC_AGENT_PATH;
    argv[ac++] = "run";
    argv[ac++] = replica;
    argv[ac++] = "--relay";
    argv[ac++] = relay;
    argv[ac++] = "--server-name";
    argv[ac++] = "localhost";
    argv[ac++] = "--token-file";
    argv[ac++] = w->token;
    argv[ac++] = "--once";
    argv[ac++] = "--timeout";
    argv[ac++] = "20";
    if (ca) {
        argv[ac++] = "--ca-file";
        argv[ac++] = ca;
    }
    argv[ac] = NULL;
    return su_run(argv, 30000, out, n);
}

/* A writes a row, syncs; B syncs and has it: over TLS, end to end. */
static void sync_through(world_t *w, const char *tag)
{
    char a[600], b[600], out[4096];
    sqlite3 *db;
    int rc;
    snprintf(a, sizeof a, "%s/a-%s.db", su_tmpdir(), tag);
    snprintf(b, sizeof b, "%s/b-%s.db", su_tmpdir(), tag);
    su_make_replica(a, SCHEMA, "items");
    su_make_replica(b, SCHEMA, "items");
    db = su_db(a);
    su_exec(db, "INSERT INTO items VALUES('k1', 'over %s')", tag);
    sqlite3_close(db);
    rc = agent_once(w, a, w->ca, out, sizeof out);
    if (rc != 0 || !strstr(out, " synced with knits://"))
        fprintf(stderr, "agent A (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    rc = agent_once(w, b, w->ca, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "agent B (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id='k1' AND name='over %s'", tag), 1);
    sqlite3_close(db);
}

/* An RSA certificate signed by an intermediate, served as a chain. */
static void chain_syncs(void)
{
    world_t w;
    char c[700], k[700], log[600];
    world_init(&w);
    relay_start(&w, cert(&w, "chain.pem", c, sizeof c), cert(&w, "rsa.key", k, sizeof k));
    sync_through(&w, "rsa");
    relay_log(&w, log, sizeof log);
    CHECK(su_file_has(log, "listening on 127.0.0.1"));
    CHECK(su_file_has(log, "(TLS)"));
    CHECK(!su_file_has(log, "cleartext"));
}

/* An EC (P-256) key. */
static void ec_key_syncs(void)
{
    world_t w;
    char c[700], k[700];
    world_init(&w);
    relay_start(&w, cert(&w, "ec.pem", c, sizeof c), cert(&w, "ec.key", k, sizeof k));
    sync_through(&w, "ec");
}

/* The relay serves cert; the agent must refuse it with want in its
** message, exit 1, and never say "synced". */
static void refused(const char *certname, const char *keyname, const char *ca_name,
                    const char *want)
{
    world_t w;
    char c[700], k[700], a[600], ca[700], out[8192], log[600];
    uint64_t t0;
    int rc;
    world_init(&w);
    relay_start(&w, cert(&w, certname, c, sizeof c), cert(&w, keyname, k, sizeof k));
    snprintf(a, sizeof a, "%s/a.db", su_tmpdir());
    su_make_replica(a, SCHEMA, "items");
    t0 = su_now_ms();
    rc = agent_once(&w, a, ca_name ? cert(&w, ca_name, ca, sizeof ca) : NULL, out, sizeof out);
    if (rc != 1 || !strstr(out, want) || strstr(out, " synced with")) {
        fprintf(stderr, "agent (%d), wanted \"%s\":\n%s\n", rc, want, out);
        relay_log(&w, log, sizeof log);
        su_print_file(log);
    }
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, " synced with") == NULL);
    CHECK(strstr(out, "online with") == NULL);
    /* A refused certificate is final: --once stops at once, not at its timeout. */
    CHECK(su_now_ms() - t0 < 15000);
}

static void refuses_untrusted(void)
{
    refused("untrusted.pem", "untrusted.key", "ca.pem", "TLS: certificate not trusted");
}

static void refuses_expired(void)
{
    refused("expired.pem", "expired.key", "ca.pem", "TLS: certificate expired");
}

static void refuses_wrong_name(void)
{
    refused("wrongname.pem", "wrongname.key", "ca.pem", "TLS: certificate is not for localhost");
}

/* Default trust is the system bundle, which does not hold the test CA. */
static void refuses_without_ca_file(void)
{
    refused("chain.pem", "rsa.key", NULL, "TLS: certificate not trusted");
}

/* openssl s_client: a full handshake with a verified chain, TLS 1.2. */
static int s_client(const world_t *w, char *out, size_t n)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "echo | openssl s_client -connect 127.0.0.1:%d -servername localhost "
             "-verify_hostname localhost -verify_return_error -CAfile '%s' 2>&1",
             w->relay.port, w->ca);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return su_run(argv, 20000, out, n);
}

static void s_client_handshake(void)
{
    world_t w;
    char c[700], k[700], out[16384];
    int rc;
    world_init(&w);
    relay_start(&w, cert(&w, "chain.pem", c, sizeof c), cert(&w, "rsa.key", k, sizeof k));
    rc = s_client(&w, out, sizeof out);
    if (rc != 0 || !strstr(out, "Verify return code: 0 (ok)"))
        fprintf(stderr, "s_client (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "Verify return code: 0 (ok)") != NULL);
    CHECK(strstr(out, "TLSv1.2") != NULL);
    CHECK(strstr(out, "CN = knit test intermediate") != NULL); /* the chain was sent */
}

static int copy_file(const char *from, const char *to)
{
    char cmd[2600], out[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s.new' && mv '%s.new' '%s'", from, to, to, to);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return su_run(argv, 10000, out, sizeof out);
}

static int reloaded(void *arg)
{
    return su_file_has(arg, "SIGHUP: reloaded");
}

static int online(void *arg)
{
    return su_file_has(arg, "online with");
}

/* SIGHUP: new connections get the new certificate, an open session
** keeps working on the old one. */
static void sighup_reload(void)
{
    world_t w;
    char c[700], k[700], cur_c[600], cur_k[600], a[600], b[600], alog[600], log[600];
    char relay[64], out[16384];
    su_proc_t agent;
    sqlite3 *db;
    int rc, st, got = 0;
    uint64_t end;

    world_init(&w);
    su_path(cur_c, sizeof cur_c, "cur.pem");
    su_path(cur_k, sizeof cur_k, "cur.key");
    CHECK_OK(copy_file(cert(&w, "chain.pem", c, sizeof c), cur_c));
    CHECK_OK(copy_file(cert(&w, "rsa.key", k, sizeof k), cur_k));
    relay_start(&w, cur_c, cur_k);
    relay_log(&w, log, sizeof log);

    /* A long-lived session from A. */
    snprintf(a, sizeof a, "%s/a.db", su_tmpdir());
    snprintf(b, sizeof b, "%s/b.db", su_tmpdir());
    su_path(alog, sizeof alog, "agent-a.log");
    su_make_replica(a, SCHEMA, "items");
    su_make_replica(b, SCHEMA, "items");
    snprintf(relay, sizeof relay, "knits://127.0.0.1:%d", w.relay.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",       a,           "--relay", relay,
                          "--server-name", "localhost", "--ca-file", w.ca,      "--token-file",
                          w.token,         NULL};
    CHECK_OK(su_spawn(&agent, argv, alog, NULL));
    if (!su_wait_until(online, alog, 20000))
        su_print_file(alog);
    CHECK(online(alog));

    rc = s_client(&w, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "CN = knit relay") != NULL);

    /* New certificate in place, then SIGHUP. */
    CHECK_OK(copy_file(cert(&w, "reload.pem", c, sizeof c), cur_c));
    CHECK_OK(copy_file(cert(&w, "reload.key", k, sizeof k), cur_k));
    CHECK_OK(kill(w.relay.p.pid, SIGHUP));
    if (!su_wait_until(reloaded, log, 10000))
        su_print_file(log);
    CHECK(reloaded(log));
    rc = s_client(&w, out, sizeof out);
    if (rc != 0 || !strstr(out, "CN = knit reloaded"))
        fprintf(stderr, "s_client after SIGHUP (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "CN = knit reloaded") != NULL);

    /* The old session still carries A's writes; a new one (B) fetches them. */
    db = su_db(a);
    su_exec(db, "INSERT INTO items VALUES('after', 'reload')");
    sqlite3_close(db);
    end = su_now_ms() + 20000;
    while (!got && su_now_ms() < end) {
        rc = agent_once(&w, b, w.ca, out, sizeof out);
        CHECK_EQ_INT(rc, 0);
        db = su_db(b);
        got = su_int(db, "SELECT count(*) FROM items WHERE id='after'") == 1;
        sqlite3_close(db);
        if (!got)
            su_sleep_ms(100);
    }
    if (!got) {
        su_print_file(alog);
        su_print_file(log);
    }
    CHECK(got);
    CHECK_EQ_INT(su_count_in_file(alog, "online with"), 1); /* never reconnected */
    CHECK(agent.pid != 0 && su_wait(&agent, 0, &st) != 0);  /* still running */

    /* A reload that fails keeps the certificate in use. */
    CHECK_OK(copy_file(cert(&w, "ec.key", k, sizeof k), cur_k)); /* does not match */
    CHECK_OK(kill(w.relay.p.pid, SIGHUP));
    end = su_now_ms() + 10000;
    while (!su_file_has(log, "reload failed") && su_now_ms() < end)
        su_sleep_ms(20);
    CHECK(su_file_has(log, "reload failed"));
    rc = s_client(&w, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "CN = knit reloaded") != NULL);
    CHECK_OK(su_kill(&agent, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Cleartext on a non-loopback address is logged as a warning; on loopback
** it is not. */
static void cleartext_warning(void)
{
    world_t w;
    char log[700], data2[600];
    su_relay_t r2;
    world_init(&w);
    const char *any[] = {"--listen", "0.0.0.0:0", NULL};
    CHECK_OK(su_relay_start(&w.relay, 0, w.data, w.secret, any)); /* the later --listen wins */
    relay_log(&w, log, sizeof log);
    CHECK(su_file_has(log, "listening in cleartext on 0.0.0.0"));
    su_path(data2, sizeof data2, "relay2.db");
    CHECK_OK(su_relay_start(&r2, 0, data2, w.secret, NULL));
    snprintf(log, sizeof log, "%s.log", data2);
    CHECK(su_file_has(log, "listening on 127.0.0.1"));
    CHECK(!su_file_has(log, "cleartext"));
}

/* curl (a client no one here wrote) on URL with trust in ca: its exit
** code; the body into out. */
static int curl_get(const char *url, int port, const char *ca, char *out, size_t n)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 10 --cacert '%s' --resolve localhost:%d:127.0.0.1 '%s' 2>&1", ca,
             port, url);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return su_run(argv, 20000, out, n);
}

/* With TLS configured, --http-listen speaks HTTPS: curl checks the chain,
** plain HTTP gets nothing, and the metrics count TLS sessions as "tls". */
static void https_surface(void)
{
    world_t w;
    char c[700], k[700], hl[64], url[128], out[65536], log[600];
    int hp = su_free_port(), rc;
    world_init(&w);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
    const char *extra[] = {"--tls-cert",
                           cert(&w, "chain.pem", c, sizeof c),
                           "--tls-key",
                           cert(&w, "rsa.key", k, sizeof k),
                           "--http-listen",
                           hl,
                           NULL};
    CHECK_OK(su_relay_start(&w.relay, 0, w.data, w.secret, extra));
    relay_log(&w, log, sizeof log);
    CHECK(su_file_has(log, "https listening on 127.0.0.1"));

    snprintf(url, sizeof url, "https://localhost:%d/healthz", hp);
    rc = curl_get(url, hp, w.ca, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "curl healthz (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strncmp(out, "ok", 2) == 0);

    snprintf(url, sizeof url, "http://localhost:%d/healthz", hp); /* cleartext: refused */
    CHECK(curl_get(url, hp, w.ca, out, sizeof out) != 0);

    sync_through(&w, "https");
    snprintf(url, sizeof url, "https://localhost:%d/metrics", hp);
    CHECK_EQ_INT(curl_get(url, hp, w.ca, out, sizeof out), 0);
    if (!strstr(out, "knit_relay_connections_total{transport=\"tls\"} 2"))
        fprintf(stderr, "metrics:\n%.3000s\n", out);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"tls\"} 2") != NULL);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"tcp\"} 0") != NULL);
}

KNIT_TESTS(T(chain_syncs), T(ec_key_syncs), T(refuses_untrusted), T(refuses_expired),
           T(refuses_wrong_name), T(refuses_without_ca_file), T(s_client_handshake),
           T(sighup_reload), T(cleartext_warning), T(https_surface))
