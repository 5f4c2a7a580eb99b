/*
** test_http_it.c: the relay's HTTP surface, on the real sync-relay
** program started with --http-listen on 127.0.0.1 (ephemeral ports).
**
** HTTP is spoken by clients no one here wrote: curl for /healthz and
** /metrics, promtool for the exposition format, python3-websockets
** (ws_client.py) for the WebSocket sessions, whose protocol bytes this file
** makes and checks with knit's codec.  Malformed and hostile requests go
** over raw sockets.  Each case starts its own relay in a fresh directory,
** is bounded by alarm(), and stops the relay and removes the directory.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "test.h"
#include "http_harness.h"
#include "wire_client.h"

/* ---------------------------------------------------------------------- */
/* Clients                                                                  */

/* Runs a shell command, its stdout into out (NUL-terminated); the exit code. */
static int run(const char *cmd, char *out, size_t n)
{
    FILE *f = popen(cmd, "r");
    size_t k = 0;
    int st;
    CHECK(f != NULL);
    while (k + 1 < n) {
        size_t r = fread(out + k, 1, n - 1 - k, f);
        if (r == 0)
            break;
        k += r;
    }
    out[k] = '\0';
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* curl: the status code of METHOD path; the body into body (may be NULL). */
static int curl_status(const char *method, const char *path, char *body, size_t n)
{
    char cmd[512], out[256], file[160];
    snprintf(file, sizeof file, "%s/curl.out", hh_dir);
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 10 %s -o '%s' -w '%%{http_code}' 'http://127.0.0.1:%d%s'",
             strcmp(method, "HEAD") == 0  ? "-I"
             : strcmp(method, "GET") == 0 ? ""
                                          : "-X POST",
             file, hh_http_port, path);
    CHECK_OK(run(cmd, out, sizeof out));
    if (body) {
        FILE *f = fopen(file, "rb");
        size_t k = f ? fread(body, 1, n - 1, f) : 0;
        body[k] = '\0';
        if (f)
            fclose(f);
    }
    return atoi(out);
}

/* The /metrics text, fetched with curl. */
static char *metrics(void)
{
    static char text[65536];
    CHECK_EQ_INT(curl_status("GET", "/metrics", text, sizeof text), 200);
    return text;
}

/* The value of one sample ("name" or "name{labels}"), or -1 if absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return atof(p + n + 1);
    return -1;
}

/* Sends req on a fresh connection to the HTTP port and reads what comes
** back until the relay closes or timeout_ms pass; returns the bytes read
** and whether it closed. */
static size_t raw_http(const void *req, size_t n, char *resp, size_t cap, int timeout_ms,
                       int *closed)
{
    struct sockaddr_in a;
    size_t have = 0;
    uint64_t deadline = hh_mono() + (uint64_t)timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)hh_http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    CHECK(write(fd, req, n) == (ssize_t)n);
    *closed = 0;
    while (hh_mono() < deadline && have + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t k = read(fd, resp + have, cap - 1 - have);
        if (k <= 0) {
            *closed = 1;
            break;
        }
        have += (size_t)k;
    }
    resp[have] = '\0';
    close(fd);
    return have;
}

/* ---------------------------------------------------------------------- */
/* Protocol messages, as hex for ws_client.py                              */

static void hex(const uint8_t *p, size_t n, FILE *f)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

/* Writes "send HEX" for m: the frame's payload, without the 4-byte length
** (PROTOCOL.md: one protocol message per binary WebSocket message). */
static void send_line(FILE *f, const knit_msg_t *m)
{
    knit_buf_t b = {NULL, 0, 0};
    CHECK_OK(knit_msg_encode(m, NULL, &b));
    CHECK_EQ_INT(knit_frame_length(b.p), b.len - 4);
    fprintf(f, "send ");
    hex(b.p + 4, b.len - 4, f);
    fprintf(f, "\n");
    knit_buf_free(&b);
}

