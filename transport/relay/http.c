/*
** http.c: the relay's HTTP/1.1 server over byte streams (API in http.h).
** libhttp-parser parses every request; this file keeps the few headers it
** needs, enforces the limits, routes, writes answers, and hands WebSocket
** upgrades to ws.c and then to the relay, and long-poll requests to lp.c.
**
** Design notes
**   1. Parsing is http-parser's alone: request line, header folding,
**      Content-Length and chunked bodies, keep-alive and the upgrade
**      decision all come from it (http_should_keep_alive, parser.upgrade,
**      http_parser_parse_url).  Any error it reports is a 400.
**   2. Limits are counted in the parser's callbacks, before anything is
**      kept: header bytes (URL, names, values) against MAX_HEADER, body
**      bytes against MAX_BODY (a larger Content-Length is refused at the
**      end of the headers).  A callback that hits one stops the parser.
**   3. Slowloris: the deadline of a request is set at its first byte and
**      never moves, so trickling bytes does not keep a connection; an idle
**      kept-alive connection has its own deadline.  knit__http_tick()
**      enforces both.
**   4. After an answer with "Connection: close" the connection lingers as
**      the relay's do (relay.c note 2): writes drain, FIN, input is read and
**      discarded until the peer closes or LINGER_MS pass, so a 400 is not
**      destroyed by an RST.
**   5. An upgrade writes the 101 with no completion (the connection object
**      is gone by then) and moves the stream, and the bytes that followed
**      the request, to a WebSocket stream, which the upgrade hook owns.
**   6. A long-poll request that lp.c answers later parks its connection:
**      the parser is paused after it, so a pipelined request is not
**      answered out of order (bytes that arrive meanwhile are dropped and
**      the answer closes the connection), the request deadlines do not
**      apply (lp.c bounds the wait), and a connection that goes away
**      withdraws its request (knit__lp_cancel).
**
**     IDLE --first byte--> REQUEST --complete: answer()--> IDLE (keep-alive)
**       |                    |                    |
**       +----- timeout ------+---- error: 4xx ----+--> LINGER --EOF/deadline--> closed
**                            +--- /v1/ws upgrade: upgrade() --> WebSocket (relay.c)
**                            +--- /v1/lp/<sid> waiting: route_lp() --> PARKED
**     PARKED --lp.c answers: lp_answered()--> IDLE (or LINGER after a pipelined request)
*/
#include "http.h"

#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "alloc.h"
#include "status.h"
#include "lp.h"
#include "proto_server.h"
#include "ws.h"

#define URL_MAX 2048  /* bytes of the request target kept */
#define FIELD_MAX 32  /* bytes of a header name kept (longer ones are not ours) */
#define VALUE_MAX 512 /* bytes of an interesting header's value kept */

enum { H_NONE, H_UPGRADE, H_KEY, H_VERSION, H_WH_ID, H_WH_TS, H_WH_SIG, H_N };

typedef struct hconn_s {
    knit_http_server_t *s;        /* owner */
    knit_stream_t *st;            /* the byte stream; st->data = this */
    struct hconn_s *prev;         /* server's list */
    struct hconn_s *next;         /* server's list */
    http_parser p;                /* http-parser's state; p.data = this */
    char url[URL_MAX + 1];        /* request target */
    size_t nurl;                  /* its length */
    char field[FIELD_MAX];        /* header name being read */
    size_t nfield;                /* its length (FIELD_MAX + 1: too long to matter) */
    int in_value;                 /* the last callback was a header value */
    int hdr;                      /* H_*: which kept header the value belongs to */
    char val[H_N][VALUE_MAX + 1]; /* kept header values */
    size_t nval[H_N];             /* their lengths */
    size_t header_bytes;          /* request line and headers so far (note 2) */
    size_t body_bytes;            /* body so far */
    int limit;                    /* 431 or 413 when a limit stopped the parser */
    int in_request;               /* a request has begun */
    int upgrade;                  /* a complete request asked for the WebSocket */
    int keep_alive;               /* the request allows another after it */
    int lp_body;                  /* the request is POST /v1/lp/<sid>: its body is kept */
    int wh_body;                  /* the request is POST /v1/webhooks/clerk: kept too */
    uint8_t *body;                /* that body */
    size_t body_cap;              /* bytes allocated in body */
    int parked;                   /* waiting for lp.c's answer (note 6) */
    int pipelined;                /* bytes came after a parked request: close after it */
    uint64_t deadline;            /* mono ms (note 3) */
    size_t writes;                /* writes in flight */
    int closing;                  /* lingering (note 4) */
    int shut;                     /* FIN sent */
    int handle_closing;           /* knit_stream_close called */
} hconn_t;

