/*
** ws_client.c: the WebSocket client stream (API in ws_client.h).  The
** upgrade is a request written by hand (it is short and fixed) and an
** answer read by http-parser in response mode; after it, the stream is
** the client role of the shared WebSocket message stream (ws_stream.c,
** whose design notes cover the framing): this file adds masking keys and
** the handshake, which runs through the role's hooks until
** knit__ws_stream_start() hands over.
**
** Design notes
**   1. The answer's head is collected until its empty line (CRLF CRLF),
**      at most MAX_HEAD bytes.  http-parser is fed the new bytes up to that
**      line only, as they arrive, so bytes that are not HTTP (a relay's
**      binary port, a TLS server) are refused at their first byte, and the
**      bytes after the head, the first WebSocket frames, are never seen by
**      it: they are fed to wslay once on_open(0) has returned.
**   2. on_open(0) is reported only after a 101 with "Upgrade: websocket",
**      a "Connection" that holds "upgrade", the Sec-WebSocket-Accept of
**      our key, and no extension or subprotocol (none was offered).  Any
**      other answer is reported once through on_open, as KNIT_EPROTO when
**      waiting cannot help (not HTTP, a 4xx, a broken handshake: the client
**      treats it as fatal, like a refused certificate) or KNIT_EIO when it
**      may (a 5xx, 408 or 429 from a proxy, a connection cut before the
**      answer), and the stream then only waits for knit_stream_close().
**
**     UPGRADING --101 checked: upgraded()--> OPEN (ws_stream.c from here)
**         |
**         +-- other answer, EOF: refuse() --> FAILED
**         +------------ knit_stream_close() from any state --> on_close
*/
#include "ws_client.h"

#include <bearssl.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "cred.h"
#include "ws_stream.h"

#define MAX_HEAD 8192 /* bytes of the 101 answer's head we accept */
#define MAX_PATH 1024 /* characters of a path */
#define MAX_HOST 300  /* characters of a Host header */

/* Headers of the answer that the checks of note 2 look at. */
enum { H_OTHER, H_UPGRADE, H_CONNECTION, H_ACCEPT, H_EXTRA };

typedef struct wsc_s {
    knit_ws_stream_t ws;      /* the shared stream; first */
    br_hmac_drbg_context rng; /* masking keys (and the handshake key) */
    char *req;                /* the upgrade request, until the inner stream opens */
    char *path;               /* the request's path, for messages */
    char accept[29];          /* the Sec-WebSocket-Accept expected, NUL-terminated */
    http_parser hp;           /* the answer's parser (note 1) */
    uint8_t head[MAX_HEAD];   /* the answer's bytes so far */
    size_t nhead;             /* their count */
    int head_done;            /* on_headers_complete ran */
    char reason[48];          /* the status line's reason phrase */
    int field;                /* H_*: the header being read */
    int in_value;             /* the parser is inside a header value */
    char fname[32];           /* the header name being read (truncated) */
    size_t nfname;            /* its length */
    char fval[160];           /* its value (truncated) */
    size_t nfval;             /* its length */
    int fval_long;            /* the value did not fit */
    int upgrade_ok;           /* "Upgrade: websocket" seen */
    int conn_ok;              /* "Connection: ... upgrade" seen */
    int accepts;              /* Sec-WebSocket-Accept headers seen */
    int accept_ok;            /* the one seen matched */
    int extra;                /* an extension or subprotocol was chosen */
} wsc_t;

/* ---------------------------------------------------------------------- */
/* Handshake                                                                */

int knit_ws_path_ok(const char *path) /* see ws_client.h */
{
    size_t n;
    if (!path || path[0] != '/')
        return 0;
    for (n = 0; path[n]; n++)
        if (n >= MAX_PATH || path[n] <= ' ' || path[n] > '~' || path[n] == '#')
            return 0;
    return 1;
}

static int host_ok(const char *host)
{
    size_t n;
    for (n = 0; host[n]; n++)
        if (n >= MAX_HOST || host[n] <= ' ' || host[n] > '~' || host[n] == '/')
            return 0;
    return n > 0;
}