static void hello_line(FILE *f, const char *id, const char *secret, const char *ns)
{
    knit_msg_t m;
    knit_sub_t sub;
    knit_cred_t cred = wc_anon(id, secret);
    wc_hello_msg(&m, &sub, &cred, ns, 0, "test_http_it/ws_client.py");
    send_line(f, &m);
}

static void push_line(FILE *f, uint64_t id, const char *ns, int first, int count)
{
    knit_msg_t m;
    knit_batch_t *b = hh_notes_batch(ns, id, first, count, "hello over websocket");
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = id;
    m.u.push.ns = ns;
    m.u.push.batch = b;
    send_line(f, &m);
    knit_batch_free(b);
}

/* Runs ws_client.py with the commands in script; its output into out. */
static void ws_run(const char *script, char *out, size_t n)
{
    char cmd[512], file[160];
    FILE *f;
    snprintf(file, sizeof file, "%s/ws.cmds", hh_dir);
    CHECK((f = fopen(file, "w")) != NULL);
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "timeout 60 /usr/bin/python3 '%s' 'ws://127.0.0.1:%d/v1/ws' < '%s'",
             WS_CLIENT_PATH, hh_http_port, file);
    CHECK_OK(run(cmd, out, n));
}

/* Decodes line "bin HEX" (the payload of one WebSocket message) as one
** protocol message. */
static void decode_line(const char *line, knit_msg_t *m)
{
    static uint8_t buf[65536];
    size_t n = 0;
    const char *why = NULL;
    CHECK(strncmp(line, "bin ", 4) == 0);
    for (const char *p = line + 4; p[0] && p[0] != '\n' && p[1]; p += 2) {
        unsigned v;
        CHECK(sscanf(p, "%2x", &v) == 1);
        CHECK(n < sizeof buf);
        buf[n++] = (uint8_t)v;
    }
    CHECK_OK(knit_msg_decode(buf, n, NULL, m, &why));
}

/* The i-th line of text (0-based), or NULL. */
static const char *line_at(const char *text, int i)
{
    const char *p = text;
    while (i-- > 0 && p)
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
    return p && *p ? p : NULL;
}

/* ---------------------------------------------------------------------- */
/* Cases                                                                    */

/* curl gets the right status for each route and method. */
static void routes(void)
{
    char body[4096];
    hh_setup("knit-http-it", NULL);
    CHECK_EQ_INT(curl_status("GET", "/healthz", body, sizeof body), 200);
    CHECK_STR(body, "ok\n");
    CHECK_EQ_INT(curl_status("HEAD", "/healthz", NULL, 0), 200);
    CHECK_EQ_INT(curl_status("GET", "/healthz?verbose=1", NULL, 0), 200);
    CHECK_EQ_INT(curl_status("POST", "/healthz", NULL, 0), 405);
    CHECK_EQ_INT(curl_status("POST", "/metrics", NULL, 0), 405);
    CHECK_EQ_INT(curl_status("GET", "/nope", NULL, 0), 404);
    CHECK_EQ_INT(curl_status("GET", "/nope/", NULL, 0), 404);
    CHECK_EQ_INT(curl_status("GET", "/", body, sizeof body), 200); /* the status page */
    CHECK(strstr(body, "<title>knit relay</title>") != NULL);
    CHECK_EQ_INT(curl_status("GET", "/v1/status", body, sizeof body), 200);
    CHECK(strstr(body, "\"connections\":{") != NULL);
    CHECK_EQ_INT(curl_status("POST", "/", NULL, 0), 405);
    /* The WebSocket endpoint without an upgrade. */
    CHECK_EQ_INT(curl_status("GET", "/v1/ws", NULL, 0), 426);
    CHECK_EQ_INT(curl_status("GET", "/metrics", body, sizeof body), 200);
    CHECK(strstr(body, "# TYPE knit_relay_ack_latency_seconds histogram") != NULL);
    /* Those answers are counted. */
    {
        const char *t = metrics();
        CHECK(sample(t, "knit_relay_http_responses_total{code=\"404\"}") == 2);
        CHECK(sample(t, "knit_relay_http_responses_total{code=\"405\"}") == 3);
        CHECK(sample(t, "knit_relay_http_responses_total{code=\"426\"}") == 1);
        CHECK(sample(t, "knit_relay_store_up") == 1);
        CHECK(sample(t, "knit_relay_store_bytes") > 0);
    }
    hh_teardown();
}