struct knit_http_server_s {
    knit_http_hooks_t h;     /* the relay's hooks */
    http_parser_settings ps; /* callbacks for http-parser */
    hconn_t *conns;          /* open connections */
    size_t nconns;           /* count */
    int stopping;            /* knit__http_shutdown was called */
    knit_lp_t *lp;           /* long-poll sessions, or NULL (no longpoll hook) */
};

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void hlog(knit_http_server_t *s, int level, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    if (level > s->h.log_level || !s->h.log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->h.log(s->h.data, level, line);
}

/* ---------------------------------------------------------------------- */
/* Closing                                                                  */

static void close_handle(hconn_t *c)
{
    if (c->handle_closing)
        return;
    c->handle_closing = 1;
    knit_stream_close(c->st);
}

static void linger(hconn_t *c)
{
    if (c->handle_closing || c->shut || c->writes)
        return;
    c->shut = 1;
    if (knit_stream_shutdown(c->st) != 0)
        close_handle(c);
}

static void start_linger(hconn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->deadline = mono_ms() + KNIT_HTTP_LINGER_MS;
    knit_stream_read(c->st, 1);
    linger(c);
}

static void unlink_conn(hconn_t *c)
{
    knit_http_server_t *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    knit__metrics_http_conn(s->h.m, -1);
    if (c->parked)
        knit__lp_cancel(s->lp, c);
    c->parked = 0;
    knit__free(c->body);
    c->body = NULL;
}

static void on_closed(knit_stream_t *st)
{
    hconn_t *c = st->data;
    knit_http_server_t *s = c->s;
    unlink_conn(c);
    knit__free(c);
    if (s->h.closed)
        s->h.closed(s->h.data);
}

static void on_end(knit_stream_t *st, int code, const char *msg)
{
    (void)code;
    (void)msg;
    close_handle(st->data);
}

/* ---------------------------------------------------------------------- */
/* Answers                                                                  */

static void on_written(knit_stream_t *st, void *arg, int status)
{
    hconn_t *c = st->data;
    (void)arg;
    c->writes--;
    if (status != 0) {
        c->closing = 1;
        close_handle(c);
        return;
    }
    if (c->closing)
        linger(c);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Writes one answer.  extra holds further header lines (each ending in
** CRLF) or is NULL; head_only leaves the body out (HEAD).  close ends the
** connection after it (note 4). */
static void answer(hconn_t *c, int status, const char *type, const char *body, size_t nbody,
                   const char *extra, int head_only, int close)
{
    char head[512];
    uint8_t *p;
    int k;
    size_t n;

    if (c->closing || c->handle_closing)
        return;
    knit__metrics_http(c->s->h.m, status);
    if (status == 204) /* no body, and no Content-Length (RFC 9110, 8.6) */
        k = snprintf(head, sizeof head,
                     "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n%s%s\r\n",
                     extra ? extra : "", close ? "Connection: close\r\n" : "");
    else
        k = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, reason_phrase(status), type, nbody, extra ? extra : "",
                     close ? "Connection: close\r\n" : "");
    if (status == 204)
        nbody = 0;
    if (k < 0 || (size_t)k >= sizeof head) {
        start_linger(c);
        return;
    }
    n = (size_t)k + (head_only ? 0 : nbody);
    if (!(p = knit__malloc(n))) {
        start_linger(c);
        return;
    }
    memcpy(p, head, (size_t)k);
    if (!head_only && nbody)
        memcpy(p + k, body, nbody);
    if (knit_stream_write(c->st, p, n, on_written, NULL) == 0)
        c->writes++;
    if (close)
        start_linger(c);
}

static void answer_text(hconn_t *c, int status, const char *text, const char *extra, int close)
{
    answer(c, status, "text/plain; charset=utf-8", text, strlen(text), extra,
           c->p.method == HTTP_HEAD, close);
}

/* ---------------------------------------------------------------------- */
/* Routing                                                                  */

/* The request target's path (http_parser_parse_url), into buf. */
static int request_path(hconn_t *c, char *buf, size_t n)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->nurl, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
        return -1;
    if (u.field_data[UF_PATH].len >= n)
        return -1;
    memcpy(buf, c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    buf[u.field_data[UF_PATH].len] = '\0';
    return 0;
}

static int is_get(const hconn_t *c)
{
    return c->p.method == HTTP_GET || c->p.method == HTTP_HEAD;
}

/* 1 if the comma-separated header value v holds token t (any case). */
static int has_token(const char *v, const char *t)
{
    size_t tl = strlen(t);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *f = e;
        while (f > v && (f[-1] == ' ' || f[-1] == '\t'))
            f--;
        if ((size_t)(f - v) == tl && strncasecmp(v, t, tl) == 0)
            return 1;
        v = e;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Long-polling (lp.h, note 6)                                              */

/* lp.c's answer to the request c parked on. */
static void lp_answered(void *arg, int status, const uint8_t *p, size_t n)
{
    hconn_t *c = arg;
    int close;
    if (!c->parked)
        return;
    c->parked = 0;
    close = !c->keep_alive || c->pipelined || c->s->stopping;
    answer(c, status, status == 200 ? "application/octet-stream" : "text/plain; charset=utf-8",
           (const char *)p, n, NULL, 0, close);
    if (!c->closing && !c->handle_closing) {
        http_parser_pause(&c->p, 0);
        c->deadline = mono_ms() + KNIT_HTTP_IDLE_MS;
    }
}

/* The value of the query's cursor=N (0 when absent); -1 if malformed. */
static int query_cursor(const hconn_t *c, uint64_t *out)
{
    struct http_parser_url u;
    const char *q, *e;
    *out = 0;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->nurl, 0, &u) != 0)
        return -1;
    if (!(u.field_set & (1 << UF_QUERY)))
        return 0;
    q = c->url + u.field_data[UF_QUERY].off;
    e = q + u.field_data[UF_QUERY].len;
    while (q < e) {
        const char *amp = memchr(q, '&', (size_t)(e - q));
        if (!amp)
            amp = e;
        if (amp - q > 7 && memcmp(q, "cursor=", 7) == 0) {
            uint64_t v = 0;
            for (const char *d = q + 7; d < amp; d++) {
                if (*d < '0' || *d > '9' || v > (UINT64_MAX - 9) / 10)
                    return -1;
                v = v * 10 + (uint64_t)(*d - '0');
            }
            *out = v;
            return 0;
        }
        q = amp + 1;
    }
    return 0;
}