/* Standard base64 (RFC 4648 section 4, padded) of in[0..n): the base64url
** codec's output with its two alphabet letters swapped back and padding
** added.  out holds 4 * ceil(n / 3) + 1 bytes. */
static void base64(const uint8_t *in, size_t n, char *out)
{
    size_t k = knit_b64url_encode(in, n, out);
    for (size_t i = 0; i < k; i++)
        out[i] = out[i] == '-' ? '+' : out[i] == '_' ? '/' : out[i];
    while (k % 4)
        out[k++] = '=';
    out[k] = '\0';
}

/* Trims spaces and tabs off both ends of p[0..*n); returns the start. */
static const char *trim(const char *p, size_t *n)
{
    while (*n && (p[0] == ' ' || p[0] == '\t')) {
        p++;
        (*n)--;
    }
    while (*n && (p[*n - 1] == ' ' || p[*n - 1] == '\t'))
        (*n)--;
    return p;
}

/* 1 if the comma-separated list v[0..n) holds the token tok (any case). */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    while (n) {
        size_t k = 0, m;
        const char *item;
        while (k < n && v[k] != ',')
            k++;
        m = k;
        item = trim(v, &m);
        if (m == tl && strncasecmp(item, tok, tl) == 0)
            return 1;
        v += k < n ? k + 1 : k;
        n -= k < n ? k + 1 : k;
    }
    return 0;
}

/* One header is complete: note what the checks need. */
static void header_done(wsc_t *w)
{
    size_t n = w->nfval;
    const char *v = trim(w->fval, &n);
    switch (w->field) {
    case H_UPGRADE:
        w->upgrade_ok = !w->fval_long && n == 9 && strncasecmp(v, "websocket", 9) == 0;
        break;
    case H_CONNECTION:
        w->conn_ok |= !w->fval_long && has_token(v, n, "upgrade");
        break;
    case H_ACCEPT:
        w->accepts++;
        w->accept_ok = !w->fval_long && n == 28 && memcmp(v, w->accept, 28) == 0;
        break;
    case H_EXTRA:
        w->extra = 1;
        break;
    }
    w->field = H_OTHER;
    w->nfname = w->nfval = 0;
    w->fval_long = 0;
}

static int field_kind(const char *name, size_t n)
{
    static const struct {
        const char *name;
        int kind;
    } known[] = {{"upgrade", H_UPGRADE},
                 {"connection", H_CONNECTION},
                 {"sec-websocket-accept", H_ACCEPT},
                 {"sec-websocket-extensions", H_EXTRA},
                 {"sec-websocket-protocol", H_EXTRA}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == n && strncasecmp(name, known[i].name, n) == 0)
            return known[i].kind;
    return H_OTHER;
}

static int cb_status(http_parser *p, const char *at, size_t n)
{
    wsc_t *w = p->data;
    size_t have = strlen(w->reason);
    for (size_t i = 0; i < n && have + 1 < sizeof w->reason; i++)
        w->reason[have++] = at[i] >= ' ' && at[i] <= '~' ? at[i] : '?';
    w->reason[have] = '\0';
    return 0;
}

static int cb_field(http_parser *p, const char *at, size_t n)
{
    wsc_t *w = p->data;
    if (w->in_value) {
        header_done(w);
        w->in_value = 0;
    }
    if (w->nfname + n > sizeof w->fname) {
        w->nfname = sizeof w->fname + 1; /* too long for any header we know */
        return 0;
    }
    memcpy(w->fname + w->nfname, at, n);
    w->nfname += n;
    return 0;
}

static int cb_value(http_parser *p, const char *at, size_t n)
{
    wsc_t *w = p->data;
    if (!w->in_value) {
        w->in_value = 1;
        w->field = w->nfname <= sizeof w->fname ? field_kind(w->fname, w->nfname) : H_OTHER;
    }
    if (w->nfval + n > sizeof w->fval) {
        w->fval_long = 1;
        return 0;
    }
    memcpy(w->fval + w->nfval, at, n);
    w->nfval += n;
    return 0;
}

static int cb_headers_done(http_parser *p)
{
    wsc_t *w = p->data;
    if (w->in_value)
        header_done(w);
    w->in_value = 0;
    w->head_done = 1;
    return 1; /* no body: we stop at the head anyway (note 1) */
}

