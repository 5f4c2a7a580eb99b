/*
** test_longpoll_it.c: HTTP long-polling sessions (docs/PROTOCOL.md,
** section 1.3) on the real sync-relay program started with --http-listen
** on 127.0.0.1 (ephemeral ports).
**
** HTTP goes over raw sockets, one request per connection, so every wait
** can be timed and a parked GET can be left waiting while other requests
** run; the protocol bytes are made and checked with knit's codec.  Each
** case starts its own relay in a fresh directory, is bounded by alarm(),
** and stops the relay (which must exit 0) and removes the directory.
*/
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "test.h"
#include "http_harness.h"
#include "wire_client.h"

/* ---------------------------------------------------------------------- */
/* HTTP over raw sockets                                                    */

typedef struct resp_s {
    int status;      /* HTTP status, 0 if none arrived */
    char head[2048]; /* status line and headers */
    uint8_t *body;   /* the body (malloc), NUL-terminated */
    size_t n;        /* its length */
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Sends one request ("Connection: close") on a new connection; the socket. */
static int http_send(const char *method, const char *path, const void *body, size_t n)
{
    struct sockaddr_in a;
    char head[512];
    int fd = socket(AF_INET, SOCK_STREAM, 0), k;
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)hh_http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    k = snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 method, path, n);
    CHECK(write(fd, head, (size_t)k) == k);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, (const uint8_t *)body + off, n - off);
        if (w <= 0)
            break; /* the relay may answer 413 and stop reading */
        off += (size_t)w;
    }
    return fd;
}

/* Reads the answer on fd until the relay closes or timeout_ms pass. */
static void http_recv(int fd, int timeout_ms, resp_t *r)
{
    size_t cap = 1 << 16, have = 0;
    uint8_t *buf = malloc(cap + 1);
    uint64_t deadline = hh_mono() + (uint64_t)timeout_ms;
    const char *sep;
    CHECK(buf != NULL);
    memset(r, 0, sizeof *r);
    while (hh_mono() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;
        if (poll(&p, 1, 50) <= 0)
            continue;
        if (have == cap) {
            cap *= 2;
            CHECK((buf = realloc(buf, cap + 1)) != NULL);
        }
        if ((k = read(fd, buf + have, cap - have)) <= 0)
            break;
        have += (size_t)k;
    }
    close(fd);
    buf[have] = '\0';
    if (!(sep = strstr((char *)buf, "\r\n\r\n"))) {
        free(buf);
        return;
    }
    snprintf(r->head, sizeof r->head, "%.*s", (int)((const uint8_t *)sep - buf), buf);
    r->status = atoi(r->head + 9);
    r->n = have - (size_t)((const uint8_t *)sep + 4 - buf);
    CHECK((r->body = malloc(r->n + 1)) != NULL);
    memcpy(r->body, sep + 4, r->n);
    r->body[r->n] = '\0';
    free(buf);
}

static void http(const char *method, const char *path, const void *body, size_t n, resp_t *r)
{
    http_recv(http_send(method, path, body, n), 30000, r);
}

/* 1 if nothing arrives on fd for ms milliseconds. */
static int silent_for(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 0;
}