/* POST /v1/lp: a new session, handed to the relay like an upgrade. */
static void lp_open(hconn_t *c, int close)
{
    knit_http_server_t *s = c->s;
    char sid[KNIT_LP_SID_LEN + 1], name[64], extra[KNIT_LP_SID_LEN + 64];
    knit_stream_t *st;
    int rc;
    if (s->stopping) {
        answer_text(c, 503, "relay shutting down\n", NULL, 1);
        return;
    }
    if (knit_stream_peer(c->st, name, sizeof name) != 0)
        name[0] = '\0';
    if ((rc = knit__lp_open(s->lp, name, mono_ms(), sid, &st)) != 0) {
        if (rc == KNIT_EBUSY) {
            knit__metrics_limit(s->h.m, KNIT_METRIC_CONNS);
            hlog(s, KNIT_LOG_WARN, "http: refusing a long-poll session: %zu open already",
                 s->h.max_conns);
        }
        answer_text(c, 503, rc == KNIT_EBUSY ? "too many sessions\n" : "cannot open a session\n",
                    "Retry-After: 1\r\n", close);
        return;
    }
    s->h.longpoll(s->h.data, st);
    snprintf(extra, sizeof extra, "Location: /v1/lp/%s\r\n", sid);
    answer(c, 201, "text/plain; charset=utf-8", sid, KNIT_LP_SID_LEN, extra, 0, close);
}