/* Counters move by what a real sync over TCP did. */
static void metrics_move(void)
{
    const char *S = "metrics-secret-0123456789";
    char *t;
    wc_t w;
    knit_msg_t m;
    double pushes0, acks0, changes0, lat0;
    hh_setup("knit-http-it", NULL);
    t = metrics();
    pushes0 = sample(t, "knit_relay_pushes_total");
    acks0 = sample(t, "knit_relay_acks_total");
    changes0 = sample(t, "knit_relay_changes_ingested_total");
    lat0 = sample(t, "knit_relay_ack_latency_seconds_count");
    CHECK(pushes0 == 0 && acks0 == 0 && changes0 == 0 && lat0 == 0);
    CHECK(sample(t, "knit_relay_connections{transport=\"tcp\"}") == 0);

    CHECK_OK(wc_connect(&w, hh_relay.port, 0));
    knit_cred_t cred = wc_anon("metrics", S);
    CHECK_OK(wc_hello(&w, &cred, "anon:metrics", 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    for (int i = 0; i < 5; i++) {
        knit_msg_t p;
        knit_batch_t *b =
            hh_notes_batch("anon:metrics", (uint64_t)i + 1, i * 10, 3, "hello over websocket");
        memset(&p, 0, sizeof p);
        p.type = KNIT_MSG_PUSH;
        p.u.push.id = (uint64_t)i + 1;
        p.u.push.ns = "anon:metrics";
        p.u.push.batch = b;
        CHECK_OK(wc_send(&w, &p));
        knit_batch_free(b);
        CHECK_OK(wc_recv_type(&w, 10000, KNIT_MSG_ACK, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
        knit_msg_free(&m);
    }
    t = metrics();
    CHECK(sample(t, "knit_relay_pushes_total") == pushes0 + 5);
    CHECK(sample(t, "knit_relay_acks_total") == acks0 + 5);
    CHECK(sample(t, "knit_relay_changes_ingested_total") == changes0 + 15);
    CHECK(sample(t, "knit_relay_changes_applied_total") == 15);
    CHECK(sample(t, "knit_relay_ack_latency_seconds_count") == lat0 + 5);
    CHECK(sample(t, "knit_relay_ack_latency_seconds_bucket{le=\"+Inf\"}") == 5);
    CHECK(sample(t, "knit_relay_ack_latency_seconds_sum") > 0);
    CHECK(sample(t, "knit_relay_group_commit_pushes_count") >= 1);
    CHECK(sample(t, "knit_relay_group_commit_changes_sum") == 15);
    CHECK(sample(t, "knit_relay_connections{transport=\"tcp\"}") == 1);
    CHECK(sample(t, "knit_relay_sessions") == 1);
    CHECK(sample(t, "knit_relay_sessions_total") == 1);
    /* This client announced no HELLO features: its own units still come
    ** back to it as DELTAS, one per push. */
    CHECK(sample(t, "knit_relay_fanout_deltas_total") == 5);
    CHECK(sample(t, "knit_relay_echoes_skipped_total") == 0);
    wc_close(&w);

    /* A refused credential and a refused push are counted by reason. */
    CHECK_OK(wc_connect(&w, hh_relay.port, 0));
    cred = wc_anon("metrics", "the-wrong-secret-0123456789");
    CHECK_OK(wc_hello(&w, &cred, NULL, 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    knit_msg_free(&m);
    wc_close(&w);
    CHECK_OK(wc_connect(&w, hh_relay.port, 0));
    cred = wc_anon("metrics", S);
    CHECK_OK(wc_hello(&w, &cred, NULL, 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    {
        knit_msg_t p;
        knit_batch_t *b = hh_notes_batch("anon:someone-else", 9, 0, 1, "hello over websocket");
        memset(&p, 0, sizeof p);
        p.type = KNIT_MSG_PUSH;
        p.u.push.id = 9;
        p.u.push.ns = "anon:someone-else";
        p.u.push.batch = b;
        CHECK_OK(wc_send(&w, &p));
        knit_batch_free(b);
        CHECK_OK(wc_recv_type(&w, 10000, KNIT_MSG_REJECT, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
        knit_msg_free(&m);
    }
    wc_close(&w);
    t = metrics();
    CHECK(sample(t, "knit_relay_auth_failures_total{reason=\"refused\"}") == 1);
    CHECK(sample(t, "knit_relay_rejects_total{reason=\"EDENIED\"}") == 1);
    CHECK(sample(t, "knit_relay_pushes_total") == pushes0 + 6);
    CHECK(sample(t, "knit_relay_acks_total") == acks0 + 5);
    hh_teardown();
}

/* promtool (Prometheus's own checker) accepts the exposition. */
static void promtool(void)
{
    char out[4096], cmd[512];
    if (run("command -v promtool", out, sizeof out) != 0) {
        fprintf(stderr, "promtool is not installed (Debian: prometheus); skipped\n");
        exit(77);
    }
    hh_setup("knit-http-it", NULL);
    /* Some traffic first, so histograms and labelled series have samples. */
    (void)metrics();
    CHECK_EQ_INT(curl_status("GET", "/nope", NULL, 0), 404);
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 10 http://127.0.0.1:%d/metrics | promtool check metrics 2>&1",
             hh_http_port);
    int rc = run(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "promtool: %s\n", out);
    CHECK_OK(rc);
    hh_teardown();
}

/* Malformed and oversized requests get 400, 431 and 413, and the relay
** keeps serving HTTP and the protocol. */
static void malformed(void)
{
    static char resp[65536], big[20000];
    int closed;
    wc_t w;
    knit_msg_t m;
    hh_setup("knit-http-it", NULL);

    raw_http("GARBAGE\r\n\r\n", 11, resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    CHECK(closed);
    raw_http("GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 46, resp, sizeof resp, 5000,
             &closed);
    CHECK(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    raw_http("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, resp, sizeof resp, 5000,
             &closed); /* a TLS ClientHello on the cleartext port */
    CHECK(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);

    /* Headers beyond the limit: 431, before the request ends. */
    int k = snprintf(big, sizeof big, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: ");
    memset(big + k, 'a', 10000);
    memcpy(big + k + 10000, "\r\n\r\n", 4);
    raw_http(big, (size_t)k + 10004, resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 431 ", 13) == 0);

    /* A body beyond the limit: 413 at the end of the headers. */
    const char *post = "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
    raw_http(post, strlen(post), resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 413 ", 13) == 0);

    /* A WebSocket upgrade with a bad key, and with a wrong version. */
    const char *badkey = "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";
    raw_http(badkey, strlen(badkey), resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    const char *badver = "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 8\r\n\r\n";
    raw_http(badver, strlen(badver), resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 426 ", 13) == 0);
    CHECK(strstr(resp, "Sec-WebSocket-Version: 13\r\n") != NULL);

    /* Still serving: HTTP, and the protocol over TCP. */
    CHECK_EQ_INT(curl_status("GET", "/healthz", NULL, 0), 200);
    CHECK_OK(wc_connect(&w, hh_relay.port, 0));
    knit_cred_t cred = wc_anon("after-garbage", "after-garbage-secret-0123");
    CHECK_OK(wc_hello(&w, &cred, NULL, 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    wc_close(&w);
    const char *t = metrics();
    CHECK(sample(t, "knit_relay_http_responses_total{code=\"400\"}") == 4);
    CHECK(sample(t, "knit_relay_limit_hits_total{limit=\"http_header_size\"}") == 1);
    CHECK(sample(t, "knit_relay_limit_hits_total{limit=\"http_body_size\"}") == 1);
    hh_teardown();
}

/* Keep-alive: pipelined requests on one connection are all answered, in
** order; "Connection: close" ends it after its answer. */
static void keep_alive(void)
{
    static char resp[65536];
    int closed, n200 = 0;
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    hh_setup("knit-http-it", NULL);
    raw_http(req, strlen(req), resp, sizeof resp, 5000, &closed);
    for (const char *p = resp; (p = strstr(p, "HTTP/1.1 200 ")) != NULL; p++)
        n200++;
    CHECK_EQ_INT(n200, 2);
    CHECK(strstr(resp, "HTTP/1.1 404 ") != NULL);
    CHECK(strstr(resp, "HTTP/1.1 404 ") > strstr(resp, "HTTP/1.1 200 "));
    CHECK(closed); /* closed after the third answer, well before the timeout */
    /* HTTP/1.0 without keep-alive: one answer, then closed. */
    raw_http("GET /healthz HTTP/1.0\r\n\r\n", 25, resp, sizeof resp, 5000, &closed);
    CHECK(strncmp(resp, "HTTP/1.1 200 ", 13) == 0);
    CHECK(closed);
    hh_teardown();
}

/* Slowloris: a request trickled slower than the request timeout is cut
** off with 408 when the timeout passes, however often bytes arrive. */
static void slowloris(void)
{
    struct sockaddr_in a;
    char resp[1024];
    size_t have = 0;
    uint64_t t0, deadline;
    int fd, closed = 0;
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    hh_setup("knit-http-it", NULL);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)hh_http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    t0 = hh_mono();
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    deadline = t0 + 20000;
    while (hh_mono() < deadline && !closed) {
        struct pollfd p = {fd, POLLIN, 0};
        if (write(fd, "a", 1) != 1) /* one byte every 200 ms */
            break;
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t k = read(fd, resp + have, sizeof resp - 1 - have);
        if (k <= 0)
            closed = 1;
        else
            have += (size_t)k;
    }
    resp[have] = '\0';
    close(fd);
    CHECK(strncmp(resp, "HTTP/1.1 408 ", 13) == 0);
    CHECK(hh_mono() - t0 >= 9000 && hh_mono() - t0 < 15000);
    CHECK(sample(metrics(), "knit_relay_limit_hits_total{limit=\"http_request_timeout\"}") == 1);
    hh_teardown();
}

/* python3-websockets completes HELLO/WELCOME and PUSH/ACK with the real
** protocol bytes; the session is the protocol's: a TCP session of the same
** principal receives the pushed unit live. */
static void websocket(void)
{
    static char out[65536];
    char *script = NULL;
    size_t slen = 0;
    FILE *f;
    knit_msg_t m;
    wc_t sub;
    const char *S = "websocket-secret-0123456789";
    const char *line;
    hh_setup("knit-http-it", NULL);

    /* A TCP subscriber of the same namespace. */
    CHECK_OK(wc_connect(&sub, hh_relay.port, 0));
    knit_cred_t cred = wc_anon("wsdev", S);
    CHECK_OK(wc_hello(&sub, &cred, "anon:wsdev", 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    CHECK_OK(wc_recv_type(&sub, 10000, KNIT_MSG_DELTAS, &m)); /* the empty catch-up */
    knit_msg_free(&m);

    CHECK((f = open_memstream(&script, &slen)) != NULL);
    hello_line(f, "wsdev", S, "anon:wsdev");
    fprintf(f, "recv\n"); /* WELCOME */
    fprintf(f, "recv\n"); /* DELTAS: catch-up, caught up */
    push_line(f, 41, "anon:wsdev", 100, 4);
    fprintf(f, "recv\n"); /* ACK 41 */
    fprintf(f, "ping\n");
    fprintf(f, "close\n");
    fclose(f);
    ws_run(script, out, sizeof out);
    free(script);

    CHECK((line = line_at(out, 0)) != NULL);
    decode_line(line, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    CHECK_STR(m.u.welcome.principal, "anon:wsdev");
    knit_msg_free(&m);
    CHECK((line = line_at(out, 1)) != NULL);
    decode_line(line, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    knit_msg_free(&m);
    CHECK((line = line_at(out, 2)) != NULL);
    decode_line(line, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, 41);
    CHECK_EQ_INT(m.u.ack.durable, 1);
    knit_msg_free(&m);
    CHECK((line = line_at(out, 3)) != NULL);
    CHECK(strncmp(line, "pong\n", 5) == 0);
    CHECK((line = line_at(out, 4)) != NULL);
    CHECK(strncmp(line, "closed 1000", 11) == 0);

    /* The TCP session got the WebSocket push live. */
    CHECK_OK(wc_recv_type(&sub, 10000, KNIT_MSG_DELTAS, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    CHECK(m.u.deltas.batch != NULL);
    CHECK_EQ_INT(m.u.deltas.batch->nchanges, 4);
    knit_msg_free(&m);
    wc_close(&sub);

    const char *t = metrics();
    CHECK(sample(t, "knit_relay_connections_total{transport=\"websocket\"}") == 1);
    CHECK(sample(t, "knit_relay_connections_total{transport=\"tcp\"}") == 1);
    CHECK(sample(t, "knit_relay_acks_total") == 1);
    CHECK(sample(t, "knit_relay_changes_ingested_total") == 4);
    CHECK(sample(t, "knit_relay_fanout_latency_seconds_count") == 1);
    CHECK(sample(t, "knit_relay_http_responses_total{code=\"101\"}") == 1);
    hh_teardown();
}

/* WebSocket misuse: a text message is refused with close 1003, a message
** above max_frame with 1009, a malformed protocol message with the
** protocol's ERROR (then close); the relay keeps serving. */
static void websocket_refusals(void)
{
    static char out[65536];
    const char *const extra[] = {"--max-frame", "65536", NULL};
    char *script = NULL;
    size_t slen = 0;
    FILE *f;
    knit_msg_t m;
    hh_setup("knit-http-it", extra);

    ws_run("text hello\nrecv\n", out, sizeof out);
    CHECK(strncmp(out, "closed 1003", 11) == 0);

    /* 64 KiB + 1 is beyond max_frame, and beyond HELLO's 64 KiB. */
    ws_run("big 65537\nrecv\n", out, sizeof out);
    CHECK(strncmp(out, "closed 1009", 11) == 0);

    /* Bytes that are not a protocol message: the engine's ERROR. */
    ws_run("send ff00ff\nrecv\nrecv\n", out, sizeof out);
    decode_line(out, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EPROTO);
    knit_msg_free(&m);
    CHECK(strstr(out, "\nclosed 1000") != NULL);

    /* Still serving WebSocket sessions. */
    CHECK((f = open_memstream(&script, &slen)) != NULL);
    hello_line(f, "after", "after-refusals-secret-0123", NULL);
    fprintf(f, "recv\n");
    fclose(f);
    ws_run(script, out, sizeof out);
    free(script);
    decode_line(out, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    CHECK(sample(metrics(), "knit_relay_limit_hits_total{limit=\"websocket_message_size\"}") == 1);
    hh_teardown();
}

KNIT_TESTS(T(routes), T(metrics_move), T(promtool), T(malformed), T(keep_alive), T(slowloris),
           T(websocket), T(websocket_refusals))