/* The value of one /metrics sample, or -1 if absent. */
static double sample(const char *series)
{
    resp_t r;
    size_t n = strlen(series);
    double v = -1;
    http("GET", "/metrics", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    for (const char *p = (const char *)r.body; p && *p;
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            v = atof(p + n + 1);
    resp_free(&r);
    return v;
}

/* ---------------------------------------------------------------------- */
/* Sessions                                                                 */

typedef struct sess_s {
    char sid[64];    /* the session id */
    uint64_t cursor; /* bytes of output fetched */
    uint8_t *buf;    /* the last GET's body, being decoded */
    size_t n;        /* its length */
    size_t off;      /* bytes of it decoded */
} sess_t;

static void sess_open(sess_t *s)
{
    resp_t r;
    char want[128];
    memset(s, 0, sizeof *s);
    http("POST", "/v1/lp", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_INT(r.n, 32); /* 128 bits, hex */
    for (size_t i = 0; i < r.n; i++)
        CHECK((r.body[i] >= '0' && r.body[i] <= '9') || (r.body[i] >= 'a' && r.body[i] <= 'f'));
    memcpy(s->sid, r.body, r.n);
    snprintf(want, sizeof want, "\r\nLocation: /v1/lp/%s", s->sid);
    CHECK(strstr(r.head, want) != NULL);
    resp_free(&r);
}

static void sess_path(const sess_t *s, char *out, size_t n)
{
    snprintf(out, n, "/v1/lp/%s", s->sid);
}

static void sess_get_path(const sess_t *s, uint64_t cursor, char *out, size_t n)
{
    snprintf(out, n, "/v1/lp/%s?cursor=%llu", s->sid, (unsigned long long)cursor);
}

/* POSTs one message as one frame; the status. */
static int sess_post(sess_t *s, const knit_msg_t *m)
{
    knit_buf_t b = {NULL, 0, 0};
    char path[128];
    resp_t r;
    int st;
    CHECK_OK(knit_msg_encode(m, NULL, &b));
    sess_path(s, path, sizeof path);
    http("POST", path, b.p, b.len, &r);
    knit_buf_free(&b);
    st = r.status;
    resp_free(&r);
    return st;
}

/* The next message of the session's output, fetching with GETs as needed
** (each GET acknowledges what the previous one returned). */
static void sess_next(sess_t *s, knit_msg_t *m)
{
    const char *why = NULL;
    uint32_t len;
    while (s->off == s->n) {
        char path[128];
        resp_t r;
        sess_get_path(s, s->cursor, path, sizeof path);
        http("GET", path, NULL, 0, &r);
        CHECK_EQ_INT(r.status, 200);
        CHECK(strstr(r.head, "Content-Type: application/octet-stream") != NULL);
        free(s->buf);
        s->buf = r.body;
        s->n = r.n;
        s->off = 0;
        s->cursor += r.n;
    }
    CHECK(s->n - s->off >= 4);
    len = knit_frame_length(s->buf + s->off);
    CHECK(len <= s->n - s->off - 4); /* whole frames only */
    CHECK_OK(knit_msg_decode(s->buf + s->off + 4, len, NULL, m, &why));
    s->off += 4 + len;
}

static void sess_free(sess_t *s)
{
    free(s->buf);
    s->buf = NULL;
}

static void hello(sess_t *s, const char *id, const char *secret, const char *ns)
{
    knit_msg_t m;
    knit_sub_t sub;
    knit_cred_t cred = wc_anon(id, secret);
    wc_hello_msg(&m, &sub, &cred, ns, 0, "test_longpoll_it");
    CHECK_EQ_INT(sess_post(s, &m), 204);
}

/* A PUSH of `count` notes in one unit. */
static void push_msg(knit_msg_t *m, uint64_t id, const char *ns, int first, int count)
{
    knit_batch_t *b = hh_notes_batch(ns, id, first, count, "hello over long-polling");
    memset(m, 0, sizeof *m);
    m->type = KNIT_MSG_PUSH;
    m->u.push.id = id;
    m->u.push.ns = ns;
    m->u.push.batch = b;
}

/* HELLO, then WELCOME and the catch-up DELTAS that says caught up. */
static void handshake(sess_t *s, const char *id, const char *secret, const char *ns)
{
    knit_msg_t m;
    hello(s, id, secret, ns);
    sess_next(s, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    CHECK_STR(m.u.welcome.principal, "anon:lpdev");
    knit_msg_free(&m);
    sess_next(s, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    knit_msg_free(&m);
}

/* ---------------------------------------------------------------------- */
/* Cases                                                                    */

/* Two sessions: HELLO/WELCOME, PUSH/ACK; the other session's waiting GET
** returns early with the push's DELTAS; the same cursor fetches the same
** bytes again until a later cursor acknowledges them. */
static void session(void)
{
    const char *S = "longpoll-secret-0123456789", *NS = "anon:lpdev";
    sess_t a, b;
    knit_msg_t m;
    resp_t r, r2;
    char path[128];
    uint64_t t0, took, c0;
    int fd;
    hh_setup("knit-lp-it", NULL);

    sess_open(&a);
    sess_open(&b);
    CHECK(strcmp(a.sid, b.sid) != 0);
    handshake(&a, "lpdev", S, NS);
    handshake(&b, "lpdev", S, NS);
    CHECK(a.off == a.n && b.off == b.n);

    /* A waiting GET whose client goes away is withdrawn (news must not
    ** reach its freed connection); a newer GET answers an older one
    ** empty at once. */
    sess_get_path(&b, b.cursor, path, sizeof path);
    fd = http_send("GET", path, NULL, 0);
    CHECK(silent_for(fd, 300));
    close(fd);
    usleep(200 * 1000);
    {
        int older = http_send("GET", path, NULL, 0);
        CHECK(silent_for(older, 300));
        t0 = hh_mono();
        fd = http_send("GET", path, NULL, 0);
        http_recv(older, 5000, &r);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_INT(r.n, 0);
        CHECK(hh_mono() - t0 < 2000);
        resp_free(&r);
    }

    /* B waits for news: nothing arrives while nothing happens. */
    t0 = hh_mono();
    CHECK(silent_for(fd, 1000));

    /* A pushes; the ACK is durable. */
    push_msg(&m, 41, NS, 100, 4);
    CHECK_EQ_INT(sess_post(&a, &m), 204);
    knit_batch_free(m.u.push.batch);
    sess_next(&a, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, 41);
    CHECK_EQ_INT(m.u.ack.durable, 1);
    knit_msg_free(&m);

    /* B's GET returned with the DELTAS, long before the 20 s wait. */
    http_recv(fd, 15000, &r);
    took = hh_mono() - t0;
    CHECK_EQ_INT(r.status, 200);
    CHECK(took < 5000);
    CHECK(r.n > 4 && knit_frame_length(r.body) == r.n - 4);
    {
        const char *why = NULL;
        CHECK_OK(knit_msg_decode(r.body + 4, r.n - 4, NULL, &m, &why));
        CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
        CHECK(m.u.deltas.batch != NULL);
        CHECK_EQ_INT(m.u.deltas.batch->nchanges, 4);
        knit_msg_free(&m);
    }

    /* A lost answer is fetched again: same cursor, same bytes. */
    http("GET", path, NULL, 0, &r2);
    CHECK_EQ_INT(r2.status, 200);
    CHECK_EQ_INT(r2.n, r.n);
    CHECK(memcmp(r2.body, r.body, r.n) == 0);
    resp_free(&r2);

    /* A later cursor acknowledges them: the old cursor is gone (400), and
    ** a cursor inside a frame never was valid. */
    c0 = b.cursor;
    b.cursor += r.n;
    resp_free(&r);
    sess_get_path(&b, b.cursor, path, sizeof path);
    fd = http_send("GET", path, NULL, 0);
    CHECK(silent_for(fd, 300)); /* waiting again: nothing new */
    sess_get_path(&b, c0, path, sizeof path);
    http("GET", path, NULL, 0, &r2);
    CHECK_EQ_INT(r2.status, 400);
    resp_free(&r2);
    sess_get_path(&b, b.cursor + 1, path, sizeof path);
    http("GET", path, NULL, 0, &r2);
    CHECK_EQ_INT(r2.status, 400);
    resp_free(&r2);

    /* DELETE ends B: its waiting GET is answered, its id is gone. */
    sess_path(&b, path, sizeof path);
    http("DELETE", path, NULL, 0, &r2);
    CHECK_EQ_INT(r2.status, 204);
    resp_free(&r2);
    http_recv(fd, 5000, &r);
    CHECK(r.status == 200 || r.status == 410);
    resp_free(&r);
    sess_get_path(&b, b.cursor, path, sizeof path);
    http("GET", path, NULL, 0, &r2);
    CHECK_EQ_INT(r2.status, 404);
    resp_free(&r2);

    CHECK(sample("knit_relay_connections_total{transport=\"longpoll\"}") == 2);
    CHECK(sample("knit_relay_acks_total") == 1);
    CHECK(sample("knit_relay_changes_ingested_total") == 4);
    CHECK(sample("knit_relay_http_responses_total{code=\"201\"}") == 2);
    sess_free(&a);
    sess_free(&b);
    hh_teardown();
}

/* Unknown ids are 404; bodies are whole frames (400) within max_frame + 4
** (413), a limit for this route only (elsewhere 4 KiB); wrong methods 405. */
static void refusals(void)
{
    const char *const extra[] = {"--max-frame", "65536", NULL};
    static uint8_t big[65536 + 4 + 1];
    char path[128];
    sess_t s;
    resp_t r;
    hh_setup("knit-lp-it", extra);

    http("GET", "/v1/lp/00112233445566778899aabbccddeeff?cursor=0", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    http("POST", "/v1/lp/00112233445566778899aabbccddeeff", "\0\0\0\1x", 5, &r);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    http("DELETE", "/v1/lp/nope", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    http("GET", "/v1/lp", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 405);
    resp_free(&r);

    sess_open(&s);
    sess_path(&s, path, sizeof path);
    /* One byte past max_frame + 4: 413. */
    big[0] = 0;
    big[1] = 1;
    big[2] = 0;
    big[3] = 1; /* a 65537-byte payload */
    http("POST", path, big, sizeof big, &r);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    /* A body that is not whole frames: 400. */
    http("POST", path, "\0\0\0\x0aonly-five", 13, &r);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    /* Exactly max_frame + 4 is taken (well past the 4 KiB of other routes);
    ** the engine then refuses it as a first message (64 KiB of garbage). */
    big[1] = 1;
    big[3] = 0; /* 65536 */
    http("POST", path, big, sizeof big - 1, &r);
    CHECK_EQ_INT(r.status, 204);
    resp_free(&r);
    {
        knit_msg_t m;
        sess_next(&s, &m);
        CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
        knit_msg_free(&m);
    }
    /* The ERROR acknowledged, the relay has finished the session: 410,
    ** at once (no 20 s wait). */
    {
        uint64_t t0 = hh_mono();
        snprintf(path, sizeof path, "/v1/lp/%s?cursor=%llu", s.sid, (unsigned long long)s.cursor);
        http("GET", path, NULL, 0, &r);
        CHECK_EQ_INT(r.status, 410);
        CHECK(hh_mono() - t0 < 2000);
        resp_free(&r);
    }
    /* The same size elsewhere is still 413. */
    http("POST", "/healthz", big, 5000, &r);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    /* A cursor that is not a number. */
    snprintf(path, sizeof path, "/v1/lp/%s?cursor=12x", s.sid);
    http("GET", path, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    CHECK(sample("knit_relay_limit_hits_total{limit=\"http_body_size\"}") == 2);
    sess_free(&s);
    hh_teardown();
}

/* With the waits shortened (KNIT_LP_WAIT_MS 2500, KNIT_LP_IDLE_MS 2000): a
** GET with no news answers empty after the wait, and a waiting GET keeps
** the session alive past the idle time; a session with no request for the
** idle time is ended (404), and the relay's gauge drops. */
static void expiry(void)
{
    const char *S = "longpoll-expiry-0123456789";
    char path[128];
    sess_t s;
    resp_t r;
    uint64_t t0, took;
    setenv("KNIT_LP_WAIT_MS", "2500", 1);
    setenv("KNIT_LP_IDLE_MS", "2000", 1);
    hh_setup("knit-lp-it", NULL);
    unsetenv("KNIT_LP_WAIT_MS");
    unsetenv("KNIT_LP_IDLE_MS");

    sess_open(&s);
    handshake(&s, "lpdev", S, "anon:lpdev");
    CHECK(sample("knit_relay_connections{transport=\"longpoll\"}") == 1);
    sess_get_path(&s, s.cursor, path, sizeof path);
    t0 = hh_mono();
    http("GET", path, NULL, 0, &r);
    took = hh_mono() - t0;
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.n, 0);
    CHECK(took >= 2300 && took < 5000);
    resp_free(&r);
    /* Still there after a 2.5 s wait, longer than the idle time. */
    http("GET", path, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);

    /* A request pipelined behind a waiting GET is not answered before it
    ** (nor at all): one answer, then the connection closes. */
    {
        char req[512];
        int k = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                         "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                         path);
        struct sockaddr_in a;
        int fd;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)hh_http_port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
        CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
        CHECK(write(fd, req, (size_t)k) == k);
        http_recv(fd, 8000, &r); /* returns when the relay closes */
        CHECK_EQ_INT(r.status, 200);
        CHECK(strstr((const char *)r.body, "HTTP/1.1") == NULL);
        CHECK(strstr(r.head, "Connection: close") != NULL);
        resp_free(&r);
    }

    /* Now silent for longer than the idle time (plus a tick). */
    usleep(3000 * 1000);
    http("GET", path, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    CHECK(sample("knit_relay_connections{transport=\"longpoll\"}") == 0);
    CHECK(sample("knit_relay_connections_total{transport=\"longpoll\"}") == 1);
    sess_free(&s);
    hh_teardown();
}

/* A relay stopping with a GET waiting answers it (with the ERROR the
** engine sends every session) and still exits 0. */
static void shutdown_waiting(void)
{
    const char *S = "longpoll-stop-0123456789ab";
    char path[128];
    sess_t s;
    resp_t r;
    int fd, st;
    hh_setup("knit-lp-it", NULL);
    sess_open(&s);
    handshake(&s, "lpdev", S, "anon:lpdev");
    sess_get_path(&s, s.cursor, path, sizeof path);
    fd = http_send("GET", path, NULL, 0);
    CHECK(silent_for(fd, 500));
    kill(hh_relay.pid, SIGTERM);
    http_recv(fd, 10000, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.n > 4 && knit_frame_length(r.body) == r.n - 4);
    {
        knit_msg_t m;
        const char *why = NULL;
        CHECK_OK(knit_msg_decode(r.body + 4, r.n - 4, NULL, &m, &why));
        CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
        CHECK_EQ_INT(m.u.error.code, KNIT_ECLOSED);
        knit_msg_free(&m);
    }
    resp_free(&r);
    CHECK(relay_stop(&hh_relay, 0, &st) == 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    hh_relay.pid = 0;
    sess_free(&s);
    hh_teardown();
}

/* Back-pressure is the engine's, as on TCP: output the client has not
** acknowledged counts as the connection's queue, so with --max-queue 4096
** a long-poll subscriber that stops fetching is dropped to catch-up mode
** (slow_consumer), and fetching again brings it to the last sequence with
** no gap. */
static void backpressure(void)
{
    const char *const extra[] = {"--max-queue", "4096", NULL};
    const char *S = "longpoll-queue-0123456789a", *NS = "anon:lpdev";
    knit_cred_t cred = wc_anon("lpdev", S);
    uint64_t at = 0, deadline;
    sess_t b;
    wc_t w;
    knit_msg_t m;
    hh_setup("knit-lp-it", extra);
    sess_open(&b);
    handshake(&b, "lpdev", S, NS);

    CHECK_OK(wc_connect(&w, hh_relay.port, 0));
    CHECK_OK(wc_hello(&w, &cred, NULL, 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    for (int i = 0; i < 12; i++) {
        push_msg(&m, (uint64_t)i + 1, NS, i * 100, 30);
        CHECK_OK(wc_send(&w, &m));
        knit_batch_free(m.u.push.batch);
        CHECK_OK(wc_recv_type(&w, 10000, KNIT_MSG_ACK, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
        knit_msg_free(&m);
    }
    wc_close(&w);
    CHECK(sample("knit_relay_limit_hits_total{limit=\"slow_consumer\"}") >= 1);

    /* Fetching drains the queue; catch-up then covers what was skipped,
    ** each DELTAS starting where the previous one ended. */
    deadline = hh_mono() + 20000;
    while (at < 12 && hh_mono() < deadline) {
        sess_next(&b, &m);
        CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
        CHECK(m.u.deltas.from <= at);
        if (m.u.deltas.to > at)
            at = m.u.deltas.to;
        knit_msg_free(&m);
    }
    CHECK_EQ_INT(at, 12);
    sess_free(&b);
    hh_teardown();
}

/* Sessions are bounded by --max-conns (503 beyond), and a DELETEd one
** frees its place. */
static void bounded(void)
{
    const char *const extra[] = {"--max-conns", "2", NULL};
    char path[128];
    sess_t a, b, c;
    resp_t r;
    hh_setup("knit-lp-it", extra);
    sess_open(&a);
    sess_open(&b);
    http("POST", "/v1/lp", NULL, 0, &r);
    CHECK_EQ_INT(r.status, 503);
    CHECK(strstr(r.head, "Retry-After: 1") != NULL);
    resp_free(&r);
    sess_path(&a, path, sizeof path);
    http("DELETE", path, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 204);
    resp_free(&r);
    usleep(700 * 1000); /* the relay frees it at its next tick */
    sess_open(&c);
    CHECK(sample("knit_relay_connections{transport=\"longpoll\"}") == 2);
    CHECK(sample("knit_relay_limit_hits_total{limit=\"connections\"}") == 1);
    hh_teardown();
}

KNIT_TESTS(T(session), T(refusals), T(expiry), T(shutdown_waiting), T(bounded), T(backpressure))