/* /v1/lp and /v1/lp/<sid> (PROTOCOL.md section 1.3). */
static void route_lp(hconn_t *c, const char *path, int close)
{
    knit_http_server_t *s = c->s;
    const char *sid;
    uint64_t cursor;
    if (strcmp(path, "/v1/lp") == 0) {
        if (c->p.method != HTTP_POST)
            answer_text(c, 405, "use POST to open a session\n", "Allow: POST\r\n", close);
        else
            lp_open(c, close);
        return;
    }
    sid = path + strlen("/v1/lp/");
    /* Parked first: lp.c may answer at once (lp_answered). */
    c->parked = 1;
    if (c->p.method == HTTP_POST) {
        knit__lp_post(s->lp, sid, strlen(sid), c->body, c->body_bytes, mono_ms(), lp_answered, c);
    } else if (c->p.method == HTTP_GET) {
        if (query_cursor(c, &cursor) != 0) {
            c->parked = 0;
            answer_text(c, 400, "bad cursor\n", NULL, close);
            return;
        }
        knit__lp_get(s->lp, sid, strlen(sid), cursor, mono_ms(), lp_answered, c);
    } else if (c->p.method == HTTP_DELETE) {
        knit__lp_delete(s->lp, sid, strlen(sid), lp_answered, c);
    } else {
        c->parked = 0;
        answer_text(c, 405, "use POST, GET or DELETE\n", "Allow: POST, GET, DELETE\r\n", close);
        return;
    }
    if (c->parked)
        c->deadline = UINT64_MAX; /* lp.c bounds the wait (note 6) */
}

/* 1 if path is /v1/lp or below it. */
static int is_lp_path(const char *path)
{
    return strcmp(path, "/v1/lp") == 0 || strncmp(path, "/v1/lp/", 7) == 0;
}

/* A complete request (not an upgrade): answers it. */
/* POST /v1/webhooks/clerk (webhook.h): the relay's hook decides. */
static void webhook_route(hconn_t *c, int close)
{
    knit_http_server_t *s = c->s;
    char msg[300], body[340];
    int status;
    if (!s->h.webhook) {
        answer_text(c, 404, "no webhooks here (sync-relay --webhook-secret-file)\n", NULL, close);
        return;
    }
    if (c->p.method != HTTP_POST) {
        answer_text(c, 405, "use POST\n", "Allow: POST\r\n", close);
        return;
    }
    msg[0] = '\0';
    status = s->h.webhook(s->h.data, c->val[H_WH_ID], c->val[H_WH_TS], c->val[H_WH_SIG], c->body,
                          c->body_bytes, msg, sizeof msg);
    snprintf(body, sizeof body, "%s\n", msg);
    answer_text(c, status, body, status == 503 ? "Retry-After: 5\r\n" : NULL, close);
}

/* GET / (the status page) or, json, GET /v1/status (status.h). */
static void status_route(hconn_t *c, int json, int close)
{
    knit_http_server_t *s = c->s;
    char *text = NULL;
    size_t n = 0;
    if (!is_get(c)) {
        answer_text(c, 405, "use GET\n", "Allow: GET, HEAD\r\n", close);
    } else if (!json) {
        const char *page = knit__status_page(&n);
        answer(c, 200, "text/html; charset=utf-8", page, n,
               "X-Content-Type-Options: nosniff\r\n"
               "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; "
               "style-src 'unsafe-inline'\r\n",
               c->p.method == HTTP_HEAD, close);
    } else if (!s->h.status || s->h.status(s->h.data, &text, &n) != 0) {
        answer_text(c, 500, "cannot render the status\n", NULL, close);
    } else {
        answer(c, 200, "application/json", text, n, NULL, c->p.method == HTTP_HEAD, close);
    }
    knit__free(text);
}

