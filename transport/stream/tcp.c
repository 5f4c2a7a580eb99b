/*
** tcp.c: plain TCP streams over libuv (API in tcp.h and stream.h), the
** only byte stream today.  Everything libuv-specific about sockets that the
** client and relay glue used to do themselves lives here: connect, accept,
** reads into a buffer, writes with completions, half-close and close.
**
** Design notes
**   1. Streams accepted by one listener share one read buffer: read
**      callbacks run one at a time on the loop and users copy what they
**      keep, so a relay with thousands of idle connections holds one
**      buffer, not thousands.  The buffer is reference-counted, because
**      accepted streams may outlive their listener.
**   2. A write's buffer is freed exactly once: after its completion, or at
**      once when libuv refuses it.  Completions that run because the
**      stream was closed report KNIT_ECLOSED, and all of them run before
**      on_close (libuv cancels queued writes before the close callback).
**   3. on_end is reported at most once, and reading stops with it: after
**      EOF or an error no further input is delivered.
*/
#include "tcp.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

#define READ_BUF (64 * 1024)

typedef struct rbuf_s {
    size_t refs;         /* listener and streams using it */
    uint8_t b[READ_BUF]; /* the bytes */
} rbuf_t;

typedef struct tcp_s {
    knit_stream_t pub;  /* the public part; first */
    uv_tcp_t tcp;       /* the socket; tcp.data = this */
    uv_connect_t creq;  /* the connect request */
    uv_shutdown_t sreq; /* the half-close request */
    rbuf_t *rbuf;       /* read buffer (note 1) */
    int open;           /* connected or accepted */
    int ended;          /* on_end was reported (note 3) */
    int closing;        /* uv_close was called */
} tcp_t;

typedef struct wreq_s {
    uv_write_t req;          /* libuv request; req.data = this */
    tcp_t *t;                /* the stream */
    uint8_t *p;              /* the bytes, knit__free after the write */
    knit_stream_write_cb cb; /* completion, or NULL */
    void *arg;               /* its argument */
} wreq_t;

struct knit_tcp_listener_s {
    uv_tcp_t tcp;                                         /* the listening socket */
    knit_tcp_accept_fn on_accept;                         /* new connections */
    void *data;                                           /* for on_accept and close_cb */
    rbuf_t *rbuf;                                         /* shared by accepted streams */
    void (*close_cb)(void *data, knit_tcp_listener_t *l); /* once closed */
    int closing;                                          /* uv_close was called */
};

int knit_uv_error(int uverr) /* see tcp.h */
{
    switch (uverr) {
    case 0:
        return 0;
    case UV_ETIMEDOUT:
        return KNIT_ETIMEDOUT;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return KNIT_ENOMEM;
    case UV_EOF:
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECANCELED:
        return KNIT_ECLOSED;
    default:
        return KNIT_EIO;
    }
}

static void rbuf_release(rbuf_t *r)
{
    if (r && --r->refs == 0)
        knit__free(r);
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t n, int *port)
{
    char ip[48] = "";
    int p = 0;
    if (ss->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)ss, ip, sizeof ip);
        p = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    } else {
        uv_ip4_name((const struct sockaddr_in *)ss, ip, sizeof ip);
        p = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    }
    snprintf(buf, n, "%s", ip);
    *port = p;
}

/* ---------------------------------------------------------------------- */
/* Stream operations                                                        */

static void end(tcp_t *t, int code, const char *msg)
{
    if (t->ended || t->closing)
        return;
    t->ended = 1;
    uv_read_stop((uv_stream_t *)&t->tcp);
    if (t->pub.cb.on_end)
        t->pub.cb.on_end(&t->pub, code, msg);
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = req->data;
    tcp_t *t = w->t;
    knit_stream_write_cb cb = w->cb;
    void *arg = w->arg;
    knit__free(w->p);
    knit__free(w);
    if (cb)
        cb(&t->pub, arg, t->closing && status < 0 ? KNIT_ECLOSED : knit_uv_error(status));
}

