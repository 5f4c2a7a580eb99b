/*
** test_ws_client_it.c: the sync client over a WebSocket, end to end: the
** real sync-relay (--http-listen, with and without TLS) and sync-agent
** (--relay ws:// and wss://) on 127.0.0.1 with ephemeral ports.  Two
** replicas sync through ws:// and through wss:// with the test CA (and the
** relay's metrics say the sessions were WebSocket ones); wss:// checks the
** certificate like knits://; a port that does not speak HTTP, a 404 path,
** a wrong Sec-WebSocket-Accept and a text message each fail with their own
** message, and --once then exits 1 without "synced".  A small fake server
** (a forked child) plays the relays that misbehave and records what the
** client sent, so masking and the close status are checked on the wire.
** Every wait is bounded; children and the temporary directory are cleaned
** up at exit (sync_util.c).
*/
#define _GNU_SOURCE /* strcasestr */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sync_util.h"
#include "ws.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"

/* A relay with an HTTP port, its JWT secret and alice's token. */
typedef struct world_s {
    su_relay_t relay; /* the relay (relay.port: its binary --listen port) */
    int http_port;    /* its --http-listen port */
    int tls;          /* it has a certificate (wss://) */
    char dir[512];    /* the certificates' directory (tls) */
    char data[512];   /* relay store */
    char secret[512]; /* its JWT secret */
    char token[512];  /* alice's token */
    char ca[600];     /* the trusted CA (tls) */
} world_t;

/* 1 if the agent's output says it synced (" synced with", and not the
** timeout's "not synced with"). */
static int said_synced(const char *out)
{
    for (const char *p = out; (p = strstr(p, " synced with")) != NULL; p++)
        if (p - out < 3 || strncmp(p - 3, "not", 3) != 0)
            return 1;
    return 0;
}

/* A relay on ephemeral ports with --http-listen; with tls, certificates
** from tls_certs.sh and --tls-cert/--tls-key (its HTTP port speaks HTTPS). */
static void world_start(world_t *w, int tls)
{
    char hl[64], c[700], k[700], log[600];
    memset(w, 0, sizeof *w);
    w->tls = tls;
    su_path(w->data, sizeof w->data, "relay.db");
    su_path(w->secret, sizeof w->secret, "secret");
    su_path(w->token, sizeof w->token, "alice.jwt");
    CHECK_OK(su_write_secret(w->secret));
    CHECK_OK(su_write_token(w->secret, "alice", w->token));
    w->http_port = su_free_port();
    CHECK(w->http_port > 0);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", w->http_port);
    if (tls) {
        char cmd[1200], out[2048];
        int rc;
        su_path(w->dir, sizeof w->dir, "certs");
        snprintf(w->ca, sizeof w->ca, "%s/ca.pem", w->dir);
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && sh '%s' '%s'", w->dir, TLS_CERTS_SH, w->dir);
        const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
        rc = su_run(argv, 60000, out, sizeof out);
        if (rc != 0)
            fprintf(stderr, "tls_certs.sh failed (%d): %s\n", rc, out);
        CHECK_EQ_INT(rc, 0);
        snprintf(c, sizeof c, "%s/chain.pem", w->dir);
        snprintf(k, sizeof k, "%s/rsa.key", w->dir);
        const char *extra[] = {"--tls-cert", c, "--tls-key", k, "--http-listen", hl, NULL};
        CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, extra));
    } else {
        const char *extra[] = {"--http-listen", hl, NULL};
        CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, extra));
    }
    /* The HTTP listener is up once the relay said so. */
    snprintf(log, sizeof log, "%s.log", w->data);
    for (int i = 0; i < 200 && !su_file_has(log, "listening on 127.0.0.1"); i++)
        su_sleep_ms(25);
}