static void route(hconn_t *c)
{
    knit_http_server_t *s = c->s;
    char path[URL_MAX + 1];
    int close = !c->keep_alive || s->stopping;

    if (request_path(c, path, sizeof path) != 0) {
        answer_text(c, 400, "bad request target\n", NULL, 1);
        return;
    }
    if (strcmp(path, "/v1/webhooks/clerk") == 0) {
        webhook_route(c, close);
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/v1/status") == 0) {
        status_route(c, path[1] != '\0', close);
    } else if (strcmp(path, "/healthz") == 0) {
        char why[160] = "";
        if (!is_get(c))
            answer_text(c, 405, "use GET\n", "Allow: GET, HEAD\r\n", close);
        else if (s->h.health && s->h.health(s->h.data, why, sizeof why))
            answer_text(c, 200, "ok\n", NULL, close);
        else {
            char body[200];
            snprintf(body, sizeof body, "store unavailable: %s\n", why);
            answer_text(c, 503, body, NULL, close);
        }
    } else if (strcmp(path, "/metrics") == 0) {
        char *text = NULL;
        size_t n = 0;
        if (!is_get(c))
            answer_text(c, 405, "use GET\n", "Allow: GET, HEAD\r\n", close);
        else if (!s->h.metrics || s->h.metrics(s->h.data, &text, &n) != 0)
            answer_text(c, 500, "cannot render metrics\n", NULL, close);
        else
            answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, NULL,
                   c->p.method == HTTP_HEAD, close);
        knit__free(text);
    } else if (s->lp && is_lp_path(path)) {
        route_lp(c, path, close);
    } else if (strcmp(path, "/v1/ws") == 0) {
        if (c->p.method != HTTP_GET)
            answer_text(c, 405, "use GET with Upgrade: websocket\n", "Allow: GET\r\n", close);
        else
            answer_text(c, 426, "this endpoint speaks WebSocket only\n",
                        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", close);
    } else {
        answer_text(c, 404, "not found\n", NULL, close);
    }
}

/* The parser stopped at an upgrade request; rest[0..n) followed it. */
static void upgrade(hconn_t *c, const uint8_t *rest, size_t n)
{
    knit_http_server_t *s = c->s;
    char path[URL_MAX + 1], accept[29], head[256];
    knit_stream_t *st = c->st, *ws;
    uint8_t *p;
    int k;

    if (request_path(c, path, sizeof path) != 0 || strcmp(path, "/v1/ws") != 0) {
        answer_text(c, 404, "not found\n", NULL, 1);
        return;
    }
    if (c->p.method != HTTP_GET) {
        answer_text(c, 405, "use GET with Upgrade: websocket\n", "Allow: GET\r\n", 1);
        return;
    }
    if (!has_token(c->val[H_UPGRADE], "websocket") || c->p.http_major != 1 || c->p.http_minor < 1) {
        answer_text(c, 400, "only a WebSocket upgrade (HTTP/1.1) is served here\n", NULL, 1);
        return;
    }
    if (strcmp(c->val[H_VERSION], "13") != 0) {
        answer_text(c, 426, "WebSocket version 13 only\n", "Sec-WebSocket-Version: 13\r\n", 1);
        return;
    }
    if (knit__ws_accept_key(c->val[H_KEY], c->nval[H_KEY], accept) != 0) {
        answer_text(c, 400, "bad Sec-WebSocket-Key\n", NULL, 1);
        return;
    }
    if (s->stopping) {
        answer_text(c, 503, "relay shutting down\n", NULL, 1);
        return;
    }
    k = snprintf(head, sizeof head,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                 accept);
    if (!(p = knit__memdup(head, (size_t)k)) ||
        knit__ws_accept(st, s->h.max_msg, rest, n, s->h.m, &ws) != 0) {
        knit__free(p);
        answer_text(c, 503, "out of memory\n", NULL, 1);
        return;
    }
    /* Note 5: no completion; the WebSocket stream owns st from here. */
    knit__metrics_http(s->h.m, 101);
    knit_stream_write(st, p, (size_t)k, NULL, NULL);
    unlink_conn(c);
    knit__free(c);
    s->h.upgrade(s->h.data, ws);
}

/* ---------------------------------------------------------------------- */
/* http-parser callbacks                                                    */

/* Counts header bytes (note 2): non-zero stops the parser with a 431. */
static int count_header(hconn_t *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > KNIT_HTTP_MAX_HEADER) {
        c->limit = 431;
        return -1;
    }
    return 0;
}