static const http_parser_settings PARSER = {
    .on_status = cb_status,
    .on_header_field = cb_field,
    .on_header_value = cb_value,
    .on_headers_complete = cb_headers_done,
};

/* ---------------------------------------------------------------------- */
/* The client role                                                          */

static void genmask(knit_ws_stream_t *ws, uint8_t *buf, size_t len)
{
    br_hmac_drbg_generate(&((wsc_t *)ws)->rng, buf, len);
}

/* ---------------------------------------------------------------------- */
/* The upgrade                                                              */

/* The upgrade failed: tell the user through on_open, once (note 2), with
** code KNIT_EPROTO when the answer says this will not work by waiting (not
** HTTP, a 4xx, a broken handshake), KNIT_EIO when it may (a 5xx, a cut). */
static void refuse(wsc_t *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(wsc_t *w, int code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    if (w->ws.state != KNIT_WS_UPGRADING || w->ws.closing)
        return;
    w->ws.state = KNIT_WS_FAILED;
    knit_stream_read(w->ws.in, 0);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->ws.pub.cb.on_open)
        w->ws.pub.cb.on_open(&w->ws.pub, code, msg);
}

/* The head is complete: check it (note 2); then hand over to the shared
** stream, which opens and feeds wslay rest[0..n), the bytes after the head. */
static void upgraded(wsc_t *w, const uint8_t *rest, size_t n)
{
    int status = (int)w->hp.status_code;
    if (status != 101) {
        int later = status >= 500 || status == 408 || status == 429;
        refuse(w, later ? KNIT_EIO : KNIT_EPROTO,
               "relay answered %d%s%s at %s: is --http-listen that port%s?", status,
               w->reason[0] ? " " : "", w->reason, w->path,
               status == 404 ? " (its WebSocket is at " KNIT_WS_DEFAULT_PATH ")" : "");
        return;
    }
    if (!w->upgrade_ok || !w->conn_ok) {
        refuse(w, KNIT_EPROTO,
               "relay answered 101 at %s without \"Upgrade: websocket\" and "
               "\"Connection: Upgrade\"",
               w->path);
        return;
    }
    if (w->accepts != 1 || !w->accept_ok) {
        refuse(w, KNIT_EPROTO,
               "the 101 answer at %s has %s Sec-WebSocket-Accept: is a proxy rewriting "
               "the handshake?",
               w->path, w->accepts ? "a wrong" : "no");
        return;
    }
    if (w->extra) {
        refuse(w, KNIT_EPROTO,
               "the 101 answer at %s chose a WebSocket extension or subprotocol that was "
               "not offered",
               w->path);
        return;
    }
    knit__free(w->req);
    w->req = NULL;
    knit__ws_stream_start(&w->ws, rest, n);
}

/* Bytes of the answer arrived (note 1). */
static void answer_in(knit_ws_stream_t *ws, const uint8_t *p, size_t n)
{
    wsc_t *w = (wsc_t *)ws;
    size_t from = w->nhead > 3 ? w->nhead - 3 : 0, take = n, end_at = 0, used;
    if (w->nhead + take > MAX_HEAD)
        take = MAX_HEAD - w->nhead;
    memcpy(w->head + w->nhead, p, take);
    for (size_t i = from; i + 4 <= w->nhead + take; i++)
        if (memcmp(w->head + i, "\r\n\r\n", 4) == 0) {
            end_at = i + 4;
            break;
        }
    /* The parser sees the new bytes, up to the head's end. */
    size_t feed_to = end_at ? end_at : w->nhead + take;
    used =
        http_parser_execute(&w->hp, &PARSER, (const char *)w->head + w->nhead, feed_to - w->nhead);
    if (HTTP_PARSER_ERRNO(&w->hp) != HPE_OK || used != feed_to - w->nhead) {
        refuse(w, KNIT_EPROTO,
               "no HTTP answer to the WebSocket upgrade at %s: is this port the relay's "
               "--http-listen (with TLS: wss://)?",
               w->path);
        return;
    }
    if (!end_at) {
        w->nhead += take;
        if (w->nhead == MAX_HEAD)
            refuse(w, KNIT_EPROTO,
                   "the answer to the WebSocket upgrade at %s is longer than %d bytes", w->path,
                   MAX_HEAD);
        return;
    }
    if (!w->head_done) {
        refuse(w, KNIT_EPROTO,
               "the answer to the WebSocket upgrade at %s is not a complete HTTP head", w->path);
        return;
    }
    /* What follows the head in this read (never more than n bytes). */
    upgraded(w, p + (end_at - w->nhead), n - (end_at - w->nhead));
    w->nhead = end_at;
}