static int op_write(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg)
{
    tcp_t *t = (tcp_t *)st;
    wreq_t *w;
    uv_buf_t b;
    int rc;
    if (t->closing || !t->open) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    if (!(w = knit__malloc(sizeof *w))) {
        knit__free(p);
        return KNIT_ENOMEM;
    }
    w->req.data = w;
    w->t = t;
    w->p = p;
    w->cb = cb;
    w->arg = arg;
    b = uv_buf_init((char *)p, (unsigned)n);
    if ((rc = uv_write(&w->req, (uv_stream_t *)&t->tcp, &b, 1, on_write)) != 0) {
        knit__free(p);
        knit__free(w);
        return knit_uv_error(rc);
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tcp_t *t = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)t->rbuf->b, sizeof t->rbuf->b);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tcp_t *t = s->data;
    if (nread == 0 || t->closing)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            end(t, KNIT_ECLOSED, NULL);
        else
            end(t, knit_uv_error((int)nread), uv_strerror((int)nread));
        return;
    }
    if (t->pub.cb.on_read)
        t->pub.cb.on_read(&t->pub, (const uint8_t *)buf->base, (size_t)nread);
}

static int op_read(knit_stream_t *st, int on)
{
    tcp_t *t = (tcp_t *)st;
    int rc;
    if (t->closing || t->ended || !t->open)
        return 0;
    if (!on)
        return knit_uv_error(uv_read_stop((uv_stream_t *)&t->tcp));
    rc = uv_read_start((uv_stream_t *)&t->tcp, on_alloc, on_read);
    return rc == UV_EALREADY ? 0 : knit_uv_error(rc);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tcp_t *t = req->data;
    if (status < 0 && !t->closing)
        end(t, knit_uv_error(status), uv_strerror(status));
}

static int op_shutdown(knit_stream_t *st)
{
    tcp_t *t = (tcp_t *)st;
    int rc;
    if (t->closing || !t->open)
        return KNIT_ECLOSED;
    t->sreq.data = t;
    rc = uv_shutdown(&t->sreq, (uv_stream_t *)&t->tcp, on_shutdown);
    return knit_uv_error(rc);
}

static void on_closed(uv_handle_t *h)
{
    tcp_t *t = h->data;
    if (t->pub.cb.on_close)
        t->pub.cb.on_close(&t->pub);
    rbuf_release(t->rbuf);
    knit__free(t);
}

static void op_close(knit_stream_t *st)
{
    tcp_t *t = (tcp_t *)st;
    if (t->closing)
        return;
    t->closing = 1;
    uv_close((uv_handle_t *)&t->tcp, on_closed);
}

static int op_peer(knit_stream_t *st, char *buf, size_t n)
{
    tcp_t *t = (tcp_t *)st;
    struct sockaddr_storage ss;
    int len = sizeof ss, port, rc;
    char ip[48];
    if ((rc = uv_tcp_getpeername(&t->tcp, (struct sockaddr *)&ss, &len)) != 0) {
        snprintf(buf, n, "?");
        return knit_uv_error(rc);
    }
    format_addr(&ss, ip, sizeof ip, &port);
    snprintf(buf, n, "%s:%d", ip, port);
    return 0;
}

static const knit_stream_ops_t TCP_OPS = {op_write, op_read, op_shutdown, op_close, op_peer};

static tcp_t *tcp_new(uv_loop_t *loop, rbuf_t *shared)
{
    tcp_t *t = knit__calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (shared) {
        t->rbuf = shared;
        shared->refs++;
    } else if ((t->rbuf = knit__malloc(sizeof *t->rbuf)) != NULL) {
        t->rbuf->refs = 1;
    } else {
        knit__free(t);
        return NULL;
    }
    if (uv_tcp_init(loop, &t->tcp) != 0) {
        rbuf_release(t->rbuf);
        knit__free(t);
        return NULL;
    }
    t->pub.ops = &TCP_OPS;
    t->tcp.data = t;
    return t;
}

/* ---------------------------------------------------------------------- */
/* Connecting                                                               */

