/*
** relay.c: libuv glue for the relay (API in relay.h).  Sockets, timers and
** signals live here; every protocol decision is the engine's
** (proto_server.c), which this file feeds with bytes and the time.
**
** Design notes
**   1. Group commit happens in a uv_check callback: libuv runs it after
**      every poll phase, so all frames read in one loop iteration, from all
**      connections, are committed together before the loop sleeps again.
**   2. Closing is lingering: when the engine closes a connection, the glue
**      stops feeding it, lets the queued frames (typically an ERROR) drain,
**      half-closes (FIN), and keeps reading and discarding until the peer
**      closes or CLOSE_LINGER_MS pass.  Closing a socket with unread input
**      would send RST and could destroy the ERROR before the peer reads it.
**   3. One read buffer serves every connection: read callbacks run one at a
**      time and the engine copies what it keeps.
**   4. Shutdown (SIGINT/SIGTERM): stop accepting, let the engine commit and
**      answer what it received and send ERROR KNIT_ECLOSED everywhere, then
**      wait for the connections to close, at most STOP_GRACE_MS.
*/
#include "relay.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "alloc.h"

#define READ_BUF (64 * 1024)
#define TICK_MS 250
#define CLOSE_LINGER_MS 2000
#define STOP_GRACE_MS 5000

typedef struct server_s server_t;

typedef struct conn_s {
    uv_tcp_t tcp;               /* the socket; tcp.data = this */
    server_t *srv;              /* owner */
    knit_relay_conn_t *ec;      /* engine connection (NULL: refused at accept) */
    struct conn_s *prev;        /* server's list */
    struct conn_s *next;        /* server's list */
    size_t writes;              /* writes in flight */
    int closing;                /* engine asked to close, or the peer went away */
    int shut;                   /* FIN sent */
    int handle_closing;         /* uv_close called */
    uint64_t close_deadline;    /* mono ms by which the handle is closed anyway */
    uv_shutdown_t shutdown_req; /* for the half-close */
} conn_t;

typedef struct wreq_s {
    uv_write_t req; /* libuv request; req.data = the conn */
    uint8_t *p;     /* bytes, knit__free after the write */
    size_t n;       /* their count */
} wreq_t;

struct server_s {
    uv_loop_t loop;           /* the event loop */
    uv_tcp_t listener;        /* listening socket */
    uv_check_t check;         /* group commit after each poll */
    uv_timer_t tick;          /* timeouts */
    uv_signal_t sigint;       /* SIGINT */
    uv_signal_t sigterm;      /* SIGTERM */
    knit_relay_engine_t *eng; /* the protocol engine */
    conn_t *conns;            /* open sockets */
    size_t nconns;            /* count */
    size_t max_conns;         /* limit */
    int log_level;            /* for the glue's own lines */
    int listening;            /* listener open */
    int stopping;             /* a stop signal arrived */
    int finished;             /* handles closed, loop winding down */
    uint64_t stop_deadline;   /* mono ms */
    uint8_t rbuf[READ_BUF];   /* shared read buffer (note 3) */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

void knit_relay_log_stderr(void *data, int level, const char *line) /* see relay.h */
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char when[32];
    struct timespec ts;
    struct tm tm;
    (void)data;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ sync-relay %s: %s\n", when, ts.tv_nsec / 1000000L,
            names[level < 0   ? 0
                  : level > 3 ? 3
                              : level],
            line);
}

static void glog(server_t *s, int level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (level > s->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    knit_relay_log_stderr(NULL, level, line);
}

/* ---------------------------------------------------------------------- */
/* Closing                                                                  */

static void maybe_finish(server_t *s);

static void on_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    server_t *s = c->srv;
    if (c->ec)
        knit_relay_conn_free(c->ec);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    knit__free(c);
    maybe_finish(s);
}

static void close_handle(conn_t *c)
{
    if (c->handle_closing)
        return;
    c->handle_closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    (void)status;
    /* Keep reading until EOF or the linger deadline (note 2). */
    if (status < 0)
        close_handle(c);
}

/* Half-closes once every queued write is done (note 2). */
static void linger(conn_t *c)
{
    if (c->handle_closing || c->shut || c->writes)
        return;
    c->shut = 1;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        close_handle(c);
}