/* `sync-agent run replica --relay url --token-file token --once` with
** --timeout timeout_s, plus extra arguments: its exit code and output. */
static int agent_once(const char *replica, const char *url, const char *token, int timeout_s,
                      const char *const *extra, char *out, size_t n)
{
    char tmo[16];
    const char *argv[24];
    int ac = 0;
    snprintf(tmo, sizeof tmo, "%d", timeout_s);
    argv[ac++] = SYNC_AGENT_PATH;
    argv[ac++] = "run";
    argv[ac++] = replica;
    argv[ac++] = "--relay";
    argv[ac++] = url;
    argv[ac++] = "--token-file";
    argv[ac++] = token;
    argv[ac++] = "--once";
    argv[ac++] = "--timeout";
    argv[ac++] = tmo;
    for (size_t i = 0; extra && extra[i] && ac < 22; i++)
        argv[ac++] = extra[i];
    argv[ac] = NULL;
    return su_run(argv, (timeout_s + 10) * 1000, out, n);
}

/* The relay's /metrics through curl (a client nobody here wrote). */
static void metrics(const world_t *w, char *out, size_t n)
{
    char cmd[1600];
    int rc;
    if (w->tls)
        snprintf(cmd, sizeof cmd,
                 "curl -sS --max-time 10 --cacert '%s' --resolve localhost:%d:127.0.0.1 "
                 "https://localhost:%d/metrics 2>&1",
                 w->ca, w->http_port, w->http_port);
    else
        snprintf(cmd, sizeof cmd, "curl -sS --max-time 10 http://127.0.0.1:%d/metrics 2>&1",
                 w->http_port);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    rc = su_run(argv, 20000, out, n);
    if (rc != 0)
        fprintf(stderr, "curl (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

/* A writes a row and syncs through url_a; B syncs through url_b and has
** it; the relay counted both sessions as WebSocket ones, none as TCP. */
static void sync_through(world_t *w, const char *url_a, const char *url_b, const char *const *extra)
{
    char a[600], b[600], out[8192], want[700], log[600];
    sqlite3 *db;
    int rc;
    snprintf(a, sizeof a, "%s/a.db", su_tmpdir());
    snprintf(b, sizeof b, "%s/b.db", su_tmpdir());
    su_make_replica(a, SCHEMA, "items");
    su_make_replica(b, SCHEMA, "items");
    db = su_db(a);
    su_exec(db, "INSERT INTO items VALUES('k1', 'over a websocket')");
    sqlite3_close(db);

    rc = agent_once(a, url_a, w->token, 20, extra, out, sizeof out);
    snprintf(want, sizeof want, " synced with %s as user:alice: pushed 2 changes", url_a);
    if (rc != 0 || !strstr(out, want)) {
        fprintf(stderr, "agent A (%d), wanted \"%s\":\n%s\n", rc, want, out);
        snprintf(log, sizeof log, "%s.log", w->data);
        su_print_file(log);
    }
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, want) != NULL);

    rc = agent_once(b, url_b, w->token, 20, extra, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "agent B (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "received 2") != NULL);
    db = su_db(b);
    CHECK_EQ_INT(su_int(db, "SELECT count(*) FROM items WHERE id='k1' AND name='over a websocket'"),
                 1);
    sqlite3_close(db);

    /* The sessions really went through the WebSocket endpoint. */
    metrics(w, out, sizeof out);
    if (!strstr(out, "knit_relay_connections_total{transport=\"websocket\"} 2"))
        fprintf(stderr, "metrics:\n%.3000s\n", out);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"websocket\"} 2") != NULL);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"tcp\"} 0") != NULL);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"tls\"} 0") != NULL);
}

/* ws://: the default path and the same path spelled out. */
static void ws_syncs(void)
{
    world_t w;
    char u1[64], u2[80];
    world_start(&w, 0);
    snprintf(u1, sizeof u1, "ws://127.0.0.1:%d", w.http_port);
    snprintf(u2, sizeof u2, "ws://127.0.0.1:%d/v1/ws", w.http_port);
    sync_through(&w, u1, u2, NULL);
}