static void on_connect(uv_connect_t *req, int status)
{
    tcp_t *t = req->data;
    if (t->closing)
        return;
    if (status < 0) {
        t->ended = 1;
        if (t->pub.cb.on_open)
            t->pub.cb.on_open(&t->pub, knit_uv_error(status), uv_strerror(status));
        return;
    }
    t->open = 1;
    uv_tcp_nodelay(&t->tcp, 1);
    if ((status = uv_read_start((uv_stream_t *)&t->tcp, on_alloc, on_read)) != 0) {
        t->ended = 1;
        if (t->pub.cb.on_open)
            t->pub.cb.on_open(&t->pub, knit_uv_error(status), uv_strerror(status));
        return;
    }
    if (t->pub.cb.on_open)
        t->pub.cb.on_open(&t->pub, 0, NULL);
}

int knit_tcp_connect(uv_loop_t *loop, const struct sockaddr *addr, const knit_stream_cbs_t *cb,
                     void *data, knit_stream_t **out) /* see tcp.h */
{
    tcp_t *t = tcp_new(loop, NULL);
    int rc;
    *out = NULL;
    if (!t)
        return KNIT_ENOMEM;
    t->pub.cb = *cb;
    t->pub.data = data;
    t->creq.data = t;
    if ((rc = uv_tcp_connect(&t->creq, &t->tcp, addr, on_connect)) != 0) {
        /* The handle exists: it is closed the normal way, quietly. */
        t->pub.cb.on_close = NULL;
        op_close(&t->pub);
        return knit_uv_error(rc);
    }
    *out = &t->pub;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Listening                                                                */

static void on_connection(uv_stream_t *ls, int status)
{
    knit_tcp_listener_t *l = ls->data;
    tcp_t *t;
    if (l->closing)
        return;
    if (status < 0 || !(t = tcp_new(ls->loop, l->rbuf))) {
        l->on_accept(l->data, l, NULL);
        return;
    }
    if (uv_accept(ls, (uv_stream_t *)&t->tcp) != 0) {
        op_close(&t->pub);
        return;
    }
    t->open = 1;
    uv_tcp_nodelay(&t->tcp, 1);
    l->on_accept(l->data, l, &t->pub);
}

int knit_tcp_listen(uv_loop_t *loop, const char *host, int port, knit_tcp_accept_fn on_accept,
                    void *data, char *msg, size_t n, knit_tcp_listener_t **out) /* see tcp.h */
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    knit_tcp_listener_t *l;
    int rc;

    *out = NULL;
    snprintf(msg, n, "%s", "");
    if (uv_ip4_addr(host, port, &addr.in4) != 0 && uv_ip6_addr(host, port, &addr.in6) != 0) {
        snprintf(msg, n, "cannot listen on %s: not an IP address", host);
        return KNIT_EINVAL;
    }
    if (!(l = knit__calloc(1, sizeof *l)) || !(l->rbuf = knit__malloc(sizeof *l->rbuf))) {
        knit__free(l);
        snprintf(msg, n, "out of memory");
        return KNIT_ENOMEM;
    }
    l->rbuf->refs = 1;
    l->on_accept = on_accept;
    l->data = data;
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    if ((rc = uv_tcp_bind(&l->tcp, &addr.sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection)) != 0) {
        snprintf(msg, n, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        knit_tcp_listener_close(l, NULL);
        return KNIT_EIO;
    }
    *out = l;
    return 0;
}

void knit_tcp_listener_addr(knit_tcp_listener_t *l, char *buf, size_t n, int *port) /* see tcp.h */
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
    format_addr(&ss, buf, n, port);
}

static void on_listener_closed(uv_handle_t *h)
{
    knit_tcp_listener_t *l = h->data;
    if (l->close_cb)
        l->close_cb(l->data, l);
    rbuf_release(l->rbuf);
    knit__free(l);
}

void knit_tcp_listener_close(knit_tcp_listener_t *l,
                             void (*cb)(void *data, knit_tcp_listener_t *l)) /* see tcp.h */
{
    if (!l || l->closing)
        return;
    l->closing = 1;
    l->close_cb = cb;
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}