/* ---------------------------------------------------------------------- */
/* Engine callbacks                                                         */

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = req->data;
    size_t n = w->n;
    knit__free(w->p);
    knit__free(w);
    c->writes--;
    if (status < 0) {
        if (c->ec && !c->closing)
            knit_relay_conn_lost(c->ec);
        c->closing = 1;
        close_handle(c);
        return;
    }
    if (c->ec && !c->handle_closing)
        knit_relay_conn_sent(c->ec, n);
    if (c->closing)
        linger(c);
}

static int io_send(void *data, void *user, uint8_t *p, size_t n)
{
    conn_t *c = user;
    wreq_t *w;
    uv_buf_t b;
    (void)data;
    if (c->handle_closing || c->shut) {
        knit__free(p);
        return -1;
    }
    w = knit__malloc(sizeof *w);
    if (!w) {
        knit__free(p);
        return -1;
    }
    w->p = p;
    w->n = n;
    w->req.data = c;
    b = uv_buf_init((char *)p, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        knit__free(p);
        knit__free(w);
        return -1;
    }
    c->writes++;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void io_close(void *data, void *user)
{
    conn_t *c = user;
    (void)data;
    if (c->closing)
        return;
    c->closing = 1;
    c->close_deadline = mono_ms() + CLOSE_LINGER_MS;
    /* Read (and discard) until the peer's EOF, even if reading was paused. */
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    linger(c);
}

static void io_pause(void *data, void *user, int paused)
{
    conn_t *c = user;
    (void)data;
    if (c->closing || c->handle_closing)
        return;
    if (paused)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static int io_random(void *data, void *buf, size_t n)
{
    server_t *s = data;
    return uv_random(&s->loop, NULL, buf, n, 0, NULL) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------- */
/* Sockets                                                                  */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->srv->rbuf, sizeof c->srv->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or error: the peer is gone (or finished its half of a
        ** lingering close). */
        if (c->ec && !c->closing)
            knit_relay_conn_lost(c->ec);
        c->closing = 1;
        close_handle(c);
        return;
    }
    if (c->closing || !c->ec)
        return; /* lingering: discard (note 2) */
    knit_relay_conn_input(c->ec, (const uint8_t *)buf->base, (size_t)nread, wall_ms(), mono_ms());
}

static void refuse(conn_t *c, int code, const char *msg)
{
    uint8_t *p;
    size_t n;
    c->closing = 1;
    c->close_deadline = mono_ms() + CLOSE_LINGER_MS;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (knit_relay_error_frame(code, msg, &p, &n) == 0)
        io_send(c->srv, c, p, n);
    linger(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    server_t *s = l->data;
    conn_t *c;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char name[64] = "?";

    if (status < 0) {
        glog(s, KNIT_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    c = knit__calloc(1, sizeof *c);
    if (!c) {
        glog(s, KNIT_LOG_ERROR, "accept: out of memory");
        return;
    }
    c->srv = s;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        close_handle(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char ip[48] = "";
        int port = 0;
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        snprintf(name, sizeof name, "%s:%d", ip, port);
    }
    if (s->stopping) {
        refuse(c, KNIT_ECLOSED, "relay shutting down");
        return;
    }
    if (s->nconns > s->max_conns) {
        glog(s, KNIT_LOG_WARN, "refusing %s: %zu connections already", name, s->max_conns);
        refuse(c, KNIT_EBUSY, "too many connections");
        return;
    }
    if (knit_relay_conn_open(s->eng, c, wall_ms(), mono_ms(), &c->ec) != 0) {
        refuse(c, KNIT_ENOMEM, "out of memory");
        return;
    }
    knit_relay_conn_set_name(c->ec, name);
    glog(s, KNIT_LOG_DEBUG, "connection from %s", name);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---------------------------------------------------------------------- */
/* Loop plumbing                                                            */

static void on_check(uv_check_t *h)
{
    server_t *s = h->data;
    if (knit_relay_engine_pending(s->eng))
        knit_relay_engine_flush(s->eng, wall_ms(), mono_ms());
}

static void on_tick(uv_timer_t *t)
{
    server_t *s = t->data;
    uint64_t now = mono_ms();
    conn_t *c, *next;
    if (!s->stopping)
        knit_relay_engine_tick(s->eng, wall_ms(), now);
    for (c = s->conns; c; c = next) {
        next = c->next;
        if ((c->closing && now >= c->close_deadline) || (s->stopping && now >= s->stop_deadline))
            close_handle(c);
    }
}

static void on_any_closed(uv_handle_t *h)
{
    (void)h;
}

static void maybe_finish(server_t *s)
{
    if (!s->stopping || s->finished || s->nconns)
        return;
    s->finished = 1;
    uv_close((uv_handle_t *)&s->check, on_any_closed);
    uv_close((uv_handle_t *)&s->tick, on_any_closed);
    uv_close((uv_handle_t *)&s->sigint, on_any_closed);
    uv_close((uv_handle_t *)&s->sigterm, on_any_closed);
    /* Closing the watchers restores the default action; a second signal
    ** during the last steps must not turn a clean stop into a kill. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    if (s->listening) {
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, on_any_closed);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    server_t *s = h->data;
    if (s->stopping)
        return;
    glog(s, KNIT_LOG_INFO, "%s: stopping (committing what was received)",
         signum == SIGINT ? "SIGINT" : "SIGTERM");
    s->stopping = 1;
    s->stop_deadline = mono_ms() + STOP_GRACE_MS;
    if (s->listening) {
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, on_any_closed);
    }
    knit_relay_engine_shutdown(s->eng, wall_ms(), mono_ms());
    maybe_finish(s);
}

int knit_relay_serve(const knit_relay_serve_opts_t *o) /* see relay.h */
{
    server_t *s;
    knit_relay_io_t io;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } addr;
    int rc, len;
    char ip[48];

    s = knit__calloc(1, sizeof *s);
    if (!s)
        return KNIT_ENOMEM;
    s->log_level = o->cfg.log_level;
    s->max_conns = o->max_conns ? o->max_conns : 1024;
    if ((rc = uv_loop_init(&s->loop)) != 0) {
        knit__free(s);
        return KNIT_EIO;
    }
    memset(&io, 0, sizeof io);
    io.send = io_send;
    io.close = io_close;
    io.pause = io_pause;
    io.random = io_random;
    io.log = knit_relay_log_stderr;
    io.data = s;
    if ((rc = knit_relay_engine_new(&o->cfg, &io, &s->eng)) != 0)
        goto fail_loop;

    if (uv_ip4_addr(o->host, o->port, &addr.in4) != 0 &&
        uv_ip6_addr(o->host, o->port, &addr.in6) != 0) {
        glog(s, KNIT_LOG_ERROR, "cannot listen on %s: not an IP address", o->host);
        rc = KNIT_EINVAL;
        goto fail_engine;
    }
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    s->listening = 1;
    if ((rc = uv_tcp_bind(&s->listener, &addr.sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) != 0) {
        glog(s, KNIT_LOG_ERROR, "cannot listen on %s:%d: %s", o->host, o->port, uv_strerror(rc));
        rc = KNIT_EIO;
        goto fail_listener;
    }
    len = sizeof addr;
    uv_tcp_getsockname(&s->listener, &addr.sa, &len);
    if (addr.sa.sa_family == AF_INET6)
        uv_ip6_name(&addr.in6, ip, sizeof ip);
    else
        uv_ip4_name(&addr.in4, ip, sizeof ip);
    int port = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);

    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, on_check);
    uv_timer_init(&s->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigint.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigterm.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);

    glog(s, KNIT_LOG_INFO, "listening on %s:%d", ip, port);
    if (o->on_listen)
        o->on_listen(o->data, ip, port);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    glog(s, KNIT_LOG_INFO, "stopped");
    rc = 0;
    goto done;

fail_listener:
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, on_any_closed);
    uv_run(&s->loop, UV_RUN_DEFAULT);
done:
fail_engine:
    knit_relay_engine_free(s->eng);
fail_loop:
    uv_loop_close(&s->loop);
    knit__free(s);
    return rc;
}