/* wss:// with the test CA: TLS under the WebSocket, checked like knits://. */
static void wss_syncs(void)
{
    world_t w;
    char url[64], out[8192];
    uint64_t t0;
    int rc;
    world_start(&w, 1);
    snprintf(url, sizeof url, "wss://127.0.0.1:%d", w.http_port);
    const char *extra[] = {"--server-name", "localhost", "--ca-file", w.ca, NULL};
    sync_through(&w, url, url, extra);

    /* Without the test CA the certificate is refused, fatally: --once
    ** stops at once, far before its timeout, and never says "synced". */
    char c[600];
    snprintf(c, sizeof c, "%s/c.db", su_tmpdir());
    su_make_replica(c, SCHEMA, "items");
    const char *no_ca[] = {"--server-name", "localhost", NULL};
    t0 = su_now_ms();
    rc = agent_once(c, url, w.token, 30, no_ca, out, sizeof out);
    if (rc != 1 || !strstr(out, "TLS: certificate not trusted"))
        fprintf(stderr, "agent (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "TLS: certificate not trusted") != NULL);
    CHECK(!said_synced(out));
    CHECK(su_now_ms() - t0 < 15000);

    /* ws:// to the HTTPS port: no cleartext HTTP comes back. */
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", w.http_port);
    rc = agent_once(c, url, w.token, 3, NULL, out, sizeof out);
    if (rc != 1 || !strstr(out, "the WebSocket upgrade at /v1/ws"))
        fprintf(stderr, "agent (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "the WebSocket upgrade at /v1/ws") != NULL);
    CHECK(strstr(out, "(with TLS: wss://)") != NULL);
    CHECK(!said_synced(out));
}

/* An agent run that must fail at once: exit 1, want in its output, no
** session. */
static void must_fail(const char *url, const char *token, const char *want, int at_once)
{
    char r[600], out[16384];
    int rc;
    snprintf(r, sizeof r, "%s/f.db", su_tmpdir());
    if (access(r, F_OK) != 0)
        su_make_replica(r, SCHEMA, "items");
    uint64_t t0 = su_now_ms();
    rc = agent_once(r, url, token, at_once ? 30 : 3, NULL, out, sizeof out);
    if (rc != 1 || !strstr(out, want) || said_synced(out))
        fprintf(stderr, "agent on %s (%d), wanted \"%s\":\n%s\n", url, rc, want, out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, want) != NULL);
    CHECK(!said_synced(out));
    if (at_once) {
        /* A refused upgrade does not pass by waiting: --once stops at once,
        ** long before its 30 s timeout. */
        CHECK(strstr(out, "not synced with") == NULL);
        CHECK(su_now_ms() - t0 < 15000);
    } else {
        CHECK(strstr(out, "not synced with") != NULL); /* retried until the timeout */
    }
    CHECK(strstr(out, "online with") == NULL);
}

/* ws:// at the relay's binary port, which speaks frames, not HTTP. */
static void not_http(void)
{
    world_t w;
    char url[64], want[200];
    world_start(&w, 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", w.relay.port);
    snprintf(want, sizeof want,
             "cannot connect: 127.0.0.1:%d: no HTTP answer to the WebSocket upgrade at /v1/ws: "
             "is this port the relay's --http-listen",
             w.relay.port);
    must_fail(url, w.token, want, 1);
}

/* A path the relay does not serve. */
static void not_found(void)
{
    world_t w;
    char url[80];
    world_start(&w, 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/v1/nope", w.http_port);
    must_fail(url, w.token, "relay answered 404 Not Found at /v1/nope: is --http-listen that port",
              1);
}

/* ---------------------------------------------------------------------- */
/* A fake relay                                                             */

enum { FAKE_BAD_ACCEPT, FAKE_TEXT };

/* Reads from fd until the end of an HTTP head; its length, or -1. */
static int read_head(int fd, char *buf, size_t n)
{
    size_t have = 0;
    while (have + 1 < n) {
        ssize_t k = read(fd, buf + have, n - 1 - have);
        if (k <= 0)
            return -1;
        have += (size_t)k;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return (int)have;
    }
    return -1;
}

/* The value of header name in the head req, into out[0..n). */
static int header(const char *req, const char *name, char *out, size_t n)
{
    const char *p = strcasestr(req, name), *e;
    if (!p)
        return -1;
    p += strlen(name);
    while (*p == ' ')
        p++;
    e = strstr(p, "\r\n");
    if (!e || (size_t)(e - p) >= n)
        return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return 0;
}

/* The child: answers every upgrade as mode says and, in FAKE_TEXT mode,
** appends what the client sent after its request to rec. */
static void fake_serve(int lfd, int mode, const char *rec)
{
    alarm(60);
    for (;;) {
        char req[4096], key[64], acc[29], ans[512];
        int fd = accept(lfd, NULL, NULL), n;
        if (fd < 0)
            _exit(1);
        if (read_head(fd, req, sizeof req) < 0 ||
            header(req, "Sec-WebSocket-Key:", key, sizeof key) != 0) {
            close(fd);
            continue;
        }
        if (knit__ws_accept_key(key, strlen(key), acc) != 0 ||
            !strstr(req, "GET /v1/ws HTTP/1.1\r\n") ||
            !strcasestr(req, "\r\nUpgrade: websocket\r\n") ||
            !strcasestr(req, "\r\nConnection: Upgrade\r\n") ||
            !strstr(req, "\r\nSec-WebSocket-Version: 13\r\n") ||
            !strstr(req, "\r\nHost: 127.0.0.1:")) {
            n = snprintf(ans, sizeof ans, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            (void)!write(fd, ans, (size_t)n);
            close(fd);
            continue;
        }
        if (mode == FAKE_BAD_ACCEPT)
            acc[3] = acc[3] == 'A' ? 'B' : 'A';
        /* The 101 and, in the same write as its last two bytes, a text
        ** message: the client must find the head's end across two reads
        ** and take the bytes after it as WebSocket data. */
        n = snprintf(ans, sizeof ans,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n%s",
                     acc, mode == FAKE_TEXT ? "\x81\x02hi" : "");
        if (mode == FAKE_TEXT) {
            size_t cut = (size_t)n - 6; /* inside the empty line */
            (void)!write(fd, ans, cut);
            usleep(100 * 1000);
            (void)!write(fd, ans + cut, (size_t)n - cut);
        } else {
            (void)!write(fd, ans, (size_t)n);
        }
        if (mode == FAKE_TEXT) {
            FILE *f = fopen(rec, "ab");
            struct pollfd p = {fd, POLLIN, 0};
            uint8_t buf[4096];
            ssize_t k;
            while (poll(&p, 1, 5000) > 0 && (k = read(fd, buf, sizeof buf)) > 0)
                fwrite(buf, 1, (size_t)k, f);
            fclose(f);
            _exit(0); /* one connection is enough */
        }
        close(fd);
    }
}

static pid_t fake_pid; /* the fake relay running, or 0 */

/* At exit (a failed CHECK too): the fake relay must not outlive the test,
** or CTest waits for the output pipe it inherited. */
static void fake_kill_at_exit(void)
{
    if (fake_pid > 0)
        kill(fake_pid, SIGKILL);
}

/* Forks a fake relay on an ephemeral port; its port, and its pid in *pid.
** The child only ever leaves through _exit (no exit handlers: they belong
** to the test). */
static int fake_start(int mode, const char *rec, pid_t *pid)
{
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(fd, 16));
    CHECK_OK(getsockname(fd, (struct sockaddr *)&a, &n));
    *pid = fork();
    CHECK(*pid >= 0);
    if (*pid == 0)
        fake_serve(fd, mode, rec);
    if (!fake_pid)
        atexit(fake_kill_at_exit);
    fake_pid = *pid;
    close(fd);
    return ntohs(a.sin_port);
}

static void fake_stop(pid_t pid)
{
    int st;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fake_pid = -1;
}

/* A 101 whose Sec-WebSocket-Accept is not the key's. */
static void bad_accept(void)
{
    char secret[600], token[600], url[64];
    pid_t pid;
    int port;
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    port = fake_start(FAKE_BAD_ACCEPT, NULL, &pid);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    must_fail(url, token, "the 101 answer at /v1/ws has a wrong Sec-WebSocket-Accept", 1);
    fake_stop(pid);
}

/* One WebSocket frame from rec[*off..n): opcode, payload unmasked into
** pay (at most 125 bytes here); -1 at the end or on a bad frame.  Every
** frame a client sends must be masked. */
static int next_frame(const uint8_t *rec, size_t n, size_t *off, int *masked, uint8_t *pay,
                      size_t *plen)
{
    size_t o = *off, len;
    if (o + 2 > n)
        return -1;
    int op = rec[o] & 0x0f;
    *masked = (rec[o + 1] & 0x80) != 0;
    len = rec[o + 1] & 0x7f;
    o += 2;
    if (len == 126) {
        if (o + 2 > n)
            return -1;
        len = (size_t)rec[o] << 8 | rec[o + 1];
        o += 2;
    } else if (len == 127) {
        return -1; /* nothing that long here */
    }
    if (o + (*masked ? 4 : 0) + len > n)
        return -1;
    const uint8_t *mask = rec + o;
    if (*masked)
        o += 4;
    *plen = len < 125 ? len : 125;
    for (size_t i = 0; i < *plen; i++)
        pay[i] = rec[o + i] ^ (*masked ? mask[i % 4] : 0);
    *off = o + len;
    return op;
}

/* A text message (right behind the 101's head, in the same read) ends the session
** with a close frame 1003; what the client sent before it was a masked
** binary message. */
static void text_message(void)
{
    char secret[600], token[600], url[64], rec[600];
    uint8_t buf[65536], pay[125];
    size_t n, off = 0, plen;
    int port, op, masked, binaries = 0, closes = 0;
    pid_t pid;
    FILE *f;
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(rec, sizeof rec, "client.bin");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    port = fake_start(FAKE_TEXT, rec, &pid);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    must_fail(url, token, "connection lost: websocket protocol error", 0);
    fake_stop(pid);

    CHECK((f = fopen(rec, "rb")) != NULL);
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    while ((op = next_frame(buf, n, &off, &masked, pay, &plen)) >= 0) {
        CHECK(masked); /* RFC 6455 5.3: every client frame */
        if (op == 0x2)
            binaries++; /* HELLO */
        if (op == 0x8) {
            closes++;
            CHECK(plen >= 2);
            CHECK_EQ_INT(pay[0] << 8 | pay[1], 1003); /* unsupported data */
        }
    }
    CHECK_EQ_INT(off, n); /* nothing but whole frames */
    CHECK_EQ_INT(binaries, 1);
    CHECK_EQ_INT(closes, 1);
}

/* URLs sync-agent refuses before connecting (usage errors, exit 2). */
static void url_usage(void)
{
    static const char *const bad[][3] = {
        {"ws://127.0.0.1", NULL, "bad --relay ws://127.0.0.1"},
        {"ws://127.0.0.1:7300/a b", NULL, "the path must be visible ASCII"},
        {"ws://127.0.0.1:7300/a#b", NULL, "bad --relay"},
        {"ws://127.0.0.1:7300", "--ca-file", "go with a knits:// or wss:// relay"},
        {"knit://127.0.0.1:7300/v1/ws", NULL, "bad --relay"},
    };
    char r[600], out[4096];
    snprintf(r, sizeof r, "%s/u.db", su_tmpdir());
    su_make_replica(r, SCHEMA, "items");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {SYNC_AGENT_PATH, "run",    r,         "--relay",   bad[i][0],
                              "--anonymous",   "--once", bad[i][1], "/dev/null", NULL};
        int rc = su_run(argv, 10000, out, sizeof out);
        if (rc != 2 || !strstr(out, bad[i][2]))
            fprintf(stderr, "%s (%d), wanted \"%s\":\n%s\n", bad[i][0], rc, bad[i][2], out);
        CHECK_EQ_INT(rc, 2);
        CHECK(strstr(out, bad[i][2]) != NULL);
    }
}

KNIT_TESTS(T(ws_syncs), T(wss_syncs), T(not_http), T(not_found), T(bad_accept), T(text_message),
           T(url_usage))