/* The inner stream opened (or failed to): send the upgrade request. */
static void inner_open(knit_ws_stream_t *ws, int status, const char *msg)
{
    wsc_t *w = (wsc_t *)ws;
    char *req;
    int rc;
    if (status) {
        w->ws.state = KNIT_WS_FAILED;
        if (w->ws.pub.cb.on_open)
            w->ws.pub.cb.on_open(&w->ws.pub, status, msg);
        return;
    }
    req = w->req;
    w->req = NULL;
    /* The stream owns req from here on, also when the write fails. */
    if ((rc = knit_stream_write(w->ws.in, (uint8_t *)req, strlen(req), NULL, NULL)) != 0)
        refuse(w, KNIT_EIO, "cannot send the WebSocket upgrade: %s", knit_strerror(rc));
}

/* The inner stream ended before the answer's head was complete. */
static void inner_end(knit_ws_stream_t *ws, int code, const char *msg)
{
    wsc_t *w = (wsc_t *)ws;
    if (code == KNIT_ECLOSED)
        refuse(w, KNIT_EIO,
               "closed before answering the WebSocket upgrade at %s: is this port the "
               "relay's --http-listen (with TLS: wss://)?",
               w->path);
    else
        refuse(w, KNIT_EIO, "no answer to the WebSocket upgrade at %s: %s", w->path,
               msg ? msg : knit_strerror(code));
}

static void fini(knit_ws_stream_t *ws)
{
    wsc_t *w = (wsc_t *)ws;
    knit__free(w->req);
    knit__free(w->path);
}

static const knit_ws_role_t CLIENT = {
    .client = 1,
    .genmask = genmask,
    .open = inner_open,
    .read = answer_in,
    .end = inner_end,
    .fini = fini,
};

int knit_ws_client(knit_stream_t *inner, const char *host, const char *path, const uint8_t seed[32],
                   const knit_stream_cbs_t *cb, void *data,
                   knit_stream_t **out) /* see ws_client.h */
{
    uint8_t nonce[16];
    char key[25];
    wsc_t *w;
    int n;

    *out = NULL;
    if (!path)
        path = KNIT_WS_DEFAULT_PATH;
    if (!inner || !host || !host_ok(host) || !knit_ws_path_ok(path) || !cb)
        return KNIT_EINVAL;
    if (!(w = knit__calloc(1, sizeof *w)))
        return KNIT_ENOMEM;
    br_hmac_drbg_init(&w->rng, &br_sha256_vtable, seed, 32);
    br_hmac_drbg_generate(&w->rng, nonce, sizeof nonce);
    base64(nonce, sizeof nonce, key);                       /* 24 characters */
    (void)knit__ws_accept_key(key, strlen(key), w->accept); /* 28 characters */

    n = snprintf(NULL, 0,
                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 path, host, key);
    if (!(w->req = knit__malloc((size_t)n + 1)) || !(w->path = knit__strdup(path)) ||
        knit__ws_stream_init(&w->ws, &CLIENT, inner, KNIT_WS_CLIENT_MAX_MSG, NULL, 0) != 0) {
        knit__free(w->req);
        knit__free(w->path);
        knit__free(w);
        return KNIT_ENOMEM;
    }
    snprintf(w->req, (size_t)n + 1,
             "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path, host, key);
    http_parser_init(&w->hp, HTTP_RESPONSE);
    w->hp.data = w;
    w->ws.pub.cb = *cb;
    w->ws.pub.data = data;
    *out = &w->ws.pub;
    return 0;
}