static int cb_begin(http_parser *p)
{
    hconn_t *c = p->data;
    c->nurl = 0;
    c->url[0] = '\0';
    c->nfield = 0;
    c->in_value = 0;
    c->hdr = H_NONE;
    memset(c->nval, 0, sizeof c->nval);
    for (int i = 0; i < H_N; i++)
        c->val[i][0] = '\0';
    c->header_bytes = c->body_bytes = 0;
    c->lp_body = 0;
    c->wh_body = 0;
    if (c->body_cap > KNIT_HTTP_MAX_BODY) {
        /* A long-poll POST's buffer is not kept for the next request. */
        knit__free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    c->upgrade = 0;
    c->in_request = 1;
    c->deadline = mono_ms() + KNIT_HTTP_REQUEST_MS;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    hconn_t *c = p->data;
    if (count_header(c, n))
        return -1;
    if (c->nurl + n > URL_MAX) {
        c->limit = 431;
        return -1;
    }
    memcpy(c->url + c->nurl, at, n);
    c->nurl += n;
    c->url[c->nurl] = '\0';
    return 0;
}

static int cb_field(http_parser *p, const char *at, size_t n)
{
    hconn_t *c = p->data;
    if (count_header(c, n))
        return -1;
    if (c->in_value) {
        c->in_value = 0;
        c->nfield = 0;
    }
    if (c->nfield + n > FIELD_MAX) {
        c->nfield = FIELD_MAX + 1; /* not one we keep */
        return 0;
    }
    memcpy(c->field + c->nfield, at, n);
    c->nfield += n;
    return 0;
}

static int cb_value(http_parser *p, const char *at, size_t n)
{
    static const char *const names[H_N] = {
        NULL,      "upgrade",        "sec-websocket-key", "sec-websocket-version",
        "svix-id", "svix-timestamp", "svix-signature"};
    /* The same headers under the Standard Webhooks names. */
    static const char *const alias[H_N] = {
        NULL, NULL, NULL, NULL, "webhook-id", "webhook-timestamp", "webhook-signature"};
    hconn_t *c = p->data;
    if (count_header(c, n))
        return -1;
    if (!c->in_value) {
        c->in_value = 1;
        c->hdr = H_NONE;
        for (int i = 1; i < H_N; i++)
            if ((c->nfield == strlen(names[i]) &&
                 strncasecmp(c->field, names[i], c->nfield) == 0) ||
                (alias[i] && c->nfield == strlen(alias[i]) &&
                 strncasecmp(c->field, alias[i], c->nfield) == 0))
                c->hdr = i;
        if (c->hdr != H_NONE && c->nval[c->hdr]) {
            /* A repeated header we rely on: not a valid handshake. */
            c->nval[c->hdr] = VALUE_MAX + 1;
        }
    }
    if (c->hdr == H_NONE || c->nval[c->hdr] > VALUE_MAX)
        return 0;
    if (c->nval[c->hdr] + n > VALUE_MAX) {
        c->nval[c->hdr] = VALUE_MAX + 1;
        c->val[c->hdr][0] = '\0';
        return 0;
    }
    memcpy(c->val[c->hdr] + c->nval[c->hdr], at, n);
    c->nval[c->hdr] += n;
    c->val[c->hdr][c->nval[c->hdr]] = '\0';
    return 0;
}

/* The largest body c's request may have (note 2): frames for long-poll
** POSTs, else MAX_BODY. */
static size_t body_limit(const hconn_t *c)
{
    return c->lp_body   ? c->s->h.max_msg + 4
           : c->wh_body ? KNIT_HTTP_MAX_WEBHOOK
                        : KNIT_HTTP_MAX_BODY;
}

static int cb_headers_done(http_parser *p)
{
    hconn_t *c = p->data;
    for (int i = 1; i < H_N; i++)
        if (c->nval[i] > VALUE_MAX) {
            c->nval[i] = 0;
            c->val[i][0] = '\0';
        }
    if (c->s->lp && p->method == HTTP_POST) {
        char path[URL_MAX + 1];
        c->lp_body = request_path(c, path, sizeof path) == 0 && strncmp(path, "/v1/lp/", 7) == 0;
    }
    if (c->s->h.webhook && p->method == HTTP_POST) {
        char path[URL_MAX + 1];
        c->wh_body =
            request_path(c, path, sizeof path) == 0 && strcmp(path, "/v1/webhooks/clerk") == 0;
    }
    if (!p->upgrade && (p->flags & F_CONTENTLENGTH) && p->content_length > body_limit(c)) {
        c->limit = 413;
        return -1;
    }
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    hconn_t *c = p->data;
    if (c->body_bytes + n > body_limit(c)) {
        c->limit = 413;
        return -1;
    }
    if (c->lp_body || c->wh_body) {
        if (c->body_bytes + n > c->body_cap) {
            size_t cap = c->body_cap ? c->body_cap : 4096;
            uint8_t *q;
            while (cap < c->body_bytes + n)
                cap *= 2;
            if (cap > body_limit(c))
                cap = body_limit(c);
            if (!(q = knit__realloc(c->body, cap))) {
                c->limit = 503;
                return -1;
            }
            c->body = q;
            c->body_cap = cap;
        }
        memcpy(c->body + c->body_bytes, at, n);
    }
    c->body_bytes += n;
    return 0;
}

static int cb_complete(http_parser *p)
{
    hconn_t *c = p->data;
    c->in_request = 0;
    c->keep_alive = http_should_keep_alive(p);
    c->deadline = mono_ms() + KNIT_HTTP_IDLE_MS;
    if (p->upgrade) {
        c->upgrade = 1;
        return 0; /* the parser stops here; upgrade() follows (note 5) */
    }
    route(c);
    if (c->parked && !c->closing)
        http_parser_pause(p, 1); /* note 6 */
    /* Stop parsing pipelined requests once the connection is closing. */
    return c->closing ? -1 : 0;
}

static void on_read(knit_stream_t *st, const uint8_t *data, size_t n)
{
    hconn_t *c = st->data;
    size_t used;
    if (c->closing || c->handle_closing)
        return; /* lingering: discard */
    if (c->parked) {
        c->pipelined = 1; /* note 6 */
        return;
    }
    used = http_parser_execute(&c->p, &c->s->ps, (const char *)data, n);
    if (c->closing || c->handle_closing)
        return;
    if (c->parked) {
        /* The parser is paused (note 6): what followed is dropped. */
        if (used < n)
            c->pipelined = 1;
        return;
    }
    if (c->upgrade) {
        upgrade(c, data + used, n - used);
        return;
    }
    if (c->limit) {
        if (c->limit != 503)
            knit__metrics_limit(c->s->h.m,
                                c->limit == 431 ? KNIT_METRIC_HTTP_HEADER : KNIT_METRIC_HTTP_BODY);
        answer_text(c, c->limit,
                    c->limit == 431   ? "request headers too large\n"
                    : c->limit == 413 ? "request body too large\n"
                                      : "out of memory\n",
                    NULL, 1);
        return;
    }
    if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK) {
        char body[160];
        snprintf(body, sizeof body, "malformed request: %s\n",
                 http_errno_description(HTTP_PARSER_ERRNO(&c->p)));
        hlog(c->s, KNIT_LOG_DEBUG, "http: 400: %s", http_errno_name(HTTP_PARSER_ERRNO(&c->p)));
        answer_text(c, 400, body, NULL, 1);
    }
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

/* A duration from the environment (tests shorten the long-poll timers),
** else dflt. */
static uint64_t env_ms(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    char *e;
    unsigned long long ms;
    if (!v || !*v)
        return dflt;
    ms = strtoull(v, &e, 10);
    return *e || ms == 0 ? dflt : (uint64_t)ms;
}

int knit__http_server_new(const knit_http_hooks_t *h, knit_http_server_t **out) /* see http.h */
{
    knit_http_server_t *s;
    *out = NULL;
    if (!(s = knit__calloc(1, sizeof *s)))
        return KNIT_ENOMEM;
    s->h = *h;
    if (!s->h.max_conns)
        s->h.max_conns = 1024;
    if (s->h.longpoll && s->h.random) {
        knit_lp_conf_t lc;
        int rc;
        memset(&lc, 0, sizeof lc);
        lc.random = s->h.random;
        lc.data = s->h.data;
        lc.max_frame = s->h.max_msg;
        /* The engine disconnects past twice max_queue (proto_server.c);
        ** this is the backstop should it not. */
        lc.max_unacked = 2 * (s->h.max_queue ? s->h.max_queue : 8u << 20) + s->h.max_msg + 4;
        lc.max_sessions = s->h.max_conns;
        lc.wait_ms = s->h.lp_wait_ms ? s->h.lp_wait_ms : env_ms("KNIT_LP_WAIT_MS", KNIT_LP_WAIT_MS);
        lc.idle_ms = s->h.lp_idle_ms ? s->h.lp_idle_ms : env_ms("KNIT_LP_IDLE_MS", KNIT_LP_IDLE_MS);
        if ((rc = knit__lp_new(&lc, &s->lp)) != 0) {
            knit__free(s);
            return rc;
        }
    }
    http_parser_settings_init(&s->ps);
    s->ps.on_message_begin = cb_begin;
    s->ps.on_url = cb_url;
    s->ps.on_header_field = cb_field;
    s->ps.on_header_value = cb_value;
    s->ps.on_headers_complete = cb_headers_done;
    s->ps.on_body = cb_body;
    s->ps.on_message_complete = cb_complete;
    *out = s;
    return 0;
}

void knit__http_server_free(knit_http_server_t *s) /* see http.h */
{
    if (!s)
        return;
    knit__lp_free(s->lp);
    knit__free(s);
}

void knit__http_accept(knit_http_server_t *s, knit_stream_t *st) /* see http.h */
{
    static const knit_stream_cbs_t cbs = {NULL, on_read, on_end, on_closed};
    hconn_t *c = knit__calloc(1, sizeof *c);
    if (!c) {
        st->cb = cbs;
        st->cb.on_close = NULL;
        knit_stream_close(st);
        return;
    }
    c->s = s;
    c->st = st;
    st->cb = cbs;
    st->data = c;
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    c->deadline = mono_ms() + KNIT_HTTP_IDLE_MS;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    knit__metrics_http_conn(s->h.m, 1);
    if (s->stopping) {
        start_linger(c);
        return;
    }
    if (s->nconns > s->h.max_conns) {
        knit__metrics_limit(s->h.m, KNIT_METRIC_HTTP_CONNS);
        hlog(s, KNIT_LOG_WARN, "http: refusing a connection: %zu open already", s->h.max_conns);
        answer_text(c, 503, "too many connections\n", NULL, 1);
        return;
    }
    knit_stream_read(st, 1);
}

void knit__http_tick(knit_http_server_t *s, uint64_t now) /* see http.h */
{
    hconn_t *c, *next;
    if (!s)
        return;
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (now < c->deadline)
            continue;
        if (c->parked) {
            /* Shutting down and lp.c has not answered (note 6). */
            knit__lp_cancel(s->lp, c);
            c->parked = 0;
            answer_text(c, 503, "relay shutting down\n", NULL, 1);
        } else if (c->closing) {
            close_handle(c);
        } else if (c->in_request) {
            knit__metrics_limit(s->h.m, KNIT_METRIC_HTTP_TIMEOUT);
            answer_text(c, 408, "request not complete in time\n", NULL, 1);
        } else {
            start_linger(c); /* idle keep-alive: close quietly */
        }
    }
    knit__lp_tick(s->lp, now);
}

void knit__http_shutdown(knit_http_server_t *s) /* see http.h */
{
    hconn_t *c, *next;
    if (!s)
        return;
    s->stopping = 1;
    for (c = s->conns; c; c = next) {
        next = c->next;
        /* A parked GET is answered by the ERROR the engine sends every
        ** session next, or else at this deadline (knit__http_tick). */
        if (c->parked)
            c->deadline = mono_ms() + KNIT_HTTP_LINGER_MS;
        else
            start_linger(c);
    }
}

size_t knit__http_conns(const knit_http_server_t *s) /* see http.h */
{
    return s ? s->nconns : 0;
}
